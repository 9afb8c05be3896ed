"""Encode one preference pair: the prefix (chat template + video + question + generation prompt) through the
family's processor, and each response with its span ids (`rrpo.models.packing` has the whole picture)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rrpo.data.spans import token_span_ids
from rrpo.errors import RRPOError
from rrpo.models.base import EncodedPair, SkipPair, VideoLMAdapter, as_clip
from rrpo.video.clip import Clip


def encode_prefix(
    vlm: VideoLMAdapter, clip: Clip | np.ndarray, prompt: str
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Prefix token ids [P] and the video tensors of one (clip, prompt) through the family processor.

    `clip`: a `rrpo.video.Clip` (frames with their real timing) or bare frames (see `as_clip`)."""
    inputs = vlm.video_inputs([vlm.prompt_text(prompt)], [as_clip(clip)])
    mm: dict[str, torch.Tensor] = {}
    for key in vlm.mm_keys():
        if key in inputs and inputs[key] is not None:
            mm[key] = torch.as_tensor(inputs[key])
    if "mm_token_type_ids" in inputs:
        mm["mm_token_type_ids"] = torch.as_tensor(inputs["mm_token_type_ids"])[0]
    return torch.as_tensor(inputs["input_ids"])[0], mm


def _check_spans(spans: Sequence[tuple[int, int]], text: str, field: str) -> list[tuple[int, int]]:
    out = []
    for k, span in enumerate(spans):
        try:
            a, b = int(span[0]), int(span[1])
        except (TypeError, ValueError, IndexError) as err:
            raise RRPOError(f"{field}[{k}]: a span must be (start, end), got {span!r}") from err
        if not 0 <= a < b <= len(text):
            raise RRPOError(f"{field}[{k}] = ({a}, {b}) is not inside the response of {len(text)} characters")
        out.append((a, b))
    return out


def encode_response(
    vlm: VideoLMAdapter, text: str, spans: Sequence[tuple[int, int]], *, field: str = "response"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [N] of `text` + the template's end-of-turn, and their span ids [N] (0 outside spans).

    The response is tokenised on its own (with offsets) rather than inside the templated conversation:
    a processor's offsets refer to the text after the video placeholder is expanded.
    """
    spans = _check_spans(spans, text, f"{field}_spans")
    # The spans lie in `text`, so they mark the same characters of `text + turn_end`.
    input_ids, token_spans = token_span_ids(vlm.tokenizer, text + vlm.turn_end, spans)
    ids = torch.tensor(input_ids, dtype=torch.long)
    span_ids = torch.tensor(token_spans, dtype=torch.long)
    if spans and not bool((span_ids > 0).any()):
        raise RRPOError(f"{field}: no token overlaps the spans {spans}")
    return ids, span_ids


def encode_pair(
    vlm: VideoLMAdapter,
    frames: Clip | np.ndarray,
    prompt: str,
    chosen: str,
    rejected: str,
    chosen_spans: Sequence[tuple[int, int]],
    rejected_spans: Sequence[tuple[int, int]],
    *,
    max_length: int | None = None,
) -> EncodedPair:
    """Tokenise one preference pair (`frames`: a `Clip`, or bare uint8 [T, H, W, 3] frames).

    `max_length` bounds each sequence prefix + response (the length either would have on its own). The
    prefix is never truncated; responses lose tokens at their end (`truncated=True`). Raises `SkipPair`
    when the prefix alone reaches `max_length`, or a response that had span tokens would keep none.
    The clip's timing feeds Qwen2.5-VL's temporal positions and Qwen3-VL's prompt timestamps.
    """
    prefix_ids, mm = encode_prefix(vlm, frames, prompt)
    c_ids, c_spans = encode_response(vlm, chosen, chosen_spans, field="chosen")
    r_ids, r_spans = encode_response(vlm, rejected, rejected_spans, field="rejected")
    truncated = False
    if max_length is not None:
        p = prefix_ids.numel()
        room = max_length - p
        if room <= 0:
            raise SkipPair(f"the prompt and video take {p} tokens, max_length is {max_length}")
        cut = []
        for name, ids, sp in (("chosen", c_ids, c_spans), ("rejected", r_ids, r_spans)):
            if ids.numel() > room:
                truncated = True
                if bool((sp > 0).any()) and not bool((sp[:room] > 0).any()):
                    raise SkipPair(
                        f"{name} response would keep {room} of {ids.numel()} tokens (max_length {max_length}, "
                        f"prompt+video {p}) and lose every differing-span token"
                    )
                ids, sp = ids[:room], sp[:room]
            cut.append((ids, sp))
        (c_ids, c_spans), (r_ids, r_spans) = cut
    return EncodedPair(prefix_ids, c_ids, r_ids, c_spans, r_spans, mm, truncated)
