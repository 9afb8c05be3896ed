"""Video-LLM families behind one adapter interface, tiny offline models, and the packed pair forward.

Public API:
    FAMILIES                  name -> adapter class ("qwen2-vl", "qwen2.5-vl", "qwen3-vl",
                              "llava-onevision", "llava-next-video"; ports on transformers components:
                              "longvu" (longvu.py), "videochat2" (videochat2.py))
    family_of(dir_or_config)  family name from `config.model_type` (`rrpo_family.json`: a tiny-model hint)
    load_model(dir_or_hub_id, ...) -> VideoLM (the family's adapter: .model .processor .tokenizer
                              .read_clip .generate .stop_token_ids ...)
    build_tiny_model(family, out_dir, ...)   tiny random-weight model of the real class (`rrpo tiny-model`)
    encode_pair / collate_pairs / pair_forward   shared-prefix packed preference forward (packing.py)
    SkipPair, EncodedPair, PairOutputs

Adding a family:
    Subclass `VideoLMAdapter` (rrpo/models/base.py), set `family`, `model_types` (the config's
    `model_type` values) and `model_class` (a `transformers` class name), override the hooks that
    differ (`processor_video_kwargs(clips)`: timing and sizing for the processor, `mm_keys`,
    `rope_positions` for non-1-D positions (batched, on the device), `model_mm_kwargs`, `prompt_text` for template quirks),
    register it in `FAMILIES` below, and add its real checkpoint files to tests/test_real_checkpoints.py.

    A family that needs its authors' code (LongVU, VideoChat2) sets `trust_remote_code = True` and
    `model_class = "AutoModelForCausalLM"` (both `load_hf_model` and `load_processor` then pass
    `trust_remote_code=True`), and overrides the structure accessors for its custom class: `inner`
    (the module whose forward takes `input_ids`, the video tensors, a 4D float `attention_mask` and
    `position_ids` and returns `last_hidden_state`), `language_model` and `lm_head`. Its LoRA regex
    must still name only the language model's linear layers. Until such code is verified against the
    real checkpoint, those families are deliberately not registered.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use (PEP 562), so `rrpo --help` and commands that never touch a model
# do not pay for importing torch and transformers.
_EXPORTS = {
    "LORA_TARGET_REGEX": "rrpo.models.base",
    "EncodedPair": "rrpo.models.base",
    "SkipPair": "rrpo.models.base",
    "VideoLM": "rrpo.models.base",
    "VideoLMAdapter": "rrpo.models.base",
    "LlavaNextVideoAdapter": "rrpo.models.llava",
    "LlavaOneVisionAdapter": "rrpo.models.llava",
    "family_of": "rrpo.models.loading",
    "load_model": "rrpo.models.loading",
    "PairOutputs": "rrpo.models.packing",
    "collate_pairs": "rrpo.models.packing",
    "encode_pair": "rrpo.models.packing",
    "pair_forward": "rrpo.models.packing",
    "Qwen2VLAdapter": "rrpo.models.qwen",
    "Qwen25VLAdapter": "rrpo.models.qwen",
    "Qwen3VLAdapter": "rrpo.models.qwen",
    "build_tiny_model": "rrpo.models.tiny",
}

__all__ = ["FAMILIES", *sorted(_EXPORTS)]


def _families() -> dict[str, Any]:
    from rrpo.models.llava import LlavaNextVideoAdapter, LlavaOneVisionAdapter
    from rrpo.models.longvu_adapter import LongVUAdapter
    from rrpo.models.qwen import Qwen2VLAdapter, Qwen3VLAdapter, Qwen25VLAdapter
    from rrpo.models.videochat2_adapter import VideoChat2Adapter

    classes = (
        Qwen2VLAdapter,
        Qwen25VLAdapter,
        Qwen3VLAdapter,
        LlavaOneVisionAdapter,
        LlavaNextVideoAdapter,
        LongVUAdapter,
        VideoChat2Adapter,
    )
    return {cls.family: cls for cls in classes}


def __getattr__(name: str) -> Any:
    if name == "FAMILIES":
        value = _families()
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'rrpo.models' has no attribute {name!r}")
    globals()[name] = value
    return value
