"""The `qwen3-vl` family (Qwen/Qwen3-VL-8B-Instruct): per-frame-pair timestamps written into the prompt by
the processor from `video_metadata`, interleaved mrope, DeepStack vision features. The Thinking template is
refused (`VideoLMAdapter.check_template`)."""

from __future__ import annotations

from typing import Any

from rrpo.models.families.qwen2_5_vl import Qwen25VLAdapter
from rrpo.models.tiny_parts import qwen_template, qwen_tokenizer

# What rrpo.models.registry reads without importing this module (a literal: the CLI's list of families,
# its help and its family-only loading options come from it).
FAMILY = {"name": "qwen3-vl", "adapter": "Qwen3VLAdapter", "order": 3}


class Qwen3VLAdapter(Qwen25VLAdapter):
    """Qwen3-VL (e.g. Qwen/Qwen3-VL-8B-Instruct): timestamps in the prompt come from `video_metadata`."""

    family = FAMILY["name"]
    model_types = ("qwen3_vl",)
    model_class = "Qwen3VLForConditionalGeneration"
    real_checkpoints = ("qwen3-vl",)
    shrink_vision = {"hidden_size": 32, "depth": 1, "num_heads": 2, "intermediate_size": 64,
                     "out_hidden_size": 64, "deepstack_visual_indexes": [0]}  # fmt: skip
    default_image_size = 64  # patch 16, merge 2
    tiny_patch = 16

    def mm_keys(self) -> tuple[str, ...]:
        return ("pixel_values_videos", "video_grid_thw")

    def video_size(self, num_frames: int) -> dict[str, int]:
        # Qwen3-VL's `longest_edge` bounds all frames together; --max-pixels is per frame.
        size = self.processor.video_processor.size
        longest = int(size.longest_edge)
        if self.max_pixels:
            longest = min(longest, int(self.max_pixels) * max(num_frames, 1))
        return {"shortest_edge": int(size.shortest_edge), "longest_edge": longest}

    def prompt_text(self, prompt: str) -> str:
        text = super().prompt_text(prompt)
        tok = self.processor
        nested = f"{tok.vision_start_token}{tok.video_token}{tok.vision_end_token}"
        # The processor wraps each frame pair in vision markers itself (see the module docstring).
        return text.replace(nested, tok.video_token)

    # ----- tiny test model ---------------------------------------------------------------------------
    @classmethod
    def tiny_tokenizer(cls) -> Any:
        # transformers' Qwen3-VL processor writes the per-frame vision markers itself: a bare pad token.
        return qwen_tokenizer(qwen_template(wrap_video=False))

    @classmethod
    def tiny_rope(cls, head_dim: int) -> dict[str, Any]:
        return {**super().tiny_rope(head_dim), "mrope_interleaved": True}

    @classmethod
    def tiny_config(cls, tokenizer: Any, text: dict[str, Any], image_size: int, num_frames: int) -> Any:
        head_dim = text["hidden_size"] // text["num_attention_heads"]
        return super().tiny_config(tokenizer, {**text, "head_dim": head_dim}, image_size, num_frames)

    @classmethod
    def tiny_vision(cls, text: dict[str, Any]) -> dict[str, Any]:
        return {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": cls.tiny_patch,
                "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": text["hidden_size"],
                "num_position_embeddings": 64, "deepstack_visual_indexes": [0]}  # fmt: skip

    @classmethod
    def tiny_video_processor(cls, side: int, num_frames: int) -> Any:
        import transformers

        factor = cls.tiny_patch * 2
        # Qwen3-VL's limit covers all frames together; never let it shrink the frames we pass.
        size = {"shortest_edge": factor * factor, "longest_edge": side * side * max(num_frames, 2) * 4}
        return transformers.Qwen3VLVideoProcessor(
            patch_size=cls.tiny_patch, temporal_patch_size=2, merge_size=2, size=size,
            do_sample_frames=False, cap_pixels_per_frame=False,
        )  # fmt: skip
