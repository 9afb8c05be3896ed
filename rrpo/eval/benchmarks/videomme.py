"""Video-MME (Fu et al., 2024, arXiv 2405.21075), without subtitles.

Accepted layouts (a JSON file, or a directory of them):
* the official flat list, one record per question (the dataset's rows): `{"video_id", "duration",
  "domain", "sub_category", "videoID", "question_id", "task_type", "question", "options":
  ["A. ...", ...], "answer": "B"}`;
* the nested per-video form of the official results template: `{"video_id", "duration" (or
  "duration_category"), "domain" (or "video_category"), "questions": [{"question_id",
  "task_type", "question", "options", "answer"}, ...]}`.
Ids are the official `question_id`. The video file is `<videoID>.mp4` (else `<video_id>.mp4`).

Prompt: the official one, "Select the best answer ... Respond with only the letter (A, B, C, or D)
of the correct option.\\n<question>\\n<options>\\nThe best answer is:".

Scoring: drop answer prefixes, take the first capital A-D (official `extract_characters_regex`;
the paper's copy drops more prefixes and uses a bracket-aware regex). A reply with no letter is
left out of the denominator (reported as `excluded`). Accuracy per duration and overall.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rrpo.errors import RecordError
from rrpo.eval.benchmarks.base import (
    Benchmark,
    EvalItem,
    Judge,
    Reading,
    Tally,
    json_files,
    need,
    need_list,
    pct,
    read_json,
    unique_ids,
)
from rrpo.eval.extract import LETTERS, option_text, videomme_letter, videomme_letter_paper

PROMPT = (
    "Select the best answer to the following multiple-choice question based on the video. "
    "Respond with only the letter (A, B, C, or D) of the correct option.\n{question}\n{options}\n"
    "The best answer is:"
)
DURATIONS = ("short", "medium", "long")


def _first(record: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if record.get(key) is not None:
            return record[key]
    return None


class VideoMME(Benchmark):
    name = "videomme"
    description = "Video-MME multiple choice (no subtitles), accuracy by duration"

    def load(self, annotations: Path) -> list[EvalItem]:
        items: list[EvalItem] = []
        for path in json_files(annotations):
            records = read_json(path)
            if not isinstance(records, list):
                raise RecordError(path, None, "expected a list (flat questions or per-video records)")
            for index, rec in enumerate(records):
                where = f"{path.name}[{index}]"
                if isinstance(rec, dict) and "questions" in rec:
                    for j, q in enumerate(need(rec, "questions", where, list)):
                        items.append(self._item(q, rec, f"{where}.questions[{j}]"))
                else:
                    items.append(self._item(rec, rec, where))
        unique_ids(items)
        return items

    def _item(self, q: Mapping[str, Any], video: Mapping[str, Any], where: str) -> EvalItem:
        qid = need(q, "question_id", where, (str, int))
        where = f"{where} ({qid})"
        options = need_list(q, "options", where)
        answer = need(q, "answer", where).strip()
        if len(answer) != 1 or answer not in LETTERS[: len(options)]:
            raise RecordError(where, "answer", f"expected an option letter, got {answer!r}")
        duration = _first(video, "duration", "duration_category")
        if duration not in DURATIONS:
            raise RecordError(where, "duration", f"expected one of {', '.join(DURATIONS)}, got {duration!r}")
        video_name = _first(video, "videoID", "video_id")
        if not isinstance(video_name, str):
            raise RecordError(where, "videoID", "missing (needed to name the video file)")
        question = need(q, "question", where)
        # Official options already carry their labels ("A. ..."); add them when they do not.
        labelled = [o if option_text(o) != o else f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
        return EvalItem(
            id=str(qid),
            video=video_name if video_name.endswith(".mp4") else f"{video_name}.mp4",
            prompt=PROMPT.format(question=question, options="\n".join(labelled)),
            question=question,
            options=[option_text(o) for o in options],
            answer=answer,
            task=_first(q, "task_type"),
            category=_first(video, "domain", "video_category"),
            duration=duration,
            extra={"sub_category": _first(video, "sub_category", "video_subcategory")},
        )

    def read(self, item: EvalItem, prediction: str, scoring: str, judge: Judge | None) -> Reading:
        extract = videomme_letter_paper if scoring == "paper" else videomme_letter
        letter = extract(prediction)
        if letter is None:
            return None, None, "excluded"  # the official rule leaves it out of the denominator
        return letter, letter == item.answer, ""

    def summarise(self, tally: Tally) -> dict[str, Any]:
        durations = tally.group(lambda i: i.duration)
        correct, total = tally.overall()
        summary = {"overall": pct(correct, total)}
        summary.update({d: durations[d]["accuracy"] for d in DURATIONS if d in durations})
        groups = {
            "duration": durations,
            "task": tally.group(lambda i: i.task),
            "domain": tally.group(lambda i: i.category),
        }
        metrics = {f"{g}/{k}": v["accuracy"] for g in ("task", "domain") for k, v in groups[g].items()}
        if tally.lists["excluded"]:
            tally.notes.append(
                f"{len(tally.lists['excluded'])} reply(ies) had no option letter and are left out of the "
                "denominator (official Video-MME rule)"
            )
        return tally.result("overall", summary, metrics, groups)
