"""A decoded clip (`Clip`: frames with their real timing), the uniform frame sampling rule and the
video-path rule, without PyAV: the models, the packed pass and training import these, and only decoding
(`rrpo.video.io`) needs PyAV."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rrpo.errors import VideoError


def sample_frame_indices(
    num_available: int, num_frames: int, start: int = 0, end: int | None = None
) -> list[int]:
    """Uniformly spaced frame indices: the centre of each of `num_frames` equal segments of [start, end).

    Index i is ``start + floor((2i + 1) * span / (2 * num_frames))`` with ``span = end - start``, computed
    in integers (floating point put some centres one frame early). With fewer frames available than asked
    for, indices repeat (the model still gets `num_frames`). A `start` past the clip is clamped to its last
    frame; an explicit empty range (end <= start) raises ValueError.
    """
    if end is not None and end <= start:
        raise ValueError(f"cannot sample {num_frames} frames from the empty range [{start}, {end})")
    end = num_available if end is None else min(end, num_available)
    start = max(0, min(start, end - 1))
    span = end - start
    if span <= 0 or num_frames <= 0:
        raise ValueError(f"cannot sample {num_frames} frames from the range [{start}, {end})")
    return [start + min(span - 1, (2 * i + 1) * span // (2 * num_frames)) for i in range(num_frames)]


# A clip at least this long is decoded by seeking to the keyframe before each sampled timestamp instead of
# decoding the whole stream (benchmarks/RESULTS.md, "Long-video decoding": decode-all wins on short clips
# with sparse keyframes, seeking wins by orders of magnitude on long ones).
SEEK_MIN_SECONDS = 60.0


@dataclass
class Clip:
    """Sampled frames of one video together with where they sit in time.

    `frames` uint8 [T, H, W, 3] RGB; `timestamps` [T] seconds from the start of the video stream of each
    frame slot; `frame_indices` [T] the slot's frame number in the source (timestamp x source fps,
    rounded); `source_fps`, `duration` (seconds) and `source_size` (h, w) describe the whole source;
    `segment_frames` is how many source frames the sampled range spans (the sampled rate is
    T / segment_frames x source_fps, what Qwen2.5-VL's temporal positions are built from).

    Perturbations replace `frames` (`with_frames`) and keep the time slots: masking or shuffling
    changes which content sits at which time, never the times themselves.
    """

    frames: np.ndarray
    timestamps: list[float]
    frame_indices: list[int]
    source_fps: float
    duration: float
    source_size: tuple[int, int] = (0, 0)
    segment_frames: int = 0

    def __post_init__(self) -> None:
        if len(self.timestamps) != len(self.frames) or len(self.frame_indices) != len(self.frames):
            raise ValueError(
                f"a clip needs one timestamp and frame index per frame: {len(self.frames)} frames, "
                f"{len(self.timestamps)} timestamps, {len(self.frame_indices)} indices"
            )
        if not self.segment_frames:
            self.segment_frames = max(1, round(self.duration * self.source_fps))

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def sampled_fps(self) -> float:
        """Frames per second of the sample (T over the sampled range's length)."""
        return self.num_frames / max(self.segment_frames, 1) * self.source_fps

    def with_frames(self, frames: np.ndarray) -> Clip:
        """The same time slots holding other frame content (a perturbation's output)."""
        frames = np.asarray(frames)
        if frames.shape[0] != self.num_frames:
            raise ValueError(f"with_frames: {frames.shape[0]} frames for {self.num_frames} time slots")
        return replace(self, frames=frames)

    @classmethod
    def uniform(cls, frames: np.ndarray, fps: float) -> Clip:
        """Frames that are consecutive samples `1 / fps` seconds apart, starting at 0 (rendered clips)."""
        frames = np.asarray(frames)
        t = int(frames.shape[0])
        return cls(
            frames=frames,
            timestamps=[i / fps for i in range(t)],
            frame_indices=list(range(t)),
            source_fps=float(fps),
            duration=t / float(fps),
            source_size=(int(frames.shape[1]), int(frames.shape[2])),
            segment_frames=t,
        )


def fit_pixels(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    """(h, w) with the same aspect ratio and at most `max_pixels` pixels (even sides, never upscaled)."""
    if height * width <= max_pixels:
        return height, width
    scale = math.sqrt(max_pixels / (height * width))
    h = max(2, int(height * scale) // 2 * 2)
    w = max(2, int(width * scale) // 2 * 2)
    return h, w


def video_path(root: str | Path, relative: str | Path, *, allow_outside: bool = False) -> Path:
    """`root / relative`, refused (VideoError) when it leads outside `root` ("../..", an absolute path
    elsewhere) unless `allow_outside`. Judged on the path as written, so symlinks kept inside the root
    are fine wherever they point."""
    full = Path(root) / relative
    if not allow_outside:
        base = os.path.abspath(root)
        norm = os.path.normpath(os.path.abspath(full))
        if norm != base and not norm.startswith(base.rstrip(os.sep) + os.sep):
            raise VideoError(full, "outside --video-root (pass --allow-outside-root to read it anyway)")
    return full
