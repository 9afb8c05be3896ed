"""The `llava-onevision` family: the class of llava-hf/LLaVA-Video-7B-Qwen2-hf (the converted
LLaVA-Video-7B-Qwen2) and llava-hf/llava-onevision-qwen2-7b-ov-hf. SigLIP tower, Qwen2 text model, 2x2
bilinear pooling per frame plus one newline token per video; 1-D positions, pixel values [B, T, C, H, W].
"""

from __future__ import annotations

from typing import Any

from rrpo.models.base import VideoLMAdapter
from rrpo.models.tiny_parts import ONEVISION_TEMPLATE, qwen_tokenizer
from rrpo.video.clip import Clip

# What rrpo.models.registry reads without importing this module (a literal: the CLI's list of families,
# its help and its family-only loading options come from it).
FAMILY = {"name": "llava-onevision", "adapter": "LlavaOneVisionAdapter", "order": 4}


class LlavaOneVisionAdapter(VideoLMAdapter):
    family = FAMILY["name"]
    model_types = ("llava_onevision",)
    model_class = "LlavaOnevisionForConditionalGeneration"
    real_checkpoints = ("llava-onevision",)
    shrink_vision = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }
    # Frames reach the processor at native aspect ratio; it resizes them to its fixed 384 x 384.

    def processor_video_kwargs(self, clips: list[Clip]) -> dict[str, Any]:
        return {"do_sample_frames": False}

    # ----- tiny test model ---------------------------------------------------------------------------
    @classmethod
    def tiny_tokenizer(cls) -> Any:
        return qwen_tokenizer(ONEVISION_TEMPLATE, extra=("<image>", "<video>"))

    @classmethod
    def tiny_config(cls, tokenizer: Any, text: dict[str, Any], image_size: int, num_frames: int) -> Any:
        import transformers

        ids = tokenizer.convert_tokens_to_ids
        return transformers.LlavaOnevisionConfig(
            vision_config={**tiny_vision(cls.family, image_size), "model_type": "siglip_vision_model"},
            text_config={**text, "model_type": "qwen2"},
            image_token_index=ids("<image>"),
            video_token_index=ids("<video>"),
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            image_grid_pinpoints=[[image_size, image_size]],
        )

    @classmethod
    def tiny_processor(cls, tokenizer: Any, image_size: int, num_frames: int) -> Any:
        import transformers as tf

        patch = tiny_patch(cls.family, image_size)
        size = {"height": image_size, "width": image_size}
        return tf.LlavaOnevisionProcessor(
            image_processor=tf.LlavaOnevisionImageProcessor(
                size=size, image_grid_pinpoints=[[image_size, image_size]]
            ),
            tokenizer=tokenizer,
            video_processor=tf.LlavaOnevisionVideoProcessor(size=size),
            num_image_tokens=(image_size // patch) ** 2,
            vision_feature_select_strategy="full",
            chat_template=ONEVISION_TEMPLATE,
        )


def tiny_patch(family: str, image_size: int) -> int:
    """The tiny vision tower's patch size for `image_size` frames (8, else 4)."""
    from rrpo.errors import RRPOError

    patch = 8 if image_size % 8 == 0 else 4
    if image_size % patch:
        raise RRPOError(f"--image-size {image_size} must be a multiple of {patch} for {family}")
    return patch


def tiny_vision(family: str, image_size: int) -> dict[str, Any]:
    """The tiny vision tower of the two LLaVA families (SigLIP / CLIP), 2 layers of width 32."""
    return {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": image_size, "patch_size": tiny_patch(family, image_size)}  # fmt: skip
