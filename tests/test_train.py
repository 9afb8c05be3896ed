"""`rrpo train` end to end on a tiny Qwen2-VL: metrics, adapter, skips, resume, merge, two processes."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rrpo.cli import main
from rrpo.data.record import PreferencePair, write_pairs
from rrpo.errors import RRPOError
from rrpo.train import rundir
from rrpo.train.config import TrainConfig
from rrpo.train.trainer import train
from rrpo.video import write_video

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

REQUIRED_METRICS = {
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "kl/chosen",
    "logps/chosen",
    "logps/rejected",
    "grad_norm",
    "learning_rate",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    from rrpo.models import build_tiny_model

    root = tmp_path_factory.mktemp("train_world")
    model_dir = build_tiny_model("qwen2-vl", root / "model", num_frames=4)
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(6):
        write_video(
            root / "videos" / f"v{i}.mp4", rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8), fps=4
        )
        chosen, rejected = ("(B) a red circle", "(A) a blue square") if i % 2 else ("Yes", "No")
        pairs.append(
            PreferencePair(
                id=f"p{i}",
                video=f"videos/v{i}.mp4",
                question=f"Question {i}?",
                chosen=chosen,
                rejected=rejected,
                chosen_spans=[(0, len(chosen))],
                rejected_spans=[(0, len(rejected))],
            )
        )
    good = root / "pairs.jsonl"
    write_pairs(good, pairs)
    bad = pairs + [
        PreferencePair(
            id="missing",
            video="videos/nope.mp4",
            question="Q?",
            chosen="Yes",
            rejected="No",
            chosen_spans=[(0, 3)],
            rejected_spans=[(0, 2)],
        ),
        PreferencePair(
            id="nospan",
            video="videos/v0.mp4",
            question="Q?",
            chosen="Yes",
            rejected="No",
            chosen_spans=[(0, 3)],
            rejected_spans=[],
        ),
    ]
    write_pairs(root / "bad_pairs.jsonl", bad)
    return {"root": root, "model": model_dir, "pairs": good, "bad_pairs": root / "bad_pairs.jsonl"}


def _cfg(world, out: Path, **kw) -> TrainConfig:
    base = dict(
        model=str(world["model"]),
        data=str(world["pairs"]),
        video_root=str(world["root"]),
        output_dir=str(out),
        frames=4,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        learning_rate=5e-3,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        max_steps=2,
        save_steps=100,
        warmup_ratio=0.0,
    )
    base.update(kw)
    return TrainConfig(**base)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_train_rrpo_writes_adapter_metrics_and_summary(world, tmp_path) -> None:
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--model",
            str(world["model"]),
            "--data",
            str(world["bad_pairs"]),
            "--video-root",
            str(world["root"]),
            "--out",
            str(out),
            "--frames",
            "4",
            "--lora-r",
            "4",
            "--lora-alpha",
            "8",
            "--learning-rate",
            "5e-3",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--max-steps",
            "2",
            "--max-skip-fraction",
            "0.5",
            "--warmup-ratio",
            "0",
        ]
    )
    assert rc == 0
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    cfg = TrainConfig.from_sources(out / "rrpo_train_config.yaml")
    assert (cfg.loss_type, cfg.alpha, cfg.beta) == ("rrpo", 0.01, 0.1)
    rows = [r for r in _metrics(out) if "loss" in r]
    assert len(rows) == 2 and REQUIRED_METRICS <= set(rows[0])
    # LoRA B starts at zero: at step 1 the policy is the reference, so u = 0, KL = 0 and the RRPO loss
    # is exactly -log sigmoid(0) = log 2.
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert rows[0]["kl/chosen"] == pytest.approx(0.0, abs=1e-6)
    assert rows[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    # After one update the policy has moved: non-zero KL and margins.
    assert rows[1]["kl/chosen"] > 0 and rows[1]["rewards/margins"] != 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["pairs_read"] == 8 and summary["pairs_used"] == 6 and summary["pairs_skipped"] == 2
    reasons = {s["id"]: s["reason"] for s in summary["skipped"]}
    assert "missing video" in reasons["missing"] and "no span" in reasons["nospan"]


def test_too_many_skips_fail_with_reasons(world, tmp_path) -> None:
    with pytest.raises(RRPOError, match="2 of 8 pairs skipped.*max_skip_fraction"):
        train(_cfg(world, tmp_path / "run", data=str(world["bad_pairs"]), max_skip_fraction=0.1))


@pytest.mark.parametrize("loss_type", ["dpo", "tdpo", "dpa", "ddpo"])
def test_baseline_losses_train(world, tmp_path, loss_type) -> None:
    summary = train(_cfg(world, tmp_path / loss_type, loss_type=loss_type, max_steps=1))
    assert summary["global_step"] == 1 and math.isfinite(summary["train_loss"])


def test_resume_continues_from_last_checkpoint(world, tmp_path) -> None:
    out = tmp_path / "run"
    train(_cfg(world, out, max_steps=3, save_steps=1))
    assert (out / "checkpoint-2").is_dir()
    # As if the run had been killed after logging step 3 but before its checkpoint was written (a killed
    # run writes no final summary: a finished one is not resumed, see test_faults_train).
    shutil.rmtree(out / "checkpoint-3")
    (out / "train_summary.json").unlink()
    summary = train(_cfg(world, out, max_steps=3, save_steps=1, resume=True))
    assert summary["global_step"] == 3
    steps = [r["step"] for r in _metrics(out) if "loss" in r]
    assert steps == [1, 2, 3], "the resumed run continues the log instead of restarting it"


def test_merge_equals_adapter_model(world, tmp_path) -> None:
    from rrpo.models import load_model

    out = tmp_path / "run"
    train(_cfg(world, out, max_steps=2))
    assert (
        main(
            [
                "merge",
                "--model",
                str(world["model"]),
                "--adapter",
                str(out),
                "--out",
                str(tmp_path / "merged"),
            ]
        )
        == 0
    )
    with_adapter = load_model(world["model"], adapter_dir=out, num_frames=4)
    merged = load_model(tmp_path / "merged", num_frames=4)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        a = with_adapter.model(input_ids=ids).logits
        b = merged.model(input_ids=ids).logits
        base = load_model(world["model"], num_frames=4).model(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, base, atol=1e-4)


def test_two_process_data_parallel(world, tmp_path) -> None:
    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torchrun not installed beside this python")
    out = tmp_path / "ddp"
    cmd = [
        str(Path(sys.executable).parent / "torchrun"),
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "rrpo.cli",
        "train",
        "--model",
        str(world["model"]),
        "--data",
        str(world["pairs"]),
        "--video-root",
        str(world["root"]),
        "--out",
        str(out),
        "--frames",
        "4",
        "--lora-r",
        "4",
        "--lora-alpha",
        "8",
        "--learning-rate",
        "5e-3",
        "--batch-size",
        "1",
        "--grad-accum",
        "1",
        "--max-steps",
        "2",
        "--warmup-ratio",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["ranks_in_sync"] is True
    from rrpo.models import load_model

    vlm = load_model(world["model"], adapter_dir=out, num_frames=4)
    assert any("lora_" in n for n, _ in vlm.model.named_parameters())

    # Rank 0 decides about the directory for every rank: a second launch into the finished run is refused
    # on all ranks, and leaves the earlier run's files as they were; --resume says it already finished.
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != rundir.LOCK_FILE}
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "holds an earlier run" in again.stderr, again.stderr[-3000:]
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != rundir.LOCK_FILE}
    assert after == before
    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already finished" in resumed.stdout


def test_a_run_does_not_depend_on_what_ran_before_in_the_process(world, tmp_path) -> None:
    """The adapter's initialisation is seeded by the run's seed, not left to the global RNG state."""
    import hashlib

    import torch

    hashes = []
    for i, noise in enumerate((1, 2)):
        torch.manual_seed(noise)
        torch.rand(noise * 7)  # other work in the process moves the global RNG
        out = tmp_path / f"run{i}"
        train(_cfg(world, out, max_steps=1))
        hashes.append(hashlib.sha256((out / "adapter_model.safetensors").read_bytes()).hexdigest())
    assert hashes[0] == hashes[1]


def test_training_with_shared_prefix_attention_equals_the_dense_mask(world, tmp_path) -> None:
    """`rrpo train --attn-implementation shared-prefix` end to end: the same losses step for step and the
    same adapter as the dense-mask path (float32, 2 steps, batch of 2 pairs of different lengths)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AttentionInterface

    from rrpo.models.packing import attention

    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return attention.shared_prefix_attention(*args, **kwargs)

    runs = {}
    for attn in ("sdpa", "shared-prefix"):
        out = tmp_path / attn
        AttentionInterface.register(attention.SHARED_PREFIX_ATTENTION, counted)
        try:
            train(_cfg(world, out, attn_implementation=attn))
        finally:
            attention.register()
        if attn == "sdpa":
            assert not calls, "the dense-mask run went through the segment attention"
        runs[attn] = (
            [m["loss"] for m in _metrics(out) if "loss" in m],
            load_file(out / "adapter_model.safetensors"),
        )
    (dense_losses, dense), (segment_losses, segments) = runs["sdpa"], runs["shared-prefix"]
    assert calls, "the shared-prefix run never called the segment attention"
    assert len(dense_losses) == 2 and dense_losses == pytest.approx(segment_losses, abs=1e-5)
    assert dense.keys() == segments.keys()
    for name, value in dense.items():
        assert torch.allclose(value, segments[name], atol=1e-5), name


