"""Character spans of the differing concepts, their `<MASK>` markup, per-token span ids, and the
word-level alignment (`word_diff`) that finds the spans of two short texts.

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
from difflib import SequenceMatcher
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


# -- word-level alignment (the rule differ, and a pair's texts rendered with their spans) ---------
class DiffReject(RRPOError):
    """The differing concepts of a pair cannot be marked reliably; `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(f"no concept diff: {reason}")
        self.reason = reason


# Words (with inner apostrophes/hyphens: "don't", "left-hand") or single punctuation marks.
_TOKEN = re.compile(r"\w+(?:['’\-]\w+)*|[^\w\s]")


def _tokens(text: str, start: int = 0, end: int | None = None) -> list[tuple[str, int, int]]:
    return [
        (m.group(0), m.start(), m.end())
        for m in _TOKEN.finditer(text, start, len(text) if end is None else end)
    ]


def _is_word(token: str) -> bool:
    return any(ch.isalnum() for ch in token)


def word_diff(
    chosen: str,
    rejected: str,
    chosen_region: Span | None = None,
    rejected_region: Span | None = None,
) -> list[tuple[Span, Span]]:
    """Paired character spans of the differing word runs of two texts (or of regions of them).

    Words and punctuation marks are aligned with `difflib.SequenceMatcher` (case-insensitive). Each
    replaced run of words becomes a pair of spans. A run that exists on one side only (an insertion
    or deletion) has no counterpart, but RRPO pairs y_i+ with y_i-, so it is widened by one
    neighbouring token on both sides (the next one, else the previous one; a word rather than a
    punctuation mark when there is the choice): "the big dog" vs "the dog" -> "big dog" / "dog".
    Pairs that then touch or overlap are merged. Differences in punctuation, case or spacing alone
    are ignored. Returns [(chosen_span, rejected_span), ...] in order; raises DiffReject when the
    texts do not differ in words or one side has no words to pair with.
    """
    ta = _tokens(chosen, *(chosen_region or (0, len(chosen))))
    tb = _tokens(rejected, *(rejected_region or (0, len(rejected))))
    if not ta or not tb:
        raise DiffReject("a response has no words to compare")
    ka = [t[0].lower() for t in ta]
    kb = [t[0].lower() for t in tb]
    groups: list[list[int]] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, ka, kb, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if not any(_is_word(t) for t in ka[i1:i2] + kb[j1:j2]):
            continue  # punctuation-only change
        groups.append([i1, i2, j1, j2])
    if not groups:
        raise DiffReject(
            "no difference" if chosen == rejected else "no difference beyond case, punctuation or spacing"
        )
    for g in groups:
        if g[0] == g[1] or g[2] == g[3]:
            _widen(g, ka, kb)
    merged: list[list[int]] = []
    for g in groups:
        if merged and (g[0] <= merged[-1][1] or g[2] <= merged[-1][3]):
            last = merged[-1]
            last[:] = [min(last[0], g[0]), max(last[1], g[1]), min(last[2], g[2]), max(last[3], g[3])]
        else:
            merged.append(g)
    return [((ta[i1][1], ta[i2 - 1][2]), (tb[j1][1], tb[j2 - 1][2])) for i1, i2, j1, j2 in merged]


def _widen(g: list[int], ka: list[str], kb: list[str]) -> None:
    """Give a one-sided group [i1, i2, j1, j2] a token on both sides (in place)."""
    i1, i2, j1, j2 = g
    forward = i2 < len(ka) and j2 < len(kb)
    backward = i1 > 0 and j1 > 0
    if not forward and not backward:
        side = "rejected" if i1 == i2 else "chosen"
        raise DiffReject(f"the {side} response has no words to pair with the other's")
    forward_word = forward and _is_word(ka[i2]) and _is_word(kb[j2])
    backward_word = backward and _is_word(ka[i1 - 1]) and _is_word(kb[j1 - 1])
    if forward and (forward_word or not backward_word):
        g[1], g[3] = i2 + 1, j2 + 1
    else:
        g[0], g[2] = i1 - 1, j1 - 1


# -- token-level alignment (VideoChat2's RRPO convention, its release's diff_lib.py) -----------------
def token_diff(a: Sequence[Any], b: Sequence[Any], min_match_size: int = 3) -> list[tuple[Span, Span]]:
    """Paired differing token ranges of two sequences, as the paper's VideoChat2 training derives its
    spans: `difflib` matching blocks of at least `min_match_size` tokens are kept as common, and the
    gaps between consecutive kept blocks (before the first, between, after the last) are paired in
    order when neither side's gap is empty. Returns [((a_start, a_end), (b_start, b_end)), ...]."""
    blocks = SequenceMatcher(None, list(a), list(b), autojunk=False).get_matching_blocks()
    kept = [m for m in blocks[:-1] if m.size >= min_match_size] + [blocks[-1]]  # the end sentinel stays
    pairs, ai, bi = [], 0, 0
    for m in kept:
        if m.a > ai and m.b > bi:
            pairs.append(((ai, m.a), (bi, m.b)))
        ai, bi = m.a + m.size, m.b + m.size
    return pairs


def token_diff_spans(
    tokenizer: Any, chosen: str, rejected: str, min_match_size: int = 3
) -> tuple[list[Span], list[Span]]:
    """Character spans of `token_diff` over the two texts' tokens (a fast tokenizer's offsets), each
    trimmed of whitespace; pairs whose span would be empty on either side are dropped."""
    enc = [tokenizer(t, add_special_tokens=False, return_offsets_mapping=True) for t in (chosen, rejected)]
    out: tuple[list[Span], list[Span]] = ([], [])
    for (ca, cb), (ra, rb) in token_diff(enc[0]["input_ids"], enc[1]["input_ids"], min_match_size):
        spans = []
        for text, e, (s, t) in ((chosen, enc[0], (ca, cb)), (rejected, enc[1], (ra, rb))):
            start, end = e["offset_mapping"][s][0], e["offset_mapping"][t - 1][1]
            try:
                spans.append(trim_spans(text, [(start, end)])[0])
            except ValueError:  # only whitespace (a lone space token)
                spans.append(None)
        if spans[0] and spans[1]:
            out[0].append(spans[0])
            out[1].append(spans[1])
    return out
