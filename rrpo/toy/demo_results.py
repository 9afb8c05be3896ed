"""results.json of `rrpo demo`, assembled from the files the stages wrote: each pool's
`pairs.summary.json`, each run's `metrics.jsonl`, each evaluation's `metrics.json` and `items.jsonl`.

The claims are decided by intervals: for "a > b", a paired clip-level bootstrap 95 % interval of
score(a) - score(b) (`rrpo.eval.bootstrap`), each clip's score averaged over the seeds first; "holds"
when the interval lies above 0, "does not hold" below 0, "inconclusive" otherwise. The spread over
seeds is shown beside it, not used to decide.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rrpo.eval.bootstrap import VERDICTS, paired_bootstrap, verdict

CONFIDENCE = 0.95  # of every claim's interval

# (row key, label, metrics.json section, metric) of the report's table.
TABLE_ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("describe/fact_accuracy", "Descriptions: fact accuracy", "describe", "fact_accuracy"),
    ("describe/all_facts_right", "  every fact right", "describe", "all_facts_right"),
    ("temporal/accuracy", "Temporal (MC acc.)", "temporal", "accuracy"),
    ("temporal/task/order", "  order", "temporal", "task/order"),
    ("temporal/task/direction", "  direction", "temporal", "task/direction"),
    ("temporal/task/count", "  count", "temporal", "task/count"),
    ("hallucination/overall", "Hallucination (pair acc.)", "hallucination", "overall"),
    (
        "hallucination/object_existence/overall",
        "  object existence",
        "hallucination",
        "object_existence/overall",
    ),
    ("hallucination/temporal/overall", "  temporal", "hallucination", "temporal/overall"),
    ("hallucination/motion/overall", "  motion", "hallucination", "motion/overall"),
    ("prior_break/task/prior_against", "Prior-breaking clips", "prior_break", "task/prior_against"),
    ("prior_break/task/control", "  control colours", "prior_break", "task/control"),
    ("kl_describe", "KL from base, descriptions (per token)", "kl_describe", "mean_token_kl"),
    ("kl_answers", "KL from base, benchmark answers (per token)", "kl_answers", "mean_token_kl"),
)

# Each claim: "a > b" on one item set. `scale` 100: accuracy in points; 1: KL per token.
# For KL claims a is the model expected to deviate more.
CLAIMS: tuple[dict[str, Any], ...] = (
    {
        "id": "describe_rrpo_beats_base",
        "claim": "RRPO (2e-4) describes better than the base (fact accuracy)",
        "set": "describe",
        "a": "describe/rrpo@0.0002",
        "b": "base",
        "scale": 100,
    },
    {
        "id": "describe_rrpo_ge_dpo",
        "claim": "RRPO >= DPO at 2e-4 (fact accuracy)",
        "set": "describe",
        "a": "describe/rrpo@0.0002",
        "b": "describe/dpo@0.0002",
        "scale": 100,
    },
    {
        "id": "describe_rrpo_ge_dpo_high_lr",
        "claim": "RRPO >= DPO at 1e-3 (fact accuracy)",
        "set": "describe",
        "a": "describe/rrpo@0.001",
        "b": "describe/dpo@0.001",
        "scale": 100,
    },
    {
        "id": "describe_kl_rrpo_lt_dpo",
        "claim": "KL(RRPO) < KL(DPO) at 2e-4 (held-out descriptions)",
        "set": "kl_describe",
        "a": "describe/dpo@0.0002",
        "b": "describe/rrpo@0.0002",
        "scale": 1,
    },
    {
        "id": "describe_kl_rrpo_lt_dpo_high_lr",
        "claim": "KL(RRPO) < KL(DPO) at 1e-3 (held-out descriptions)",
        "set": "kl_describe",
        "a": "describe/dpo@0.001",
        "b": "describe/rrpo@0.001",
        "scale": 1,
    },
    {
        "id": "ablation_fine_grained_costs",
        "claim": "Removing the fine-grained reward costs fact accuracy (1e-3)",
        "set": "describe",
        "a": "describe/rrpo@0.001",
        "b": "describe/rrpo_no_fine_grained@0.001",
        "scale": 100,
    },
    {
        "id": "ablation_tkl_costs",
        "claim": "Removing the token-wise KL costs fact accuracy (1e-3)",
        "set": "describe",
        "a": "describe/rrpo@0.001",
        "b": "describe/rrpo_no_tkl@0.001",
        "scale": 100,
    },
    {
        "id": "ablation_tkl_costs_more",
        "claim": "Removing TKL costs more than removing the fine-grained reward",
        "set": "describe",
        "a": "describe/rrpo_no_fine_grained@0.001",
        "b": "describe/rrpo_no_tkl@0.001",
        "scale": 100,
    },
    {
        "id": "rrpo_high_lr_close_as_dpo",
        "claim": "RRPO at 5x DPO's learning rate (1e-3 vs 2e-4; the paper: 10x) stays as close to the base as DPO",
        "set": "kl_describe",
        "a": "describe/dpo@0.0002",
        "b": "describe/rrpo@0.001",
        "scale": 1,
    },
    {
        "id": "short_rrpo_beats_base_temporal",
        "claim": "Short answers: RRPO improves the temporal score over the base",
        "set": "temporal",
        "a": "short/rrpo@0.0002",
        "b": "base",
        "scale": 100,
    },
    {
        "id": "short_rrpo_beats_base_hallucination",
        "claim": "Short answers: RRPO improves the hallucination score over the base",
        "set": "hallucination",
        "a": "short/rrpo@0.0002",
        "b": "base",
        "scale": 100,
    },
    {
        "id": "short_rrpo_ge_dpo",
        "claim": "Short answers: RRPO >= DPO (temporal)",
        "set": "temporal",
        "a": "short/rrpo@0.0002",
        "b": "short/dpo@0.0002",
        "scale": 100,
    },
    {
        "id": "short_kl_rrpo_lt_dpo",
        "claim": "Short answers: KL(RRPO) < KL(DPO) (benchmark answers)",
        "set": "kl_answers",
        "a": "short/dpo@0.0002",
        "b": "short/rrpo@0.0002",
        "scale": 1,
    },
)


def read_items(eval_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (eval_dir / "items.jsonl").read_text(encoding="utf-8").splitlines()]


def clip_sums(items: list[dict[str, Any]], item_set: str) -> dict[str, tuple[float, float]]:
    """clip -> (sum of scores, sum of counts) over the items of one set."""
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for it in items:
        if it["set"] == item_set:
            out[it["clip"]][0] += it["score"]
            out[it["clip"]][1] += it["n"]
    return {k: (v[0], v[1]) for k, v in out.items()}


def seed_averaged(per_seed: list[dict[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    """Each clip's score sum averaged over seeds (its count is the same in every seed)."""
    clips = set(per_seed[0])
    if any(set(s) != clips for s in per_seed):
        raise ValueError("seeds scored different clips")
    return {c: (float(np.mean([s[c][0] for s in per_seed])), per_seed[0][c][1]) for c in clips}


