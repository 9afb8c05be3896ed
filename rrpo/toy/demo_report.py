"""report.md and the plots of `rrpo demo`, from results.json alone (every number in the report is one
the run wrote)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rrpo.toy.demo_results import TABLE_ROWS

VERDICT_MARK = {"holds": "✅ holds", "does not hold": "❌ does not hold", "inconclusive": "➖ inconclusive"}

SCOPE = (
    "What the toy can and cannot show. RRPO differs from DPO in two places: the reward sums log-ratios "
    "over the differing spans only, and a token-wise KL holds the model to the base. Both matter only "
    "when responses have tokens outside the spans, so the description arm (preferred descriptions of "
    "{describe_words:.1f} words on average, the spans covering {describe_share:.1f} % of their characters) "
    "is where the toy can test the paper's claims. In the short-answer arm the preferred replies have "
    '{short_words:.1f} words on average ("(B) up", "Yes") and the only tokens outside the spans are the '
    "brackets and the end of turn, with log-ratios near 0: RRPO's reward equals DPO's there, so RRPO = DPO "
    "(inconclusive) is the expected result, not a failure. A model this small on a synthetic world says "
    "nothing about the size of the paper's gains on real benchmarks; it checks that the mechanism behaves "
    "as described, with the uncertainty of {clips} held-out clips and {seeds} seed(s) stated by each interval."
)


def _fmt(stat: dict[str, Any], digits: int = 1, spec: str = "f") -> str:
    """`mean ± std` over seeds ("n/a" where the model has no such number)."""
    if not np.isfinite(stat["mean"]):
        return "n/a"
    if len(stat["values"]) > 1:
        return f"{stat['mean']:.{digits}{spec}} ± {stat['std']:.{digits}{spec}}"
    return f"{stat['mean']:.{digits}{spec}}"


def render_report(results: dict[str, Any]) -> str:
    cfg = results["config"]
    models = list(results["table"]["describe/fact_accuracy"])
    lines = [
        "# rrpo demo: self-alignment of a tiny video LLM in the toy world",
        "",
        f"Base model: `{cfg['checkpoint']}`. {cfg['seeds']} seed(s) per configuration"
        + (" (mean ± standard deviation over seeds)" if cfg["seeds"] > 1 else "")
        + f"; LoRA r {cfg['lora_r']}, beta {cfg['beta']}, {cfg['epochs']} epoch(s), batch {cfg['batch_size']}; "
        f"scoring: {'generation through rrpo eval (--official)' if cfg['official'] else 'fast (teacher-forced deciding token, cached video features)'}.",
        "",
        "## Base model and self-alignment data",
        "",
    ]
    heldout = results.get("base_model", {}).get("heldout") or {}
    if heldout:
        lines += [
            "Held-out accuracy (%) of the base model from its pretraining record (`pretrain_metrics.json`), "
            "clean vs perturbed clips (mask + local shuffle):",
            "",
            "| question type | clean | perturbed |",
            "|---|---|---|",
        ]
        for kind, row in heldout.items():
            lines.append(
                f"| {kind} | {row.get('clean', float('nan')):.1f} | {row.get('perturbed', float('nan')):.1f} |"
            )
        lines.append("")
    for arm, gen in results["data_generation"].items():
        reasons = ", ".join(f"{k}: {v}" for k, v in gen["rejects_by_reason"].items()) or "none"
        lines.append(
            f"- {arm} pool: {gen['records_seen']} questions, {cfg['num_perturbations']} perturbations each: "
            f"{gen['pairs_made']} pairs, {gen['correct_on_every_perturbation']} always right, "
            f"{gen['rejects']} rejected ({reasons})."
        )
    lines += [
        "",
        "## Held-out scores (%)",
        "",
        "| metric | " + " | ".join(models) + " |",
        "|---|" + "---|" * len(models),
    ]
    for key, label, _, _ in TABLE_ROWS:
        row = results["table"][key]
        kl = key.startswith("kl_")
        lines.append(
            f"| {label} | "
            + " | ".join(_fmt(row[m], 3 if kl else 1, "g" if kl else "f") for m in models)
            + " |"
        )
    lines += [
        "",
        "![scores](scores.png) ![kl vs learning rate](kl_vs_lr.png) ![training](training.png)",
        "",
        "## The paper's claims, here",
        "",
        f"Each claim compares a with b on the same held-out clips: the paired clip-level bootstrap "
        f"{results['bootstrap']['confidence_pct']:.0f} % interval of a - b "
        f"({results['bootstrap']['resamples']} resamples, each clip's score averaged over seeds), in points of "
        "accuracy or in KL per token; the seed spread (standard deviation of a and of b) beside it.",
        "",
        "| claim | a - b | interval | seed spread (a, b) | verdict |",
        "|---|---|---|---|---|",
    ]
    for c in results["claims"]:
        iv, sp = c["interval"], c["seed_spread"]
        digits = ".2f" if c["scale"] != 1 else ".3g"
        lines.append(
            f"| {c['claim']} | {iv['estimate']:{digits}} | [{iv['low']:{digits}}, {iv['high']:{digits}}] | "
            f"{sp['a']:{digits}}, {sp['b']:{digits}} | {VERDICT_MARK[c['verdict']]} |"
        )
    counts = results["verdict_counts"]
    lines += [
        "",
        f"{counts['holds']} hold, {counts['does not hold']} do not hold, {counts['inconclusive']} inconclusive.",
        "",
        SCOPE.format(
            describe_words=results["data_generation"]["describe"]["mean_chosen_words"],
            describe_share=results["data_generation"]["describe"]["span_share_pct"],
            short_words=results["data_generation"]["short"]["mean_chosen_words"],
            clips=results["bootstrap"]["held_out_clips"],
            seeds=cfg["seeds"],
        ),
    ]
    lines += ["", "## Time", ""] + [f"- {k}: {v:.0f} s" for k, v in results["timings_s"].items()]
    return "\n".join(lines) + "\n"


def write_plots(results: dict[str, Any], out: Path) -> None:
    """scores.png (headline scores per model), kl_vs_lr.png (the paper's deviation figure: KL from the
    base against the learning rate, DPO and RRPO), training.png (loss and margin per run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = results["table"]
    models = list(table["describe/fact_accuracy"])
    keys = [
        ("describe/fact_accuracy", "facts"),
        ("temporal/accuracy", "temporal"),
        ("hallucination/overall", "hallucination"),
        ("prior_break/task/prior_against", "prior-break"),
    ]
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=110)
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        ax.bar(
            np.arange(len(keys)) + i * width,
            [table[k][m]["mean"] for k, _ in keys],
            width,
            yerr=[table[k][m]["std"] for k, _ in keys],
            label=m,
            capsize=2,
        )
    ax.set_xticks(np.arange(len(keys)) + width * (len(models) - 1) / 2, [label for _, label in keys])
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(out / "scores.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=110)
    for method, points in results["kl_vs_lr"].items():
        if points:
            lrs = sorted(points, key=float)
            ax.errorbar(
                [float(x) for x in lrs],
                [points[x]["mean"] for x in lrs],
                yerr=[points[x]["std"] for x in lrs],
                marker="o",
                capsize=3,
                label=method.upper(),
            )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("KL(base || aligned) per token")
    ax.set_title("deviation from the base (descriptions)", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "kl_vs_lr.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3), dpi=110)
    for model, seeds in results["training"].items():
        for seed, curve in seeds.items():
            for ax, key in zip(axes, ("loss", "rewards/margins")):
                ax.plot(curve["steps"], curve[key], label=f"{model} {seed}", alpha=0.7)
    for ax, key in zip(axes, ("loss", "reward margin")):
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(out / "training.png")
    plt.close(fig)
