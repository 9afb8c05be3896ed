"""`rrpo demo --quick`: the whole loop runs, and every number in report.md comes from files the run wrote."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rrpo.cli import main
from rrpo.toy.demo import CHECKPOINT_DIR


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    if not (CHECKPOINT_DIR / "config.json").is_file():
        pytest.fail(f"the committed toy checkpoint is missing from {CHECKPOINT_DIR}")
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out


def test_report_structure_and_files(demo_run: Path) -> None:
    report = (demo_run / "report.md").read_text()
    for heading in (
        "## Base model and self-alignment data",
        "## Held-out scores (%)",
        "## The paper's claims, here",
    ):
        assert heading in report
    for png in ("scores.png", "kl.png", "training.png"):
        assert (demo_run / png).stat().st_size > 2000 and f"]({png})" in report
    results = json.loads((demo_run / "results.json").read_text())
    assert set(results["table"]["kl_from_base"]) == {"dpo", "rrpo"}
    assert len(results["claims"]) == 5 and all(isinstance(c["holds"], bool) for c in results["claims"])


def test_every_number_in_the_report_comes_from_written_files(demo_run: Path) -> None:
    results = json.loads((demo_run / "results.json").read_text())
    # The stage files themselves: each evaluation's results.json, metrics.jsonl, deviation.json, summary.json.
    evals = {}
    for path in (demo_run / "eval").rglob("results.json"):
        evals[str(path.relative_to(demo_run / "eval").parent)] = json.loads(path.read_text())["metrics"]
    for bench, written in evals.items():
        method_seed, name = bench.rsplit("/", 1)
        table_src = (
            results["evaluations"]["base"]
            if method_seed == "base"
            else results["evaluations"][method_seed.split("/")[0]][method_seed.split("/")[1]]
        )
        for key, value in table_src[name].items():
            assert written[key] == value, f"{bench}:{key} in results.json differs from the eval's own file"
    for method in ("dpo", "rrpo"):
        dev = json.loads((demo_run / "deviation" / method / "seed0" / "deviation.json").read_text())
        assert results["table"]["kl_from_base"][method]["values"] == [dev["mean_token_kl"]]
        rows = [
            json.loads(line)
            for line in (demo_run / "runs" / method / "seed0" / "metrics.jsonl").read_text().splitlines()
        ]
        assert results["training"][method]["seed0"]["loss"] == [
            r["loss"] for r in rows if "rewards/margins" in r
        ]
    summary = json.loads((demo_run / "data" / "pairs.summary.json").read_text())
    assert results["data_generation"]["pairs_made"] == summary["pairs_made"] > 0
    pairs = (demo_run / "data" / "pairs.jsonl").read_text().splitlines()
    assert len(pairs) == summary["pairs_made"]

    # Every number printed in report.md appears among the numbers of results.json (rounded as printed).
    def numbers(obj):
        if isinstance(obj, bool):
            return
        if isinstance(obj, int | float):
            yield float(obj)
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from numbers(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from numbers(v)

    known = list(numbers(results))
    report = (demo_run / "report.md").read_text()
    body = report.split("![scores]")[0] + report.split("## The paper's claims, here")[1]
    for text in re.findall(r"(?<![\w.])-?\d+\.?\d*(?:e-?\d+)?", body):
        value = float(text)
        mantissa, _, exponent = text.partition("e")
        digits = len(mantissa.split(".")[1]) if "." in mantissa else 0
        tolerance = 0.5 * 10 ** (int(exponent or 0) - digits)  # half a unit in the last printed digit
        assert any(abs(k - value) <= tolerance * 1.0001 for k in known), (
            f"{text} in report.md is not in results.json"
        )
