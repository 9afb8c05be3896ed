"""Synthetic video world: procedurally generated clips of moving shapes with exact ground truth.

`world` samples and renders scenes, `questions` asks about them; `splits` writes a dataset directory
(mp4 clips, pretraining examples, a self-alignment pool, held-out benchmarks in MVBench / VideoHallucer
format); `commands` adds `rrpo toy ...`. Names are imported lazily so that `rrpo --help`, which imports
`rrpo.toy.commands`, does not load numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "generate_dataset": "rrpo.toy.splits",
    "load_scenes": "rrpo.toy.splits",
    "load_world": "rrpo.toy.splits",
    "PALETTE": "rrpo.toy.world",
    "QA": "rrpo.toy.questions",
    "HallucinationPair": "rrpo.toy.questions",
    "Scene": "rrpo.toy.world",
    "SceneObject": "rrpo.toy.world",
    "WorldConfig": "rrpo.toy.world",
    "caption": "rrpo.toy.questions",
    "clip_questions": "rrpo.toy.questions",
    "describe": "rrpo.toy.questions",
    "render_clip": "rrpo.toy.world",
    "sample_scene": "rrpo.toy.world",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rrpo.toy' has no attribute {name!r}")
