"""Character spans of the differing concepts, their `<MASK>` markup, and per-token span ids.

A span is a half-open character range [start, end) into a response. Span i (1-based, in order)
becomes span id i on every token that overlaps it; tokens outside every span get 0. This is the
`chosen_span_ids` / `rejected_span_ids` convention of `rrpo.losses`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Span = tuple[int, int]

_TAG = re.compile(r"\s*<MASK>\s*|\s*</MASK>\s*")


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
