"""Training configuration: `RRPOConfig`, `transformers.TrainingArguments` plus the RRPO fields.

Like TRL's `DPOConfig`, every Trainer option (`optim`, `eval_strategy`, `lr_scheduler_kwargs`,
`torch_compile`, `gradient_checkpointing_kwargs`, ...) is a field, so `rrpo train --name value` and a
YAML `--config` file reach all of them through one `HfArgumentParser`. The fields below hold only what
RRPO adds or defaults differently (the paper's settings, arXiv 2504.12083, Sec. 4), each with its help
and its check. Precedence: command-line flag > `--config train.yaml` > these defaults.
The flags of earlier releases (`--loss`, `--out`, `--epochs`, `--batch-size`, `--grad-accum`,
`--lr-scheduler`, `--no-bf16`) are aliases of the fields.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import HfArgumentParser, SchedulerType, TrainingArguments

from rrpo.errors import RRPOError
from rrpo.losses.registry import LOSS_SPECS, LOSS_TYPES, default_alpha, loss_spec
from rrpo.models.loading import DTYPES, resolve_dtype
from rrpo.models.options import ATTN_HELP, ATTN_IMPLEMENTATIONS, TOKENS_16_FRAMES_16_9

CONFIG_FILE = "rrpo_train_config.yaml"


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class RRPOConfig(TrainingArguments):
    # ---- inputs and outputs
    model: str = field(default="", metadata=_help("model directory or Hub id (any supported family)"))
    data: str = field(default="", metadata=_help("preference pairs JSONL"))
    video_root: str = field(default=".", metadata=_help("directory the pairs' video paths are relative to"))
    vision_towers: str | None = field(
        default=None,
        metadata=_help(
            "LongVU only: directory with its towers as siglip/ and dinov2/ (default: inside --model, else the Hub)"
        ),
    )
    base_llm: str | None = field(
        default=None,
        metadata=_help("VideoChat2 only: its base LLM (default: --model's mistral/, else the Hub's Mistral)"),
    )
    qformer_tokenizer: str | None = field(
        default=None,
        metadata=_help(
            "VideoChat2 only: the Q-Former's BERT tokenizer (default: bert/, else bert-base-uncased)"
        ),
    )
    allow_outside_root: bool = field(
        default=False,
        metadata=_help("read video paths that lead outside --video-root ('../..', absolute paths)"),
    )
    output_dir: str | None = field(
        default=None,
        metadata=_help("output directory (adapter, config, metrics.jsonl, checkpoints)", aliases=["--out"]),
    )
    resume: bool = field(default=False, metadata=_help("continue from the last complete checkpoint in --out"))
    overwrite: bool = field(
        default=False,
        metadata=_help(
            "start clean: delete the adapter, checkpoints, metrics and summary of an earlier run in --out"
        ),
    )
    # ---- objective
    loss_type: str = field(
        default="rrpo",
        metadata=_help(
            "preference loss: " + "; ".join(f"{n} ({s.paper})" for n, s in LOSS_SPECS.items()),
            aliases=["--loss"],
            choices=LOSS_TYPES,
        ),
    )
    beta: float = field(default=0.1, metadata=_help("reward scale beta"))
    alpha: float | None = field(
        default=None,
        metadata=_help("regulariser weight (default: the loss's own: rrpo 0.01, tdpo 0.5, dpa 0.4)"),
    )
    fine_grained: bool = field(
        default=True,
        metadata=_help("RRPO: reward on the differing spans (--no-fine-grained: whole responses, ablation)"),
    )
    token_kl: bool = field(
        default=True, metadata=_help("RRPO: token-wise KL regulariser (--no-token-kl: drop it, ablation)")
    )
    ddpo_gamma: float = field(default=5.0, metadata=_help("DDPO weight of the differing tokens"))
    tdpo_version: int = field(default=2, metadata=_help("TDPO variant", choices=(1, 2)))
    # ---- LoRA on the language model only (paper: r 128, alpha 256)
    lora_r: int = field(default=128, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=256, metadata=_help("LoRA alpha"))
    lora_dropout: float = field(default=0.05, metadata=_help("LoRA dropout"))
    # ---- what the model is fed
    frames: int = field(default=16, metadata=_help("frames sampled uniformly per video"))
    frame_size: list[int] | None = field(
        default=None,
        metadata=_help("resize frames to exactly H W (default: native aspect ratio, processor-sized)"),
    )
    fps: float | None = field(
        default=None,
        metadata=_help("sample frames at this rate (up to --max-frames) instead of --frames uniform ones"),
    )
    max_frames: int = field(default=768, metadata=_help("cap on frames for --fps"))
    max_pixels: int | None = field(
        default=None,
        metadata=_help(
            "pixel cap per frame for the Qwen families (default: the checkpoint's reference sizing). Video "
            "tokens for 16 frames of 16:9 video by default: " + TOKENS_16_FRAMES_16_9
        ),
    )
    revision: str | None = field(default=None, metadata=_help("Hub branch, tag or commit of --model"))
    dtype: str | None = field(
        default=None,
        metadata=_help(
            "weights' dtype (default: follows --bf16; unset, bf16 on a GPU that supports it, fp32 on CPU)",
            choices=tuple(DTYPES),
        ),
    )
    attn_implementation: str = field(
        default="sdpa",
        metadata=_help(ATTN_HELP, choices=ATTN_IMPLEMENTATIONS),
    )
    max_length: int | None = field(
        default=None,
        metadata=_help("max tokens of [prefix|chosen|rejected]; responses are truncated, never the prefix"),
    )
    chunk_size: int = field(
        default=1024, metadata=_help("response positions per chunk of the fused log-prob/KL path")
    )
    pack_pairs: int | None = field(
        default=None,
        metadata=_help(
            "padding-free rows: pack a micro-batch's pairs into rows of at most this many tokens (each pair "
            "keeps its own prefix / chosen / rejected segments and positions) instead of one pair per row "
            "padded to the longest; needs --attn-implementation shared-prefix and --batch-size > 1 to matter"
        ),
    )
    max_skip_fraction: float = field(
        default=0.1, metadata=_help("fail the run if more of the pairs than this had to be skipped")
    )
    warmup_ratio: float = field(
        default=0.03,
        metadata=_help("linear warmup over this fraction of the steps (used when --warmup-steps is 0)"),
    )
    # ---- Trainer fields with the paper's defaults (lr 5e-6, effective batch 32, 1 epoch, cosine)
    learning_rate: float = field(default=5e-6, metadata=_help("peak learning rate"))
    num_train_epochs: float = field(default=1.0, metadata=_help("epochs", aliases=["--epochs"]))
    per_device_train_batch_size: int = field(
        default=1, metadata=_help("pairs per device per micro-batch", aliases=["--batch-size"])
    )
    gradient_accumulation_steps: int = field(
        default=32, metadata=_help("micro-batches per optimizer step", aliases=["--grad-accum"])
    )
    lr_scheduler_type: str = field(
        default="cosine",
        metadata=_help("learning-rate schedule (transformers' names)", aliases=["--lr-scheduler"]),
    )
    logging_steps: float = field(default=1, metadata=_help("log every N optimizer steps"))
    save_steps: float = field(default=200, metadata=_help("checkpoint every N optimizer steps"))
    save_total_limit: int | None = field(default=2, metadata=_help("checkpoints kept"))
    report_to: list[str] = field(
        default_factory=lambda: ["none"], metadata=_help("wandb, tensorboard, ... (default none)")
    )
    bf16: bool | None = field(
        default=None,
        metadata=_help(
            "bf16 weights and autocast (--no-bf16: fp32; default: bf16 on a GPU that supports it)",
            nargs="?",
            const=True,
        ),
    )
    use_cpu: bool | None = field(
        default=None, metadata=_help("train on CPU (default: when no GPU is visible)", nargs="?", const=True)
    )
    remove_unused_columns: bool = field(default=False, metadata=_help("kept False: batches are packed pairs"))
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata=_help("False: every LoRA weight gets a gradient in the packed pass")
    )
    disable_tqdm: bool | None = field(default=False, metadata=_help("hide the progress bar"))

    # Redefined from TrainingArguments so that "not given" can be told from "off": unset, it is on when
    # training on a GPU (rrpo.train.config.checkpointing_default).
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata=_help(
            "recompute the language model's activations in the backward pass (default: on when training on a "
            "GPU, where a 7B model's activations for one 6.4k-token pair at LoRA r 128 are about 56 GiB "
            "without it, over an 80 GB card; off on CPU). Gradients are identical either way",
            nargs="?",
            const=True,
        ),
    )

    def __post_init__(self) -> None:
        # What the user gave, before anything below (or TrainingArguments) resolves it: what `save` writes.
        self._given = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}
        self._check_types()
        self._check_rrpo_fields()
        if self.alpha is None:
            self.alpha = default_alpha(self.loss_type)
        if not self.warmup_steps and self.warmup_ratio:
            self.warmup_steps = self.warmup_ratio  # a float in [0, 1) is a ratio of the total steps
        # The weights' dtype: --dtype wins; else --bf16 / --no-bf16; unset, bf16 on a GPU that has it.
        if self.dtype in (None, "auto"):
            bf16 = self.bf16
            self.weights_dtype = (
                resolve_dtype(None) if bf16 is None else (torch.bfloat16 if bf16 else torch.float32)
            )
        else:
            self.weights_dtype = resolve_dtype(self.dtype)
        self.bf16 = self.weights_dtype == torch.bfloat16
        # fp16: mixed precision with a grad scaler (the LoRA weights stay float32).
        self.fp16 = bool(self.fp16) or self.dtype == "fp16"
        if self.gradient_checkpointing is None and getattr(self, "activation_checkpointing", None) is None:
            on = checkpointing_default(on_gpu=torch.cuda.is_available() and not self.use_cpu)
            # transformers >= 5.24 names it activation_checkpointing (the old name an alias of it)
            setattr(
                self,
                "activation_checkpointing"
                if hasattr(self, "activation_checkpointing")
                else "gradient_checkpointing",
                on,
            )
        if self.use_cpu is None:
            # Without a GPU, say so: only then does accelerate set up CPU data parallelism (torchrun /
            # accelerate launch --cpu), which needs gloo. GPUs pick nccl themselves.
            self.use_cpu = not torch.cuda.is_available()
        if self.attn_implementation == "shared-prefix-flex" and self.use_cpu:
            raise RRPOError(
                "--attn-implementation shared-prefix-flex trains on GPUs only: FlexAttention's backward does not "
                "run on CPU (torch's eager flex path); use shared-prefix, the same attention on SDPA"
            )
        wants_fsdp = bool(self.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
        if wants_fsdp and self.use_cpu:
            # accelerate shards with FSDP only on GPU-like processes; on CPU it would silently run DDP.
            raise RRPOError(
                "FSDP was asked for (--fsdp or an accelerate FSDP config) but these processes run on CPU, where "
                "accelerate does not apply it (it would train as plain data parallelism); run on GPUs, or drop "
                "--fsdp / the FSDP config to train data-parallel on CPU"
            )
        if self.use_cpu and self.ddp_backend is None and _world_size() > 1:
            self.ddp_backend = "gloo"
        try:
            super().__post_init__()
        except (ValueError, TypeError, NotImplementedError) as err:
            raise RRPOError(f"training option: {err}") from None

    # ------------------------------------------------------------------------------------- checks

    def _check_types(self) -> None:
        """Numbers given as text (a YAML `learning_rate: "5e-6"`) are converted; anything else is named."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            kinds = set(typing.get_args(hints[f.name])) or {hints[f.name]}
            number = float if float in kinds else int if int in kinds else None
            value = getattr(self, f.name)
            if number is None or value is None or bool in kinds:
                continue
            if isinstance(value, str):
                try:
                    setattr(self, f.name, number(value))
                    continue
                except ValueError:
                    pass
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                continue
            raise RRPOError(f"{f.name}: expected a number, got {value!r}")

    def _check_rrpo_fields(self) -> None:
        loss_spec(self.loss_type)  # unknown names fail here, listing the choices
        checks = [
            (self.learning_rate >= 0, "learning_rate must be >= 0"),
            (self.beta > 0, "beta must be > 0"),
            (self.alpha is None or self.alpha >= 0, "alpha must be >= 0"),
            (self.ddpo_gamma > 0, "ddpo_gamma must be > 0"),
            (self.tdpo_version in (1, 2), "tdpo_version must be 1 or 2"),
            (self.lora_r >= 1, "lora_r must be >= 1"),
            (self.lora_alpha > 0, "lora_alpha must be > 0"),
            (0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
            (self.frames >= 1, "frames must be >= 1"),
            (self.fps is None or self.fps > 0, "fps must be > 0"),
            (self.max_frames >= 1, "max_frames must be >= 1"),
            (self.max_pixels is None or self.max_pixels > 0, "max_pixels must be > 0"),
            (self.max_length is None or self.max_length >= 1, "max_length must be >= 1"),
            (self.chunk_size >= 1, "chunk_size must be >= 1"),
            (self.pack_pairs is None or self.pack_pairs >= 1, "pack_pairs must be >= 1 (tokens per row)"),
            (
                self.pack_pairs is None or self.attn_implementation.startswith("shared-prefix"),
                "pack_pairs needs --attn-implementation shared-prefix (several pairs in one row)",
            ),
            (0.0 <= self.max_skip_fraction <= 1.0, "max_skip_fraction must be in [0, 1]"),
            (0.0 <= self.warmup_ratio < 1.0, "warmup_ratio must be in [0, 1)"),
            (
                self.per_device_train_batch_size >= 1,
                "per_device_train_batch_size (--batch-size) must be >= 1",
            ),
            (
                self.gradient_accumulation_steps >= 1,
                "gradient_accumulation_steps (--grad-accum) must be >= 1",
            ),
            (self.num_train_epochs > 0 or self.max_steps > 0, "num_train_epochs (--epochs) must be > 0"),
            (self.dtype is None or self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}"),
            (
                self.attn_implementation in ATTN_IMPLEMENTATIONS,
                f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise RRPOError(f"{message}, got {getattr(self, message.split()[0], None)!r}")
        schedules = [s.value for s in SchedulerType]
        if _plain(self.lr_scheduler_type) not in schedules:
            raise RRPOError(
                f"lr_scheduler_type (--lr-scheduler) {self.lr_scheduler_type!r}: choose one of {', '.join(schedules)}"
            )
        if self.frame_size is not None and (len(self.frame_size) != 2 or min(self.frame_size) < 1):
            raise RRPOError(f"frame_size must be two positive numbers H W, got {self.frame_size}")
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]

    # ----------------------------------------------------------------------------- sources, file

    @classmethod
    def from_sources(cls, config_file: str | Path | None = None, **overrides: Any) -> RRPOConfig:
        """Defaults, then the YAML/JSON file, then the non-None overrides (command-line flags)."""
        values = read_config_file(config_file) if config_file else {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        _check_known(values, "training option")
        return cls(**values)

    def to_yaml_dict(self) -> dict[str, Any]:
        """The RRPO fields (resolved `alpha`) and every Trainer field the user set: a file `--config`
        reads back to this configuration. Auto-resolved values (device, dtype) are left for the machine
        that reads it."""
        own = {f.name for f in dataclasses.fields(RRPOConfig) if f.name not in _TRAINER_FIELDS}
        out = {}
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            given = self._given[f.name]
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if f.name in own or given != _plain(default):
                out[f.name] = given
        out["alpha"] = self.alpha
        return out

    def save(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_yaml_dict(), sort_keys=False))
        return path


# The name of earlier releases.
TrainConfig = RRPOConfig
_TRAINER_FIELDS = {f.name for f in dataclasses.fields(TrainingArguments)} - {
    "output_dir"  # ours too: --out
}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def _check_known(values: dict[str, Any], what: str) -> None:
    known = {f.name for f in dataclasses.fields(RRPOConfig) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise RRPOError(f"unknown {what}(s): {', '.join(unknown)} (rrpo train --help lists them)")


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RRPOError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise RRPOError(f"{path}: not a readable YAML file ({str(err).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise RRPOError(f"{path}: expected a mapping of option: value")
    return loaded


# The paper's settings per base model (its release, scripts/<model>/run.sh). `--preset NAME` sets them;
# a --config file and explicit flags override a preset. Not covered: LongVU's LoRA bias "lora_only"
# (rrpo trains no biases) and VideoChat2's fp16 grad scaler (rrpo uses bf16 or fp32).
PRESETS: dict[str, dict[str, Any]] = {
    "longvu": {
        "learning_rate": 5e-6, "beta": 0.5, "alpha": 0.05, "lora_r": 128, "lora_alpha": 256,
        "num_train_epochs": 1, "fps": 1.0, "max_frames": 16, "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 8, "lr_scheduler_type": "cosine", "max_length": 8192,
    },
    "llava-video": {"learning_rate": 5e-6, "beta": 0.1, "alpha": 0.01},
    "videochat2": {
        "learning_rate": 2e-5, "beta": 0.9, "alpha": 0.01, "lora_r": 128, "lora_alpha": 256,
        "lora_dropout": 0.05, "frames": 16, "num_train_epochs": 1, "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 4, "weight_decay": 0.02,
    },
}  # fmt: skip


def train_arg_parser() -> HfArgumentParser:
    """`rrpo train`'s parser: every `RRPOConfig` field as `--name` (and `--name-with-dashes`)."""
    own = [f.name for f in dataclasses.fields(RRPOConfig) if f.name not in _TRAINER_FIELDS]
    parser = HfArgumentParser(
        RRPOConfig,
        prog="rrpo train",
        usage="rrpo train --model DIR_OR_HUB_ID --data PAIRS.jsonl --out DIR [--loss rrpo|dpo|tdpo|dpa|ddpo] "
        "[--config train.yaml] [options]",
        description="Train a LoRA adapter with RRPO (or a baseline loss) on preference pairs. Options are "
        "the fields of rrpo.train.RRPOConfig, as --name or --name-with-dashes, or keys of the --config "
        "file. RRPO's own: " + ", ".join("--" + n.replace("_", "-") for n in own) + " (and the aliases "
        "--out, --loss, --epochs, --batch-size, --grad-accum, --lr-scheduler, --no-bf16); every other "
        "option is a transformers.TrainingArguments field.",
    )
    parser.add_argument("--config", default=None, help="YAML file of training options (flags override it)")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="the paper's settings for a base model: "
        + "; ".join(
            f"{name}: " + ", ".join(f"{k} {v}" for k, v in values.items()) for name, values in PRESETS.items()
        )
        + " (a --config file and explicit flags override them)",
    )
    parser.add_argument(
        "--no-bf16", "--no_bf16", dest="bf16", action="store_const", const=False, help="fp32 weights"
    )
    return parser


def parse_train_args(argv: list[str]) -> RRPOConfig:
    """Flags > `--config` file > `--preset` > defaults, through one `HfArgumentParser`."""
    import argparse

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--preset", default=None)
    known = pre.parse_known_args(argv)[0]
    config_file = known.config
    parser = train_arg_parser()
    if known.preset is not None:
        if known.preset not in PRESETS:
            raise RRPOError(f"--preset {known.preset!r}: choose one of {', '.join(sorted(PRESETS))}")
        parser.set_defaults(**PRESETS[known.preset])
    if config_file:
        values = read_config_file(config_file)
        _check_known(values, f"option in {config_file}: training option")
        parser.set_defaults(**values)
    try:
        cfg, *_ = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except ValueError as err:  # unknown flags
        raise RRPOError(f"{err} (rrpo train --help lists the options)") from None
    return cfg


def checkpointing_default(*, on_gpu: bool) -> bool:
    """Activation checkpointing when the user did not say: on for GPU training (the memory a 7B model's
    activations need without it does not fit; the gradients are bit-identical), off on CPU (tiny models,
    where it only costs time)."""
    return on_gpu