def decide_claim(
    spec: dict[str, Any],
    units: dict[str, dict[str, dict[str, tuple[float, float]]]],
    *,
    resamples: int,
    seed: int = 0,
) -> dict[str, Any] | None:
    """One claim's interval and verdict from clip sums `units[model][set]` (None: a model was not run)."""
    if spec["a"] not in units or spec["b"] not in units:
        return None
    a, b = units[spec["a"]][spec["set"]], units[spec["b"]][spec["set"]]
    clips = sorted(set(a) & set(b))
    arr = [np.array([x[c][k] for c in clips]) for x in (a, b) for k in (0, 1)]
    interval = paired_bootstrap(
        *arr, resamples=resamples, seed=seed, scale=spec["scale"], confidence=CONFIDENCE
    )
    return {**spec, "interval": interval.to_dict(), "verdict": verdict(interval)}


def _stats(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=float)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "values": arr.tolist(),
    }


def pair_shape(path: Path) -> dict[str, float]:
    """How long the preferred responses are (words) and what share of their characters the differing
    spans cover: where RRPO's span reward can differ from DPO's whole-response one."""
    words, covered = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        pair = json.loads(line)
        words.append(len(pair["chosen"].split()))
        covered.append(sum(b - a for a, b in pair["chosen_spans"]) / max(1, len(pair["chosen"])))
    return {
        "mean_chosen_words": float(np.mean(words)) if words else 0.0,
        "span_share_pct": 100.0 * float(np.mean(covered)) if covered else 0.0,
    }


