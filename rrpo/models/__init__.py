"""Video-LLM families behind one adapter interface, tiny offline models, and the packed pair forward.

Public API:
    FAMILIES                  name -> adapter class, one module per family in rrpo/models/families/
                              (the list: rrpo.models.registry, torch-free; FAMILY_NAMES the names)
    family_of(dir_or_config)  family name from `config.model_type` (`rrpo_family.json`: a tiny-model hint)
    load_model(dir_or_hub_id, ...) -> VideoLM (the family's adapter: .model .processor .tokenizer
                              .read_clip .generate .stop_token_ids ...)
    build_tiny_model(family, out_dir, ...)   tiny random-weight model of the real class (`rrpo tiny-model`)
    shrink_checkpoint(src, out)              the same from a real checkpoint's non-weight files
    encode_pair / collate_pairs / pair_forward   shared-prefix packed preference forward (packing/)
    SkipPair, EncodedPair, PairOutputs

Adding a family: one module, `rrpo/models/families/<name>.py`, with its `FAMILY` declaration (read by
`rrpo.models.registry` without importing it) and a class that subclasses `VideoLMAdapter`
(rrpo/models/base.py: the hooks a family overrides, and the `tiny_*` hooks that build its test model), and
its real checkpoint files in the tests (docs/ARCHITECTURE.md).
Importing this package imports no family module: names resolve on first use (PEP 562), so `rrpo --help`
and commands that never touch a model do not pay for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LORA_TARGET_REGEX": "rrpo.models.base",
    "EncodedPair": "rrpo.models.base",
    "SkipPair": "rrpo.models.base",
    "VideoLM": "rrpo.models.base",
    "VideoLMAdapter": "rrpo.models.base",
    "family_of": "rrpo.models.loading",
    "load_model": "rrpo.models.loading",
    "PairOutputs": "rrpo.models.packing",
    "collate_pairs": "rrpo.models.packing",
    "encode_pair": "rrpo.models.packing",
    "pair_forward": "rrpo.models.packing",
    "FAMILY_NAMES": "rrpo.models.registry",
    "build_tiny_model": "rrpo.models.tiny",
    "shrink_checkpoint": "rrpo.models.tiny",
}

__all__ = ["FAMILIES", *sorted(_EXPORTS)]


def _adapter_classes() -> dict[str, str]:
    """Adapter class name -> its family module, from the registry (imports nothing)."""
    from rrpo.models.registry import FAMILY_ENTRIES

    return {e.target.partition(":")[2]: e.module for e in FAMILY_ENTRIES}


def __getattr__(name: str) -> Any:
    if name == "FAMILIES":
        from rrpo.models.registry import family_classes

        value = family_classes()
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _adapter_classes():  # e.g. Qwen25VLAdapter, from its family module
        module = _adapter_classes()[name]
        value = getattr(importlib.import_module(module), name)
    else:
        raise AttributeError(f"module 'rrpo.models' has no attribute {name!r}")
    globals()[name] = value
    return value
