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

import torch

from rrpo.errors import RRPOError
from rrpo.models.base import rebuild_meta_buffers
from rrpo.models.families.longvu.configuration import LongVUConfig
from rrpo.models.families.longvu.modeling import LongVUForCausalLM
from rrpo.models.families.longvu.vision import DINO_ID, SIGLIP_ID

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
    rebuild_meta_buffers(model)
    return model.eval()


def build_tiny_longvu(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    num_frames: int = 16,
    image_size: int = 32,
) -> Path:
    """A tiny random-weight LongVU in the released layout: `config.json` (model_type "cambrian_qwen",
    the connector's fields), `model.safetensors` (the language model and connector under the official
    key names, no towers), a Qwen-style tokenizer, and the towers in `siglip/` and `dinov2/` (tiny
    SiglipVisionModel at 384 px and Dinov2Model with SwiGLU, read at 378 px, with their processors)."""
    from safetensors.torch import save_file
    from transformers import BitImageProcessor, SiglipImageProcessor

    from rrpo.models.tiny_parts import qwen_template, qwen_tokenizer, text_kwargs, write_family_meta

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = qwen_tokenizer(qwen_template())
    siglip = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 384, "patch_size": 14}  # fmt: skip
    dino = {"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "image_size": 518, "patch_size": 14, "use_swiglu_ffn": True, "mlp_ratio": 4}  # fmt: skip
    connector = {
        "model_type": MODEL_TYPE, "architectures": ["CambrianQwenForCausalLM"], "mm_projector_type": "sva",
        "vision_hidden_size": 32, "connector_depth": 1, "num_query_group": 1, "query_num_list": [144],
        "image_token_len": 144, "lowres_token": 8, "highres": True, "connector_only": True,
        "mm_vision_tower_aux_list": ["siglip/CLIP-ViT-SO400M-14-384", "facebook/dinov2-giant-res378"],
        "mm_vision_tower_aux_token_len_list": [576, 576], "tokenizer_model_max_length": 8192,
        "dino_threshold": 0.83, "drop_threshold": 0.7, "image_aspect_ratio": "pad", "tie_word_embeddings": False,
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
    }  # fmt: skip
    text = text_kwargs(tok, hidden_size, num_layers, num_heads, num_kv_heads)
    config = LongVUConfig(siglip_config=siglip, dino_config=dino, **text, **connector)
    model = LongVUForCausalLM(config).eval()
    with torch.no_grad():  # torch.empty at init in the official code: give the learned vectors values
        model.model.vision_query.normal_(0, 0.125)
        model.model.image_newline.normal_(0, 0.02)
        for p in model.model.vision_sampler_0.parameters():
            if p.dim() == 2 and p.shape[0] == 4:
                p.normal_(0, 0.25)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("vision_towers.")}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    raw = config.to_dict()
    for key in ("siglip_config", "dino_config", "transformers_version", "_name_or_path"):
        raw.pop(key, None)
    (out / "config.json").write_text(json.dumps({**raw, **connector}, indent=2) + "\n")
    model.vision_towers.siglip.save_pretrained(out / "siglip")
    model.vision_towers.dino.save_pretrained(out / "dinov2")
    SiglipImageProcessor(
        size={"height": 384, "width": 384}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(out / "siglip")
    BitImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=True,
    ).save_pretrained(out / "dinov2")
    tok.save_pretrained(out)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.save_pretrained(out)
    write_family_meta(out, "longvu", image_size, num_frames)
    return out
