"""The processor's video tensors of a clip computed once for all the questions asked about it.

`rrpo eval` asks every question of one video (and segment) in a row, with the same decoded `Clip`
(`rrpo.eval.runner`). transformers' processors run the video processor inside `processor(text=...,
videos=...)` on every call, so each question paid for resizing and normalising the same frames again
(about 15 ms per question for a 16-frame toy clip). `ReusingVideoProcessor` stands in for the
processor's `video_processor` during one call: it computes the outputs of each video it has not seen
(one call on those videos alone, with their own per-video arguments) and concatenates the per-video
outputs in the order asked, which is what one call on the whole batch returns (checked per family in
tests/test_real_checkpoints.py). The text side (placeholder expansion, tokenising) is the processor's
own, unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

# Per-video keyword arguments of a video processor call (lists with one entry per video).
PER_VIDEO_KWARGS = ("video_metadata",)


class ReusingVideoProcessor:
    """Wraps a video processor: per-video outputs memoised by the frames' identity (the array object,
    held by the memo so that its id stays unique) and the call's other arguments; the last `keep`
    videos are kept."""

    # Private names only (and `computed`): every other attribute is the real processor's (`size`, ...).
    def __init__(self, inner: Any, keep: int = 16):
        self._inner = inner
        self._keep = keep
        self._memo: OrderedDict[tuple, tuple[np.ndarray, dict[str, Any]]] = OrderedDict()
        self.computed = 0  # videos the inner processor was run on

    def __getattr__(self, name: str) -> Any:  # merge_size, temporal_patch_size, ... of the real one
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def _key(self, frames: Any, index: int, kwargs: dict[str, Any]) -> tuple:
        shared = tuple(sorted((k, repr(v)) for k, v in kwargs.items() if k not in PER_VIDEO_KWARGS))
        own = tuple((k, repr(kwargs[k][index])) for k in PER_VIDEO_KWARGS if isinstance(kwargs.get(k), list))
        return (id(frames), getattr(frames, "shape", None), shared, own)

    def __call__(self, videos: Sequence[Any], **kwargs: Any) -> Any:
        videos = list(videos)
        keys = [self._key(v, i, kwargs) for i, v in enumerate(videos)]
        missing: dict[tuple, int] = {}  # each new video's first place in the batch
        for i, k in enumerate(keys):
            if k not in self._memo:
                missing.setdefault(k, i)
        for i in missing.values():  # one call per new video: its outputs are then exactly its own
            own = {
                k: ([v[i]] if k in PER_VIDEO_KWARGS and isinstance(v, list) else v) for k, v in kwargs.items()
            }
            self._memo[keys[i]] = (videos[i], dict(self._inner([videos[i]], **own)))
            self.computed += 1
        for k in keys:
            self._memo.move_to_end(k)
        parts = [self._memo[k][1] for k in keys]
        while len(self._memo) > max(self._keep, len(set(keys))):
            self._memo.popitem(last=False)
        return _concat(parts, kwargs.get("return_tensors"))


def _concat(parts: list[dict[str, Any]], return_tensors: Any) -> Any:
    from transformers import BatchFeature

    out: dict[str, Any] = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        if torch.is_tensor(values[0]):
            out[key] = torch.cat(values, dim=0)
        elif isinstance(values[0], list):
            out[key] = [x for v in values for x in v]
        else:
            out[key] = values[0]
    return BatchFeature(out, tensor_type=return_tensors)


@contextmanager
def reusing_video_tensors(processor: Any, reuser: ReusingVideoProcessor | None) -> Iterator[None]:
    """Within the block, `processor.video_processor` is `reuser` (nothing changes with None)."""
    if not reuser or not hasattr(processor, "video_processor"):
        yield
        return
    original = processor.video_processor
    processor.video_processor = reuser
    try:
        yield
    finally:
        processor.video_processor = original
