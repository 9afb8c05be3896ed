"""`rrpo train` and `rrpo merge`."""

from __future__ import annotations

import argparse
import json

from rrpo.models.options import add_model_options, model_options

# flag -> TrainConfig field. Flags default to None so a --config file value is not overridden.
_FLAGS: list[tuple[str, str, type, str]] = [
    ("--loss", "loss_type", str, "rrpo | dpo | tdpo | dpa | ddpo (default rrpo)"),
    ("--beta", "beta", float, "reward scale beta (default 0.1)"),
    ("--alpha", "alpha", float, "regulariser weight (default: the loss's own, RRPO 0.01)"),
    ("--learning-rate", "learning_rate", float, "default 5e-6"),
    ("--lora-r", "lora_r", int, "LoRA rank (default 128)"),
    ("--lora-alpha", "lora_alpha", int, "LoRA alpha (default 256)"),
    ("--lora-dropout", "lora_dropout", float, "default 0.05"),
    ("--frames", "frames", int, "frames sampled per video (default 16)"),
    ("--epochs", "num_train_epochs", float, "default 1"),
    ("--max-steps", "max_steps", int, "stop after this many optimizer steps (overrides --epochs)"),
    ("--batch-size", "per_device_train_batch_size", int, "pairs per device per micro-batch (default 1)"),
    ("--grad-accum", "gradient_accumulation_steps", int, "micro-batches per optimizer step (default 32)"),
    (
        "--max-length",
        "max_length",
        int,
        "max tokens of [prefix|chosen|rejected]; responses are truncated, never the prefix",
    ),
    ("--lr-scheduler", "lr_scheduler_type", str, "default cosine"),
    ("--warmup-ratio", "warmup_ratio", float, "default 0.03"),
    ("--seed", "seed", int, "default 42"),
    ("--save-steps", "save_steps", int, "checkpoint every N steps (default 200)"),
    ("--logging-steps", "logging_steps", int, "default 1"),
    (
        "--chunk-size",
        "chunk_size",
        int,
        "response positions per chunk of the fused log-prob/KL (default 1024)",
    ),
    (
        "--max-skip-fraction",
        "max_skip_fraction",
        float,
        "fail if more pairs than this are skipped (default 0.1)",
    ),
    ("--ddpo-gamma", "ddpo_gamma", float, "DDPO weight of differing tokens (default 5)"),
    ("--tdpo-version", "tdpo_version", int, "TDPO variant 1 or 2 (default 2)"),
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a LoRA adapter with RRPO (or a baseline loss) on preference pairs"
    )
    p.add_argument("--model", help="model directory (any supported family)")
    p.add_argument("--data", help="preference pairs JSONL")
    p.add_argument("--video-root", dest="video_root", help="directory the pairs' video paths are relative to")
    p.add_argument("--out", dest="output_dir", help="output directory (adapter, config, metrics.jsonl)")
    p.add_argument("--config", help="YAML file of training options (flags override it)")
    for flag, dest, typ, text in _FLAGS:
        p.add_argument(flag, dest=dest, type=typ, default=None, help=text)
    p.add_argument(
        "--frame-size",
        dest="frame_size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="resize frames to exactly H x W (default: native aspect ratio, sized by the model's processor)",
    )
    add_model_options(p, none_defaults=True)
    p.add_argument(
        "--no-fine-grained",
        dest="fine_grained",
        action="store_const",
        const=False,
        default=None,
        help="RRPO ablation: reward on the whole responses instead of the differing spans",
    )
    p.add_argument(
        "--no-token-kl",
        dest="token_kl",
        action="store_const",
        const=False,
        default=None,
        help="RRPO ablation: drop the token-wise KL regulariser",
    )
    p.add_argument(
        "--gradient-checkpointing",
        dest="gradient_checkpointing",
        action="store_const",
        const=True,
        default=None,
    )
    p.add_argument("--bf16", dest="bf16", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument(
        "--report-to",
        dest="report_to",
        nargs="+",
        default=None,
        help="wandb, tensorboard, ... (default none)",
    )
    p.add_argument(
        "--deepspeed", default=None, help="DeepSpeed JSON config, e.g. configs/deepspeed_zero3.json"
    )
    p.add_argument(
        "--resume", action="store_const", const=True, default=None, help="continue from the last checkpoint"
    )
    p.set_defaults(func=_run_train)

    m = sub.add_parser("merge", help="merge a LoRA adapter into the base weights for use in other tools")
    m.add_argument("--model", required=True)
    m.add_argument("--adapter", required=True)
    m.add_argument("--out", required=True)
    add_model_options(m, video=False)
    m.set_defaults(func=_run_merge)


def _run_train(args: argparse.Namespace) -> int:
    from rrpo.train.config import TrainConfig
    from rrpo.train.trainer import train

    fields = [dest for _, dest, _, _ in _FLAGS] + [
        "model",
        "data",
        "video_root",
        "output_dir",
        "frame_size",
        "fps",
        "max_frames",
        "max_pixels",
        "revision",
        "dtype",
        "attn_implementation",
        "fine_grained",
        "token_kl",
        "gradient_checkpointing",
        "bf16",
        "report_to",
        "resume",
        "deepspeed",
    ]
    cfg = TrainConfig.from_sources(args.config, **{name: getattr(args, name) for name in fields})
    summary = train(cfg)
    print(json.dumps({k: v for k, v in summary.items() if k != "skipped"}, indent=2))
    return 0


def _run_merge(args: argparse.Namespace) -> int:
    from rrpo.train.merge import merge_adapter

    out = merge_adapter(args.model, args.adapter, args.out, load_options=model_options(args))
    print(f"merged weights written to {out}")
    return 0
