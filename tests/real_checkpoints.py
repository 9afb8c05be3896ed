"""Shrink the real non-weight checkpoint files (../shared/fixtures/real_checkpoints) to random-weight
test models laid out like a download, as that folder's README says: the vocabulary, every token id,
the patch / merge / temporal-patch sizes, the processor settings, the chat template and the generation
config stay as they are; layers and widths shrink."""

from __future__ import annotations

import shutil
from pathlib import Path

from rrpo.models.registry import FAMILY_NAMES

# fixture folder (../shared/fixtures/real_checkpoints/<folder>) -> the family it stands for, from each
# family's `real_checkpoints`; most folders are named after their family.
REAL_CHECKPOINTS: dict[str, str] = {}


def _real_checkpoints() -> dict[str, str]:
    from rrpo.models.registry import family_class

    return {folder: name for name in FAMILY_NAMES for folder in family_class(name).real_checkpoints}


REAL_CHECKPOINTS.update(_real_checkpoints())
REAL_FAMILIES = tuple(REAL_CHECKPOINTS)  # the folders; named as their family where there is one folder


def shrink_checkpoint(src: Path, folder: str, out: Path, *, seed: int = 0) -> Path:
    """Write a shrunk random-weight model of `src`'s real class to `out` (no rrpo_family.json)."""
    from rrpo.models.tiny import shrink_checkpoint as shrink

    return shrink(src, out, family=REAL_CHECKPOINTS[folder], seed=seed)


def hub_cache_layout(model_dir: Path, cache: Path, repo_id: str, commit: str = "0" * 40) -> Path:
    """Lay `model_dir` out as huggingface_hub's cache holds a downloaded repo (refs/main -> snapshot)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for f in model_dir.iterdir():
        if f.is_file():
            shutil.copy(f, snap / f.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap
