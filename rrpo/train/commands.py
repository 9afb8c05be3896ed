"""`rrpo train` and `rrpo merge`."""

from __future__ import annotations

import argparse
import json

from rrpo.models.options import add_model_options, model_options


def register(sub: argparse._SubParsersAction) -> None:
    # `rrpo train`'s options are the fields of RRPOConfig (TrainingArguments + RRPO), parsed by
    # transformers' HfArgumentParser in _run_train, so this parser only routes: it takes no options of
    # its own (not even -h) and hands every word after `train` on (see `pass_through_args` in rrpo.cli).
    p = sub.add_parser(
        "train",
        add_help=False,
        help="train a LoRA adapter with RRPO (or a baseline loss) on preference pairs",
    )
    p.set_defaults(func=_run_train, pass_through_args=True)

    m = sub.add_parser("merge", help="merge a LoRA adapter into the base weights for use in other tools")
    m.add_argument("--model", required=True)
    m.add_argument("--adapter", required=True)
    m.add_argument("--out", required=True)
    add_model_options(m, video=False)
    m.set_defaults(func=_run_merge)


def _run_train(args: argparse.Namespace) -> int:
    from rrpo.train.config import parse_train_args
    from rrpo.train.trainer import train

    cfg = parse_train_args(args.extra_args)
    try:
        summary = train(cfg)
    finally:
        _close_process_group()
    print(json.dumps({k: v for k, v in summary.items() if k != "skipped"}, indent=2))
    return 0


def _close_process_group() -> None:
    """End a multi-process run's process group before the interpreter exits: left to the interpreter's
    teardown, gloo's worker threads now and then abort a rank ("terminate called without an active
    exception") after the run has finished and written everything."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _run_merge(args: argparse.Namespace) -> int:
    from rrpo.train.merge import merge_adapter

    out = merge_adapter(args.model, args.adapter, args.out, load_options=model_options(args))
    print(f"merged weights written to {out}")
    return 0
