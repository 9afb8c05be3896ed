"""Decode and write videos with PyAV.

Frames are uint8 numpy arrays of shape [T, H, W, 3] (RGB) everywhere in rrpo: transformers' own
loading of a video *path* goes through torchcodec, which does not work with a CPU torch, so we
decode here and hand arrays to the processors.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
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


def read_frames(
    path: str | Path,
    num_frames: int = 16,
    size: tuple[int, int] | None = None,
    start_sec: float | None = None,
    end_sec: float | None = None,
) -> np.ndarray:
    """Decode `num_frames` uniformly sampled RGB frames, shape [num_frames, H, W, 3], uint8.

    `size` is (height, width) to resize to; `start_sec`/`end_sec` restrict sampling to the frames whose
    timestamps, counted from the start of the video stream, lie in [start_sec, end_sec] (benchmarks such
    as MVBench give a segment). Indices follow `sample_frame_indices` over the frames in the segment.

    Decoding every frame is faster than seeking for short clips with sparse keyframes, but only the
    sampled frames are converted to RGB and kept: a first pass reads the packets' timestamps (no
    decoding) to choose them, so memory stays at `num_frames` frames even for hour-long videos.
    Containers whose packets carry no timestamps fall back to keeping every decoded frame.
    Raises VideoError for a missing or undecodable file or an empty segment.
    """
    path = Path(path)
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if start_sec is not None and end_sec is not None and end_sec < start_sec:
        raise ValueError(f"end_sec ({end_sec}) is before start_sec ({start_sec})")
    if not path.is_file():
        raise VideoError(path, "video file not found")
    try:
        frames = _decode_sampled(path, num_frames, size, start_sec, end_sec)
    except VideoError:
        raise
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoError(path, f"cannot decode video ({err})") from err
    return np.stack(frames)


def _decode_sampled(
    path: Path,
    num_frames: int,
    size: tuple[int, int] | None,
    start_sec: float | None,
    end_sec: float | None,
) -> list[np.ndarray]:
    """The sampled frames in order; see `read_frames`."""
    segment = start_sec is not None or end_sec is not None

    def in_segment(t: float) -> bool:
        return (start_sec is None or t >= start_sec) and (end_sec is None or t <= end_sec)

    def to_rgb(frame: av.VideoFrame) -> np.ndarray:
        if size is not None:
            frame = frame.reformat(width=size[1], height=size[0])
        return frame.to_ndarray(format="rgb24")

    def no_frames() -> VideoError:
        return VideoError(path, "no decodable frames" + (" in the requested segment" if segment else ""))

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError(path, "no video stream")
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 1)
        # Pass 1: presentation timestamps of all frames, from the packets alone (cheap: no decoding).
        pts = sorted(p.pts for p in container.demux(stream) if p.size and p.pts is not None)
    origin = pts[0] if pts else 0
    if pts:
        selected = [p for p in pts if in_segment(float((p - origin) * time_base))]
        if not selected:
            raise no_frames()
        wanted = [selected[i] for i in sample_frame_indices(len(selected), num_frames)]
        kept = _decode_pts(path, set(wanted), to_rgb)
        if all(p in kept for p in wanted):
            return [kept[p] for p in wanted]
        # Some packets did not decode to frames with the same timestamps: decode everything instead.

    # Fallback: keep every frame of the segment (memory grows with the clip's length).
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        first = None
        for n, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else n / fps
            first = t if first is None else first
            if not in_segment(t - first):
                if end_sec is not None and t - first > end_sec:
                    break
                continue
            frames.append(to_rgb(frame))
    if not frames:
        raise no_frames()
    return [frames[i] for i in sample_frame_indices(len(frames), num_frames)]


def _decode_pts(path: Path, wanted: set[int], to_rgb) -> dict[int, np.ndarray]:
    """Decode `path`'s first video stream, converting only frames whose pts is in `wanted`.

    Stops as soon as every wanted frame has been seen, so a segment near the start is quick.
    """
    kept: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if frame.pts in wanted and frame.pts not in kept:
                kept[frame.pts] = to_rgb(frame)
                if len(kept) == len(wanted):
                    break
    return kept


def write_video(path: str | Path, frames: np.ndarray, fps: float = 8.0, crf: int = 18) -> None:
    """Write uint8 [T, H, W, 3] RGB frames to an H.264 mp4 (H and W must be even, T >= 1).

    `fps` may be fractional (29.97 is stored as 30000/1001). H.264 is lossy: `crf` 18 keeps solid
    colours within a few levels.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if t == 0:
        raise ValueError("cannot write a video with no frames")
    if h % 2 or w % 2:
        raise ValueError(f"H.264 needs even width and height, got {w}x{h}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
