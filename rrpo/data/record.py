"""The records that flow through the pipeline: questions in, preference pairs out.

`VideoQuestion` is the input of data generation (a question about a video with its ground-truth
answer). `PreferencePair` is its output and the input of training: a preferred (`chosen`, the
ground truth, possibly rewritten) and a non-preferred (`rejected`, the model's wrong answer on a
perturbed video) response, with the character spans where they differ (RRPO, arXiv 2504.12083,
applies its sub-sequence-level reward to those spans).

Both are stored as JSON Lines, one object per line. Readers validate every line and report all
problems at once (`RecordErrors`), naming the line, the record id and the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rrpo.data.answers import ANSWER_TYPES, LETTERS, match_option  # noqa: F401 (re-exported)
from rrpo.data.spans import Span, check_spans
from rrpo.errors import RecordError, RRPOError

# How many problems an aggregated error spells out before summarising the rest.
_MAX_LISTED = 30


class RecordErrors(RecordError):
    """Several bad records at once. `problems` holds one RecordError per problem; `record` is the
    file. The message lists them all (up to 30, then a count)."""

    def __init__(self, source: object, problems: Sequence[RecordError]):
        self.problems = list(problems)
        lines = [f"  {p}" for p in self.problems[:_MAX_LISTED]]
        if len(self.problems) > _MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - _MAX_LISTED} more")
        n = len(self.problems)
        reason = f"{n} problem{'s' if n != 1 else ''}:\n" + "\n".join(lines)
        RRPOError.__init__(self, f"{source}: {reason}")
        self.record = str(source)
        self.field = None
        self.reason = reason


def _where(where: object | None, record_id: object) -> str:
    """Label a record in an error: its id, prefixed by its place in a file when known."""
    rid = f"id {record_id!r}" if isinstance(record_id, str) and record_id else None
    if where is None:
        return rid or "(no id)"
    return f"{where} ({rid})" if rid else str(where)


def _check_str(label: str, name: str, value: Any, *, empty_ok: bool = False) -> None:
    if not isinstance(value, str):
        raise RecordError(label, name, f"expected a string, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise RecordError(label, name, "is empty")


def _check_options(label: str, options: Any, *, required: bool) -> None:
    if options is None:
        if required:
            raise RecordError(label, "options", "multiple-choice ('mcq') records need a list of options")
        return
    if not isinstance(options, list) or not all(isinstance(o, str) and o.strip() for o in options):
        raise RecordError(label, "options", "expected a list of non-empty strings")
    if required and len(options) < 2:
        raise RecordError(
            label, "options", f"a multiple-choice question needs at least 2 options, got {len(options)}"
        )
    if len(options) > len(LETTERS):
        raise RecordError(label, "options", f"at most {len(LETTERS)} options (A-Z), got {len(options)}")


def _check_metadata(label: str, metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise RecordError(label, "metadata", f"expected an object, got {type(metadata).__name__}")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as err:
        raise RecordError(label, "metadata", f"not JSON-serialisable: {err}") from None


def _fields_of(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _construct(cls: type, d: Any, where: object | None, aliases: dict[str, str] | None = None) -> Any:
    """Build a dataclass from a dict: required fields present, no unknown keys (typos would
    otherwise vanish silently). Values are checked afterwards by `validate()`."""
    label = _where(where, d.get("id") if isinstance(d, dict) else None)
    if not isinstance(d, dict):
        raise RecordError(label, None, f"expected a JSON object, got {type(d).__name__}")
    fields = _fields_of(cls)
    extra = set(d) - set(fields) - set(aliases or {})
    if extra:
        raise RecordError(
            label, sorted(extra)[0], f"unknown field(s) {sorted(extra)}; put extra data under 'metadata'"
        )
    missing = [
        n
        for n, f in fields.items()
        if n not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecordError(label, missing[0], f"missing required field(s) {missing}")
    return cls(**{k: v for k, v in d.items() if k in fields})


@dataclass
class PreferencePair:
    """One preference pair.

    `chosen_spans` / `rejected_spans` are sorted, non-overlapping half-open character ranges
    [start, end) into `chosen` / `rejected`: the differing concepts (span i of chosen is paired
    with span i of rejected by position when both sides have the same count). `video` is a path
    relative to a video root. `answer_type` is 'mcq', 'yesno' or 'open' when known.

    `question` is what was asked; `prompt`, when set, is the exact user text the model is given (the
    question rendered with its options and answer instruction, as `rrpo generate` writes it). Without
    `prompt` (pairs of other tools, the paper's files, files written before the field existed) the
    question is the prompt. `model_prompt` is the one to feed the model.
    """

    id: str
    video: str
    question: str
    chosen: str
    rejected: str
    chosen_spans: list[Span]
    rejected_spans: list[Span]
    options: list[str] | None = None
    answer_type: str | None = None
    source: str | None = None
    metadata: dict = field(default_factory=dict)
    prompt: str | None = None

    @property
    def model_prompt(self) -> str:
        """The user text the model is given for this pair: `prompt`, else `question`."""
        return self.prompt if self.prompt is not None else self.question

    @property
    def has_spans(self) -> bool:
        """Whether both responses carry at least one span (what the RRPO loss needs)."""
        return bool(self.chosen_spans) and bool(self.rejected_spans)

    def validate(self, where: object | None = None) -> PreferencePair:
        """Check types and spans; normalise spans to lists of tuples. Returns self.

        Raises RecordError naming the record (`where`, e.g. "pairs.jsonl line 3", and the id) and
        the field.
        """
        label = _where(where, self.id)
        _check_str(label, "id", self.id)
        _check_str(label, "video", self.video)
        _check_str(label, "question", self.question)
        if self.prompt is not None:
            _check_str(label, "prompt", self.prompt)
        _check_str(label, "chosen", self.chosen)
        _check_str(label, "rejected", self.rejected)
        for name, text in (("chosen_spans", self.chosen), ("rejected_spans", self.rejected)):
            spans = getattr(self, name)
            if not isinstance(spans, (list, tuple)):
                raise RecordError(
                    label, name, f"expected a list of [start, end] pairs, got {type(spans).__name__}"
                )
            try:
                setattr(self, name, check_spans(text, spans))
            except ValueError as err:
                raise RecordError(label, name, str(err)) from None
        if self.answer_type is not None and self.answer_type not in ANSWER_TYPES:
            raise RecordError(
                label, "answer_type", f"must be one of {list(ANSWER_TYPES)} or null, got {self.answer_type!r}"
            )
        _check_options(label, self.options, required=self.answer_type == "mcq")
        if self.source is not None:
            _check_str(label, "source", self.source, empty_ok=True)
        _check_metadata(label, self.metadata)
        return self

    def to_dict(self) -> dict:
        """JSON-ready dict; spans become lists of [start, end] lists."""
        d = dataclasses.asdict(self)
        d["chosen_spans"] = [list(s) for s in self.chosen_spans]
        d["rejected_spans"] = [list(s) for s in self.rejected_spans]
        return d

    @classmethod
    def from_dict(cls, d: dict, where: object | None = None) -> PreferencePair:
        """Build and validate a pair from a dict as written by `to_dict`. Unknown keys are an error."""
        return _construct(cls, d, where).validate(where)


@dataclass
class VideoQuestion:
    """A question about a video with its ground-truth answer: the input of data generation.

    answer_type:
      - 'mcq': `options` (the option texts, without letters) is required. The answer may be given
        as a letter ("B", "(B)", "B."), as the option text, or as both ("(B) the dog sits"); it is
        normalised so that `answer` is the option's text and `answer_letter` its letter ("B").
        `to_dict` writes both; `from_dict` checks they agree.
      - 'yesno': the answer is normalised to "yes" or "no" (case and a trailing period ignored).
      - 'open': any non-empty answer.

    The normalisation happens in `validate()` (which `from_dict` and `load_questions` call); build
    records through those, or call `validate()` yourself, before relying on `answer_letter`.
    """

    id: str
    video: str
    question: str
    answer: str
    answer_type: str
    options: list[str] | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def answer_index(self) -> int | None:
        """0-based index of the answer among `options` (mcq only; None otherwise)."""
        if self.answer_type != "mcq" or not self.options:
            return None
        try:
            return self.options.index(self.answer)
        except ValueError:
            return None

    @property
    def answer_letter(self) -> str | None:
        """The answer's option letter, "A" for the first option (mcq only; None otherwise)."""
        i = self.answer_index
        return None if i is None else LETTERS[i]

    def validate(self, where: object | None = None) -> VideoQuestion:
        """Check the fields and normalise the answer (see the class docstring). Returns self."""
        label = _where(where, self.id)
        _check_str(label, "id", self.id)
        _check_str(label, "video", self.video)
        _check_str(label, "question", self.question)
        if self.answer_type not in ANSWER_TYPES:
            raise RecordError(
                label, "answer_type", f"must be one of {list(ANSWER_TYPES)}, got {self.answer_type!r}"
            )
        _check_str(label, "answer", self.answer)
        _check_options(label, self.options, required=self.answer_type == "mcq")
        _check_metadata(label, self.metadata)
        if self.answer_type == "mcq":
            if len({o.strip().casefold() for o in self.options}) != len(self.options):
                raise RecordError(label, "options", "options repeat")
            index = match_option(self.answer, self.options)
            if index is None:
                letters = f"A-{LETTERS[len(self.options) - 1]}"
                raise RecordError(
                    label,
                    "answer",
                    f"{self.answer!r} is neither an option letter ({letters}) nor one of the options",
                )
            self.answer = self.options[index]
        elif self.answer_type == "yesno":
            norm = self.answer.strip().rstrip(".").strip().casefold()
            if norm not in ("yes", "no"):
                raise RecordError(
                    label, "answer", f"a yes/no question needs the answer 'yes' or 'no', got {self.answer!r}"
                )
            self.answer = norm
            if self.options is not None:
                raise RecordError(label, "options", "only multiple-choice ('mcq') records have options")
        elif self.options is not None:
            raise RecordError(label, "options", "only multiple-choice ('mcq') records have options")
        return self

    def to_dict(self) -> dict:
        """JSON-ready dict; mcq records also carry `answer_letter`."""
        d = dataclasses.asdict(self)
        if self.answer_type == "mcq":
            d["answer_letter"] = self.answer_letter
        return d

    @classmethod
    def from_dict(cls, d: dict, where: object | None = None) -> VideoQuestion:
        """Build, validate and normalise a question. An `answer_letter` key, if present, must name
        the same option as `answer`."""
        q = _construct(cls, d, where, aliases={"answer_letter": "answer"}).validate(where)
        letter = d.get("answer_letter")
        if letter is not None and letter != q.answer_letter:
            raise RecordError(
                _where(where, q.id),
                "answer_letter",
                f"{letter!r} disagrees with answer {q.answer!r} ({q.answer_letter})",
            )
        return q


# ----------------------------------------------------------------------------- files


def _iter_lines(path: Path, problems: list[RecordError]) -> Iterable[tuple[int, str]]:
    """(1-based line number, text) for each non-blank line of a UTF-8 text file; a line that is not
    UTF-8 becomes a problem naming the line and the byte (the other lines are still read)."""
    if not path.is_file():
        raise RRPOError(f"{path}: no such file")
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                problems.append(
                    RecordError(
                        f"{path} line {n}",
                        None,
                        f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                        "re-save the file as UTF-8",
                    )
                )
                continue
            if n == 1:
                line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark
            if line.strip():
                yield n, line


def _read_records(
    path: str | os.PathLike, cls: type, errors: Literal["raise", "collect"]
) -> tuple[list[Any], list[RecordError]]:
    """Parse a JSON Lines file (or, for questions, a JSON list) into validated records; collect
    every problem (bad JSON, bad fields, duplicate ids) instead of stopping at the first."""
    if errors not in ("raise", "collect"):
        raise ValueError(f"errors must be 'raise' or 'collect', got {errors!r}")
    path = Path(path)
    items: list[tuple[str, Any]] = []  # (where, parsed object)
    problems: list[RecordError] = []
    if cls is VideoQuestion and _looks_like_json_list(path):
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError as err:
            raise RecordError(
                path, None, f"not UTF-8 text (byte {err.start}); re-save the file as UTF-8"
            ) from None
        except json.JSONDecodeError as err:
            raise RecordError(path, None, f"not valid JSON: {err}") from None
        if not isinstance(data, list):
            raise RecordError(path, None, f"expected a JSON list of records, got {type(data).__name__}")
        items = [(f"{path} item {i}", d) for i, d in enumerate(data)]
    else:
        for n, line in _iter_lines(path, problems):
            try:
                items.append((f"{path} line {n}", json.loads(line)))
            except json.JSONDecodeError as err:
                problems.append(RecordError(f"{path} line {n}", None, f"not valid JSON: {err}"))
    records = []
    first_seen: dict[str, str] = {}
    for where, d in items:
        try:
            rec = cls.from_dict(d, where=where)
        except RecordError as err:
            problems.append(err)
            continue
        if rec.id in first_seen:
            problems.append(
                RecordError(_where(where, rec.id), "id", f"duplicate id, first used at {first_seen[rec.id]}")
            )
            continue
        first_seen[rec.id] = where
        records.append(rec)
    if problems and errors == "raise":
        raise RecordErrors(path, problems)
    return records, problems


def _looks_like_json_list(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open(encoding="utf-8", errors="replace") as f:
        head = f.read(4096).lstrip("\ufeff \t\r\n")
    return head.startswith("[")


def read_pairs(
    path: str | os.PathLike, errors: Literal["raise", "collect"] = "raise"
) -> list[PreferencePair] | tuple[list[PreferencePair], list[RecordError]]:
    """Read preference pairs from a JSON Lines file.

    With errors="raise" (default) any problem raises one `RecordErrors` listing every bad line;
    with errors="collect" returns (good pairs, problems).
    """
    pairs, problems = _read_records(path, PreferencePair, errors)
    return (pairs, problems) if errors == "collect" else pairs


def load_questions(
    path: str | os.PathLike, errors: Literal["raise", "collect"] = "raise"
) -> list[VideoQuestion] | tuple[list[VideoQuestion], list[RecordError]]:
    """Read questions from JSON Lines (or a JSON list); every record is validated up front.

    With errors="raise" (default) any problem, duplicate ids included, raises one `RecordErrors`
    listing them all; with errors="collect" returns (good questions, problems).
    """
    questions, problems = _read_records(path, VideoQuestion, errors)
    return (questions, problems) if errors == "collect" else questions


def write_jsonl_atomic(path: str | os.PathLike, dicts: Iterable[dict]) -> None:
    """Write JSON Lines beside `path` and rename the file over it (`rrpo.data.runs.atomic_write`), so a
    crash leaves either the old file or the new one."""
    from rrpo.data.runs import atomic_write

    with atomic_write(path) as f:
        for d in dicts:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


def _check_unique(records: Sequence[Any], kind: str) -> None:
    seen: dict[str, int] = {}
    problems = []
    for i, r in enumerate(records):
        if r.id in seen:
            problems.append(
                RecordError(
                    f"{kind} {i} (id {r.id!r})", "id", f"duplicate id, first used by {kind} {seen[r.id]}"
                )
            )
        seen.setdefault(r.id, i)
    if problems:
        raise RecordErrors(f"{len(records)} {kind}s", problems)


def write_pairs(path: str | os.PathLike, pairs: Sequence[PreferencePair]) -> None:
    """Validate `pairs` (ids unique) and write them as JSON Lines, atomically."""
    pairs = list(pairs)
    for i, p in enumerate(pairs):
        p.validate(where=f"pair {i}")
    _check_unique(pairs, "pair")
    write_jsonl_atomic(path, (p.to_dict() for p in pairs))


def write_questions(path: str | os.PathLike, questions: Sequence[VideoQuestion]) -> None:
    """Validate `questions` (ids unique) and write them as JSON Lines, atomically."""
    questions = list(questions)
    for i, q in enumerate(questions):
        q.validate(where=f"question {i}")
    _check_unique(questions, "question")
    write_jsonl_atomic(path, (q.to_dict() for q in questions))
