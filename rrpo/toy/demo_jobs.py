"""The demo's units of work, each a plain function of JSON-able arguments that writes its results to
files (so that `rrpo demo` can run them in worker processes and build its report from what they wrote):

- `make_pairs`: one self-alignment pool through `generate_pairs` (the description pool judged by the
  toy's rule fact-checker, the short-answer pool by the rule judge);
- `evaluate`: one model on the held-out sets, writing `items.jsonl` (one line per scored unit: a
  question, a VideoHallucer pair, a description, a KL response) and `metrics.json`;
- `train_and_evaluate`: one training run (`rrpo.train.train`) and the evaluation of its adapter.

Fast scoring (`rrpo.toy.fast_eval`) by default; `official=True` answers by generation through
`rrpo eval` (`run_eval`) and measures KL with `rrpo.eval.deviation` instead.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

SHORT_BENCHMARKS = {  # report name -> (loader, path under the world's benchmarks/)
    "temporal": ("mvbench", "temporal"),
    "hallucination": ("videohallucer", "hallucination"),
    "prior_break": ("mvbench", "prior_break"),
}


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))


def make_pairs(
    kind: str,
    world_dir: str,
    checkpoint: str,
    out: str,
    num_perturbations: int,
    clips: int | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """The base model's mistakes on perturbed clips of one pool: `kind` "describe" (the description
    questions) or "short" (the multiple-choice and yes/no questions), of the first `clips` training
    clips (all with None)."""
    from rrpo.data.record import load_questions
    from rrpo.models import load_model
    from rrpo.selfalign.pipeline import GenerateConfig, generate_pairs
    from rrpo.toy.factcheck import fact_check_judge
    from rrpo.toy.splits import load_scenes

    _threads(threads)
    world = Path(world_dir)
    base = load_model(checkpoint)
    questions = [
        q
        for q in load_questions(world / "train.jsonl")
        if clips is None or int(q.metadata["clip"].rsplit("_", 1)[1]) < clips
    ]
    if kind == "describe":
        pool = [q for q in questions if q.answer_type == "open"]
        tokens, judge = 48, fact_check_judge(load_scenes(world))
    else:
        pool = [q for q in questions if q.answer_type in ("mcq", "yesno")]
        tokens, judge = 8, None
    cfg = GenerateConfig(
        frames=base.num_frames,
        frame_size=base.frame_size,
        num_perturbations=num_perturbations,
        batch_size=64,
        max_new_tokens=tokens,
        judge="rule",
    )
    return generate_pairs(
        pool,
        world,
        out,
        lambda items: base.generate(items, max_new_tokens=tokens, batch_size=64),
        cfg,
        progress=False,
        open_judge=judge,
    )


# ---------------------------------------------------------------------------------------------------
# Evaluation


def _clip_of(video: str) -> str:
    return Path(video).stem


_CACHES: dict[tuple[str, str], Any] = {}


def _shared_cache(vlm: Any, checkpoint: str, world: Path) -> Any:
    """One ClipCache per base checkpoint and world in this process: a worker decodes each clip and
    runs the processor and the (frozen) vision tower on it once for all the models it scores."""
    from rrpo.toy.fast_eval import ClipCache

    key = (str(Path(checkpoint).resolve()), str(world.resolve()))
    if key not in _CACHES:
        _CACHES[key] = ClipCache(vlm, world)
    return _CACHES[key]


def evaluate(
    checkpoint: str,
    adapter: str | None,
    world_dir: str,
    out_dir: str,
    *,
    official: bool = False,
    threads: int = 1,
    kl_limit: int | None = None,
) -> dict[str, Any]:
    """Score one model (the base, or base + `adapter`) on the held-out sets; writes
    `out_dir/items.jsonl`, `out_dir/descriptions.jsonl` and `out_dir/metrics.json`, returns the metrics."""
    from rrpo.data.record import load_questions
    from rrpo.eval.benchmarks import BENCHMARKS
    from rrpo.models import load_model
    from rrpo.toy.factcheck import check_description
    from rrpo.toy.fast_eval import Query, ToyScorer, item_queries
    from rrpo.toy.splits import load_scenes

    _threads(threads)
    t0 = time.perf_counter()
    world, out = Path(world_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vlm = load_model(checkpoint, adapter_dir=adapter)
    scorer = ToyScorer(vlm, _shared_cache(vlm, checkpoint, world))
    rows: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    loaded: dict[str, list[Any]] = {}
    for name, (loader, sub) in SHORT_BENCHMARKS.items():
        bench = BENCHMARKS[loader]
        items = loaded[name] = bench.load(world / "benchmarks" / sub)
        if official:
            scored = _official_eval(checkpoint, vlm, loader, world, sub, out / "official" / name)
        else:
            scored = bench.score(items, scorer.decide(item_queries(items)))
        metrics[name] = {k: v for k, v in scored["metrics"].items() if isinstance(v, int | float)}
        verdicts = scored["verdicts"]
        if loader == "videohallucer":
            # The unit is the pair (right only when both sides are), weighted 1 / (pairs of its category
            # x categories): summed scores over summed weights are then the official headline, the
            # mean over categories of pair accuracy.
            pairs: dict[str, dict[str, Any]] = {}
            for it in items:
                p = pairs.setdefault(
                    it.extra["pair"], {"clip": _clip_of(it.video), "ok": True, "task": it.category}
                )
                p["ok"] = p["ok"] and bool(verdicts.get(it.id, {}).get("correct"))
            per_category = Counter(p["task"] for p in pairs.values())
            rows += [
                {
                    "set": name,
                    "task": p["task"],
                    "id": pid,
                    "clip": p["clip"],
                    "score": float(p["ok"]) * (w := 1.0 / (per_category[p["task"]] * len(per_category))),
                    "n": w,
                }
                for pid, p in pairs.items()
            ]
        else:
            rows += [
                {
                    "set": name,
                    "task": it.task,
                    "id": it.id,
                    "clip": _clip_of(it.video),
                    "score": float(bool(verdicts.get(it.id, {}).get("correct"))),
                    "n": 1,
                }
                for it in items
            ]
    # Descriptions: generated (the same greedy call either way), fact-checked against the scene.
    scenes = load_scenes(world)
    open_questions = load_questions(world / "benchmarks/open/open.jsonl")
    queries = [Query(q.id, q.video, q.question, q.answer) for q in open_questions]
    replies = scorer.generate(queries, max_new_tokens=48)
    with (out / "descriptions.jsonl").open("w", encoding="utf-8") as f:
        for q in open_questions:
            check = check_description(replies[q.id], scenes[q.metadata["clip"]])
            f.write(json.dumps({"id": q.id, "reply": replies[q.id], "wrong": check.wrong}) + "\n")
            rows.append(
                {
                    "set": "describe",
                    "task": "facts",
                    "id": q.id,
                    "clip": q.metadata["clip"],
                    "score": float(check.correct),
                    "n": len(check.facts),
                }
            )
    desc = [r for r in rows if r["set"] == "describe"]
    metrics["describe"] = {
        "fact_accuracy": 100.0 * sum(r["score"] for r in desc) / max(1, sum(r["n"] for r in desc)),
        "all_facts_right": 100.0 * float(np.mean([r["score"] == r["n"] for r in desc])) if desc else 0.0,
    }
    if adapter is None:  # the base's KL from itself
        metrics["kl_describe"] = metrics["kl_answers"] = {"mean_token_kl": 0.0}
    else:
        answers = item_queries(loaded["temporal"])
        rows += _kl_rows(scorer, queries, answers, world, official, checkpoint, adapter, out, kl_limit)
        for name in ("kl_describe", "kl_answers"):
            kl = [r for r in rows if r["set"] == name]
            metrics[name] = {"mean_token_kl": sum(r["score"] for r in kl) / max(1, sum(r["n"] for r in kl))}
    with (out / "items.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


def _kl_rows(
    scorer, describe_queries, answers, world, official, checkpoint, adapter, out, limit
) -> list[dict]:  # noqa: ANN001
    """Per-response KL(base || aligned) sums and token counts on the held-out ground-truth
    descriptions ("kl_describe") and the temporal benchmark's reference answers ("kl_answers")."""
    sets = {"kl_describe": describe_queries[:limit], "kl_answers": answers[:limit]}
    rows = []
    for name, queries in sets.items():
        if official:
            per = _official_kl(checkpoint, adapter, scorer.vlm, queries, world, out / "official" / name)
        else:
            per = scorer.token_kl(queries)
        rows += [
            {
                "set": name,
                "task": name,
                "id": q.id,
                "clip": _clip_of(q.video),
                "score": per[q.id]["sum_kl"],
                "n": per[q.id]["tokens"],
            }
            for q in queries
        ]
    return rows


