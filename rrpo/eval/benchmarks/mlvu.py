"""MLVU multiple choice (Zhou et al., 2024, arXiv 2406.04264).

Layout: one JSON file per task (`1_plotQA.json`, `4_count.json`, ...), each a list of
`{"video", "duration", "question", "candidates", "answer" (option text), "question_type"}`.
Ids are `<file stem>/<index>`; the task is `question_type` (the file stem when absent).

Prompt: "Question: ...\\nOptions:\\n(A) ...\\nOnly give the best option." (MLVU's VideoChat2 recipe;
its system prompt and "Best option:(" prefix are in `extra`).

Scoring: official -- the character before the first ")" of the reply, else the whole reply,
must equal the letter (`rrpo.eval.extract.mlvu_letter`); paper -- the RRPO scripts' first-letter
regex. Headline M-Avg: the unweighted mean of the task accuracies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rrpo.eval.benchmarks.base import Benchmark, EvalItem, Judge, Reading, Tally, pct
from rrpo.eval.benchmarks.mvbench import load_candidate_files
from rrpo.eval.extract import LETTERS, mlvu_letter, paper_letter

INSTRUCTION = "\nOnly give the best option."
MLVU_SYSTEM = (
    "Carefully watch this video and pay attention to every detail. Based on your observations, "
    "select the best option that accurately addresses the question.\n"
)


class MLVU(Benchmark):
    name = "mlvu"
    description = "MLVU multiple choice (long videos), M-Avg over tasks"

    def load(self, annotations: Path) -> list[EvalItem]:
        items = load_candidate_files(annotations, INSTRUCTION)
        for item in items:
            item.extra["system"] = MLVU_SYSTEM
        return items

    def read(self, item: EvalItem, prediction: str, scoring: str, judge: Judge | None) -> Reading:
        if scoring == "paper":
            letter = paper_letter(prediction)
        else:
            read = mlvu_letter(prediction)
            letter = read if len(read) == 1 and read in LETTERS else None
        return letter, letter == item.answer, ""

    def summarise(self, tally: Tally) -> dict[str, Any]:
        tasks = tally.group(lambda i: i.task)
        m_avg = sum(t["accuracy"] for t in tasks.values()) / len(tasks) if tasks else 0.0
        correct, total = tally.overall()
        metrics = {"accuracy": pct(correct, total), **{f"task/{k}": v["accuracy"] for k, v in tasks.items()}}
        tally.notes.append(f"M-Avg = unweighted mean over {len(tasks)} task(s)")
        return tally.result("m_avg", {"m_avg": m_avg}, metrics, {"task": tasks})
