"""What every benchmark shares: the item record, the `Benchmark` interface and the tallying helpers.

A benchmark turns its annotation files into `EvalItem`s (one per question the model is asked) and
scores a `{item id: model reply}` mapping. Scores are percentages (0-100). The dict `score`
returns is what `rrpo.eval.scoring` prints and writes to results.json:

    {"benchmark", "scoring",                      # name, "official" | "paper"
     "headline": metric name, "summary": {name: value},   # the numbers `rrpo compare` shows
     "metrics": {name: value},                    # every number (summary included)
     "groups": {grouping: {key: {"correct", "total", "accuracy"}}},
     "counts": {"questions", "predicted", "missing", "unanswered", "undecided", "excluded", ...},
     "missing": [ids], "unanswered": [ids], "undecided": [ids], "excluded": [ids],
     "notes": [str], "verdicts": {id: {"extracted": str | None, "correct": bool | None}}}

`missing`: no prediction for the item (counted wrong). `unanswered`: a prediction from which no
answer could be read (wrong, unless the benchmark's rule excludes it: then it is also listed in
`excluded`). `undecided`: TempCompass replies no rule decides and no judge was given (wrong).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rrpo.data.prompts import mcq_prompt_parenthesised  # noqa: F401 (the benchmarks import it from here)
from rrpo.errors import RecordError, RRPOError

SCORING_MODES = ("official", "paper")

# judge(question, gold answer, prediction) -> True (right) / False (wrong) / None (cannot tell).
Judge = Callable[[str, str, str], "bool | None"]


@dataclass
class EvalItem:
    """One question put to the model.

    id: stable id (the benchmark's own where it has one, else "<file stem>/<index>").
    video: the video path relative to the benchmark's video root, as the annotation gives it.
    prompt: the full text the model is asked (question, options, the benchmark's instruction).
    question: the bare question. options: option texts in letter order ([] for yes/no).
    answer: the gold answer -- an option letter for multiple choice, "yes"/"no" for yes/no.
    kind: "mcq" or "yes_no". start/end: the segment to sample frames from, seconds, or None.
    task/category/duration: grouping fields (None where the benchmark has none).
    extra: benchmark-specific fields (e.g. the gold option text, VideoChat2-style system prompt).
    """

    id: str
    video: str
    prompt: str
    question: str
    options: list[str]
    answer: str
    kind: str = "mcq"
    start: float | None = None
    end: float | None = None
    task: str | None = None
    category: str | None = None
    duration: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# What a benchmark's extraction rule makes of one reply: (what was read, e.g. "B" or None; correct:
# True / False, or None when the rule leaves the item out; status: "" or "excluded" / "undecided" /
# "judged").
Reading = tuple["str | None", "bool | None", str]


class Benchmark:
    """One scoring template; a benchmark module gives its loader, prompt and extraction rule.

    `load(annotations) -> items`; `read(item, prediction, scoring, judge)`: the benchmark's rule for one
    reply; `summarise(tally)`: its headline numbers (default: accuracy overall and per `group_by`).
    `score(items, predictions, ...)` runs them (the same for every benchmark): check the mode, record
    missing predictions, read every reply, summarise.
    """

    name: str = ""
    description: str = ""
    # group name -> key of an item (None: not in the group); the default summary's breakdowns.
    group_by: ClassVar[dict[str, Callable[[EvalItem], str | None]]] = {"task": lambda i: i.task}

    def load(self, annotations: Path) -> list[EvalItem]:  # pragma: no cover - interface
        raise NotImplementedError

    def read(self, item: EvalItem, prediction: str, scoring: str, judge: Judge | None) -> Reading:
        raise NotImplementedError  # pragma: no cover - interface

    def score(
        self,
        items: Sequence[EvalItem],
        predictions: Mapping[str, str],
        *,
        scoring: str = "official",
        judge: Judge | None = None,
    ) -> dict[str, Any]:
        check_scoring(scoring)
        tally = Tally(self.name, scoring, items, predictions)
        for item, prediction in tally.answered():
            extracted, correct, status = self.read(item, prediction, scoring, judge)
            if status == "judged":
                tally.judged += 1
            tally.verdict(item, extracted, correct, status=status)
        return self.summarise(tally)

    def summarise(self, tally: Tally) -> dict[str, Any]:
        groups = {name: tally.group(key) for name, key in self.group_by.items()}
        correct, total = tally.overall()
        metrics = {f"{g}/{k}": v["accuracy"] for g, group in groups.items() for k, v in group.items()}
        return tally.result("accuracy", {"accuracy": pct(correct, total)}, metrics, groups)


# ---------------------------------------------------------------------------------------------
# Loading helpers.
# ---------------------------------------------------------------------------------------------


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing or malformed file raises RRPOError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise RRPOError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as err:
        raise RRPOError(f"{path}: not valid JSON ({err})") from None


def json_files(annotations: Path, *, pattern: str = "*.json") -> list[Path]:
    """The annotation files: `annotations` itself if it is a file, else its JSON files (sorted).

    Also looks one level down (`<dir>/<category>/<category>.json`, VideoHallucer's layout).
    """
    annotations = Path(annotations)
    if annotations.is_file():
        return [annotations]
    if not annotations.is_dir():
        raise RRPOError(f"{annotations}: no such annotation file or directory")
    files = sorted(annotations.glob(pattern)) or sorted(annotations.glob(f"*/{pattern}"))
    if not files:
        raise RRPOError(f"{annotations}: no {pattern} annotation files found")
    return files


def need(record: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    """record[key], checked for presence and type; else RecordError naming `where` and the field."""
    if not isinstance(record, Mapping):
        raise RecordError(where, None, f"expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise RecordError(where, key, "missing")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RecordError(where, key, f"expected {names}, got {type(value).__name__}")
    return value


def need_list(record: Mapping[str, Any], key: str, where: str) -> list[str]:
    """A non-empty list of strings (options); RecordError otherwise."""
    values = need(record, key, where, list)
    if not values or not all(isinstance(v, str) for v in values):
        raise RecordError(where, key, "expected a non-empty list of strings")
    if len(values) > 26:
        raise RecordError(where, key, f"{len(values)} options; at most 26 can be lettered")
    return values


def optional_seconds(record: Mapping[str, Any], key: str, where: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(where, key, f"expected seconds (a number), got {value!r}")
    return float(value)


def letter_of(options: Sequence[str], answer_text: str, where: str) -> str:
    """The letter of the option equal to `answer_text`; RecordError if it is not one of them."""
    try:
        return chr(ord("A") + list(options).index(answer_text))
    except ValueError:
        raise RecordError(where, "answer", f"{answer_text!r} is not one of the candidates") from None


def check_scoring(scoring: str) -> None:
    if scoring not in SCORING_MODES:
        raise RRPOError(f"unknown scoring mode {scoring!r}; choose one of {', '.join(SCORING_MODES)}")


def unique_ids(items: Iterable[EvalItem]) -> None:
    """Raise if two items share an id (predictions are keyed by id)."""
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise RecordError(item.id, "id", "duplicate question id in the annotations")
        seen.add(item.id)


# ---------------------------------------------------------------------------------------------
# Scoring helpers.
# ---------------------------------------------------------------------------------------------


def pct(correct: float, total: float) -> float:
    """100 * correct / total, 0.0 for an empty group."""
    return 100.0 * correct / total if total else 0.0


class Tally:
    """Collects per-item verdicts and the counts every result reports.

    `verdict(item, extracted, correct)` with correct True/False, or None with `status` saying why
    it is left out ("excluded": the rule leaves it out of the denominator). Items without a
    prediction go through `missing(item)`.
    """

    def __init__(
        self, benchmark: str, scoring: str, items: Sequence[EvalItem], predictions: Mapping[str, str]
    ):
        self.benchmark = benchmark
        self.scoring = scoring
        self.items = list(items)
        known = {i.id for i in self.items}
        self.unknown = sorted(k for k in predictions if k not in known)
        if predictions and len(self.unknown) == len(predictions):
            raise RRPOError(
                f"none of the {len(predictions)} prediction ids belong to {benchmark} "
                f"(first: {self.unknown[0]!r}); wrong --benchmark or --annotations?"
            )
        self.predictions = predictions
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.lists: dict[str, list[str]] = {k: [] for k in ("missing", "unanswered", "undecided", "excluded")}
        self.judged = 0
        self.notes: list[str] = []

    def answered(self):  # noqa: ANN201 - Iterator[tuple[EvalItem, str]]
        """(item, prediction) for every item that has one; the others are recorded as missing."""
        for item in self.items:
            if item.id not in self.predictions:
                self.missing(item)
                continue
            yield item, self.predictions[item.id]

    def missing(self, item: EvalItem) -> None:
        self.lists["missing"].append(item.id)
        self.verdicts[item.id] = {"extracted": None, "correct": False, "status": "missing"}

    def verdict(
        self, item: EvalItem, extracted: str | None, correct: bool | None, *, status: str = ""
    ) -> None:
        if extracted is None and status != "undecided":
            self.lists["unanswered"].append(item.id)
        if status in ("undecided", "excluded"):
            self.lists[status].append(item.id)
        entry: dict[str, Any] = {"extracted": extracted, "correct": correct}
        if status:
            entry["status"] = status
        self.verdicts[item.id] = entry

    def correct(self, item_id: str) -> bool:
        return bool(self.verdicts[item_id]["correct"])

    def counted(self, item_id: str) -> bool:
        """Whether the item is in the denominator (excluded items are not)."""
        return self.verdicts[item_id].get("status") != "excluded"

    def group(self, key: Callable[[EvalItem], str | None]) -> dict[str, dict[str, float]]:
        """{group key: {"correct", "total", "accuracy"}} over the counted items, in first-seen order."""
        acc: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for item in self.items:
            k = key(item)
            if k is None or not self.counted(item.id):
                continue
            acc[k][0] += self.correct(item.id)
            acc[k][1] += 1
        return {k: {"correct": c, "total": t, "accuracy": pct(c, t)} for k, (c, t) in acc.items()}

    def overall(self) -> tuple[int, int]:
        counted = [i for i in self.items if self.counted(i.id)]
        return sum(self.correct(i.id) for i in counted), len(counted)

    def result(
        self,
        headline: str,
        summary: Mapping[str, float],
        metrics: Mapping[str, float],
        groups: Mapping[str, Mapping[str, Mapping[str, float]]],
    ) -> dict[str, Any]:
        predicted = len(self.items) - len(self.lists["missing"])
        counts = {
            "questions": len(self.items),
            "predicted": predicted,
            **{k: len(v) for k, v in self.lists.items()},
            "judged": self.judged,
            "unknown_predictions": len(self.unknown),
        }
        notes = list(self.notes)
        if self.lists["missing"]:
            notes.append(f"{len(self.lists['missing'])} question(s) had no prediction and count as wrong")
        if self.unknown:
            notes.append(
                f"{len(self.unknown)} prediction id(s) are not questions of this benchmark (ignored)"
            )
        return {
            "benchmark": self.benchmark,
            "scoring": self.scoring,
            "headline": headline,
            "summary": dict(summary),
            "metrics": {**dict(summary), **dict(metrics)},
            "groups": {k: dict(v) for k, v in groups.items()},
            "counts": counts,
            **{k: list(v) for k, v in self.lists.items()},
            "unknown_predictions": self.unknown[:50],
            "notes": notes,
            "verdicts": self.verdicts,
        }


# The VideoChat2 evaluation recipe MVBench, TVBench and MLVU publish: a system prompt, and the
# assistant turn opened with "Best option:(". Inference code may use these (EvalItem.extra).
VIDEOCHAT2_SYSTEM = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
    "movement of objects, and the action and pose of persons. Based on your observations, select the "
    "best option that accurately addresses the question.\n"
)
VIDEOCHAT2_ANSWER_PREFIX = "Best option:("
