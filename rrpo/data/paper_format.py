"""Import and export the RRPO paper's released preference data (arXiv 2504.12083, github.com/pritamqu/RRPO).

The paper's training code reads a JSON list of records like::

    {"question": "<image>\\nWhat does the man do ...?",
     "answer": "He takes out a bottle of milk ...",            # preferred  -> chosen
     "pred": "He takes out an apple ...",                      # non-preferred -> rejected
     "answer_masked": "He takes out <MASK> a bottle of milk </MASK> ...",
     "pred_masked": "He takes out <MASK> an apple </MASK> ...",
     "src": "data-source", "sample_id": 0, "video": "video.mp4"}   # or "media_path"

Import (`import_paper`):
- chosen = answer, rejected = pred; spans come from the masked texts (`rrpo.data.spans.parse_masked`).
- The leading "<image>\\n" / "<video>\\n" placeholder of the question (LLaVA's media token, which
  the paper uses for video too) is stripped: our models place the video themselves. Export adds
  "<image>\\n" back.
- id = str(sample_id); when sample_ids collide within the file, the colliding records get
  "{src}-{sample_id}" instead. The original sample_id is kept in metadata["paper_sample_id"] when
  it differs from the id (an int, or a prefixed id).
- When a masked text reduces to its plain text only up to whitespace (e.g. "milk <MASK> s </MASK>"
  for "milks"), spans are carried over by aligning the non-space characters; `aligned` counts them.
- A record is rejected, with a reason code (`REJECT_REASONS`) and the original record, when a
  field is missing or malformed, its markup does not parse or does not reduce to its plain text,
  either side has no span (the RRPO loss needs both), both responses are identical, its id repeats,
  or (only when a video root is given) its video file is missing.

Export (`export_paper`) writes the same format, with `<MASK>` markup from `to_masked`, plus the
keys `id`, `options`, `answer_type` and `metadata` (which the paper's loader ignores), so that
`import_paper(export_paper(pairs)) == pairs` exactly for spans without edge whitespace
(`rrpo.data.spans.trim_spans`).
"""

from __future__ import annotations

import bisect
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrpo.data.record import PreferencePair, read_pairs, write_jsonl_atomic, write_pairs
from rrpo.data.spans import MaskMarkupError, Span, parse_masked, to_masked
from rrpo.errors import RecordError, RRPOError

REJECT_REASONS = {
    "malformed": "a required field is missing or has the wrong type",
    "bad_markup": "the <MASK> markup cannot be parsed (nested, unbalanced or empty tags)",
    "masked_mismatch": "the masked text without its tags is not the plain text",
    "no_span": "the chosen or the rejected response has no <MASK> span (RRPO needs both)",
    "identical": "chosen and rejected are the same text",
    "duplicate_id": "another record already has this id",
    "missing_video": "the video file does not exist under the video root",
}

# The media placeholder LLaVA-style training code puts before the question.
_PLACEHOLDER = re.compile(r"^\s*<(?:image|video)>[ \t]*\r?\n?")
EXPORT_PLACEHOLDER = "<image>\n"

_KNOWN_KEYS = {
    "question", "answer", "pred", "answer_masked", "pred_masked", "src", "sample_id", "video", "media_path",
    "id", "options", "answer_type", "metadata",
}  # fmt: skip


