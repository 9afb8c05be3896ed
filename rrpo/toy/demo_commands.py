"""`rrpo demo` (also `rrpo toy demo`): the whole self-alignment loop on the toy world."""

from __future__ import annotations

import argparse


def _add_demo_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="the paper's experiment in miniature on the toy world (CPU, ~15 min; --quick ~3 min)",
        description="Base toy model -> self-alignment pairs from its mistakes on perturbed clips -> RRPO and DPO "
        "(LoRA, same settings, several seeds) -> held-out evaluation with the real scorers -> KL from the base "
        "-> OUT/report.md, OUT/results.json and plots.",
    )
    p.add_argument("--out", default="runs/demo", help="output directory (replaced if it exists)")
    p.add_argument("--quick", action="store_true", help="small sizes and one seed (CI smoke run, ~3 min)")
    p.add_argument(
        "--seeds", type=int, default=3, help="training seeds per method (mean and spread reported)"
    )
    p.add_argument(
        "--ablations", action="store_true", help="also RRPO without the fine-grained reward / without TKL"
    )
    p.add_argument(
        "--checkpoint", default=None, help="base model directory (default: the committed toy checkpoint)"
    )
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--epochs", type=float, default=None)
    p.set_defaults(func=_run_demo)


def register_toy(toy_sub: argparse._SubParsersAction) -> None:
    _add_demo_parser(toy_sub, "demo")


def register(subparsers: argparse._SubParsersAction) -> None:
    _add_demo_parser(subparsers, "demo")


def _run_demo(args: argparse.Namespace) -> int:
    from rrpo.toy.demo import DemoConfig, run_demo

    overrides = {
        k: v
        for k, v in {
            "checkpoint": args.checkpoint,
            "learning_rate": args.learning_rate,
            "epochs": args.epochs,
        }.items()
        if v is not None
    }
    run_demo(
        DemoConfig(out=args.out, quick=args.quick, seeds=args.seeds, ablations=args.ablations, **overrides)
    )
    return 0
