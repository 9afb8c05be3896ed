"""LLaVA-OneVision and LLaVA-NeXT-Video adapters (1-D positions, per-frame pixel values [B, T, C, H, W]).

"llava-onevision" is the class the converted LLaVA-Video-7B-Qwen2 (llava-hf/LLaVA-Video-7B-Qwen2-hf)
uses: SigLIP tower, Qwen2 text model, 2x2 bilinear pooling per frame plus one newline token per video.
"llava-next-video" is llava-hf/LLaVA-NeXT-Video-7B-hf: CLIP tower, Llama text model, stride-2 pooling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rrpo.models.base import VideoLMAdapter


class LlavaOneVisionAdapter(VideoLMAdapter):
    family = "llava-onevision"
    model_types = ("llava_onevision",)
    model_class = "LlavaOnevisionForConditionalGeneration"
    default_frame_size = (384, 384)  # SigLIP-so400m input size

    def processor_video_kwargs(self, frames: list[np.ndarray], sampled_fps: float) -> dict[str, Any]:
        return {"do_sample_frames": False}


class LlavaNextVideoAdapter(VideoLMAdapter):
    family = "llava-next-video"
    model_types = ("llava_next_video",)
    model_class = "LlavaNextVideoForConditionalGeneration"
    default_frame_size = (336, 336)  # CLIP ViT-L/14-336 input size

    def processor_video_kwargs(self, frames: list[np.ndarray], sampled_fps: float) -> dict[str, Any]:
        return {"do_sample_frames": False}