class Rejected(Exception):
    """A paper record that cannot become a pair. `reason` is a key of REJECT_REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class ImportResult:
    """What `import_paper` made of a list of records."""

    pairs: list[PreferencePair]
    rejects: list[dict]  # {"index", "id", "reason", "detail", "record"}
    read: int
    aligned: int = 0  # accepted after a whitespace-only alignment of masked and plain text
    counts: Counter = field(default_factory=Counter)  # rejects by reason


def strip_placeholder(question: str) -> str:
    """Remove a leading "<image>\\n" or "<video>\\n" media placeholder from a question."""
    return _PLACEHOLDER.sub("", question, count=1)


def align_spans(reduced: str, spans: Sequence[Span], plain: str) -> list[Span] | None:
    """Carry spans over from `reduced` to `plain` when the two differ only in whitespace.

    Both texts' non-whitespace characters are matched one to one; a span maps to the range from
    its first to its last non-space character. Returns None when the non-space characters differ.
    """
    r_idx = [i for i, c in enumerate(reduced) if not c.isspace()]
    p_idx = [i for i, c in enumerate(plain) if not c.isspace()]
    if [reduced[i] for i in r_idx] != [plain[i] for i in p_idx]:
        return None
    out = []
    for a, b in spans:
        first = bisect.bisect_left(r_idx, a)
        last = bisect.bisect_left(r_idx, b) - 1
        if last < first:  # only whitespace: parse_masked never returns such a span
            return None
        out.append((p_idx[first], p_idx[last] + 1))
    return out


def _text(rec: dict, key: str) -> str:
    value = rec.get(key)
    if value is None:
        raise Rejected("malformed", f"missing field '{key}'")
    if not isinstance(value, str):
        raise Rejected("malformed", f"field '{key}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise Rejected("malformed", f"field '{key}' is empty")
    return value


def _spans(rec: dict, masked_key: str, plain: str) -> tuple[list[Span], bool]:
    """Spans of `plain` from `rec[masked_key]`; also whether whitespace alignment was needed."""
    masked = _text(rec, masked_key)
    try:
        reduced, spans = parse_masked(masked)
    except MaskMarkupError as err:
        raise Rejected("bad_markup", f"'{masked_key}': {err}") from None
    if reduced == plain:
        return spans, False
    aligned = align_spans(reduced, spans, plain)
    if aligned is None:
        raise Rejected("masked_mismatch", f"'{masked_key}' without its tags is {reduced!r}, not {plain!r}")
    return aligned, True


def _pair_from_record(
    rec: Any, pair_id: str, video_root: Path | None, span_fallback: Any = None
) -> tuple[PreferencePair, bool]:
    """One paper record -> (pair, whether alignment was needed). Raises Rejected. `span_fallback`:
    (chosen, rejected) -> (spans, spans) for records with no `<MASK>` markup on either side."""
    if not isinstance(rec, dict):
        raise Rejected("malformed", f"expected a JSON object, got {type(rec).__name__}")
    question = strip_placeholder(_text(rec, "question"))
    if not question.strip():
        raise Rejected("malformed", "the question is empty after removing its media placeholder")
    chosen, rejected = _text(rec, "answer"), _text(rec, "pred")
    video = _text(rec, "video" if rec.get("video") is not None else "media_path")
    chosen_spans, a1 = _spans(rec, "answer_masked", chosen)
    rejected_spans, a2 = _spans(rec, "pred_masked", rejected)
    spans_from = None
    if span_fallback is not None and not chosen_spans and not rejected_spans and chosen != rejected:
        chosen_spans, rejected_spans = span_fallback(chosen, rejected)
        spans_from = "token-diff"
    if not chosen_spans or not rejected_spans:
        sides = [n for n, s in (("answer_masked", chosen_spans), ("pred_masked", rejected_spans)) if not s]
        raise Rejected("no_span", f"no <MASK> span in {' or '.join(sides)}")
    if chosen == rejected:
        raise Rejected("identical", "answer and pred are the same text")
    src = rec.get("src")
    if src is not None and not isinstance(src, str):
        raise Rejected("malformed", f"field 'src' must be a string, got {type(src).__name__}")
    metadata = rec.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise Rejected("malformed", f"field 'metadata' must be an object, got {type(metadata).__name__}")
    metadata = dict(metadata)
    extra = {k: v for k, v in rec.items() if k not in _KNOWN_KEYS}
    if extra:
        metadata["paper_extra"] = extra
    if "sample_id" in rec and rec["sample_id"] != pair_id:
        metadata["paper_sample_id"] = rec["sample_id"]
    if spans_from:
        metadata["spans_from"] = spans_from
    pair = PreferencePair(
        id=pair_id,
        video=video,
        question=question,
        chosen=chosen,
        rejected=rejected,
        chosen_spans=chosen_spans,
        rejected_spans=rejected_spans,
        options=rec.get("options"),
        answer_type=rec.get("answer_type"),
        source=src,
        metadata=metadata,
    )
    try:
        pair.validate()
    except RecordError as err:
        raise Rejected("malformed", f"field '{err.field}': {err.reason}") from None
    if video_root is not None and not (video_root / video).is_file():
        raise Rejected("missing_video", f"{video_root / video} not found")
    return pair, a1 or a2


def _sample_key(rec: Any) -> str | None:
    """The id a record asks for: our exported `id`, else str(sample_id); None if it has neither."""
    if not isinstance(rec, dict):
        return None
    for key in ("id", "sample_id"):
        value = rec.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return str(value)
    return None


def _assign_ids(records: Sequence[Any]) -> list[str | None]:
    """Ids for all records: str(sample_id), or "{src}-{sample_id}" where sample_ids collide.
    Computed over every input record, so an id does not depend on which records are rejected."""
    keys = [_sample_key(r) for r in records]
    plain_counts = Counter(k for r, k in zip(records, keys) if k is not None and r.get("id") is None)
    ids: list[str | None] = []
    for r, k in zip(records, keys):
        if k is not None and r.get("id") is None and plain_counts[k] > 1:
            k = f"{r.get('src') or ''}-{k}"
        ids.append(k)
    return ids


def import_paper(
    records: Sequence[Any], video_root: str | os.PathLike | None = None, span_fallback: Any = None
) -> ImportResult:
    """Convert the paper's records to PreferencePairs; bad records become rejects (see module doc).
    `span_fallback` marks records without `<MASK>` markup (e.g. `token_diff_spans` with the model's
    tokenizer: the paper's VideoChat2 convention)."""
    root = Path(video_root) if video_root is not None else None
    result = ImportResult(pairs=[], rejects=[], read=len(records))
    seen: dict[str, int] = {}
    for index, (rec, pair_id) in enumerate(zip(records, _assign_ids(records))):
        try:
            if not isinstance(rec, dict):
                raise Rejected("malformed", f"expected a JSON object, got {type(rec).__name__}")
            if pair_id is None:
                raise Rejected("malformed", "missing field 'sample_id' (a string or an integer)")
            if pair_id in seen:
                raise Rejected("duplicate_id", f"id {pair_id!r} was already used by record {seen[pair_id]}")
            pair, aligned = _pair_from_record(rec, pair_id, root, span_fallback)
        except Rejected as rej:
            result.rejects.append(
                {"index": index, "id": pair_id, "reason": rej.reason, "detail": rej.detail, "record": rec}
            )
            result.counts[rej.reason] += 1
            continue
        seen[pair_id] = index
        result.pairs.append(pair)
        result.aligned += aligned
    return result


def pair_to_paper(pair: PreferencePair) -> dict:
    """One pair in the paper's format (plus `id`, `options`, `answer_type`, `metadata`)."""
    pair.validate()
    metadata = dict(pair.metadata)
    rec: dict[str, Any] = {
        "question": EXPORT_PLACEHOLDER + pair.model_prompt,
        "answer": pair.chosen,
        "pred": pair.rejected,
        "answer_masked": to_masked(pair.chosen, pair.chosen_spans),
        "pred_masked": to_masked(pair.rejected, pair.rejected_spans),
    }
    if pair.source is not None:
        rec["src"] = pair.source
    rec["sample_id"] = metadata.get("paper_sample_id", pair.id)
    rec["video"] = pair.video
    rec["id"] = pair.id
    if pair.options is not None:
        rec["options"] = list(pair.options)
    if pair.answer_type is not None:
        rec["answer_type"] = pair.answer_type
    if metadata:
        rec["metadata"] = metadata
    return rec


def export_paper(pairs: Sequence[PreferencePair]) -> list[dict]:
    """Pairs in the paper's format; `import_paper` of the result gives the pairs back."""
    out = []
    for i, pair in enumerate(pairs):
        try:
            out.append(pair_to_paper(pair))
        except MaskMarkupError as err:
            raise RecordError(f"pair {i} (id {pair.id!r})", "chosen_spans/rejected_spans", str(err)) from None
    return out


def read_paper_json(path: str | os.PathLike) -> list[Any]:
    """Load the paper's JSON list (JSON Lines is accepted too)."""
    path = Path(path)
    if not path.is_file():
        raise RRPOError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    if text.lstrip("\ufeff \t\r\n").startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise RecordError(path, None, f"not valid JSON: {err}") from None
        return data
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise RecordError(f"{path} line {n}", None, f"not valid JSON: {err}") from None
    return records


def default_rejects_path(out: str | os.PathLike) -> Path:
    """`<out stem>.rejects.jsonl` beside `out`."""
    out = Path(out)
    return out.with_name(f"{out.stem}.rejects.jsonl")


def convert_from_paper(
    src: str | os.PathLike,
    out: str | os.PathLike,
    rejects: str | os.PathLike | None = None,
    video_root: str | os.PathLike | None = None,
    span_fallback: Any = None,
) -> ImportResult:
    """Read the paper's JSON at `src`, write pairs to `out` (JSONL) and rejects to `rejects`
    (default `default_rejects_path(out)`; written even when empty, so a stale file never lingers)."""
    if video_root is not None and not Path(video_root).is_dir():
        raise RRPOError(f"--video-root {video_root}: not a directory")
    result = import_paper(read_paper_json(src), video_root=video_root, span_fallback=span_fallback)
    write_pairs(out, result.pairs)
    write_jsonl_atomic(rejects if rejects is not None else default_rejects_path(out), result.rejects)
    return result


def convert_to_paper(src: str | os.PathLike, out: str | os.PathLike) -> int:
    """Read pairs (JSONL) from `src`, write the paper's JSON list to `out`; returns the count."""
    records = export_paper(read_pairs(src))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(records, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return len(records)