def _torchrun_or_skip() -> str:
    path = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip("torchrun not installed beside this python")
    return path


def _four_pair_run(world, tmp_path_factory, name: str, engine: str | None) -> Path:
    """One optimizer step over the same 4 pairs (seed 3, no dropout): `engine` None = 1 process x 4
    pairs; "ddp", "zero2", "zero3" = torchrun, 2 processes x 2 pairs (gloo on CPU). Plain SGD at rate 1,
    so the adapter's change is the averaged gradient itself (AdamW's first step is the gradient's sign,
    which a component that is zero up to rounding flips between runs)."""
    from rrpo.data.record import read_pairs, write_pairs

    root = tmp_path_factory.mktemp(name)
    pairs = root / "four.jsonl"
    write_pairs(pairs, read_pairs(world["pairs"])[:4])
    common = ["train", "--model", str(world["model"]), "--data", str(pairs), "--video-root", str(world["root"]),
              "--frames", "4", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0", "--optim", "sgd", "--learning-rate",
              "1.0", "--grad-accum", "1", "--max-steps", "1", "--warmup-ratio", "0", "--seed", "3",
              "--out", str(root / "run")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    if engine is None:
        cmd = [sys.executable, "-m", "rrpo.cli", *common, "--batch-size", "4"]
    else:
        cmd = [_torchrun_or_skip(), "--nproc_per_node", "2", "--master_port", str({"ddp": 29534, "zero2": 29535, "zero3": 29536}[engine]), "-m",
               "rrpo.cli", *common, "--batch-size", "2"]  # fmt: skip
        if engine != "ddp":
            cmd += ["--deepspeed", str(CONFIGS / f"deepspeed_{engine}.json")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "run"


@pytest.fixture(scope="module")
def one_process_run(world, tmp_path_factory) -> Path:
    return _four_pair_run(world, tmp_path_factory, "one", None)


@pytest.mark.parametrize("engine", ["ddp", "zero2", "zero3"])
def test_two_process_run_equals_one_process_on_the_same_pairs(
    engine, world, one_process_run, tmp_path_factory
):
    """DDP and DeepSpeed ZeRO-2 / ZeRO-3 (the shipped configs, "auto" sizes filled from the model's config)
    on CPU (gloo): 2 processes x 2 pairs give the first-step loss and the adapter of 1 process x 4 pairs.
    Under ZeRO-3 the reference pass runs with the adapter disabled on partitioned weights."""
    import torch
    from safetensors.torch import load_file

    if engine != "ddp":
        pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install 'rrpo[deepspeed]')")
    run = _four_pair_run(world, tmp_path_factory, engine, engine)
    losses = [[m["loss"] for m in _metrics(r) if "loss" in m] for r in (one_process_run, run)]
    assert len(losses[0]) == 1 and losses[0] == pytest.approx(losses[1], abs=1e-5)
    a, b = (load_file(r / "adapter_model.safetensors") for r in (one_process_run, run))
    assert a.keys() == b.keys()
    moved = 0
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-6), (engine, name)
        moved += int("lora_B" in name and bool(a[name].abs().max() > 0))
    assert moved, "the step did not move the adapter: the comparison tests nothing"


def test_training_with_packed_rows_equals_one_pair_rows(world, tmp_path) -> None:
    """`--pack-pairs N` (several pairs per row, no padding between them) trains exactly like one pair per
    row: the same losses and the same adapter (shared-prefix attention, 2 steps of 2 pairs)."""
    import torch
    from safetensors.torch import load_file

    runs = {}
    for name, pack in (("rows", None), ("packed", 10**6)):
        out = tmp_path / name
        train(_cfg(world, out, attn_implementation="shared-prefix", pack_pairs=pack))
        runs[name] = (
            [m["loss"] for m in _metrics(out) if "loss" in m],
            load_file(out / "adapter_model.safetensors"),
        )
    (losses, rows), (packed_losses, packed) = runs["rows"], runs["packed"]
    assert len(losses) == 2 and losses == pytest.approx(packed_losses, abs=1e-5)
    for name, value in rows.items():
        assert torch.allclose(value, packed[name], atol=1e-5), name
    with pytest.raises(RRPOError, match="pack_pairs needs --attn-implementation shared-prefix"):
        _cfg(world, tmp_path / "refused", pack_pairs=4096)
