"""`rrpo demo --quick`: every stage runs, every number in report.md comes from files the run wrote, and
every claim's interval and verdict is recomputed here from those files."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from rrpo.cli import main
from rrpo.eval.bootstrap import paired_bootstrap
from rrpo.toy.demo import CHECKPOINT_DIR

# What each claim compares, written out from issue 18 independently of rrpo.toy.demo_results:
# (a, b, item set) for "a > b" (for KL: a is the model expected to deviate more).
EXPECTED_CLAIMS = {
    "describe_rrpo_beats_base": ("describe/rrpo@0.0002", "base", "describe"),
    "describe_rrpo_ge_dpo": ("describe/rrpo@0.0002", "describe/dpo@0.0002", "describe"),
    "describe_rrpo_ge_dpo_high_lr": ("describe/rrpo@0.001", "describe/dpo@0.001", "describe"),
    "describe_kl_rrpo_lt_dpo": ("describe/dpo@0.0002", "describe/rrpo@0.0002", "kl_describe"),
    "describe_kl_rrpo_lt_dpo_high_lr": ("describe/dpo@0.001", "describe/rrpo@0.001", "kl_describe"),
    "ablation_fine_grained_costs": ("describe/rrpo@0.001", "describe/rrpo_no_fine_grained@0.001", "describe"),
    "ablation_tkl_costs": ("describe/rrpo@0.001", "describe/rrpo_no_tkl@0.001", "describe"),
    "ablation_tkl_costs_more": (
        "describe/rrpo_no_fine_grained@0.001",
        "describe/rrpo_no_tkl@0.001",
        "describe",
    ),
    "rrpo_high_lr_close_as_dpo": ("describe/dpo@0.0002", "describe/rrpo@0.001", "kl_describe"),
    "short_rrpo_beats_base_temporal": ("short/rrpo@0.0002", "base", "temporal"),
    "short_rrpo_beats_base_hallucination": ("short/rrpo@0.0002", "base", "hallucination"),
    "short_rrpo_ge_dpo": ("short/rrpo@0.0002", "short/dpo@0.0002", "temporal"),
    "short_kl_rrpo_lt_dpo": ("short/dpo@0.0002", "short/rrpo@0.0002", "kl_answers"),
}


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
    for png in ("scores.png", "kl_vs_lr.png", "training.png"):
        assert (demo_run / png).stat().st_size > 2000 and f"]({png})" in report
    results = json.loads((demo_run / "results.json").read_text())
    assert "What the toy can and cannot show" in report
    models = {f"{arm}/{m}@{lr:g}" for arm, m, lr in results["config"]["protocol"]}
    assert set(results["evaluations"]) == models | {"base"}
    assert {c["id"] for c in results["claims"]} == set(EXPECTED_CLAIMS)
    assert all(c["verdict"] in ("holds", "does not hold", "inconclusive") for c in results["claims"])


def _items(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_number_comes_from_a_file_the_run_wrote(demo_run: Path) -> None:
    results = json.loads((demo_run / "results.json").read_text())
    for model, seeds in results["evaluations"].items():
        for seed, metrics in seeds.items():
            where = demo_run / "eval" / ("base" if model == "base" else f"{model}/{seed}")
            assert json.loads((where / "metrics.json").read_text()) == metrics
    from rrpo.toy.demo_results import TABLE_ROWS

    for key, _, section, metric in TABLE_ROWS:  # each table cell: the seeds' own metrics.json values
        for model, stat in results["table"][key].items():
            values = [m[section][metric] for m in results["evaluations"][model].values()]
            assert stat["values"] == values and stat["mean"] == pytest.approx(np.mean(values))
    # the table's fact accuracy is the descriptions' facts counted again from items.jsonl
    items = _items(demo_run / "eval" / "base" / "items.jsonl")
    facts = [r for r in items if r["set"] == "describe"]
    assert results["table"]["describe/fact_accuracy"]["base"]["mean"] == pytest.approx(
        100 * sum(r["score"] for r in facts) / sum(r["n"] for r in facts)
    )
    for model, seeds in results["training"].items():
        for seed, curve in seeds.items():
            rows = [
                json.loads(x)
                for x in (demo_run / "runs" / model / seed / "metrics.jsonl").read_text().splitlines()
            ]
            assert curve["loss"] == [r["loss"] for r in rows if "rewards/margins" in r]
    for arm, gen in results["data_generation"].items():
        summary = json.loads((demo_run / "data" / arm / "pairs.summary.json").read_text())
        assert gen["pairs_made"] == summary["pairs_made"] > 0
        assert (
            len((demo_run / "data" / arm / "pairs.jsonl").read_text().splitlines()) == summary["pairs_made"]
        )
    describe_pair = json.loads((demo_run / "data" / "describe" / "pairs.jsonl").read_text().splitlines()[0])
    assert describe_pair["answer_type"] == "open" and describe_pair["chosen_spans"]

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
    body = re.sub(r"[\w/]+@[\d.e-]+", "", body)  # model names ("describe/rrpo@0.001")
    for claim in results["claims"]:  # the claims' own words are results.json's text
        body = body.replace(claim["claim"], "")
    for text in re.findall(r"(?<![\w.])-?\d+\.?\d*(?:e-?\d+)?", body):
        value = float(text)
        mantissa, _, exponent = text.partition("e")
        digits = len(mantissa.split(".")[1]) if "." in mantissa else 0
        tolerance = 0.5 * 10 ** (int(exponent or 0) - digits)  # half a unit in the last printed digit
        assert any(abs(k - value) <= tolerance * 1.0001 for k in known), (
            f"{text} in report.md is not in results.json: ...{body[max(0, body.find(text) - 60) : body.find(text) + 20]}"
        )


def test_each_claim_is_recomputed_from_the_item_files(demo_run: Path) -> None:
    results = json.loads((demo_run / "results.json").read_text())
    cfg = results["config"]

    def clip_sums(model: str, item_set: str) -> dict[str, list[float]]:
        dirs = (
            [demo_run / "eval" / "base"] if model == "base" else sorted((demo_run / "eval" / model).iterdir())
        )
        per_seed = []
        for d in dirs:
            sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
            for r in _items(d / "items.jsonl"):
                if r["set"] == item_set:
                    sums[r["clip"]][0] += r["score"]
                    sums[r["clip"]][1] += r["n"]
            per_seed.append(sums)
        return {c: [np.mean([s[c][0] for s in per_seed]), per_seed[0][c][1]] for c in per_seed[0]}

    counted = {"holds": 0, "does not hold": 0, "inconclusive": 0}
    for claim in results["claims"]:
        a, b, item_set = EXPECTED_CLAIMS[claim["id"]]
        assert (claim["a"], claim["b"], claim["set"]) == (a, b, item_set)
        sa, sb = clip_sums(a, item_set), clip_sums(b, item_set)
        clips = sorted(sa)
        scale = 1 if item_set.startswith("kl") else 100
        estimate = scale * (
            sum(sa[c][0] for c in clips) / sum(sa[c][1] for c in clips)
            - sum(sb[c][0] for c in clips) / sum(sb[c][1] for c in clips)
        )
        iv = claim["interval"]
        assert iv["estimate"] == pytest.approx(estimate, rel=1e-9, abs=1e-12)
        again = paired_bootstrap(
            *(np.array([s[c][k] for c in clips]) for s in (sa, sb) for k in (0, 1)),
            resamples=cfg["bootstrap_resamples"],
            seed=0,
            scale=scale,
        )
        assert (again.low, again.high) == pytest.approx((iv["low"], iv["high"]))
        assert iv["low"] <= iv["estimate"] <= iv["high"]
        expected = "holds" if iv["low"] > 0 else "does not hold" if iv["high"] < 0 else "inconclusive"
        assert claim["verdict"] == expected, claim["id"]
        counted[expected] += 1
        # the headline numbers of the table say the same difference (seed means)
        row = {
            "describe": "describe/fact_accuracy",
            "temporal": "temporal/accuracy",
            "hallucination": "hallucination/overall",
        }.get(item_set, item_set)
        table = results["table"][row]
        assert table[a]["mean"] - table[b]["mean"] == pytest.approx(estimate, rel=1e-6, abs=1e-9)
    assert results["verdict_counts"] == counted
