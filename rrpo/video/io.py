"""Decode and write videos with PyAV.

Frames are uint8 numpy arrays of shape [T, H, W, 3] (RGB) everywhere in rrpo: transformers' own
loading of a video *path* goes through torchcodec, which does not work with a CPU torch, so we
decode here and hand arrays to the processors.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from rrpo.errors import VideoError


def sample_frame_indices(num_available: int, num_frames: int, start: int = 0, end: int | None = None) -> list[int]:
    """Uniformly spaced frame indices: the centre of each of `num_frames` equal segments of [start, end).

    With fewer frames available than asked for, indices repeat (the model still gets `num_frames`).
    """
    end = num_available if end is None else min(end, num_available)
    start = max(0, min(start, end - 1))
    span = end - start
    if span <= 0 or num_frames <= 0:
        raise ValueError(f"cannot sample {num_frames} frames from the range [{start}, {end})")
    seg = span / num_frames
    return [start + min(span - 1, int(seg * i + seg / 2)) for i in range(num_frames)]


def read_frames(
    path: str | Path,
    num_frames: int = 16,
    size: tuple[int, int] | None = None,
    start_sec: float | None = None,
    end_sec: float | None = None,
) -> np.ndarray:
    """Decode `num_frames` uniformly sampled RGB frames, shape [num_frames, H, W, 3], uint8.

    `size` is (height, width) to resize to; `start_sec`/`end_sec` restrict sampling to a segment
    (benchmarks such as MVBench give one). Decoding every frame and keeping the sampled ones is faster
    than seeking for short clips with sparse keyframes. Raises VideoError for a missing or
    undecodable file.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(path, "video file not found")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(path, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            frames = []
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else len(frames) / fps
                if start_sec is not None and t < start_sec:
                    continue
                if end_sec is not None and t > end_sec:
                    break
                if size is not None:
                    frame = frame.reformat(width=size[1], height=size[0])
                frames.append(frame.to_ndarray(format="rgb24"))
    except VideoError:
        raise
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoError(path, f"cannot decode video ({err})") from err
    if not frames:
        raise VideoError(path, "no decodable frames" + (" in the requested segment" if start_sec or end_sec else ""))
    idx = sample_frame_indices(len(frames), num_frames)
    return np.stack([frames[i] for i in idx])


def write_video(path: str | Path, frames: np.ndarray, fps: float = 8.0, crf: int = 18) -> None:
    """Write uint8 [T, H, W, 3] RGB frames to an H.264 mp4 (H and W must be even)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 needs even width and height, got {w}x{h}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