def training_curve(run_dir: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r and "rewards/margins" in r]
    keys = ("loss", "rewards/margins", "rewards/accuracies", "kl/chosen")
    return {
        "steps": [r["step"] for r in steps],
        **{k: [r[k] for r in steps] for k in keys},
        "final": {k: steps[-1][k] for k in keys} if steps else {},
    }


def assemble(out: Path, cfg: Any, meta: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """results.json's content (without config and timings) from the files under `out`."""
    results: dict[str, Any] = {"base_model": {"heldout": meta.get("heldout", {})}}
    results["data_generation"] = {}
    for arm in ("describe", "short"):
        s = json.loads((out / "data" / arm / "pairs.summary.json").read_text())
        results["data_generation"][arm] = {
            k: s[k]
            for k in (
                "records_seen",
                "pairs_made",
                "correct_on_every_perturbation",
                "rejects",
                "rejects_by_reason",
                "retryable",
            )
        }
        results["data_generation"][arm].update(pair_shape(out / "data" / arm / "pairs.jsonl"))
    evaluations: dict[str, dict[str, Any]] = {
        "base": {"seed0": json.loads((out / "eval/base/metrics.json").read_text())}
    }
    items: dict[str, list[list[dict[str, Any]]]] = {"base": [read_items(out / "eval" / "base")]}
    training: dict[str, dict[str, Any]] = {}
    for r in runs:
        model, seed = r["name"].rsplit("/", 1)
        evaluations.setdefault(model, {})[seed] = json.loads(
            (Path(r["eval_dir"]) / "metrics.json").read_text()
        )
        items.setdefault(model, []).append(read_items(Path(r["eval_dir"])))
        training.setdefault(model, {})[seed] = training_curve(Path(r["out"]))
    results["evaluations"], results["training"] = evaluations, training
    results["table"] = {
        key: {
            m: _stats([e.get(section, {}).get(metric, float("nan")) for e in evaluations[m].values()])
            for m in evaluations
        }
        for key, _, section, metric in TABLE_ROWS
    }
    sets = {c["set"] for c in CLAIMS}
    units = {
        m: {s: seed_averaged([clip_sums(seed_items, s) for seed_items in per_seed]) for s in sets}
        for m, per_seed in items.items()
    }
    claims = []
    for spec in CLAIMS:
        spec = {**spec, "a": _resolve(spec["a"], evaluations), "b": _resolve(spec["b"], evaluations)}
        decided = decide_claim(spec, units, resamples=cfg.bootstrap_resamples)
        if decided is None:
            continue
        decided["seed_spread"] = {
            side: results["table"][_row_of(spec["set"])][decided[side]]["std"] for side in ("a", "b")
        }
        decided["means"] = {
            side: results["table"][_row_of(spec["set"])][decided[side]]["mean"] for side in ("a", "b")
        }
        claims.append(decided)
    results["claims"] = claims
    results["verdict_counts"] = {v: sum(c["verdict"] == v for c in claims) for v in VERDICTS}
    results["bootstrap"] = {
        "confidence_pct": 100 * CONFIDENCE,
        "resamples": cfg.bootstrap_resamples,
        "held_out_clips": cfg.n_test + cfg.n_prior_break,
    }
    results["kl_vs_lr"] = {
        method: {
            str(lr): results["table"]["kl_describe"][f"describe/{method}@{lr:g}"]
            for arm, m, lr in cfg.protocol
            if arm == "describe" and m == method and f"describe/{method}@{lr:g}" in evaluations
        }
        for method in ("dpo", "rrpo")
    }
    return results


def _resolve(model: str, evaluations: dict[str, Any]) -> str:
    """A claim's model as run: 'short/rrpo@0.0002' is the short arm's RRPO at whatever learning rate
    the protocol gave it (`rrpo demo --learning-rate`), when it has exactly one."""
    if model in evaluations or "@" not in model:
        return model
    stem = model.split("@")[0] + "@"
    found = [m for m in evaluations if m.startswith(stem)]
    return found[0] if len(found) == 1 else model


def _row_of(item_set: str) -> str:
    """The table row of a claim's item set (its headline metric)."""
    return {
        "describe": "describe/fact_accuracy",
        "temporal": "temporal/accuracy",
        "hallucination": "hallucination/overall",
    }.get(item_set, item_set)
