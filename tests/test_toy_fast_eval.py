"""The demo's fast scorer (rrpo.toy.fast_eval) against the slow, official paths on the same items:
`rrpo eval`'s generation-based scoring, the adapter's own `generate`, and `rrpo.eval.deviation`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rrpo.eval.benchmarks import BENCHMARKS
from rrpo.models import load_model
from rrpo.toy.demo import CHECKPOINT_DIR
from rrpo.toy.fast_eval import ClipCache, Query, ToyScorer, item_queries, mean_token_kl
from rrpo.toy.splits import generate_dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    meta = json.loads((CHECKPOINT_DIR / "pretrain_metrics.json").read_text())
    from rrpo.toy.world import WorldConfig

    out = tmp_path_factory.mktemp("fastworld")
    config = WorldConfig.from_dict(meta["data"]["world"]["config"])
    generate_dataset(out, n_pretrain=0, n_train=0, n_test=48, n_prior_break=8, config=config, progress=False)
    return out


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return load_model(CHECKPOINT_DIR)


@pytest.mark.parametrize("loader, sub", [("mvbench", "temporal"), ("videohallucer", "hallucination")])
def test_deciding_token_scores_as_generation_does(world, base, tmp_path, loader, sub):
    from rrpo.eval.runner import run_eval

    bench = BENCHMARKS[loader]
    items = bench.load(world / "benchmarks" / sub)
    cache = ClipCache(base, world)
    fast = bench.score(items, ToyScorer(base, cache).decide(item_queries(items)))
    run_eval(
        str(CHECKPOINT_DIR),
        loader,
        world / "benchmarks" / sub,
        world,
        tmp_path,
        frames=base.num_frames,
        batch_size=32,
        max_new_tokens=8,
        vlm=base,
        progress=False,
        quiet=True,
    )
    slow = json.loads((tmp_path / "results.json").read_text())
    assert fast["headline"] == slow["headline"]
    assert abs(fast["summary"][fast["headline"]] - slow["summary"][slow["headline"]]) <= 1.0
    differ = sum(fast["verdicts"][k]["correct"] != v["correct"] for k, v in slow["verdicts"].items())
    assert differ <= 0.01 * len(items)
    assert cache.decoded == len({it.video for it in items})  # every clip decoded once


def test_descriptions_are_the_adapters_own_greedy_replies(world, base):
    records = [json.loads(line) for line in (world / "benchmarks/open/open.jsonl").open()]
    queries = [Query(r["id"], r["video"], r["question"]) for r in records]
    fast = ToyScorer(base, ClipCache(base, world), batch_size=16).generate(queries, max_new_tokens=48)
    slow = base.generate(
        [(base.read_clip(world / q.video), q.prompt) for q in queries], max_new_tokens=48, batch_size=16
    )
    assert [fast[q.id] for q in queries] == slow
    assert sum(len(t.split()) > 5 for t in slow) > len(slow) // 2  # the base really describes


def test_token_kl_equals_the_deviation_command(world, tmp_path):
    """A LoRA with random non-zero B: per-response KL sums equal rrpo.eval.deviation's, one by one."""
    from peft import LoraConfig, get_peft_model

    from rrpo.eval.deviation import model_deviation
    from rrpo.models.base import LORA_TARGET_REGEX

    vlm = load_model(CHECKPOINT_DIR)
    torch.manual_seed(1)
    vlm.model = get_peft_model(vlm.model, LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGET_REGEX))
    for name, p in vlm.model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    records = [json.loads(line) for line in (world / "benchmarks/open/open.jsonl").open()][:12]
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    queries = [Query(r["id"], r["video"], r["question"], r["answer"]) for r in records]
    scorer = ToyScorer(vlm, ClipCache(vlm, world))
    assert scorer.reuse_features
    fast = scorer.token_kl(queries)
    dev = model_deviation(
        str(CHECKPOINT_DIR), "random-lora", data, world, tmp_path / "dev", vlm=vlm, progress=False
    )
    slow = {p["id"]: p for p in dev["per_example"]}
    for q in queries:
        assert fast[q.id]["tokens"] == slow[q.id]["tokens"]
        # float32 log-softmax noise (~1e-7 per token) on a KL of ~3e-4 per token: 2e-3 relative.
        assert fast[q.id]["sum_kl"] == pytest.approx(slow[q.id]["sum_kl"], rel=2e-3)
    assert mean_token_kl(fast) == pytest.approx(dev["mean_token_kl"], rel=2e-3)
    assert mean_token_kl(fast) > 1e-4  # the adapter really moved the model


def test_the_demo_evaluation_official_and_fast_agree(world, tmp_path):
    """`rrpo demo --official` (generation through rrpo eval, KL through rrpo deviation) and the fast
    path write the same kinds of items, and agree on them."""
    from peft import LoraConfig, get_peft_model

    from rrpo.models.base import LORA_TARGET_REGEX
    from rrpo.toy.demo_jobs import evaluate

    vlm = load_model(CHECKPOINT_DIR)
    torch.manual_seed(2)
    peft = get_peft_model(vlm.model, LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGET_REGEX))
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.02)
    peft.save_pretrained(tmp_path / "adapter")
    runs = {}
    for official in (False, True):
        out = tmp_path / ("official" if official else "fast")
        metrics = evaluate(
            str(CHECKPOINT_DIR), str(tmp_path / "adapter"), str(world), str(out), official=official
        )
        rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
        runs[official] = (metrics, {(r["set"], r["id"]): r for r in rows})
    (fast_m, fast), (slow_m, slow) = runs[False], runs[True]
    assert fast.keys() == slow.keys()
    assert {s for s, _ in fast} == {
        "temporal",
        "hallucination",
        "prior_break",
        "describe",
        "kl_describe",
        "kl_answers",
    }
    for name, key in (("temporal", "accuracy"), ("hallucination", "overall")):
        assert abs(fast_m[name][key] - slow_m[name][key]) <= 1.0 + 1e-9
    assert fast_m["describe"] == slow_m["describe"]  # the same greedy descriptions
    for name in ("kl_describe", "kl_answers"):
        assert fast_m[name]["mean_token_kl"] == pytest.approx(slow_m[name]["mean_token_kl"], rel=2e-3)
