"""The `qwen2-vl` family (Qwen/Qwen2-VL-7B-Instruct), and what Qwen2.5-VL and Qwen3-VL (`qwen2_5_vl.py`,
`qwen3_vl.py`) build on: 3-axis mrope positions, flattened patch pixel values, the clip's timing.

Quirks handled here and in the two sibling modules (see /work/shared/notes/offline-video-llms.md):
- Positions are 3-axis (temporal, height, width). The prefix's come from the model's own rope index; the
  text after the prefix continues at the same value on all axes, so responses get start + arange.
- Qwen2.5-VL's rope index silently ignores a missing `second_per_grid_ts` (wrong temporal positions), and
  Qwen3-VL's processor silently assumes 24 fps without `video_metadata`; both get the clip's real timing
  here (source fps, the sampled frames' indices in the source, the sampled rate).
- Frames arrive at their native aspect ratio; the processor sizes them (`smart_resize`) with the
  per-frame pixel cap and the total budget across frames that qwen-vl-utils applies
  (`cap_pixels_per_frame=True`). Qwen2/2.5-VL checkpoints ship only an image `preprocessor_config.json`
  whose `max_pixels` (12.8 M) the video processor inherits; their reference video pipeline caps a frame
  at 768 x 28 x 28 pixels, which is used unless `--max-pixels` says otherwise.
- transformers 5.24's Qwen3-VL processor expands `<|video_pad|>` inside the template's
  `<|vision_start|>...<|vision_end|>`, nesting the markers; the official layout (Qwen's processor and
  qwen-vl-utils) is `<t seconds><|vision_start|>frame tokens<|vision_end|>` per frame pair, so the outer
  pair is removed before the processor runs.
- transformers 5.x wants `mm_token_type_ids` covering the whole sequence (zeros for appended text).
"""

from __future__ import annotations

from typing import Any

import torch

from rrpo.models.base import VideoLMAdapter
from rrpo.models.tiny_parts import mrope_section, qwen_ids, qwen_template, qwen_tokenizer
from rrpo.video.clip import Clip

# What rrpo.models.registry reads without importing this module (a literal: the CLI's list of families,
# its help and its family-only loading options come from it).
FAMILY = {"name": "qwen2-vl", "adapter": "Qwen2VLAdapter", "order": 1}

# qwen-vl-utils' VIDEO_MAX_PIXELS for Qwen2/2.5-VL (= the Qwen2-VL video processor's own class default).
QWEN2_VIDEO_MAX_PIXELS = 768 * 28 * 28


