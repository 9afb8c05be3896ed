"""benchmarks/gpu_step.py, the GPU benchmark, works (a CPU smoke run at tiny width, not a timing), and
the 7B shapes it falls back to on a GPU machine (which gets only the repository) are the real config's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_the_gpu_benchmark_runs_every_mode_at_tiny_width(tmp_path):
    out = tmp_path / "gpu_step.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_step.py"), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == report
    modes = {"ours_shared_prefix", "ours", "plain", "paper_style", "trl_style"}
    assert set(report["results"]["checkpointing"]) == modes
    assert set(report["results"]["no_checkpointing"]) == {"ours_shared_prefix", "ours"}
    for variant, entries in report["results"].items():
        for mode, entry in entries.items():
            assert "error" not in entry, (variant, mode, entry)
            assert entry["seconds"] > 0 and entry["tokens_per_second"] > 0 and entry["peak_mb"] is not None
    # every mode computes the same loss on the same pair (train_step.py --check holds them to 1e-4)
    losses = [e["loss"] for entries in report["results"].values() for e in entries.values()]
    assert max(losses) - min(losses) < 1e-4
    assert set(report["comparisons"]) >= {
        "shared_prefix_vs_mask_speedup",
        "shared_prefix_vs_trl_style_speedup",
    }


def test_the_built_in_7b_shapes_are_the_real_config(shared_fixtures):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _train_step_modes as modes
    finally:
        sys.path.remove(str(BENCHMARKS))
    path = shared_fixtures / "real_checkpoints" / "qwen2.5-vl" / "config.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    text, vision, source = modes.qwen25_vl_7b_shapes(path)
    assert source == str(path)
    assert text == modes.QWEN25_VL_7B_TEXT and vision == modes.QWEN25_VL_7B_VISION
    built_in = modes.qwen25_vl_7b_shapes(path.parent / "absent.json")
    assert built_in[2].startswith("built-in copy")