def _official_eval(checkpoint, vlm, loader, world, sub, out_dir) -> dict[str, Any]:  # noqa: ANN001
    from rrpo.eval.runner import run_eval

    run_eval(
        checkpoint,
        loader,
        world / "benchmarks" / sub,
        world,
        out_dir,
        frames=vlm.num_frames,
        batch_size=32,
        max_new_tokens=8,
        vlm=vlm,
        progress=False,
        quiet=True,
        overwrite=True,
    )
    return json.loads((out_dir / "results.json").read_text())


def _official_kl(checkpoint, adapter, vlm, queries, world, out_dir) -> dict[str, dict[str, float]]:  # noqa: ANN001
    from rrpo.eval.deviation import model_deviation

    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / "responses.jsonl"
    with data.open("w", encoding="utf-8") as f:
        for q in queries:
            f.write(
                json.dumps(
                    {
                        "id": q.id,
                        "video": q.video,
                        "question": q.prompt,
                        "answer": q.answer,
                        "answer_type": "open",
                    }
                )
                + "\n"
            )
    dev = model_deviation(checkpoint, adapter, data, world, out_dir, vlm=vlm, progress=False)
    return {p["id"]: {"sum_kl": p["sum_kl"], "tokens": p["tokens"]} for p in dev["per_example"]}


