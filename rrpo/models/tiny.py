"""Tiny random-weight video LLMs of the *real* classes, built fully offline.

`build_tiny_model(family, out_dir)` writes a directory that `from_pretrained` loads without network
access: the model (random weights, text hidden 64 and 2 layers by default), a byte-level BPE tokenizer
trained on a few built-in sentences with the family's special tokens, a chat template in the family's
style, and the family's own processor. Each family says how (`VideoLMAdapter.build_tiny` and its
`tiny_*` hooks; the shared parts are in `rrpo.models.tiny_parts`). Tests, the toy world and CI use these
in place of the 7B checkpoints; every code path (processor, rope index, vision tower, generation) is the
one the real model runs.

`shrink_checkpoint(src, out)` does the same from a real checkpoint's non-weight files (config,
processor, chat template, tokenizer, generation config): everything kept but the layers and widths.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rrpo.errors import RRPOError
from rrpo.models.registry import family_class
from rrpo.models.tiny_parts import FAMILY_FILE

__all__ = ["FAMILY_FILE", "build_tiny_model", "shrink_checkpoint"]


def build_tiny_model(
    family: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    image_size: int | None = None,
    num_frames: int = 16,
) -> Path:
    """Build and save a tiny random-weight model of `family`; returns `out_dir`.

    `image_size` is the square frame side the saved processor keeps (default: the family's
    `default_image_size`, for Qwen the smallest size that gives a 2x2 merged grid); it and `num_frames`
    are recorded in `rrpo_family.json` as the frame size / count `load_model` decodes at. Qwen2-VL with
    16 frames of 56x56 gives 32 video tokens.
    """
    cls = family_class(family)  # an unknown name is a one-line error listing the families
    if hidden_size % num_heads or (hidden_size // num_heads) % 2:
        raise RRPOError(f"--hidden-size {hidden_size} must split into {num_heads} heads of even size")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return cls.build_tiny(
        out,
        seed=seed,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        image_size=image_size or cls.default_image_size,
        num_frames=num_frames,
    )


# The text model of a shrunk checkpoint (head_dim 16: Qwen's mrope sections [2, 3, 3] sum to 8).
SHRUNK_TEXT = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "head_dim": 16,
}


def shrink_checkpoint(src: str | Path, out: str | Path, *, family: str | None = None, seed: int = 0) -> Path:
    """Write a shrunk random-weight model of `src`'s real class to `out`, laid out like a download.

    `src` holds a checkpoint's non-weight files. The vocabulary, every token id, the patch / merge /
    temporal-patch sizes, the processor settings, the chat template and the generation config stay as
    they are; the text model shrinks to `SHRUNK_TEXT` and the vision tower as the family's
    `shrink_vision` says. No `rrpo_family.json` is written: the family comes from the config.
    """
    import torch
    import transformers
    from transformers import AutoConfig, AutoProcessor

    from rrpo.models.loading import family_of

    src, out = Path(src), Path(out)
    cls = family_class(family or family_of(src))
    if cls.ported:
        raise RRPOError(
            f"{src}: {cls.family} is a port with a layout of its own; build its tiny model with --family"
        )
    cfg = AutoConfig.from_pretrained(src)
    text, vision = cfg.text_config, cfg.vision_config
    for key, value in SHRUNK_TEXT.items():
        setattr(text, key, value)
    if getattr(text, "layer_types", None):
        text.layer_types = text.layer_types[: SHRUNK_TEXT["num_hidden_layers"]]
    rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None)
    if isinstance(rope, dict) and "mrope_section" in rope:
        rope["mrope_section"] = [2, 3, 3]  # sums to head_dim / 2
    for key, value in cls.shrink_vision.items():
        setattr(vision, key, value)
    cls.shrink_config(cfg)
    torch.manual_seed(seed)
    model = getattr(transformers, cls.model_class)(cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(src).save_pretrained(out)
    if (src / "generation_config.json").is_file():
        shutil.copy(src / "generation_config.json", out / "generation_config.json")
    return out
