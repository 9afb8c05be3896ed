"""The `internvl` family: InternVL3 and InternVL3.5 in transformers' native form (OpenGVLab/InternVL3-8B-hf,
Qwen2.5 LM; OpenGVLab/InternVL3_5-8B-HF, Qwen3 LM), `InternVLForConditionalGeneration`.

How a video reaches the model (transformers' processor, as the official `load_video` + `dynamic_preprocess
(max_num=1)` pipeline does): every sampled frame is one 448 x 448 image (resized, not cropped; no tiling for
video), 256 `<IMG_CONTEXT>` tokens after a pixel shuffle, written `Frame{i}: <img>...</img>` and joined by
newlines in place of the template's `<video>`. The image token id doubles as the video one, so the frames
enter as the model's *image* features (`pixel_values`, `mm_encoder_outputs["image"]`). No timing reaches the
model: frames are numbered, not timed (the official code does the same), so the clip's timestamps only
choose which frames are sampled. Positions are 1-D. LoRA goes on the language model's linears
(`model.language_model.*`), never on InternViT (whose attention also has q/k projections).
"""

from __future__ import annotations

from typing import Any

from rrpo.models.base import VideoLMAdapter
from rrpo.models.tiny_parts import qwen_tokenizer
from rrpo.video.clip import Clip

# What rrpo.models.registry reads without importing this module (a literal: the CLI's list of families,
# its help and its family-only loading options come from it).
FAMILY = {"name": "internvl", "adapter": "InternVLAdapter", "order": 8}

# transformers' InternVL conversion template (the real files' chat_template): image -> <IMG_CONTEXT>,
# video -> <video>, no system prompt.
INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)
IMAGE_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}


class InternVLAdapter(VideoLMAdapter):
    """InternVL3 / InternVL3.5 (-hf checkpoints): frames as 448-px images (module doc)."""

    family = FAMILY["name"]
    model_types = ("internvl",)
    model_class = "InternVLForConditionalGeneration"
    encoder_modality = "image"
    real_checkpoints = ("internvl", "internvl3_5-rebuilt")
    shrink_vision = {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }

    @property
    def video_feature_token(self) -> str:
        return self.processor.image_token  # <IMG_CONTEXT>: the processor replaces <video> by framed images

    def mm_keys(self) -> tuple[str, ...]:
        return ("pixel_values",)

    def processor_video_kwargs(self, clips: list[Clip]) -> dict[str, Any]:
        return {"do_sample_frames": False}  # frames arrive sampled, at their real timestamps

    # ----- tiny test model ---------------------------------------------------------------------------
    @classmethod
    def tiny_tokenizer(cls) -> Any:
        return qwen_tokenizer(INTERNVL_TEMPLATE, extra=tuple(IMAGE_TOKENS.values()), named=IMAGE_TOKENS)

    @classmethod
    def tiny_config(cls, tokenizer: Any, text: dict[str, Any], image_size: int, num_frames: int) -> Any:
        import transformers

        patch = _tiny_patch(image_size)
        vision = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                  "image_size": [image_size, image_size], "patch_size": [patch, patch]}  # fmt: skip
        return transformers.InternVLConfig(
            vision_config=vision,
            text_config={**text, "model_type": "qwen2"},
            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["context_image_token"]),
            image_seq_length=(image_size // patch) ** 2 // 4,  # pixel shuffle 0.5 on each axis
            downsample_ratio=0.5,
        )

    @classmethod
    def tiny_processor(cls, tokenizer: Any, image_size: int, num_frames: int) -> Any:
        import transformers as tf

        size = {"height": image_size, "width": image_size}
        return tf.InternVLProcessor(
            image_processor=tf.GotOcr2ImageProcessor(size=size, crop_to_patches=False),
            tokenizer=tokenizer,
            video_processor=tf.InternVLVideoProcessor(size=size, do_sample_frames=False),
            image_seq_length=(image_size // _tiny_patch(image_size)) ** 2 // 4,
            chat_template=INTERNVL_TEMPLATE,
        )


def _tiny_patch(image_size: int) -> int:
    """A patch size that gives an even patch grid (the pixel shuffle halves it): 8, else 4."""
    from rrpo.errors import RRPOError

    for patch in (8, 4):
        if image_size % (2 * patch) == 0:
            return patch
    raise RRPOError(f"--image-size {image_size} must be a multiple of 8 for internvl")
