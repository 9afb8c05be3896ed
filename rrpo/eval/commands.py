"""`rrpo score` and `rrpo compare` (`rrpo eval` and `rrpo deviation` are added beside them later)."""

from __future__ import annotations

import argparse
from pathlib import Path

BENCHMARK_NAMES = ("videohallucer", "tvbench", "mvbench", "videomme", "mlvu", "tempcompass", "longvideobench")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "score",
        help="score a predictions JSONL file against a benchmark's annotations",
        description='Score model predictions ({"id", "prediction"} JSONL lines) with the benchmark\'s '
        "official rule (or the RRPO paper's, --scoring paper). Questions without a prediction are "
        "reported as missing and count as wrong. With --write-template, write a JSONL of every "
        "question (id, question, prompt, empty prediction) to fill in instead.",
    )
    p.add_argument("--benchmark", required=True, choices=BENCHMARK_NAMES)
    p.add_argument("--annotations", required=True, type=Path, help="annotation file or directory")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--predictions", type=Path, help='JSONL of {"id": ..., "prediction": ...}')
    what.add_argument("--write-template", type=Path, metavar="PATH", help="write a predictions template")
    p.add_argument("--out", type=Path, help="directory to write results.json into")
    p.add_argument("--scoring", choices=("official", "paper"), default="official")
    p.set_defaults(func=run_score)

    c = subparsers.add_parser(
        "compare",
        help="compare the results.json of several runs (e.g. base vs DPO vs RRPO)",
        description="Read RUN_DIR/results.json (and RUN_DIR/*/results.json) of each run, print a markdown "
        "table of the headline metrics side by side, and with --out write compare.md and compare.png.",
    )
    c.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    c.add_argument("--names", nargs="+", help="column names (default: the run directories' names)")
    c.add_argument("--out", type=Path, help="directory for compare.md and compare.png")
    c.set_defaults(func=run_compare)


def run_score(args: argparse.Namespace) -> int:
    from rrpo.eval.benchmarks import get_benchmark
    from rrpo.eval.scoring import format_table, read_predictions, write_results, write_template

    bench = get_benchmark(args.benchmark)
    items = bench.load(args.annotations)
    if args.write_template:
        n = write_template(args.write_template, items)
        print(f"wrote {n} questions to {args.write_template}")
        return 0
    predictions = read_predictions(args.predictions)
    results = bench.score(items, predictions, scoring=args.scoring)
    print(format_table(results))
    if args.out:
        path = write_results(
            args.out, results, annotations=str(args.annotations), predictions=str(args.predictions)
        )
        print(f"wrote {path}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from rrpo.errors import RRPOError
    from rrpo.eval.scoring import compare_chart, compare_markdown, load_run

    names = args.names or [p.resolve().name for p in args.runs]
    if len(names) != len(args.runs):
        raise RRPOError(f"--names gives {len(names)} names for {len(args.runs)} runs")
    if len(set(names)) != len(names):
        raise RRPOError(f"run names must differ ({', '.join(names)}); pass --names")
    runs = {name: load_run(path) for name, path in zip(names, args.runs)}
    table = compare_markdown(runs)
    print(table, end="")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compare.md").write_text(table, encoding="utf-8")
        chart = compare_chart(runs, args.out / "compare.png")
        print(f"wrote {args.out / 'compare.md'} and {chart}")
    return 0