# ---------------------------------------------------------------------------------------------------
# Training


def train_and_evaluate(run: dict[str, Any]) -> dict[str, Any]:
    """One run: `run` holds name, checkpoint, pairs, world, out (training dir), eval_dir, method
    options, learning rate, seed and the shared settings; returns its evaluation metrics."""
    from rrpo.models import load_model
    from rrpo.train.config import TrainConfig
    from rrpo.train.trainer import train

    _threads(run.get("threads", 1))
    t0 = time.perf_counter()
    base = load_model(run["checkpoint"])
    cfg = TrainConfig(
        model=run["checkpoint"],
        data=run["pairs"],
        video_root=run["world"],
        output_dir=run["out"],
        learning_rate=run["learning_rate"],
        lora_r=run["lora_r"],
        lora_alpha=run["lora_alpha"],
        lora_dropout=0.0,
        beta=run["beta"],
        num_train_epochs=run["epochs"],
        per_device_train_batch_size=run["batch_size"],
        gradient_accumulation_steps=1,
        frames=base.num_frames,
        frame_size=list(base.frame_size),
        seed=run["seed"],
        save_steps=10**9,
        save_total_limit=None,
        warmup_ratio=0.03,
        disable_tqdm=True,
        **run["method"],
    )
    del base
    train(cfg)
    trained = time.perf_counter() - t0
    metrics = evaluate(
        run["checkpoint"],
        run["out"],
        run["world"],
        run["eval_dir"],
        official=run.get("official", False),
        threads=run.get("threads", 1),
        kl_limit=run.get("kl_limit"),
    )
    print(f"  {run['name']}: trained in {trained:.0f} s, evaluated in {metrics['seconds']:.0f} s", flush=True)
    return metrics
