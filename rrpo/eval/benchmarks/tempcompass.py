"""TempCompass (Liu et al., 2024, arXiv 2403.00476): multi-choice and yes/no temporal questions.

Layout: `questions/<task>.json` for task `multi-choice` and `yes_no` (also accepted: a single
file, or files named `questions_<task>.json`), each mapping video id -> temporal dimension
(action, direction, speed, order, attribute_change) -> list of `{"question", "answer"}`.
Multi-choice questions carry their options as "\\nA. ..." lines and the answer as "A. text".
Ids are `<task>/<video id>/<dimension>/<index>`; the video is `<video id>.mp4`.
(caption_matching and captioning are not supported.)

Prompt: the official one, question + "\\nPlease directly give the best option:" (multi-choice) or
"\\nPlease answer yes or no:" (yes/no).

Scoring: the official hand-written rules (`rrpo.eval.extract.tempcompass_mc_rating` /
`tempcompass_yn_rating`); a reply no rule decides goes to `judge(question, answer, prediction)`
(the official scorer asks ChatGPT) and, without a judge or when it cannot tell, is reported
"undecided" and counted wrong (as the official `--disable_llm`). Accuracy per task and per
dimension; headline "avg" = the mean of the task accuracies.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rrpo.errors import RecordError, RRPOError
from rrpo.eval.benchmarks.base import (
    Benchmark,
    EvalItem,
    Judge,
    Reading,
    Tally,
    need,
    pct,
    read_json,
    unique_ids,
)
from rrpo.eval.extract import tempcompass_mc_rating, tempcompass_yn_rating

TASKS = ("multi-choice", "yes_no")
ANSWER_PROMPT = {
    "multi-choice": "\nPlease directly give the best option:",
    "yes_no": "\nPlease answer yes or no:",
}
_OPTION_LINE = re.compile(r"^([A-Z])\.\s?(.*)$")


def task_of(path: Path) -> str | None:
    """Task "multi-choice" for multi-choice.json / questions_multi-choice.json, etc.; None if unknown."""
    stem = path.stem
    for task in TASKS:
        if stem == task or stem.endswith(f"_{task}") or stem.endswith(f"-{task}"):
            return task
    return None


def question_files(annotations: Path) -> list[tuple[str, Path]]:
    """(task, file) pairs to load from a file or a directory (or its `questions/` subdirectory)."""
    annotations = Path(annotations)
    if annotations.is_file():
        task = task_of(annotations)
        if task is None:
            raise RRPOError(
                f"{annotations}: cannot tell the TempCompass task from the file name "
                f"(expected one of {', '.join(TASKS)}, e.g. questions/multi-choice.json)"
            )
        return [(task, annotations)]
    if not annotations.is_dir():
        raise RRPOError(f"{annotations}: no such annotation file or directory")
    for folder in (annotations / "questions", annotations):
        found = [(t, p) for p in sorted(folder.glob("*.json")) if (t := task_of(p)) is not None]
        # Prediction / verdict files sitting beside the questions are not questions.
        found = [(t, p) for t, p in found if "prediction" not in p.stem and "eval" not in p.stem]
        if found:
            return found
    raise RRPOError(f"{annotations}: no TempCompass question files ({', '.join(t + '.json' for t in TASKS)})")


class TempCompass(Benchmark):
    name = "tempcompass"
    description = "TempCompass multi-choice and yes/no (rule match, LLM judge for the rest)"

    def load(self, annotations: Path) -> list[EvalItem]:
        items: list[EvalItem] = []
        for task, path in question_files(annotations):
            data = read_json(path)
            if not isinstance(data, dict):
                raise RecordError(path, None, "expected {video id: {dimension: [questions]}}")
            for vid, dims in data.items():
                if not isinstance(dims, dict):
                    raise RecordError(f"{path.name}:{vid}", None, "expected {dimension: [questions]}")
                for dim, questions in dims.items():
                    if not isinstance(questions, list):
                        raise RecordError(f"{path.name}:{vid}/{dim}", None, "expected a list of questions")
                    for index, q in enumerate(questions):
                        items.append(self._item(task, vid, dim, index, q, path.name))
        unique_ids(items)
        return items

    def _item(self, task: str, vid: str, dim: str, index: int, q: Any, fname: str) -> EvalItem:
        item_id = f"{task}/{vid}/{dim}/{index}"
        where = f"{fname}:{item_id}"
        question = need(q, "question", where)
        answer_text = need(q, "answer", where)
        if task == "multi-choice":
            options = [m.group(2) for line in question.split("\n")[1:] if (m := _OPTION_LINE.match(line))]
            letter = answer_text[:1]
            if not options or letter not in "ABCDEFGH"[: len(options)] or answer_text[1:2] != ".":
                raise RecordError(
                    where, "answer", f"expected 'X. option text' naming an option, got {answer_text!r}"
                )
            answer, kind = letter, "mcq"
        else:
            options, answer, kind = [], answer_text.strip().lower(), "yes_no"
            if answer not in ("yes", "no"):
                raise RecordError(where, "answer", f"expected 'yes' or 'no', got {answer_text!r}")
        return EvalItem(
            id=item_id,
            video=f"{vid}.mp4",
            prompt=question + ANSWER_PROMPT[task],
            question=question,
            options=options,
            answer=answer,
            kind=kind,
            task=task,
            category=dim,
            extra={"answer_text": answer_text, "video_id": vid},
        )

    def read(self, item: EvalItem, prediction: str, scoring: str, judge: Judge | None) -> Reading:
        if scoring == "paper":
            prediction = prediction.replace("</s>", "").strip()  # the RRPO copy strips the reply first
        gold = item.extra["answer_text"]
        rule = tempcompass_mc_rating if item.kind == "mcq" else tempcompass_yn_rating
        rating = rule(prediction, gold)
        if rating is not None:
            return _said(prediction, item), bool(rating), ""
        verdict = judge(item.question, gold, prediction) if judge is not None else None
        if verdict is None:
            return None, False, "undecided"
        return "judge", bool(verdict), "judged"

    def summarise(self, tally: Tally) -> dict[str, Any]:
        tasks = tally.group(lambda i: i.task)
        groups: dict[str, Any] = {"task": tasks}
        metrics: dict[str, float] = {}
        for task in tasks:
            dims = tally.group(lambda i, t=task: i.category if i.task == t else None)
            groups[f"{task}/dimension"] = dims
            metrics.update({f"{task}/{d}": v["accuracy"] for d, v in dims.items()})
        summary = {"avg": sum(t["accuracy"] for t in tasks.values()) / len(tasks) if tasks else 0.0}
        summary.update({t: v["accuracy"] for t, v in tasks.items()})
        correct, total = tally.overall()
        metrics["all_questions"] = pct(correct, total)
        n_undecided = len(tally.lists["undecided"])
        if n_undecided:
            tally.notes.append(
                f"{n_undecided} reply(ies) matched no rule and no judge decided them: counted wrong "
                "(pass a judge to reproduce the official LLM-assisted numbers)"
            )
        return tally.result("avg", summary, metrics, groups)


def _said(pred: str, item: EvalItem) -> str:
    """The answer a rule-decided reply gave: its letter (multi-choice) or yes/no."""
    if item.kind == "mcq":
        return pred[:1] if pred[:1] in "ABCD" else item.answer  # else it equalled the gold text
    return "yes" if pred.lower().startswith("yes") else "no"
