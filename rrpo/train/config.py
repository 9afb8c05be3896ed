"""Training configuration: the paper's defaults, overridable from a YAML file and the command line.

Names follow transformers / TRL so users feel at home (`beta`, `loss_type`, `learning_rate`, `lora_r`).
Precedence: command-line flag > `--config train.yaml` > the defaults below (RRPO, arXiv 2504.12083, Sec. 4).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rrpo.errors import RRPOError

LOSS_TYPES = ("rrpo", "dpo", "tdpo", "dpa", "ddpo")
# Losses that train on the differing concepts and so need a span on both sides of every pair.
SPAN_LOSSES = ("rrpo", "dpa", "ddpo")


def default_alpha(loss_type: str) -> float:
    """The regulariser weight a loss uses by default (read from its signature: one source of truth)."""
    import inspect

    from rrpo.losses import LOSSES

    param = inspect.signature(LOSSES[loss_type]).parameters.get("alpha")
    return 0.0 if param is None or param.default is inspect.Parameter.empty else float(param.default)


@dataclass
class TrainConfig:
    # Inputs and outputs.
    model: str = ""
    data: str = ""
    video_root: str = "."
    output_dir: str = ""
    # Objective. `alpha` None means the chosen loss's own paper default (RRPO's TKL weight is 0.01).
    loss_type: str = "rrpo"
    beta: float = 0.1
    alpha: float | None = None
    fine_grained: bool = True  # RRPO ablation: False uses whole responses instead of the spans
    token_kl: bool = True  # RRPO ablation: False drops the token-wise KL term
    ddpo_gamma: float = 5.0
    tdpo_version: int = 2
    # Optimisation (paper: lr 5e-6, effective batch 32, 1 epoch, cosine, warmup 3%).
    learning_rate: float = 5e-6
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 32
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    # LoRA on the language model only (paper: r 128, alpha 256).
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    # Inputs to the model.
    frames: int = 16
    frame_size: list[int] | None = None  # [height, width]; None = native aspect ratio, processor-sized
    fps: float | None = None  # sample frames at this rate (up to max_frames) instead of `frames` uniform ones
    max_frames: int = 768
    max_pixels: int | None = None  # per-frame pixel cap for the Qwen families (None: reference sizing)
    revision: str | None = None  # Hub branch, tag or commit of `model`
    dtype: str | None = None  # auto | bf16 | fp16 | fp32; None follows `bf16`
    attn_implementation: str = "sdpa"  # sdpa | eager (flash-attention-2 cannot take the packed 4D mask)
    max_length: int | None = None  # tokens of [prefix | chosen | rejected]; None = no limit
    chunk_size: int = 1024  # response positions per chunk in the fused log-prob/KL path
    # Machinery.
    gradient_checkpointing: bool = False
    deepspeed: str | None = (
        None  # a DeepSpeed JSON config (configs/deepspeed_zero3.json); FSDP comes from accelerate
    )
    bf16: bool | None = None  # None = bf16 on a GPU that supports it, float32 otherwise
    logging_steps: int = 1
    save_steps: int = 200
    save_total_limit: int | None = 2
    report_to: list[str] = field(default_factory=lambda: ["none"])
    dataloader_num_workers: int = 0
    max_skip_fraction: float = 0.1  # fail the run if more of the pairs than this had to be skipped
    resume: bool = False

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise RRPOError(f"unknown loss_type {self.loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
        if self.frames < 1:
            raise RRPOError(f"frames must be >= 1, got {self.frames}")
        if not 0.0 <= self.max_skip_fraction <= 1.0:
            raise RRPOError(f"max_skip_fraction must be in [0, 1], got {self.max_skip_fraction}")
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        if self.alpha is None:
            self.alpha = default_alpha(self.loss_type)

    @classmethod
    def from_sources(cls, config_file: str | Path | None = None, **overrides: Any) -> TrainConfig:
        """Defaults, then the YAML/JSON file, then the non-None overrides (command-line flags)."""
        values: dict[str, Any] = {}
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise RRPOError(f"config file not found: {path}")
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise RRPOError(f"{path}: expected a mapping of option: value")
            values.update(loaded)
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise RRPOError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / "rrpo_train_config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    def __str__(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
