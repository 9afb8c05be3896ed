"""VideoHallucer (Wang et al., 2024, arXiv 2406.16338): paired yes/no hallucination probes.

Layout: `<root>/<category>/<category>.json` (also a single file, or a directory of JSON files),
each a list of pairs `{"basic": {video, question, answer}, "hallucination": {...}, "type": ...}`.
The category is the file's stem (object_relation, temporal, semantic_detail, external_factual,
external_nonfactual, ...). Each pair gives two items, ids `<category>/<index>/basic` and
`<category>/<index>/hallucination`.

Scoring (official = the RRPO paper's copy, `cal_score`): a question is right when the gold word
matches `\\b(gold)\\b` case-insensitively in the reply; a pair is right when both are. Per
category: basic, hallucinated and pair ("overall") accuracy; the headline is the plain mean of
the per-category numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rrpo.data.prompts import YESNO_INSTRUCTION
from rrpo.errors import RecordError
from rrpo.eval.benchmarks.base import (
    Benchmark,
    EvalItem,
    Judge,
    Reading,
    Tally,
    json_files,
    need,
    pct,
    read_json,
    unique_ids,
)
from rrpo.eval.extract import videohallucer_hit

INSTRUCTION = YESNO_INSTRUCTION
SIDES = ("basic", "hallucination")


class VideoHallucer(Benchmark):
    name = "videohallucer"
    description = "VideoHallucer yes/no pairs (basic vs hallucinated question)"

    def load(self, annotations: Path) -> list[EvalItem]:
        items: list[EvalItem] = []
        for path in json_files(annotations):
            category = path.stem
            pairs = read_json(path)
            if not isinstance(pairs, list):
                raise RecordError(path, None, "expected a list of question pairs")
            for index, pair in enumerate(pairs):
                where = f"{path.name}[{index}]"
                kind = pair.get("type") if isinstance(pair, dict) else None
                for side in SIDES:
                    q = need(pair, side, where, dict)
                    w = f"{where}.{side}"
                    answer = need(q, "answer", w).strip().lower()
                    if answer not in ("yes", "no"):
                        raise RecordError(w, "answer", f"expected 'yes' or 'no', got {answer!r}")
                    question = need(q, "question", w)
                    items.append(
                        EvalItem(
                            id=f"{category}/{index}/{side}",
                            video=need(q, "video", w),
                            prompt=question + INSTRUCTION,
                            question=question,
                            options=[],
                            answer=answer,
                            kind="yes_no",
                            task=kind if isinstance(kind, str) else None,
                            category=category,
                            extra={"pair": f"{category}/{index}", "side": side},
                        )
                    )
        unique_ids(items)
        return items

    def read(self, item: EvalItem, prediction: str, scoring: str, judge: Judge | None) -> Reading:
        # The paper used the official cal_score: both modes agree.
        hit = videohallucer_hit(prediction, item.answer)
        other = "no" if item.answer == "yes" else "yes"
        # What the reply said, for the record: the gold word if present, else the other word.
        said = item.answer if hit else (other if videohallucer_hit(prediction, other) else None)
        return said, hit, ""

    def summarise(self, tally: Tally) -> dict[str, Any]:
        # pair -> category, and per-pair hits
        pairs: dict[str, dict[str, bool]] = {}
        category_of: dict[str, str] = {}
        for item in tally.items:
            pair = item.extra["pair"]
            pairs.setdefault(pair, {})[item.extra["side"]] = tally.correct(item.id)
            category_of[pair] = item.category or ""
        per_cat: dict[str, dict[str, list[int]]] = {}
        for pair, hits in pairs.items():
            c = per_cat.setdefault(
                category_of[pair], {"basic": [0, 0], "hallucinated": [0, 0], "overall": [0, 0]}
            )
            for name, ok in (
                ("basic", hits.get("basic", False)),
                ("hallucinated", hits.get("hallucination", False)),
                ("overall", hits.get("basic", False) and hits.get("hallucination", False)),
            ):
                c[name][0] += int(ok)
                c[name][1] += 1

        groups: dict[str, dict[str, dict[str, float]]] = {}
        metrics: dict[str, float] = {}
        for name in ("basic", "hallucinated", "overall"):
            groups[name] = {
                cat: {"correct": v[name][0], "total": v[name][1], "accuracy": pct(*v[name])}
                for cat, v in per_cat.items()
            }
            for cat, g in groups[name].items():
                metrics[f"{cat}/{name}"] = g["accuracy"]
        n = len(per_cat)
        summary = {
            name: (sum(g["accuracy"] for g in groups[name].values()) / n if n else 0.0)
            for name in ("overall", "basic", "hallucinated")
        }
        tally.notes.append(f"headline = mean over {n} categor{'y' if n == 1 else 'ies'} of pair accuracy")
        return tally.result("overall", summary, metrics, groups)
