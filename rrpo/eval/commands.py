"""`rrpo eval`, `rrpo score`, `rrpo compare` and `rrpo deviation`."""

from __future__ import annotations

import argparse
from pathlib import Path

from rrpo.models.options import add_model_options, model_fingerprint, model_options, positive_int

BENCHMARK_NAMES = ("videohallucer", "tvbench", "mvbench", "videomme", "mlvu", "tempcompass", "longvideobench")


def _add_judge_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--judge-url",
        default=None,
        help="OpenAI-compatible endpoint for answers no rule decides (TempCompass); default: none",
    )
    p.add_argument("--judge-model", default="gpt-4o-mini")
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY")
    p.add_argument("--judge-cache", default=None, help="cache dir for judge replies")


def _judge_from(args: argparse.Namespace, default_cache: Path):
    """An LLM judge callable(question, answer, prediction) -> bool | None, or None without --judge-url."""
    if not args.judge_url:
        return None
    from rrpo.llm.client import LLMClient
    from rrpo.llm.judge import make_benchmark_judge

    llm = LLMClient(
        args.judge_url,
        args.judge_model,
        api_key_env=args.judge_api_key_env,
        cache_dir=args.judge_cache or str(default_cache),
    )
    return make_benchmark_judge(llm)


def register(subparsers: argparse._SubParsersAction) -> None:
    e = subparsers.add_parser(
        "eval",
        help="run a model (optionally with a LoRA adapter) on a benchmark and score it",
        description="Batched greedy inference on every question (data-parallel under accelerate launch), "
        "appending predictions to OUT/predictions.jsonl so a rerun resumes, then official scoring into "
        "OUT/results.json. Missing videos are excluded and counted.",
    )
    e.add_argument("--model", required=True)
    e.add_argument("--adapter", default=None)
    e.add_argument("--benchmark", required=True, choices=BENCHMARK_NAMES)
    e.add_argument("--annotations", required=True, type=Path)
    e.add_argument("--video-root", required=True, type=Path)
    e.add_argument("--frames", type=positive_int, default=64)
    e.add_argument("--frame-size", type=positive_int, nargs=2, metavar=("H", "W"), default=None)
    add_model_options(e)
    e.add_argument("--batch-size", type=positive_int, default=4)
    e.add_argument("--max-new-tokens", type=positive_int, default=32)
    e.add_argument(
        "--limit", type=positive_int, default=None, help="only the first N questions (smoke tests)"
    )
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--scoring", choices=("official", "paper"), default="official")
    e.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="read video paths that lead outside --video-root (excluded and listed by default)",
    )
    e.add_argument(
        "--overwrite",
        action="store_true",
        help="start clean: delete the predictions and results in --out first (predictions of a run with other "
        "settings are refused without it)",
    )
    _add_judge_flags(e)
    e.set_defaults(func=run_eval_cmd)

    d = subparsers.add_parser(
        "deviation",
        help="how far an adapter moved the model: per-token KL(base || aligned) on held-out responses",
        description="Mean per-token KL(base || aligned) over the responses of a held-out set (preference "
        "pairs: the chosen response; questions: the ground-truth answer), with the base computed by "
        "switching the adapter off (one copy of the weights). Writes deviation.json and a histogram PNG.",
    )
    d.add_argument("--model", required=True)
    d.add_argument("--adapter", required=True)
    d.add_argument("--data", required=True, type=Path, help="pairs JSONL or questions JSONL")
    d.add_argument("--video-root", required=True, type=Path)
    d.add_argument("--frames", type=positive_int, default=16)
    d.add_argument("--frame-size", type=positive_int, nargs=2, metavar=("H", "W"), default=None)
    add_model_options(d)
    d.add_argument("--limit", type=positive_int, default=None)
    d.add_argument("--out", required=True, type=Path)
    d.set_defaults(func=run_deviation_cmd)

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
    _add_judge_flags(p)
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
    judge = _judge_from(args, (args.out or args.predictions.parent) / "judge_cache")
    results = bench.score(items, predictions, scoring=args.scoring, judge=judge)
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


def run_eval_cmd(args: argparse.Namespace) -> int:
    from rrpo.eval.runner import run_eval

    run_eval(
        args.model,
        args.benchmark,
        args.annotations,
        args.video_root,
        args.out,
        adapter_dir=args.adapter,
        frames=args.frames,
        frame_size=tuple(args.frame_size) if args.frame_size else None,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        scoring=args.scoring,
        limit=args.limit,
        judge=_judge_from(args, args.out / "judge_cache"),
        load_options=model_options(args),
        fingerprint=eval_fingerprint(args),
        overwrite=args.overwrite,
        allow_outside_root=args.allow_outside_root,
    )
    return 0


def eval_fingerprint(args: argparse.Namespace) -> dict:
    """What makes two `rrpo eval` runs share predictions: model, adapter, loading options, frames and
    size, generation length, benchmark and annotations, rrpo's version (not scoring or judge: results
    are scored again every run)."""
    return {
        **model_fingerprint(args),
        "frames": args.frames,
        "frame_size": args.frame_size,
        "max_new_tokens": args.max_new_tokens,
        "benchmark": args.benchmark,
        "annotations": str(args.annotations.resolve()),
    }


def run_deviation_cmd(args: argparse.Namespace) -> int:
    import json

    from rrpo.eval.deviation import model_deviation

    result = model_deviation(
        args.model,
        args.adapter,
        args.data,
        args.video_root,
        args.out,
        frames=args.frames,
        frame_size=tuple(args.frame_size) if args.frame_size else None,
        limit=args.limit,
        load_options=model_options(args),
    )
    print(json.dumps({k: v for k, v in result.items() if k != "per_example"}, indent=2))
    return 0
