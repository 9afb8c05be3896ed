"""Video decoding, frame sampling, perturbations and contact sheets.

Names are loaded on first use (PEP 562) so that `rrpo --help`, which imports `rrpo.video.commands`,
does not pay for importing PyAV and numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "Clip": "rrpo.video.clip",
    "decode_clip": "rrpo.video.io",
    "read_frames": "rrpo.video.io",
    "sample_frame_indices": "rrpo.video.clip",
    "write_video": "rrpo.video.io",
    "DEFAULT_PERTURBATION": "rrpo.video.perturb",
    "PERTURBATIONS": "rrpo.video.perturb",
    "PerturbError": "rrpo.video.perturb",
    "PerturbInfo": "rrpo.video.perturb",
    "apply_perturbation": "rrpo.video.perturb",
    "perturb_frames": "rrpo.video.perturb",
    "perturbations_for": "rrpo.video.perturb",
    "plan_perturbation": "rrpo.video.perturb",
    "contact_sheet": "rrpo.video.sheet",
}

__all__ = [
    "Clip",
    "DEFAULT_PERTURBATION",
    "PERTURBATIONS",
    "PerturbError",
    "PerturbInfo",
    "apply_perturbation",
    "contact_sheet",
    "decode_clip",
    "perturb_frames",
    "perturbations_for",
    "plan_perturbation",
    "read_frames",
    "sample_frame_indices",
    "write_video",
]
# __all__ and _EXPORTS name the same things (checked in tests/test_perturb.py).

if TYPE_CHECKING:
    from rrpo.video.io import Clip, decode_clip, read_frames, sample_frame_indices, write_video
    from rrpo.video.perturb import (
        DEFAULT_PERTURBATION,
        PERTURBATIONS,
        PerturbError,
        PerturbInfo,
        apply_perturbation,
        perturb_frames,
        perturbations_for,
        plan_perturbation,
    )
    from rrpo.video.sheet import contact_sheet


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rrpo.video' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
