"""Shrink the real non-weight checkpoint files (../shared/fixtures/real_checkpoints) to random-weight
test models laid out like a download, as that folder's README says: the vocabulary, every token id,
the patch / merge / temporal-patch sizes, the processor settings, the chat template and the generation
config stay as they are; layers and widths shrink."""

from __future__ import annotations

import shutil
from pathlib import Path

REAL_FAMILIES = ("qwen2-vl", "qwen2.5-vl", "qwen3-vl", "llava-onevision", "llava-next-video")

_TEXT = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "head_dim": 16,
}
_VISION = {
    "qwen2-vl": {"embed_dim": 32, "depth": 1, "num_heads": 2, "hidden_size": 64},
    "qwen2.5-vl": {
        "hidden_size": 32,
        "depth": 1,
        "num_heads": 2,
        "intermediate_size": 64,
        "out_hidden_size": 64,
        "fullatt_block_indexes": [0],
    },
    "qwen3-vl": {
        "hidden_size": 32,
        "depth": 1,
        "num_heads": 2,
        "intermediate_size": 64,
        "out_hidden_size": 64,
        "deepstack_visual_indexes": [0],
    },
    "llava-onevision": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "llava-next-video": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "projection_dim": 32,
    },
}


def shrink_checkpoint(src: Path, family: str, out: Path, *, seed: int = 0) -> Path:
    """Write a shrunk random-weight model of `src`'s real class to `out` (no rrpo_family.json)."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoProcessor

    from rrpo.models import FAMILIES

    cfg = AutoConfig.from_pretrained(src)
    text, vision = cfg.text_config, cfg.vision_config
    for k, v in _TEXT.items():
        setattr(text, k, v)
    if getattr(text, "layer_types", None):
        text.layer_types = text.layer_types[: _TEXT["num_hidden_layers"]]
    rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None)
    if isinstance(rope, dict) and "mrope_section" in rope:
        rope["mrope_section"] = [2, 3, 3]  # sums to head_dim / 2
    for k, v in _VISION[family].items():
        setattr(vision, k, v)
    torch.manual_seed(seed)
    model = getattr(transformers, FAMILIES[family].model_class)(cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(src).save_pretrained(out)
    shutil.copy(src / "generation_config.json", out / "generation_config.json")
    return out


def hub_cache_layout(model_dir: Path, cache: Path, repo_id: str, commit: str = "0" * 40) -> Path:
    """Lay `model_dir` out as huggingface_hub's cache holds a downloaded repo (refs/main -> snapshot)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for f in model_dir.iterdir():
        if f.is_file():
            shutil.copy(f, snap / f.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap
