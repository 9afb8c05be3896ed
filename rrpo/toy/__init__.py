"""Synthetic video world: procedurally generated clips of moving shapes with exact ground truth.

`world` samples and renders scenes and asks questions about them; `splits` writes a dataset directory
(mp4 clips, pretraining examples, a self-alignment pool, held-out benchmarks in MVBench / VideoHallucer
format); `commands` adds `rrpo toy ...`.
"""

from rrpo.toy.splits import generate_dataset, load_scenes, load_world
from rrpo.toy.world import (
    PALETTE,
    QA,
    HallucinationPair,
    Scene,
    SceneObject,
    WorldConfig,
    caption,
    clip_questions,
    describe,
    render_clip,
    sample_scene,
)

__all__ = [
    "PALETTE",
    "QA",
    "HallucinationPair",
    "Scene",
    "SceneObject",
    "WorldConfig",
    "caption",
    "clip_questions",
    "describe",
    "generate_dataset",
    "load_scenes",
    "load_world",
    "render_clip",
    "sample_scene",
]
