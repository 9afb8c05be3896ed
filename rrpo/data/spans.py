"""Character spans of the differing concepts, their `<MASK>` markup, and per-token span ids.

A span is a half-open character range [start, end) into a response. Span i (1-based, in order)
becomes span id i on every token that overlaps it; tokens outside every span get 0. This is the
`chosen_span_ids` / `rejected_span_ids` convention of `rrpo.losses`.

The RRPO paper (Sarkar et al., arXiv 2504.12083) releases its pairs with the differing phrases
wrapped in `<MASK> ... </MASK>`, written with a space inside each tag:
"He takes out <MASK> a bottle of milk </MASK> and ...". Whitespace *inside* a tag is markup;
whitespace *outside* belongs to the text. So spans parsed from markup never begin or end with
whitespace, and `to_masked` moves any edge whitespace of a span outside its tags (see `trim_spans`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rrpo.errors import RRPOError

Span = tuple[int, int]

MASK_OPEN = "<MASK>"
MASK_CLOSE = "</MASK>"

# Tolerant of case and of spaces inside the angle brackets ("< /mask >"), which hand-edited data has.
_TAG = re.compile(r"<\s*(/?)\s*MASK\s*>", re.IGNORECASE)


class MaskMarkupError(RRPOError, ValueError):
    """`<MASK>` markup that cannot be read: nested, unbalanced, or empty tags, or text/spans that
    cannot be written as markup. `position` is the character offset of the problem in the input."""

    def __init__(self, reason: str, position: int | None = None):
        super().__init__(reason if position is None else f"{reason} (at character {position})")
        self.reason = reason
        self.position = position


def parse_masked(text: str) -> tuple[str, list[Span]]:
    """Remove `<MASK> ... </MASK>` markup; return the plain text and the masked spans in it.

    Whitespace just inside a tag is dropped (the paper writes "<MASK> Yes </MASK>"); whitespace
    outside is kept: "takes out <MASK> a bottle of milk </MASK> and" -> "takes out a bottle of milk
    and" with one span on "a bottle of milk". Tags are matched case-insensitively.

    Raises MaskMarkupError on a nested `<MASK>`, a `</MASK>` without an opening tag, an unclosed
    `<MASK>`, or a span with nothing but whitespace inside.
    """
    out: list[str] = []
    length = 0  # len("".join(out)), kept incrementally
    spans: list[Span] = []
    pos = 0
    open_at: int | None = None  # character offset of the open tag in `text`
    start = 0
    for m in _TAG.finditer(text):
        closing = m.group(1) == "/"
        if not closing:
            if open_at is not None:
                raise MaskMarkupError(
                    f"nested {MASK_OPEN}: the one opened at character {open_at} is not closed", m.start()
                )
            piece = text[pos : m.start()]
            out.append(piece)
            length += len(piece)
            open_at = m.start()
            pos = m.end()
            while pos < len(text) and text[pos].isspace():  # markup space inside the open tag
                pos += 1
            start = length
        else:
            if open_at is None:
                raise MaskMarkupError(f"{MASK_CLOSE} without a matching {MASK_OPEN}", m.start())
            inner = text[pos : m.start()].rstrip()  # markup space inside the close tag
            if not inner:
                raise MaskMarkupError(f"empty {MASK_OPEN} {MASK_CLOSE} span", open_at)
            out.append(inner)
            length += len(inner)
            spans.append((start, length))
            open_at = None
            pos = m.end()
    if open_at is not None:
        raise MaskMarkupError(f"{MASK_OPEN} is never closed", open_at)
    out.append(text[pos:])
    return "".join(out), spans


def check_spans(text: str, spans: Sequence[Any]) -> list[Span]:
    """Check that `spans` are (start, end) int pairs with 0 <= start < end <= len(text), sorted and
    non-overlapping (touching is allowed). Returns them as a list of tuples; raises ValueError naming
    the first bad span."""
    result: list[Span] = []
    prev_end = 0
    for i, span in enumerate(spans):
        if (
            not isinstance(span, (list, tuple))
            or len(span) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in span)
        ):
            raise ValueError(f"span {i} is {span!r}, expected a pair of ints [start, end]")
        a, b = span
        if not 0 <= a < b <= len(text):
            raise ValueError(
                f"span {i} {[a, b]} is not a non-empty range inside the text (length {len(text)})"
            )
        if a < prev_end:
            raise ValueError(
                f"span {i} {[a, b]} overlaps or precedes the span before it (which ends at {prev_end})"
            )
        prev_end = b
        result.append((a, b))
    return result


def trim_spans(text: str, spans: Sequence[Span]) -> list[Span]:
    """Shrink each span to exclude whitespace at its edges (the form `parse_masked` returns).

    Token span ids rarely change: a leading-space BPE token " red" overlaps both (0, 4) and (1, 4).
    Raises ValueError if a span holds only whitespace.
    """
    result = []
    for i, (a, b) in enumerate(check_spans(text, spans)):
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a == b:
            raise ValueError(f"span {i} holds only whitespace")
        result.append((a, b))
    return result


def to_masked(text: str, spans: Sequence[Span]) -> str:
    """Write `text` with each span wrapped as "<MASK> span </MASK>" (the paper's spacing).

    Inverse of `parse_masked`: `parse_masked(to_masked(t, s)) == (t, trim_spans(t, s))`, so exact for
    spans without edge whitespace. Raises MaskMarkupError if the spans are invalid, a span is only
    whitespace, or the text already contains something that reads as a mask tag.
    """
    tag = _TAG.search(text)
    if tag:
        raise MaskMarkupError(f"text already contains the tag {tag.group(0)!r}", tag.start())
    try:
        spans = trim_spans(text, spans)
    except ValueError as err:
        raise MaskMarkupError(str(err)) from None
    out = []
    pos = 0
    for a, b in spans:
        out += [text[pos:a], MASK_OPEN, " ", text[a:b], " ", MASK_CLOSE]
        pos = b
    out.append(text[pos:])
    return "".join(out)


def span_ids_from_offsets(offsets: Sequence[tuple[int, int]], spans: Sequence[Span]) -> list[int]:
    """Span id per token from a fast tokenizer's offset mapping.

    A token partly inside a span counts as inside (so a leading-space BPE token " red" is inside the
    span of "red"). Zero-width tokens (special tokens, offsets (0, 0)) are never inside.
    """
    ids = [0] * len(offsets)
    for i, (s, e) in enumerate(offsets):
        if e <= s:
            continue
        for k, (a, b) in enumerate(spans, start=1):
            if s < b and a < e:
                ids[i] = k
                break
    return ids


def fill_offset_gaps(offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Extend each token's start back to where the previous token ended.

    Some fast tokenizers trim whitespace out of their offsets (`ByteLevel(trim_offsets=True)`, as in
    GPT-2): " red" reports (1, 4) and a lone space token reports an empty range. The characters in
    such a gap are always whitespace that belongs to the following token, so giving it back makes
    the offsets those of the untrimmed tokenizer. Tokens that truly cover no text (a space the
    tokenizer added itself) stay empty.
    """
    out = []
    prev_end = 0
    for s, e in offsets:
        out.append((min(s, prev_end), e))
        prev_end = max(prev_end, e)
    return out


def token_span_ids(tokenizer: Any, text: str, spans: Sequence[Span]) -> tuple[list[int], list[int]]:
    """Tokenise `text` without special tokens; return (input_ids, span_ids), both of length T.

    `tokenizer` must be a transformers fast tokenizer: offsets come from `return_offsets_mapping`
    (character offsets into `text`; for byte-level BPE a token holding part of a multi-byte
    character reports that whole character), with trimmed whitespace given back to its token
    (`fill_offset_gaps`). span_ids[t] is i (1..N) when token t overlaps the i-th span, else 0; so a
    leading-space token " red" is inside the span of "red".
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"token_span_ids needs a fast tokenizer (offset mapping); got {type(tokenizer).__name__}"
        )
    spans = check_spans(text, spans)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(enc["input_ids"])
    offsets = fill_offset_gaps([tuple(o) for o in enc["offset_mapping"]])
    return input_ids, span_ids_from_offsets(offsets, spans)
