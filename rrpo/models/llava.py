"""LLaVA-OneVision and LLaVA-NeXT-Video adapters (1-D positions, per-frame pixel values [B, T, C, H, W]).

"llava-onevision" is the class the converted LLaVA-Video-7B-Qwen2 (llava-hf/LLaVA-Video-7B-Qwen2-hf)
uses: SigLIP tower, Qwen2 text model, 2x2 bilinear pooling per frame plus one newline token per video.
"llava-next-video" is llava-hf/LLaVA-NeXT-Video-7B-hf: CLIP tower, Llama text model, stride-2 pooling.
"""

from __future__ import annotations

from typing import Any

from rrpo.models.base import VideoLMAdapter
from rrpo.video.io import Clip


class LlavaOneVisionAdapter(VideoLMAdapter):
    family = "llava-onevision"
    model_types = ("llava_onevision",)
    model_class = "LlavaOnevisionForConditionalGeneration"
    # Frames reach the processor at native aspect ratio; it resizes them to its fixed 384 x 384.

    def processor_video_kwargs(self, clips: list[Clip]) -> dict[str, Any]:
        return {"do_sample_frames": False}


class LlavaNextVideoAdapter(VideoLMAdapter):
    family = "llava-next-video"
    model_types = ("llava_next_video",)
    model_class = "LlavaNextVideoForConditionalGeneration"
    # Frames reach the processor at native aspect ratio: it resizes the shortest edge to 336 and
    # centre-crops 336 x 336, as the checkpoint was trained.

    def processor_video_kwargs(self, clips: list[Clip]) -> dict[str, Any]:
        return {"do_sample_frames": False}
