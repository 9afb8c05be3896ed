"""Video-LLM families behind one adapter interface, tiny offline models, and the packed pair forward.

Public API:
    FAMILIES                  name -> adapter class ("qwen2-vl", "qwen2.5-vl", "qwen3-vl",
                              "llava-onevision", "llava-next-video")
    family_of(dir_or_config)  family name from `rrpo_family.json` or `config.model_type`
    load_model(dir, ...)      -> VideoLM (the family's adapter: .model .processor .tokenizer .generate ...)
    build_tiny_model(family, out_dir, ...)   tiny random-weight model of the real class (`rrpo tiny-model`)
    encode_pair / collate_pairs / pair_forward   shared-prefix packed preference forward (packing.py)
    SkipPair, EncodedPair, PairOutputs

Adding a family:
    Subclass `VideoLMAdapter` (rrpo/models/base.py), set `family`, `model_types` (the config's
    `model_type` values), `model_class` (a `transformers` class name) and `default_frame_size`, override
    the hooks that differ (`processor_video_kwargs`, `mm_keys`, `prefix_positions` for non-1-D
    positions, `model_mm_kwargs`), and register it in `FAMILIES` below.

    A family that needs its authors' code (LongVU, VideoChat2) sets `trust_remote_code = True` and
    `model_class = "AutoModelForCausalLM"` (both `load_hf_model` and `load_processor` then pass
    `trust_remote_code=True`), and overrides the structure accessors for its custom class: `inner`
    (the module whose forward takes `input_ids`, the video tensors, a 4D float `attention_mask` and
    `position_ids` and returns `last_hidden_state`), `language_model` and `lm_head`. Its LoRA regex
    must still name only the language model's linear layers. Until such code is verified against the
    real checkpoint, those families are deliberately not registered.
"""

from __future__ import annotations

from rrpo.models.base import (
    LORA_TARGET_REGEX,
    EncodedPair,
    SkipPair,
    VideoLM,
    VideoLMAdapter,
)
from rrpo.models.llava import LlavaNextVideoAdapter, LlavaOneVisionAdapter
from rrpo.models.loading import family_of, load_model
from rrpo.models.packing import PairOutputs, collate_pairs, encode_pair, pair_forward
from rrpo.models.qwen import Qwen2VLAdapter, Qwen3VLAdapter, Qwen25VLAdapter
from rrpo.models.tiny import build_tiny_model

FAMILIES: dict[str, type[VideoLMAdapter]] = {
    cls.family: cls
    for cls in (
        Qwen2VLAdapter,
        Qwen25VLAdapter,
        Qwen3VLAdapter,
        LlavaOneVisionAdapter,
        LlavaNextVideoAdapter,
    )
}

__all__ = [
    "FAMILIES",
    "LORA_TARGET_REGEX",
    "EncodedPair",
    "PairOutputs",
    "SkipPair",
    "VideoLM",
    "VideoLMAdapter",
    "build_tiny_model",
    "collate_pairs",
    "encode_pair",
    "family_of",
    "load_model",
    "pair_forward",
]