class Qwen2VLAdapter(VideoLMAdapter):
    """Qwen2-VL (e.g. Qwen/Qwen2-VL-7B-Instruct)."""

    family = FAMILY["name"]
    model_types = ("qwen2_vl",)
    model_class = "Qwen2VLForConditionalGeneration"
    mrope = True
    real_checkpoints = ("qwen2-vl",)
    # Qwen2-VL's vision `hidden_size` is the merger's output width (= the text hidden size).
    shrink_vision = {"embed_dim": 32, "depth": 1, "num_heads": 2, "hidden_size": 64}
    default_image_size = 56  # the smallest frame with a 2x2 merged grid (patch 14, merge 2)
    tiny_patch = 14

    def mm_keys(self) -> tuple[str, ...]:
        return ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")

    def video_size(self, num_frames: int) -> dict[str, int]:
        """The processor `size` for a clip: min/max pixels per frame (Qwen2/2.5: the reference cap)."""
        size = self.processor.video_processor.size
        longest = int(size.longest_edge or QWEN2_VIDEO_MAX_PIXELS)
        cap = int(self.max_pixels or QWEN2_VIDEO_MAX_PIXELS)
        return {"shortest_edge": int(size.shortest_edge), "longest_edge": min(longest, cap)}

    def processor_video_kwargs(self, clips: list[Clip]) -> dict[str, Any]:
        # Frames arrive already sampled: never let the video processor re-sample them.
        kwargs: dict[str, Any] = {
            "do_sample_frames": False,
            "video_metadata": [video_metadata(c) for c in clips],
            "cap_pixels_per_frame": True,
        }
        if self.frame_size is None:  # an explicit --frame-size goes through the processor's own settings
            kwargs["size"] = self.video_size(clips[0].num_frames)
        return kwargs

    def rope_positions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, mm: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The model's own 3-axis rope index [3, B, L] (padding excluded through `attention_mask`)."""
        dev = input_ids.device
        kwargs = {k: mm[k].to(dev) for k in ("video_grid_thw", "second_per_grid_ts") if k in mm}
        pos, _ = self.inner.get_rope_index(
            input_ids,
            mm_token_type_ids=mm["mm_token_type_ids"].to(dev),
            attention_mask=attention_mask.to(dev),
            **kwargs,
        )
        return pos * attention_mask.to(dev).unsqueeze(0)

    def model_mm_kwargs(self, batch_mm: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {k: v for k, v in batch_mm.items() if k in self.mm_keys()}

    # ----- tiny test model ---------------------------------------------------------------------------
    @classmethod
    def tiny_tokenizer(cls) -> Any:
        return qwen_tokenizer(qwen_template())

    @classmethod
    def tiny_rope(cls, head_dim: int) -> dict[str, Any]:
        return {"rope_type": "default", "mrope_section": mrope_section(head_dim), "rope_theta": 10000.0}

    @classmethod
    def tiny_vision(cls, text: dict[str, Any]) -> dict[str, Any]:
        return {"depth": 2, "num_heads": 2, "patch_size": cls.tiny_patch, "spatial_merge_size": 2,
                "temporal_patch_size": 2, "embed_dim": 32, "hidden_size": text["hidden_size"], "mlp_ratio": 2}  # fmt: skip

    @classmethod
    def tiny_config(cls, tokenizer: Any, text: dict[str, Any], image_size: int, num_frames: int) -> Any:
        import transformers

        head_dim = text["hidden_size"] // text["num_attention_heads"]
        config_class = getattr(transformers, cls.model_class.replace("ForConditionalGeneration", "Config"))
        return config_class(
            text_config={**text, "rope_parameters": cls.tiny_rope(head_dim)},
            vision_config=cls.tiny_vision(text),
            **qwen_ids(tokenizer),
        )

    @classmethod
    def tiny_video_processor(cls, side: int, num_frames: int) -> Any:
        """A video processor that keeps `side` x `side` frames as they are (the processor rounds to the
        patch x merge factor)."""
        import transformers

        factor = cls.tiny_patch * 2
        return transformers.Qwen2VLVideoProcessor(
            patch_size=cls.tiny_patch, temporal_patch_size=2, merge_size=2, cap_pixels_per_frame=False,
            min_pixels=factor * factor, max_pixels=side * side,
        )  # fmt: skip

    @classmethod
    def tiny_processor(cls, tokenizer: Any, image_size: int, num_frames: int) -> Any:
        import transformers

        factor = cls.tiny_patch * 2
        side = max(factor, round(image_size / factor) * factor)
        image_proc = transformers.Qwen2VLImageProcessor(
            patch_size=cls.tiny_patch, temporal_patch_size=2, merge_size=2,
            min_pixels=factor * factor, max_pixels=side * side,
        )  # fmt: skip
        processor_class = getattr(
            transformers, cls.model_class.replace("ForConditionalGeneration", "Processor")
        )
        return processor_class(
            image_processor=image_proc,
            tokenizer=tokenizer,
            video_processor=cls.tiny_video_processor(side, num_frames),
            chat_template=tokenizer.chat_template,
        )


def video_metadata(clip: Clip):
    """transformers `VideoMetadata` of a clip: the source's fps, the sampled frames' source indices and
    a frame count whose ratio to the sample gives the sampled rate (Qwen2.5-VL's `second_per_grid_ts`;
    Qwen3-VL's prompt timestamps are index / fps)."""
    from transformers.video_utils import VideoMetadata

    h, w = int(clip.frames.shape[1]), int(clip.frames.shape[2])
    return VideoMetadata(
        total_num_frames=int(clip.segment_frames),
        fps=float(clip.source_fps),
        width=w,
        height=h,
        duration=float(clip.duration),
        frames_indices=list(clip.frame_indices),
    )
