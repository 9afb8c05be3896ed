"""Data records: preference pairs, questions, `<MASK>` span markup, resumable JSONL files.

See `record` (PreferencePair, VideoQuestion), `spans` (parse_masked, to_masked, token_span_ids),
`jsonl` (JsonlAppender) and `paper_format` (`rrpo convert`).
"""

from rrpo.data.jsonl import JsonlAppender, JsonlRepairWarning, read_jsonl, write_jsonl
from rrpo.data.record import (
    PreferencePair,
    RecordErrors,
    VideoQuestion,
    load_questions,
    read_pairs,
    write_pairs,
    write_questions,
)
from rrpo.data.spans import (
    MaskMarkupError,
    Span,
    parse_masked,
    span_ids_from_offsets,
    to_masked,
    token_span_ids,
    trim_spans,
)

__all__ = [
    "JsonlAppender",
    "JsonlRepairWarning",
    "MaskMarkupError",
    "PreferencePair",
    "RecordErrors",
    "Span",
    "VideoQuestion",
    "load_questions",
    "parse_masked",
    "read_jsonl",
    "read_pairs",
    "span_ids_from_offsets",
    "to_masked",
    "token_span_ids",
    "trim_spans",
    "write_jsonl",
    "write_pairs",
    "write_questions",
]
