"""The fault matrix for `rrpo train` (issue 15, docs/RELIABILITY.md), through the CLI on a tiny Qwen2-VL:
one writer per --out, resume only from a complete checkpoint, a finished run is not trained again, a
summary even when a run fails, skips seen by dataloader workers reach the summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rrpo.cli import main
from rrpo.data.record import PreferencePair, write_pairs
from rrpo.video import write_video


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    from rrpo.models import build_tiny_model

    root = tmp_path_factory.mktemp("train_faults")
    model = build_tiny_model("qwen2-vl", root / "model", num_frames=4)
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(6):
        write_video(
            root / "videos" / f"v{i}.mp4", rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8), fps=4
        )
        pairs.append(
            PreferencePair(f"p{i}", f"videos/v{i}.mp4", f"Question {i}?", "Yes", "No", [(0, 3)], [(0, 2)])
        )
    write_pairs(root / "pairs.jsonl", pairs)
    (root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    broken = [*pairs, PreferencePair("broken", "videos/broken.mp4", "Q?", "Yes", "No", [(0, 3)], [(0, 2)])]
    write_pairs(root / "with_broken.jsonl", broken)
    return {
        "root": root,
        "model": model,
        "pairs": root / "pairs.jsonl",
        "with_broken": root / "with_broken.jsonl",
    }


def train(world, out: Path, *extra: str, data: Path | None = None) -> int:
    args = ["train", "--model", str(world["model"]), "--data", str(data or world["pairs"])]
    args += ["--video-root", str(world["root"]), "--out", str(out), "--frames", "4", "--lora-r", "4"]
    args += ["--lora-alpha", "8", "--batch-size", "2", "--warmup-ratio", "0", "--learning-rate", "5e-3"]
    return main([*args, "--report_to", "none", *extra])


def steps_logged(out: Path) -> list[int]:
    return [
        r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r
    ]


def test_resume_passes_over_an_incomplete_newest_checkpoint(world, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(world, out, "--max_steps", "3", "--save_steps", "1") == 0
    # As after a kill (or a full disk) while checkpoint-3 was being saved: no trainer state, no summary,
    # and a half-written last metrics line.
    (out / "checkpoint-3" / "trainer_state.json").unlink()
    (out / "train_summary.json").unlink()
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "lo')
    capsys.readouterr()
    assert train(world, out, "--max_steps", "3", "--save_steps", "1", "--resume") == 0
    printed = capsys.readouterr().out
    assert (
        "checkpoint-3 is incomplete (no trainer_state.json)" in printed
        and "dropped 1 unreadable line" in printed
    )
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 3
    assert steps_logged(out) == [1, 2, 3]  # resumed after step 2: step 3 redone, logged once


def test_resume_with_other_settings_is_refused(world, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(world, out, "--max_steps", "2", "--save_steps", "1") == 0
    (out / "train_summary.json").unlink()  # as if killed
    capsys.readouterr()
    assert (
        train(world, out, "--max_steps", "2", "--save_steps", "1", "--resume", "--learning-rate", "1e-2") == 1
    )
    assert "different run (differs in: learning_rate" in capsys.readouterr().err


def test_resume_of_a_finished_run_trains_nothing(world, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(world, out, "--max_steps", "2", "--save_steps", "1") == 0
    adapter = (out / "adapter_model.safetensors").read_bytes()
    metrics = (out / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert train(world, out, "--max_steps", "2", "--save_steps", "1", "--resume") == 0
    assert "already finished (step 2); nothing to resume" in capsys.readouterr().out
    assert (out / "adapter_model.safetensors").read_bytes() == adapter
    assert (out / "metrics.jsonl").read_text() == metrics


def test_a_second_run_into_one_out_is_refused(world, tmp_path, capsys):
    from rrpo.train.rundir import RunDirLock

    out = tmp_path / "run"
    assert train(world, out, "--max_steps", "1") == 0
    capsys.readouterr()
    assert train(world, out, "--max_steps", "1") == 1  # a fresh run on top of a finished one
    assert "holds an earlier run; pass --resume to continue it or --overwrite" in capsys.readouterr().err
    with RunDirLock(out):  # another rrpo train is running there
        assert train(world, out, "--max_steps", "1", "--overwrite") == 1
        assert "another rrpo train is writing to this --out" in capsys.readouterr().err
    (out / "notes.txt").write_text("mine")  # not rrpo's: kept by --overwrite
    assert train(world, out, "--max_steps", "2", "--overwrite") == 0
    assert steps_logged(out) == [1, 2] and (out / "notes.txt").read_text() == "mine"


def test_a_failed_run_writes_its_summary_with_every_skip(world, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(world, out, "--max_steps", "1", "--max_skip_fraction", "0", data=world["with_broken"]) == 1
    err = capsys.readouterr().err
    assert "1 of 7 pairs skipped (bad video: 1); first: broken" in err
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["status"] == "failed" and "max_skip_fraction" in summary["error"]
    assert [s["id"] for s in summary["skipped"]] == ["broken"]


def test_skips_in_dataloader_workers_reach_the_summary(world, tmp_path):
    out = tmp_path / "run"
    args = ["--max_steps", "4", "--dataloader_num_workers", "2", "--max_skip_fraction", "0.5"]
    assert train(world, out, *args, data=world["with_broken"]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["pairs_skipped"] == 1 and summary["skipped_by_reason"] == {"bad video": 1}
    assert summary["skipped"][0]["id"] == "broken"


def test_pairs_that_cannot_train_are_skipped_with_their_reason(world, tmp_path):
    """Identical responses, DPA pairs with unequal span counts and videos outside the root are counted
    skips, not silent training (or a crash at some later step naming no pair)."""
    from rrpo.data.record import read_pairs

    good = read_pairs(world["pairs"])
    odd = [
        PreferencePair("same", "videos/v0.mp4", "Q?", "Yes", "Yes", [(0, 3)], [(0, 3)]),
        PreferencePair("counts", "videos/v1.mp4", "Q?", "a red b", "a blue c", [(2, 5), (6, 7)], [(2, 6)]),
        PreferencePair("escape", "../model/config.json", "Q?", "Yes", "No", [(0, 3)], [(0, 2)]),
    ]
    data = tmp_path / "odd.jsonl"
    write_pairs(data, [*good, *odd])
    out = tmp_path / "run"
    assert (
        train(world, out, "--max_steps", "1", "--loss", "dpa", "--max_skip_fraction", "0.5", data=data) == 0
    )
    reasons = {s["id"]: s["reason"] for s in json.loads((out / "train_summary.json").read_text())["skipped"]}
    assert set(reasons) == {"same", "counts", "escape"}
    assert reasons["same"].startswith("identical responses")
    assert "chosen has 2, rejected 1" in reasons["counts"]
    assert "outside --video-root" in reasons["escape"]


def test_every_pair_skipped_names_the_reasons(world, tmp_path, capsys):
    data = tmp_path / "only_broken.jsonl"
    write_pairs(data, [PreferencePair("broken", "videos/broken.mp4", "Q?", "Yes", "No", [(0, 3)], [(0, 2)])])
    out = tmp_path / "run"
    assert train(world, out, "--max_steps", "1", "--max_skip_fraction", "1", data=data) == 1
    err = capsys.readouterr().err
    assert "every pair was skipped: 1 of 1 pairs skipped (bad video: 1); first: broken (bad video:" in err
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["status"] == "failed" and summary["skipped"][0]["id"] == "broken"


def test_skips_on_another_rank_reach_the_summary(world, tmp_path):
    """Two-process data parallelism with half the pairs undecodable: each rank meets some of them, and
    rank 0's summary lists them all (each rank holds its own ledger; the shared skipped.jsonl joins them)."""
    import os
    import shutil
    import subprocess
    import sys

    from rrpo.data.record import read_pairs

    torchrun = Path(sys.executable).parent / "torchrun"
    if shutil.which("torchrun", path=str(torchrun.parent)) is None:
        pytest.skip("torchrun not installed beside this python")
    good = read_pairs(world["pairs"])[:4]
    broken = [
        PreferencePair(f"broken{i}", "videos/broken.mp4", "Q?", "Yes", "No", [(0, 3)], [(0, 2)])
        for i in range(4)
    ]
    data = tmp_path / "half_broken.jsonl"
    write_pairs(data, [p for pair in zip(good, broken) for p in pair])
    out = tmp_path / "ddp"
    args = ["--model", str(world["model"]), "--data", str(data), "--video-root", str(world["root"])]
    args += ["--out", str(out), "--frames", "4", "--lora-r", "4", "--lora-alpha", "8", "--batch-size", "1"]
    args += ["--max-steps", "4", "--warmup-ratio", "0", "--max_skip_fraction", "0.5", "--report_to", "none"]
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", "29533", "-m", "rrpo.cli", "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert sorted(s["id"] for s in summary["skipped"]) == [f"broken{i}" for i in range(4)]
