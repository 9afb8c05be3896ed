"""The `llava-next-video` family: llava-hf/LLaVA-NeXT-Video-7B-hf. CLIP tower, Llama text model (turns
close with </s>), stride-2 pooling; 1-D positions, pixel values [B, T, C, H, W]."""

from __future__ import annotations

from typing import Any

from rrpo.models.base import VideoLMAdapter
from rrpo.models.families.llava_onevision import tiny_patch, tiny_vision
from rrpo.models.tiny_parts import NEXT_VIDEO_TEMPLATE, llama_tokenizer
from rrpo.video.clip import Clip

# What rrpo.models.registry reads without importing this module (a literal: the CLI's list of families,
# its help and its family-only loading options come from it).
FAMILY = {"name": "llava-next-video", "adapter": "LlavaNextVideoAdapter", "order": 5}


class LlavaNextVideoAdapter(VideoLMAdapter):
    family = FAMILY["name"]
    model_types = ("llava_next_video",)
    model_class = "LlavaNextVideoForConditionalGeneration"
    real_checkpoints = ("llava-next-video",)
    shrink_vision = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                     "projection_dim": 32}  # fmt: skip
    # Frames reach the processor at native aspect ratio: it resizes the shortest edge to 336 and
    # centre-crops 336 x 336, as the checkpoint was trained.

    def processor_video_kwargs(self, clips: list[Clip]) -> dict[str, Any]:
        return {"do_sample_frames": False}

    # ----- tiny test model ---------------------------------------------------------------------------
    @classmethod
    def tiny_tokenizer(cls) -> Any:
        return llama_tokenizer(NEXT_VIDEO_TEMPLATE)

    @classmethod
    def tiny_config(cls, tokenizer: Any, text: dict[str, Any], image_size: int, num_frames: int) -> Any:
        import transformers

        ids = tokenizer.convert_tokens_to_ids
        return transformers.LlavaNextVideoConfig(
            vision_config={
                **tiny_vision(cls.family, image_size),
                "model_type": "clip_vision_model",
                "projection_dim": 32,
            },
            text_config={**text, "model_type": "llama"},
            image_token_index=ids("<image>"),
            video_token_index=ids("<video>"),
            vision_feature_select_strategy="default",
            vision_feature_layer=-2,
            spatial_pool_stride=2,
            image_grid_pinpoints=[[image_size, image_size]],
        )

    @classmethod
    def tiny_processor(cls, tokenizer: Any, image_size: int, num_frames: int) -> Any:
        import transformers as tf

        crop = {"height": image_size, "width": image_size}
        return tf.LlavaNextVideoProcessor(
            video_processor=tf.LlavaNextVideoVideoProcessor(
                size={"shortest_edge": image_size}, crop_size=crop
            ),
            image_processor=tf.LlavaNextImageProcessor(
                size={"shortest_edge": image_size},
                crop_size=crop,
                image_grid_pinpoints=[[image_size, image_size]],
            ),
            tokenizer=tokenizer,
            chat_template=NEXT_VIDEO_TEMPLATE,
            patch_size=tiny_patch(cls.family, image_size),
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
        )
