"""The `videollama3` family: VideoLLaMA3 in transformers' native form (`video_llama_3`,
lkhl/VideoLLaMA3-7B-Image-HF and -2B-), `VideoLlama3ForConditionalGeneration`.

How a video reaches the model (transformers' processor): frames at their native aspect ratio, resized by
`smart_resize` (patch 14 x merge 2) under a pixel budget shared by all frames (`max_pixels` / frames), one
frame per temporal patch; each frame is written `Time {t:.1f}s:` + its `<|video_pad|>` tokens and the frames
are joined by ",". The times come from the video metadata: without it the processor assumes 1 fps (and
says so once), so rrpo always hands it the clip's real timing (`video_metadata`: the source's fps and the
sampled frames' indices in it). Token compression drops the patches that barely change from the previous
frame (mean absolute difference < 0.1 of the 0-255 scale, at least one kept per frame): the token count
depends on the content, and the processor's `video_compression_mask` says which features stay. Positions
are 1-D (a Qwen2 LM). LoRA goes on the language model's linears (`model.language_model.*`), never on the
SigLIP-style vision encoder (`model.vision_model`).
"""

from __future__ import annotations

from typing import Any

import torch

from rrpo.models.base import VideoLMAdapter
from rrpo.models.families.qwen2_vl import video_metadata
from rrpo.models.tiny_parts import qwen_tokenizer
from rrpo.video.clip import Clip

# What rrpo.models.registry reads without importing this module (a literal: the CLI's list of families,
# its help and its family-only loading options come from it).
FAMILY = {"name": "videollama3", "adapter": "VideoLlama3Adapter", "order": 9}

# The real files' template (reconstructed to reproduce transformers' integration-test ids): no system
# prompt, image -> <|image_pad|>, video -> <|video_pad|>, each followed by a newline.
VIDEOLLAMA3_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<|image_pad|>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<|video_pad|>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}"
)


class VideoLlama3Adapter(VideoLMAdapter):
    """VideoLLaMA3 (native -HF checkpoints): timed frames, content-dependent token count (module doc)."""

    family = FAMILY["name"]
    model_types = ("video_llama_3",)
    model_class = "VideoLlama3ForConditionalGeneration"
    real_checkpoints = ("videollama3",)
    shrink_vision = {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }
    default_image_size = 56  # patch 14, merge 2: a 2x2 merged grid

    def mm_keys(self) -> tuple[str, ...]:
        return ("pixel_values_videos", "video_grid_thw", "video_merge_sizes", "video_compression_mask")

    def processor_video_kwargs(self, clips: list[Clip]) -> dict[str, Any]:
        # Frames arrive sampled; their real times go in the prompt ("Time 12.5s:").
        return {"do_sample_frames": False, "video_metadata": [video_metadata(c) for c in clips]}

    def model_mm_kwargs(self, batch_mm: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {k: v for k, v in batch_mm.items() if k in self.mm_keys()}

    # ----- tiny test model ---------------------------------------------------------------------------
    @classmethod
    def tiny_tokenizer(cls) -> Any:
        return qwen_tokenizer(VIDEOLLAMA3_TEMPLATE)

    @classmethod
    def tiny_config(cls, tokenizer: Any, text: dict[str, Any], image_size: int, num_frames: int) -> Any:
        import transformers

        ids = tokenizer.convert_tokens_to_ids
        vision = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                  "patch_size": 14}  # fmt: skip
        return transformers.VideoLlama3Config(
            vision_config=vision,
            text_config={**text, "model_type": "qwen2"},
            image_token_id=ids("<|image_pad|>"),
            video_token_id=ids("<|video_pad|>"),
        )

    @classmethod
    def tiny_processor(cls, tokenizer: Any, image_size: int, num_frames: int) -> Any:
        import transformers as tf

        factor = 28  # patch 14 x merge 2
        side = max(factor, round(image_size / factor) * factor)
        # The video budget is shared by the frames: leave room for every frame at `side` x `side`.
        video_size = {"shortest_edge": factor * factor, "longest_edge": side * side * max(num_frames, 1)}
        return tf.VideoLlama3Processor(
            image_processor=tf.VideoLlama3ImageProcessor(
                size={"shortest_edge": factor * factor, "longest_edge": side * side}, merge_size=1
            ),
            tokenizer=tokenizer,
            video_processor=tf.VideoLlama3VideoProcessor(size=video_size, do_sample_frames=False),
            chat_template=VIDEOLLAMA3_TEMPLATE,
        )
