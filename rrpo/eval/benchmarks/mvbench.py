"""MVBench (Li et al., 2024, arXiv 2311.17005) and TVBench (Cores et al., 2024, arXiv 2410.07752).

Both use one JSON file per task (`action_count.json`, ...), each a list of
`{"video", "question", "candidates", "answer" (the option text)[, "start", "end"]}`; TVBench
"follows the same structure as MVBench". The task is the file stem; ids are `<stem>/<index>`.
`start`/`end` (seconds) select the segment frames are sampled from.

Prompt: the VideoChat2 `qa_template` ("Question: ...\\nOptions:\\n(A) ...") plus "\\nOnly give the
best option."; the VideoChat2 system prompt and "Best option:(" answer prefix are in `extra`.

Scoring: official `check_ans` (`rrpo.eval.extract.mvbench_correct`: the reply's first token
against "(B)"); paper: the RRPO scripts' first-letter regex (`paper_letter`). Headline: correct
over all questions ("Avg" in both scripts), with per-task accuracy alongside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rrpo.data.prompts import MCQ_INSTRUCTION
from rrpo.errors import RecordError
from rrpo.eval.benchmarks.base import (
    VIDEOCHAT2_ANSWER_PREFIX,
    VIDEOCHAT2_SYSTEM,
    Benchmark,
    EvalItem,
    Judge,
    Reading,
    json_files,
    letter_of,
    mcq_prompt_parenthesised,
    need,
    need_list,
    optional_seconds,
    read_json,
    unique_ids,
)
from rrpo.eval.extract import mcq_letter, mvbench_correct, paper_letter

INSTRUCTION = MCQ_INSTRUCTION


def load_candidate_files(annotations: Path, instruction: str) -> list[EvalItem]:
    """Items from MVBench-style files: a list of {video, question, candidates, answer text}."""
    items: list[EvalItem] = []
    for path in json_files(annotations):
        records = read_json(path)
        if not isinstance(records, list):
            raise RecordError(path, None, "expected a list of questions")
        for index, rec in enumerate(records):
            where = f"{path.name}[{index}]"
            question = need(rec, "question", where)
            options = need_list(rec, "candidates", where)
            answer_text = need(rec, "answer", where)
            start, end = optional_seconds(rec, "start", where), optional_seconds(rec, "end", where)
            if start is not None and end is not None and end <= start:
                raise RecordError(where, "end", f"segment end {end} is not after start {start}")
            extra: dict[str, Any] = {
                "answer_text": answer_text,
                "system": VIDEOCHAT2_SYSTEM,
                "answer_prefix": VIDEOCHAT2_ANSWER_PREFIX,
            }
            if "duration" in rec:
                extra["duration_seconds"] = rec["duration"]
            items.append(
                EvalItem(
                    id=f"{path.stem}/{index}",
                    video=need(rec, "video", where),
                    prompt=mcq_prompt_parenthesised(question, options, instruction),
                    question=question,
                    options=options,
                    answer=letter_of(options, answer_text, where),
                    start=start,
                    end=end,
                    task=rec.get("question_type") if isinstance(rec.get("question_type"), str) else path.stem,
                    extra=extra,
                )
            )
    unique_ids(items)
    return items


class MVBench(Benchmark):
    name = "mvbench"
    description = "MVBench multiple choice, 20 temporal tasks"

    def load(self, annotations: Path) -> list[EvalItem]:
        return load_candidate_files(annotations, INSTRUCTION)

    def read(self, item: EvalItem, prediction: str, scoring: str, judge: Judge | None) -> Reading:
        if scoring == "paper":
            letter = paper_letter(prediction)
            return letter, letter == item.answer, ""
        ok = mvbench_correct(prediction, item.answer)
        # The official rule decides by itself; `extracted` is the gold letter when it accepted the
        # reply, else the generic reading of the reply (for inspection).
        return (item.answer if ok else mcq_letter(prediction, item.options)), ok, ""


class TVBench(MVBench):
    name = "tvbench"
    description = "TVBench multiple choice (MVBench layout), 10 temporal tasks"
