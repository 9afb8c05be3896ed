"""Predictions in, tables and results.json out; side-by-side comparison of runs.

* `read_predictions(path)`: JSONL lines `{"id": ..., "prediction": ...}` -> {id: prediction}.
* `format_table(results)`: a plain-text report of one benchmark's score dict.
* `write_results(out_dir, results, **meta)`: results.json with every metric, count and id list.
* `load_run(dir)`, `compare_markdown(runs)`, `compare_chart(runs, path)`: `rrpo compare`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rrpo.errors import RecordError, RRPOError

RESULTS_FILE = "results.json"


def read_predictions(path: Path) -> dict[str, str]:
    """{id: prediction} from a JSONL file of `{"id": str | int, "prediction": str | null}` lines.

    Blank lines are skipped; a null prediction (the model produced nothing) reads as "". A line that
    is not such an object raises RecordError naming the line; so does an id repeated with a
    different prediction (a repeat with the same text, as resumed runs may write, is fine).
    """
    path = Path(path)
    if not path.is_file():
        raise RRPOError(f"{path}: predictions file not found")
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(where, None, f"not valid JSON ({err.msg})") from None
            if not isinstance(rec, dict):
                raise RecordError(where, None, "expected a JSON object")
            if "id" not in rec or isinstance(rec["id"], bool) or not isinstance(rec["id"], (str, int)):
                raise RecordError(where, "id", "missing or not a string")
            if "prediction" not in rec:
                raise RecordError(where, "prediction", "missing")
            pred = rec["prediction"]
            if pred is None:
                pred = ""
            if not isinstance(pred, str):
                raise RecordError(where, "prediction", f"expected a string, got {type(pred).__name__}")
            key = str(rec["id"])
            if key in out and out[key] != pred:
                raise RecordError(where, "id", f"{key!r} appears again with a different prediction")
            out[key] = pred
    return out


def write_template(path: Path, items: Sequence[Any]) -> int:
    """Write one `{"id", "question", "prompt", "video", "prediction": ""}` line per item; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for item in items:
            rec = {
                "id": item.id,
                "question": item.question,
                "prompt": item.prompt,
                "video": item.video,
                "prediction": "",
            }
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return len(items)


def _fmt(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _rows(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Left-aligned text columns."""
    cells = [list(map(str, header))] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_table(results: Mapping[str, Any]) -> str:
    """A readable report: the summary metrics, each grouping's accuracy, the counts and notes."""
    head = results["headline"]
    lines = [f"{results['benchmark']}  (scoring: {results['scoring']}; headline: {head})", ""]
    lines += _rows(["metric", "value (%)"], [[k, v] for k, v in results["summary"].items()])
    for name, group in results.get("groups", {}).items():
        if not group:
            continue
        lines += ["", f"by {name}:"]
        lines += _rows(
            [name, "correct", "total", "accuracy (%)"],
            [[k, g["correct"], g["total"], g["accuracy"]] for k, g in group.items()],
        )
    counts = results.get("counts", {})
    lines += ["", "counts: " + ", ".join(f"{k}={v}" for k, v in counts.items())]
    for note in results.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def write_results(out_dir: Path, results: Mapping[str, Any], **meta: Any) -> Path:
    """Write `out_dir/results.json`: the score dict plus `meta` (model, adapter, frames, ...)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS_FILE
    payload = {**results, "meta": {k: _jsonable(v) for k, v in meta.items()}}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)  # never leave a half-written results.json behind
    return path


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


# ---------------------------------------------------------------------------------------------
# Comparison of runs.
# ---------------------------------------------------------------------------------------------


def load_run(run_dir: Path) -> dict[str, dict[str, Any]]:
    """{benchmark: results} from `run_dir/results.json` and/or `run_dir/*/results.json`."""
    run_dir = Path(run_dir)
    files = ([run_dir / RESULTS_FILE] if (run_dir / RESULTS_FILE).is_file() else []) + sorted(
        run_dir.glob(f"*/{RESULTS_FILE}")
    )
    if not files:
        raise RRPOError(f"{run_dir}: no {RESULTS_FILE} (nor */{RESULTS_FILE}) found")
    out: dict[str, dict[str, Any]] = {}
    for path in files:
        try:
            res = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise RRPOError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(res, dict) or not {"benchmark", "headline", "summary"} <= res.keys():
            raise RRPOError(f"{path}: not an rrpo results file (needs benchmark, headline, summary)")
        if res["benchmark"] in out:
            raise RRPOError(f"{run_dir}: two results files for benchmark {res['benchmark']!r}")
        out[res["benchmark"]] = res
    return out


def compare_rows(
    runs: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> list[tuple[str, str, list[float | None]]]:
    """(benchmark, metric, [value per run]) rows: each benchmark's headline first, then its summary."""
    benchmarks: list[str] = []
    for res in runs.values():
        benchmarks += [b for b in res if b not in benchmarks]
    rows = []
    for bench in benchmarks:
        metrics: list[str] = []
        for res in runs.values():
            if bench in res:
                r = res[bench]
                metrics += [m for m in [r["headline"], *r["summary"]] if m not in metrics]
        for metric in metrics:
            rows.append(
                (bench, metric, [runs[n].get(bench, {}).get("summary", {}).get(metric) for n in runs])
            )
    return rows


def compare_markdown(runs: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """A markdown table, one row per (benchmark, metric), one column per run; '-' where absent.

    The best value of each row is in bold (ties all bold), as in the paper's tables.
    """
    names = list(runs)
    lines = ["| benchmark | metric | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for bench, metric, values in compare_rows(runs):
        present = [v for v in values if v is not None]
        best = max(present) if len(present) > 1 else None
        cells = ["-" if v is None else (f"**{v:.1f}**" if v == best else f"{v:.1f}") for v in values]
        lines.append(f"| {bench} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare_chart(runs: Mapping[str, Mapping[str, Mapping[str, Any]]], path: Path) -> Path:
    """Grouped bar chart of each benchmark's headline metric (one bar per run), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [
        (b, m, v)
        for b, m, v in compare_rows(runs)
        if any(m == r[b]["headline"] for r in runs.values() if b in r)
    ]
    names = list(runs)
    x = np.arange(len(rows))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(rows) + 1), 3.6))
    for k, name in enumerate(names):
        vals = [v[k] if v[k] is not None else 0.0 for _, _, v in rows]
        bars = ax.bar(x + (k - (len(names) - 1) / 2) * width, vals, width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, [f"{b}\n{m}" for b, m, _ in rows], fontsize=8)
    ax.set_ylabel("score (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
