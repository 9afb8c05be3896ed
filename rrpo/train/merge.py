"""Merge a LoRA adapter into its base model and save full weights (with tokenizer and processor)."""

from __future__ import annotations

from pathlib import Path

from rrpo.errors import RRPOError


def merge_adapter(
    model_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path, *, load_options: dict | None = None
) -> Path:
    """Load base + adapter, fold the LoRA weights in (`merge_and_unload`) and `save_pretrained` to out_dir.

    `model_dir` and `adapter_dir` may be local directories or Hub ids; `load_options` are further
    `load_model` keywords (revision, dtype, attn_implementation). The checkpoint's generation config
    (stop ids) is saved with the weights."""
    from rrpo.models import load_model
    from rrpo.models.loading import resolve_model

    adapter_path = resolve_model(adapter_dir, what="adapter")
    if not (adapter_path / "adapter_config.json").is_file():
        raise RRPOError(f"{adapter_dir}: not a LoRA adapter (no adapter_config.json)")
    vlm = load_model(model_dir, adapter_dir=adapter_path, **(load_options or {}))
    merged = vlm.model.merge_and_unload()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    vlm.processor.save_pretrained(out)
    return out
