"""Family detection and `load_model`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rrpo.errors import RRPOError
from rrpo.models.base import VideoLMAdapter
from rrpo.models.tiny import FAMILY_FILE


def _families() -> dict[str, type[VideoLMAdapter]]:
    from rrpo.models import FAMILIES

    return FAMILIES


def family_of(model_dir_or_config: str | Path | Any) -> str:
    """The family name of a model directory (its `rrpo_family.json`, else `config.model_type`) or config.

    Accepts a path, a transformers config object, or a config dict.
    """
    families = _families()
    if isinstance(model_dir_or_config, (str, Path)):
        path = Path(model_dir_or_config)
        if (path / FAMILY_FILE).is_file():
            family = json.loads((path / FAMILY_FILE).read_text()).get("family")
            if family in families:
                return family
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise RRPOError(f"{path}: no config.json (not a model directory)")
        model_type = json.loads(cfg_file.read_text()).get("model_type")
    elif isinstance(model_dir_or_config, dict):
        model_type = model_dir_or_config.get("model_type")
    else:
        model_type = getattr(model_dir_or_config, "model_type", None)
    for name, cls in families.items():
        if model_type in cls.model_types:
            return name
    known = ", ".join(f"{n} ({'/'.join(c.model_types)})" for n, c in families.items())
    raise RRPOError(f"unsupported model_type '{model_type}' in {model_dir_or_config}; supported: {known}")


def _family_meta(model_dir: Path) -> dict:
    f = model_dir / FAMILY_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


def load_model(
    model_dir: str | Path,
    *,
    adapter_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    num_frames: int = 16,
    frame_size: tuple[int, int] | None = None,
    attn_implementation: str = "sdpa",
    is_trainable: bool = False,
) -> VideoLMAdapter:
    """Load a video LLM directory as the family's adapter (the `VideoLM`).

    `adapter_dir`: a peft LoRA adapter to wrap the model with (`.model` is then a `PeftModel`;
    `is_trainable=True` to keep training it). `frame_size` (h, w) defaults to the model's
    `rrpo_family.json` hint (tiny models) or the family default. The packed pair forward needs an
    attention implementation that takes a float 4D mask ("sdpa" or "eager"; not flash-attention-2).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise RRPOError(f"model directory not found: {model_dir}")
    family = family_of(model_dir)
    cls = _families()[family]
    meta = _family_meta(model_dir)
    model = cls.load_hf_model(model_dir, dtype=dtype, attn_implementation=attn_implementation)
    processor = cls.load_processor(model_dir)
    if adapter_dir is not None:
        from peft import PeftModel

        if not Path(adapter_dir).is_dir():
            raise RRPOError(f"adapter directory not found: {adapter_dir}")
        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=is_trainable)
    if device is not None:
        model = model.to(device)
    model.eval()
    if frame_size is None and meta.get("frame_size"):
        frame_size = tuple(meta["frame_size"])
    return cls(model, processor, num_frames=num_frames, frame_size=frame_size)
