"""`rrpo demo` (also `rrpo toy demo`): the whole self-alignment loop on the toy world."""

from __future__ import annotations

import argparse


def _add_demo_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="the paper's experiment in miniature on the toy world (CPU, <= 15 min; --quick <= 3 min)",
        description="Base toy model -> self-alignment pairs from its mistakes on perturbed clips (descriptions "
        "judged by a rule fact-checker, short answers by rule) -> the paper's protocol (description arm: DPO "
        "and RRPO at 2e-4 and 1e-3, RRPO without the fine-grained reward / without TKL; short-answer arm: DPO "
        "and RRPO) at equal pairs and steps, several seeds -> 400 + 100 held-out clips with the real scorers "
        "-> KL from the base -> claims decided by paired bootstrap intervals -> OUT/report.md, "
        "OUT/results.json and plots.",
    )
    p.add_argument("--out", default="runs/demo", help="output directory (replaced if it exists)")
    p.add_argument(
        "--quick", action="store_true", help="small sizes and one seed, every stage (CI smoke run, <= 3 min)"
    )
    p.add_argument("--seeds", type=int, default=2, help="training seeds per configuration (default 2)")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="processes of one torch thread running jobs at once (default 2)",
    )
    p.add_argument(
        "--official",
        action="store_true",
        help="score by generation through `rrpo eval` and `rrpo deviation` instead of the fast scorer",
    )
    p.add_argument(
        "--ablations",
        action="store_true",
        help="kept for older scripts: the protocol always trains RRPO without the fine-grained reward / TKL",
    )
    p.add_argument(
        "--checkpoint", default=None, help="base model directory (default: the committed toy checkpoint)"
    )
    p.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="learning rate of the short-answer arm (default 2e-4)",
    )
    p.add_argument("--epochs", type=float, default=None, help="epochs of every run (default 1)")
    p.set_defaults(func=_run_demo)


def register_toy(toy_sub: argparse._SubParsersAction) -> None:
    _add_demo_parser(toy_sub, "demo")


def register(subparsers: argparse._SubParsersAction) -> None:
    _add_demo_parser(subparsers, "demo")


def _run_demo(args: argparse.Namespace) -> int:
    from rrpo.toy.demo import PROTOCOL, DemoConfig, run_demo

    overrides: dict = {
        k: v for k, v in {"checkpoint": args.checkpoint, "epochs": args.epochs}.items() if v is not None
    }
    if args.learning_rate is not None:
        overrides["protocol"] = [
            [arm, method, args.learning_rate if arm == "short" else lr] for arm, method, lr in PROTOCOL
        ]
    run_demo(
        DemoConfig(
            out=args.out,
            quick=args.quick,
            seeds=args.seeds,
            workers=args.workers,
            official=args.official,
            **overrides,
        )
    )
    return 0
