"""Loading a LongVU checkpoint (`Vision-CAIR/LongVU_Qwen2_7B` or a directory in its layout) into the port.

The checkpoint holds the language model and the connector under the official key names; the two towers
are separate repositories (`google/siglip-so400m-patch14-384`, `facebook/dinov2-giant`), found in
`vision_towers` (a directory with `siglip/` and `dinov2/` inside) or else on the Hub. The towers load
through transformers' own `from_pretrained`, which also converts their older key layouts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from rrpo.errors import RRPOError
from rrpo.models.longvu import LongVUConfig, LongVUForCausalLM
from rrpo.models.longvu_vision import DINO_ID, SIGLIP_ID

MODEL_TYPE = "cambrian_qwen"
_DROP = ("architectures", "transformers_version", "torch_dtype", "_name_or_path")


def tower_dirs(vision_towers: str | os.PathLike | None) -> tuple[str, str]:
    """(siglip, dinov2) directories: `vision_towers/siglip` and `vision_towers/dinov2` (or `dino`), else
    the towers' Hub ids (resolved through huggingface_hub's cache)."""
    if vision_towers is None:
        return SIGLIP_ID, DINO_ID
    root = Path(vision_towers)
    siglip = root / "siglip"
    dino = next((root / n for n in ("dinov2", "dino") if (root / n).is_dir()), root / "dinov2")
    for name, path in (("siglip", siglip), ("dinov2", dino)):
        if not (path / "config.json").is_file():
            raise RRPOError(
                f"--vision-towers {root}: no {name}/config.json there (expected {name}/ and dinov2/)"
            )
    return str(siglip), str(dino)


def _read_json(path: str, name: str) -> dict:
    from huggingface_hub import hf_hub_download

    local = Path(path) / name
    if not local.is_file():
        try:
            local = Path(hf_hub_download(path, name))
        except Exception as err:  # noqa: BLE001 - offline, missing repo: one clear error
            raise RRPOError(
                f"cannot read {name} of {path} ({type(err).__name__}); pass --vision-towers DIR with siglip/ and dinov2/"
            ) from None
    return json.loads(local.read_text(encoding="utf-8"))


def longvu_config(
    model_dir: str | os.PathLike, vision_towers: str | os.PathLike | None = None
) -> LongVUConfig:
    """The port's config from a checkpoint's config.json and its towers' configs."""
    raw = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    if raw.get("model_type") != MODEL_TYPE:
        raise RRPOError(f"{model_dir}: not a LongVU checkpoint (model_type {raw.get('model_type')!r})")
    siglip_dir, dino_dir = tower_dirs(vision_towers)
    towers = {
        "siglip_config": _read_json(siglip_dir, "config.json"),
        "dino_config": _read_json(dino_dir, "config.json"),
    }
    return LongVUConfig(**towers, **{k: v for k, v in raw.items() if k not in _DROP})


def _checkpoint_state(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = model_dir / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values()))
        if index.is_file()
        else ["model.safetensors"]
    )
    state: dict[str, torch.Tensor] = {}
    for name in files:
        path = model_dir / name
        if not path.is_file():
            raise RRPOError(f"{model_dir}: {name} missing")
        state.update(load_file(str(path)))
    return state


def load_longvu(
    model_dir: str | os.PathLike,
    *,
    vision_towers: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
) -> LongVUForCausalLM:
    """The ported model with the checkpoint's weights (strict: a missing or unknown key is an error)."""
    from transformers import Dinov2Model, SiglipVisionModel

    model_dir = Path(model_dir)
    config = longvu_config(model_dir, vision_towers)
    config._attn_implementation = attn_implementation
    with torch.device("meta"):
        model = LongVUForCausalLM(config)
    state = _checkpoint_state(model_dir)
    siglip_dir, dino_dir = tower_dirs(vision_towers)
    for prefix, cls, path in (("siglip", SiglipVisionModel, siglip_dir), ("dino", Dinov2Model, dino_dir)):
        tower = cls.from_pretrained(path, dtype=dtype)
        state.update({f"vision_towers.{prefix}.{k}": v for k, v in tower.state_dict().items()})
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise RRPOError(
            f"{model_dir}: checkpoint does not match the LongVU port (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
    # Buffers built on the meta device (rotary frequencies, position ids) are recomputed for real.
    _rebuild_meta_buffers(model)
    return model.eval()


def _rebuild_meta_buffers(model: Any) -> None:
    """Non-persistent buffers (not in any checkpoint) of a model built on the meta device: rotary
    frequencies are rebuilt from the module's config, position ids are arange."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if any(b.is_meta for b in child.buffers(recurse=False)) and hasattr(child, "inv_freq"):
                setattr(parent, child_name, type(child)(child.config))
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf.is_meta:
                if name != "position_ids":
                    raise RRPOError(f"LongVU port: buffer {name} of {type(module).__name__} left uninitialised")
                module.register_buffer(name, torch.arange(buf.shape[-1]).expand(buf.shape).clone(), persistent=False)
