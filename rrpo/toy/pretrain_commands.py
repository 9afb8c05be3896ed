"""`rrpo toy pretrain`: supervised pretraining of the tiny base video LLM the toy demo starts from.

Registered into the `rrpo toy` group through `rrpo.toy.commands.TOY_COMMAND_MODULES`. The training code
is not part of the installed library (the demo needs only its result, rrpo/toy/checkpoint): it lives in
`examples/toy_pretrain/` of a source checkout, which `import_toy_pretrain` finds next to this package.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def import_toy_pretrain() -> ModuleType:
    """The `toy_pretrain` package of the source checkout (examples/toy_pretrain), or a clear error."""
    from rrpo.errors import RRPOError

    if not (EXAMPLES / "toy_pretrain" / "__init__.py").is_file():
        raise RRPOError(
            f"rrpo toy pretrain runs from a source checkout: {EXAMPLES / 'toy_pretrain'} is not there "
            "(clone the rrpo repository and `pip install -e .` it)"
        )
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module("toy_pretrain")


def register_toy(toy_subparsers: argparse._SubParsersAction) -> None:
    """Add `rrpo toy pretrain`."""
    p = toy_subparsers.add_parser(
        "pretrain",
        help="pretrain a tiny base video LLM on the toy world (the demo's starting checkpoint)",
        description="Build a tiny Qwen2-VL and train all its weights on the toy world's pretrain.jsonl "
        "(caption, describe and QA turns in the evaluation's prompt format). Without --data the toy world "
        "is generated first (into --data-cache) with the parameters the committed checkpoint used. "
        "Deterministic for a seed on one machine and thread count, unless --minutes stops it early.",
    )
    p.add_argument("--data", help="toy dataset directory (`rrpo toy generate`); default: generate one")
    p.add_argument(
        "--data-cache",
        default=None,
        help="where to generate the default dataset (default: a "
        "directory under the system temp dir, reused when it is complete)",
    )
    p.add_argument(
        "--out", required=True, help="model directory to write (loadable by rrpo.models.load_model)"
    )
    p.add_argument("--seed", type=int, default=0, help="model init and batch order seed (default 0)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the checkpoint's)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes (wall clock)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--schedule", choices=("constant", "cosine"), default=None)
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (results depend on it; default 1)"
    )
    p.add_argument(
        "--eval-every", type=int, default=None, help="quick held-out eval every N steps (0: never)"
    )
    p.add_argument(
        "--save-every",
        type=int,
        default=0,
        help="also save the model to OUT/step_N every N steps (at eval steps)",
    )
    p.add_argument(
        "--focus-steps", type=int, default=None, help="first steps on caption / describe turns only"
    )
    p.add_argument(
        "--focus-kinds", default=None, help="comma-separated example kinds of the first --focus-steps steps"
    )
    p.add_argument(
        "--kinds",
        default=None,
        help="comma-separated turn kinds of pretrain.jsonl to train on (default: all)",
    )
    p.add_argument(
        "--aux-tasks",
        default=None,
        dest="aux_kinds",
        help="comma-separated auxiliary tasks added to every clip (examples/toy_pretrain/tasks.py AUX_TASKS)",
    )
    p.add_argument(
        "--init",
        default=None,
        help="start from this toy model's weights (fresh optimizer) instead of a new random model",
    )
    p.add_argument(
        "--decisive-loss",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="multiple-choice and yes/no examples: loss on the deciding token (letter, Yes/No) only",
    )
    p.add_argument(
        "--format-loss",
        action="store_true",
        default=None,
        help='with --decisive-loss: also train the reply format ("(", ")", end of turn), not the option text',
    )
    p.add_argument("--n-pretrain", type=int, default=None, help="pretraining clips of the generated dataset")
    p.add_argument(
        "--background",
        choices=("black", "gradient"),
        default=None,
        help="background of the generated dataset (`rrpo toy generate --background`; default black)",
    )
    p.add_argument(
        "--trail",
        type=int,
        default=None,
        help="motion trail of the generated dataset (`rrpo toy generate --trail`; default 0)",
    )
    p.add_argument(
        "--order-question",
        choices=("pair", "colour"),
        default=None,
        help="order question of the generated dataset (`rrpo toy generate --order-question`; default pair)",
    )
    p.add_argument(
        "--description",
        choices=("full", "colour"),
        default=None,
        help="description of the generated dataset (`rrpo toy generate --description`; default full)",
    )
    p.add_argument(
        "--vision-lr-scale",
        type=float,
        default=None,
        help="the vision tower and merger learn at this multiple of --lr (default 1)",
    )
    p.add_argument(
        "--vision-steps",
        type=int,
        default=None,
        help="first train the vision tower alone for this many steps: a probe on its pooled output "
        "predicts each colour's direction of motion (default 0)",
    )
    p.add_argument(
        "--vision-lr", type=float, default=None, help="learning rate of --vision-steps (default 3e-3)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing model in --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_pretrain_command)


# Flags whose values are comma-separated lists of the config's tuple fields.
_LIST_FIELDS = ("kinds", "focus_kinds", "aux_kinds")


def _train_changes(args: argparse.Namespace, config_class: type) -> dict:
    """The TrainConfig fields the command line sets: every flag whose dest is a field name."""
    changes = {}
    for f in dataclasses.fields(config_class):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if f.name in _LIST_FIELDS:
            value = tuple(k.strip() for k in value.split(",") if k.strip())
        changes[f.name] = value
    return changes


def run_pretrain_command(args: argparse.Namespace) -> int:
    import json
    import platform
    import tempfile
    import time
    from dataclasses import replace

    import torch

    from rrpo.errors import RRPOError

    pt = import_toy_pretrain()
    DEFAULT_DATA, DEFAULT_TRAIN, ModelSpec = pt.DEFAULT_DATA, pt.DEFAULT_TRAIN, pt.ModelSpec
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise RRPOError(f"{out}: exists and is not empty; pass --overwrite to replace the model there")
    t0 = time.perf_counter()
    data = Path(args.data) if args.data else None
    shaping = (args.background, args.trail, args.n_pretrain, args.order_question, args.description)
    if data is not None and any(v is not None for v in shaping):
        raise RRPOError(
            "--background, --trail, --order-question, --description and --n-pretrain shape the generated dataset; "
            "--data has its own"
        )
    if data is None:
        from rrpo.toy.splits import generate_dataset

        params = dict(DEFAULT_DATA)
        if args.n_pretrain is not None:
            params["n_pretrain"] = args.n_pretrain
        if args.background not in (None, "black"):  # black is generate_dataset's default: same cache name
            params["background"] = args.background
        if args.trail:
            params["trail"] = args.trail
        if args.order_question not in (None, "pair"):  # pair is generate_dataset's default: same cache name
            params["order_question"] = args.order_question
        if args.description not in (None, "full"):  # full is generate_dataset's default: same cache name
            params["description"] = args.description
        name = "rrpo-toy-" + "-".join(f"{k}{v}" for k, v in sorted(params.items()))
        data = Path(args.data_cache) if args.data_cache else Path(tempfile.gettempdir()) / name
        from rrpo.toy.splits import FORMAT_VERSION

        cached = json.loads((data / "world.json").read_text()) if (data / "world.json").is_file() else {}
        if cached.get("version") != FORMAT_VERSION:  # absent, or written by an older rrpo (lossy videos)
            print(f"generating the toy world into {data} ({params})")
            generate_dataset(data, overwrite=True, progress=not args.no_progress, **params)
    changes = _train_changes(args, type(DEFAULT_TRAIN))
    cfg = replace(DEFAULT_TRAIN, **changes)
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    summary = pt.run_pretrain(
        data,
        out,
        spec=ModelSpec(),
        cfg=cfg,
        save_every=args.save_every,
        progress=not args.no_progress,
        init=args.init,
    )
    summary["command"] = " ".join(["rrpo", *getattr(args, "argv", sys.argv[1:])])
    summary["wall_seconds"] = time.perf_counter() - t0
    summary["machine"] = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    (out / "pretrain_metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    pt.write_provenance(out, summary)
    print(
        f"saved {out} in {summary['wall_seconds'] / 60:.1f} min "
        f"({summary['train']['examples_per_s']:.1f} examples/s)"
    )
    if "heldout" in summary:
        print(pt.format_table(summary["heldout"]))
    return 0
