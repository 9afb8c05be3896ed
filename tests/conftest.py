"""Shared test fixtures. Tests that need ../shared skip with a clear reason where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tiny models on 2 cores: more threads than cores only adds contention.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = Path(os.environ.get("RRPO_SHARED_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """Path to ../shared/fixtures (real mp4, benchmark annotation samples, paper-format pairs)."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED_FIXTURES} (set RRPO_SHARED_FIXTURES)")
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def sample_video(shared_fixtures: Path) -> Path:
    path = shared_fixtures / "sample_video.mp4"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path
