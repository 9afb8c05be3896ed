"""`rrpo toy ...`: the synthetic video world's commands.

`rrpo toy generate` is defined here. Other toy subcommands plug into the same `toy` group without
editing this file, in either of two ways:

- a module named in `TOY_COMMAND_MODULES` (e.g. `rrpo/toy/pretrain_commands.py`) that defines
  `register_toy(toy_subparsers)` is imported when the parser is built (a missing module is skipped,
  as in rrpo/cli.py); it may also define `register(subparsers)` to add top-level commands such as
  `rrpo demo`;
- code imported before the parser is built may call `register_toy_subcommand(fn)` (also usable as a
  decorator), where `fn(toy_subparsers)` adds parsers.

The `toy` group's subparsers object is kept in `TOY_SUBPARSERS` after `register` runs.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

ToyRegistrar = Callable[[argparse._SubParsersAction], None]

TOY_COMMAND_MODULES = [
    "rrpo.toy.pretrain_commands",  # toy pretrain
    "rrpo.toy.demo_commands",  # toy demo / demo
]
_REGISTRARS: list[ToyRegistrar] = []
TOY_SUBPARSERS: argparse._SubParsersAction | None = None


def register_toy_subcommand(fn: ToyRegistrar) -> ToyRegistrar:
    """Add `fn(toy_subparsers)` to the functions that add `rrpo toy` subcommands; returns `fn`."""
    if fn not in _REGISTRARS:
        _REGISTRARS.append(fn)
    return fn


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `toy` command group (and any top-level commands of the toy command modules)."""
    global TOY_SUBPARSERS
    toy = subparsers.add_parser(
        "toy",
        help="synthetic video world: generate data, pretrain a tiny model",
        description="A procedural world of coloured shapes that appear, move and disappear, with questions "
        "and held-out benchmarks whose ground truth is known exactly.",
    )
    toy_sub = toy.add_subparsers(dest="toy_command", metavar="TOY_COMMAND")
    toy.set_defaults(func=lambda args: _print_help(toy))
    TOY_SUBPARSERS = toy_sub
    _register_generate(toy_sub)
    for name in TOY_COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # not written yet
                continue
            raise
        if hasattr(module, "register_toy"):
            module.register_toy(toy_sub)
        if hasattr(module, "register"):
            module.register(subparsers)
    for fn in _REGISTRARS:
        fn(toy_sub)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _register_generate(toy_sub: argparse._SubParsersAction) -> None:
    p = toy_sub.add_parser(
        "generate",
        help="write a toy dataset: mp4 clips, training pool, pretraining examples, held-out benchmarks",
        description="Write a toy-world dataset directory (layout: rrpo/toy/splits.py). Video paths in every "
        "file are relative to --out: evaluate with --video-root set to it.",
    )
    p.add_argument("--out", required=True, help="dataset directory to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pretrain", type=int, default=2000, help="clips for supervised pretraining (default 2000)"
    )
    p.add_argument("--train", type=int, default=500, help="clips of the self-alignment pool (default 500)")
    p.add_argument("--test", type=int, default=200, help="held-out clips for the benchmarks (default 200)")
    p.add_argument("--prior-break", type=int, default=100, help="clips breaking the prior (default 100)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="frame height and width in pixels (even)")
    p.add_argument("--shape-size", type=int, default=18, help="shape size in pixels (default 18)")
    p.add_argument("--max-objects", type=int, default=3)
    p.add_argument(
        "--background",
        choices=("black", "gradient"),
        default="black",
        help="'gradient': a dim red/blue ramp that tells where in the frame each patch is (default black)",
    )
    p.add_argument(
        "--trail",
        type=int,
        default=0,
        help="earlier positions (0-3 frames) drawn dimmed behind each moving object (default 0)",
    )
    p.add_argument(
        "--order-question",
        choices=("pair", "colour"),
        default="pair",
        help="'pair': 'Which appears first, the red circle or the blue square?' (two options); 'colour': "
        "'Which colour appears first?' with the palette as options (what the committed toy model reads)",
    )
    p.add_argument(
        "--description",
        choices=("full", "colour"),
        default="full",
        help="'full': the description ('Describe the video.') names objects by colour and shape; 'colour': "
        "by colour alone ('A red object moves left.'), what the describing toy model writes",
    )
    p.add_argument(
        "--prior-strength",
        type=float,
        default=0.75,
        help="P(prior colour moves the prior direction) in training",
    )
    p.add_argument("--heldout-prior-strength", type=float, default=0.5, help="the same in held-out clips")
    p.add_argument(
        "--curriculum", type=float, default=0.25, help="fraction of pretraining clips with one object, first"
    )
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--workers", type=int, default=1, help="processes writing videos")
    p.add_argument("--no-videos", action="store_true", help="write only the JSON files")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from rrpo.toy.splits import generate_dataset

    world = generate_dataset(
        args.out,
        seed=args.seed,
        n_pretrain=args.pretrain,
        n_train=args.train,
        n_test=args.test,
        n_prior_break=args.prior_break,
        frames=args.frames,
        size=args.size,
        shape_size=args.shape_size,
        prior_strength=args.prior_strength,
        heldout_prior_strength=args.heldout_prior_strength,
        max_objects=args.max_objects,
        background=args.background,
        trail=args.trail,
        order_question=args.order_question,
        description=args.description,
        curriculum=args.curriculum,
        fps=args.fps,
        write_mp4=not args.no_videos,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    total = sum(world["splits"].values())
    print(f"wrote {total} clips to {args.out}")
    for path, n in world["files"].items():
        print(f"  {path}: {n}")
    return 0
