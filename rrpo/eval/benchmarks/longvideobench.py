"""LongVideoBench (Wu et al., 2024, arXiv 2407.15754), without interleaved subtitles.

Layout: `lvb_val.json` (or any JSON file / directory of them), a list of `{"id", "video_path",
"question", "candidates" (up to 5), "correct_choice" (0-based), "duration_group",
"question_category", "duration", ...}`. Ids are the official `id`.

Prompt: the official dataset class's text, "Question: q\\nA. c0\\nB. c1 ...\\nAnswer with the
option's letter from the given choices directly."

Scoring: official -- the first capital letter among the item's option letters (A-E);
paper -- the RRPO `evaluate.py` regex, the first letter of any kind ("The answer is B" -> "T").
Accuracy overall (headline), per duration group and per question category.
"""

from __future__ import annotations

from pathlib import Path

from rrpo.errors import RecordError
from rrpo.eval.benchmarks.base import (
    Benchmark,
    EvalItem,
    Judge,
    Reading,
    json_files,
    need,
    need_list,
    read_json,
    unique_ids,
)
from rrpo.eval.extract import LETTERS, first_letter, paper_letter

INSTRUCTION = "Answer with the option's letter from the given choices directly."


class LongVideoBench(Benchmark):
    name = "longvideobench"
    description = "LongVideoBench multiple choice (no subtitles), accuracy by duration group"

    def load(self, annotations: Path) -> list[EvalItem]:
        items: list[EvalItem] = []
        for path in json_files(annotations):
            records = read_json(path)
            if not isinstance(records, list):
                raise RecordError(path, None, "expected a list of questions")
            for index, rec in enumerate(records):
                where = f"{path.name}[{index}]"
                qid = need(rec, "id", where, (str, int))
                where = f"{where} ({qid})"
                question = need(rec, "question", where)
                options = need_list(rec, "candidates", where)
                if len(options) > 5:
                    raise RecordError(
                        where, "candidates", f"{len(options)} candidates; LongVideoBench has at most 5"
                    )
                choice = need(rec, "correct_choice", where, int)
                if not 0 <= choice < len(options):
                    raise RecordError(
                        where, "correct_choice", f"{choice} is not an index into {len(options)} candidates"
                    )
                lines = [f"Question: {question}"] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(options)]
                group = rec.get("duration_group")
                items.append(
                    EvalItem(
                        id=str(qid),
                        video=need(rec, "video_path", where),
                        prompt="\n".join(lines + [INSTRUCTION]),
                        question=question,
                        options=options,
                        answer=LETTERS[choice],
                        task=rec.get("question_category"),
                        duration=None if group is None else str(group),
                        extra={
                            k: rec[k]
                            for k in ("duration", "subtitle_path", "starting_timestamp_for_subtitles")
                            if k in rec
                        },
                    )
                )
        unique_ids(items)
        return items

    group_by = {"duration": lambda i: i.duration, "task": lambda i: i.task}

    def read(self, item: EvalItem, prediction: str, scoring: str, judge: Judge | None) -> Reading:
        if scoring == "paper":
            letter = paper_letter(prediction)
        else:
            letter = first_letter(prediction, LETTERS[: len(item.options)])
        return letter, letter == item.answer, ""
