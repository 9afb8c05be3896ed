"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL adapters (3-axis mrope positions, flattened patch pixel values).

Quirks handled here (see /work/shared/notes/offline-video-llms.md):
- Positions are 3-axis (temporal, height, width). The prefix's come from the model's own rope index; the
  text after the prefix continues at the same value on all axes, so responses get start + arange.
- Qwen2.5-VL's rope index silently ignores a missing `second_per_grid_ts` (wrong temporal positions), and
  Qwen3-VL's processor silently assumes 24 fps without `video_metadata`; both get metadata here from the
  sampled frame rate.
- transformers 5.x wants `mm_token_type_ids` covering the whole sequence (zeros for appended text).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rrpo.models.base import VideoLMAdapter


class Qwen2VLAdapter(VideoLMAdapter):
    """Qwen2-VL (e.g. Qwen/Qwen2-VL-7B-Instruct)."""

    family = "qwen2-vl"
    model_types = ("qwen2_vl",)
    model_class = "Qwen2VLForConditionalGeneration"
    # 448 = 16 merged patches of 28 px per side: 256 tokens per 2 frames, 2048 for 16 frames.
    default_frame_size = (448, 448)
    mrope = True

    def mm_keys(self) -> tuple[str, ...]:
        return ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")

    def processor_video_kwargs(self, frames: list[np.ndarray], sampled_fps: float) -> dict[str, Any]:
        # Frames arrive already sampled: never let the video processor re-sample them.
        return {"do_sample_frames": False}

    def prefix_positions(
        self, prefix_ids: torch.Tensor, mm: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, int]:
        """Rope index of the prefix plus one text token: [3, P] positions and the next text position.

        Appending one text token and reading its position asks the model's own function where text after
        the video continues (transformers' rule, not max + 1), so packed and plain passes agree.
        """
        dev = prefix_ids.device
        ids = torch.cat([prefix_ids, prefix_ids.new_zeros(1)]).unsqueeze(0)
        types = torch.cat([mm["mm_token_type_ids"].to(dev), mm["mm_token_type_ids"].new_zeros(1).to(dev)])
        kwargs = {"video_grid_thw": mm["video_grid_thw"].to(dev)}
        if "second_per_grid_ts" in mm:
            kwargs["second_per_grid_ts"] = mm["second_per_grid_ts"].to(dev)
        pos, _ = self.inner.get_rope_index(ids, mm_token_type_ids=types.unsqueeze(0), **kwargs)
        pos = pos[:, 0]  # [3, P + 1]
        start = pos[:, -1]
        if not bool((start == start[0]).all()):  # text positions are equal on all three axes
            raise RuntimeError(f"unexpected rope index for text after the video: {start.tolist()}")
        return pos[:, :-1], int(start[0])

    def model_mm_kwargs(self, batch_mm: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {k: v for k, v in batch_mm.items() if k in self.mm_keys()}


class Qwen25VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL (e.g. Qwen/Qwen2.5-VL-7B-Instruct): needs `second_per_grid_ts` (from video metadata)."""

    family = "qwen2.5-vl"
    model_types = ("qwen2_5_vl",)
    model_class = "Qwen2_5_VLForConditionalGeneration"

    def processor_video_kwargs(self, frames: list[np.ndarray], sampled_fps: float) -> dict[str, Any]:
        return {"do_sample_frames": False, "video_metadata": [video_metadata(f, sampled_fps) for f in frames]}


class Qwen3VLAdapter(Qwen25VLAdapter):
    """Qwen3-VL (e.g. Qwen/Qwen3-VL-8B-Instruct): timestamps in the prompt come from `video_metadata`."""

    family = "qwen3-vl"
    model_types = ("qwen3_vl",)
    model_class = "Qwen3VLForConditionalGeneration"
    # 448 = 14 merged patches of 32 px: 196 tokens per 2 frames.
    default_frame_size = (448, 448)

    def mm_keys(self) -> tuple[str, ...]:
        return ("pixel_values_videos", "video_grid_thw")


def video_metadata(frames: np.ndarray, sampled_fps: float):
    """transformers `VideoMetadata` for already-sampled frames `sampled_fps` apart (timestamps i / fps)."""
    from transformers.video_utils import VideoMetadata

    t, h, w = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
    return VideoMetadata(
        total_num_frames=t,
        fps=float(sampled_fps),
        width=w,
        height=h,
        duration=t / float(sampled_fps),
        frames_indices=list(range(t)),
    )
