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

# What a decoded clip is, and the sampling and path rules, live in `rrpo.video.clip` (no PyAV there, so a
# training run can import the models without it); re-exported here for the callers that decode.
from rrpo.video.clip import (  # noqa: F401
    SEEK_MIN_SECONDS,
    Clip,
    fit_pixels,
    sample_frame_indices,
    video_path,
)


def decode_clip(
    path: str | Path,
    num_frames: int | None = 16,
    *,
    fps: float | None = None,
    max_frames: int = 768,
    min_frames: int = 1,
    start_sec: float | None = None,
    end_sec: float | None = None,
    size: tuple[int, int] | None = None,
    max_pixels: int | None = None,
    seek: bool | None = None,
) -> Clip:
    """Decode a sample of `path`'s first video stream with its real timing (see `Clip`).

    Sampling is by count (`num_frames`, the centres of equal segments, as `sample_frame_indices`) or, with
    `fps`, by rate: round(span x fps) frames clamped to [`min_frames`, `max_frames`], as Qwen's own
    pipeline samples. `start_sec`/`end_sec` restrict sampling to a segment of the stream (benchmarks).
    `size` (h, w) resizes to exactly that size (an explicit choice; it may change the aspect ratio);
    otherwise frames keep their native aspect ratio and `max_pixels` only downscales (for speed; the
    model's processor decides the final size). `seek` forces (True) or forbids (False) the seek-per-frame
    path; by default clips of `SEEK_MIN_SECONDS` or longer seek. Raises VideoError for a missing or
    undecodable file or an empty segment.
    """
    path = Path(path)
    if fps is None and (num_frames is None or num_frames <= 0):
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if start_sec is not None and end_sec is not None and end_sec < start_sec:
        raise ValueError(f"end_sec ({end_sec}) is before start_sec ({start_sec})")
    if not path.is_file():
        raise VideoError(path, "video file not found")
    try:
        return _decode_clip(
            path, num_frames, fps, max_frames, min_frames, start_sec, end_sec, size, max_pixels, seek
        )
    except VideoError:
        raise
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoError(path, f"cannot decode video ({err})") from err


def _stream_facts(path: Path) -> tuple[float, float, int, int]:
    """(fps, duration s, height, width) of the first video stream, from the header."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError(path, "no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        if not duration and stream.frames:
            duration = stream.frames / fps
        return fps, duration, stream.codec_context.height, stream.codec_context.width


# A file holding less than this fraction of its stated duration (and over 1 s less) is truncated.
TRUNCATED_FRACTION = 0.8


def _decode_clip(path, num_frames, fps, max_frames, min_frames, start_sec, end_sec, size, max_pixels, seek):  # noqa: ANN001
    src_fps, duration, height, width = _stream_facts(path)
    out_size = size
    if out_size is None and max_pixels is not None:
        fitted = fit_pixels(height, width, max_pixels)
        out_size = fitted if fitted != (height, width) else None
    if seek is None:
        seek = duration >= SEEK_MIN_SECONDS
    lo = max(0.0, start_sec or 0.0)
    hi = duration if end_sec is None or not duration else min(end_sec, duration)
    if fps is not None:
        span = max(hi - lo, 1.0 / src_fps)
        num_frames = max(min_frames, min(max_frames, round(span * fps)))
    if seek and duration > 0:
        frames, times = _decode_by_seeking(path, num_frames, lo, hi, src_fps, out_size)
        seg_frames = max(1, round((hi - lo) * src_fps))
    else:
        frames, times, seg_frames = _decode_sampled(path, num_frames, out_size, start_sec, end_sec, duration)
    return Clip(
        frames=np.stack(frames),
        timestamps=[round(t, 6) for t in times],
        frame_indices=[round(t * src_fps) for t in times],
        source_fps=src_fps,
        duration=duration,
        source_size=(height, width),
        segment_frames=seg_frames,
    )


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
    Raises VideoError for a missing or undecodable file or an empty segment. `decode_clip` is the same
    with the frames' timing (and native-aspect, rate-based and seek-based sampling).
    """
    return decode_clip(path, num_frames, size=size, start_sec=start_sec, end_sec=end_sec, seek=False).frames


def _decode_sampled(
    path: Path,
    num_frames: int,
    size: tuple[int, int] | None,
    start_sec: float | None,
    end_sec: float | None,
    stated_duration: float = 0.0,
) -> tuple[list[np.ndarray], list[float], int]:
    """The sampled frames in order, their timestamps (s) and the segment's frame count; see `read_frames`.
    A file whose packets cover far less than the duration its header states (a cut-off download with its
    index at the front) is a VideoError, not a shorter clip."""
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
        rate = float(stream.average_rate or stream.guessed_rate or 25)
    origin = pts[0] if pts else 0
    if pts and stated_duration > 0:
        covered = float((pts[-1] - origin) * time_base) + 1.0 / rate
        if covered < TRUNCATED_FRACTION * stated_duration and stated_duration - covered > 1.0:
            raise VideoError(
                path, f"truncated: the file holds {covered:.1f} s of its stated {stated_duration:.1f} s"
            )
    if pts:
        selected = [p for p in pts if in_segment(float((p - origin) * time_base))]
        if not selected:
            raise no_frames()
        wanted = [selected[i] for i in sample_frame_indices(len(selected), num_frames)]
        kept = _decode_pts(path, set(wanted), to_rgb)
        if all(p in kept for p in wanted):
            return [kept[p] for p in wanted], [float((p - origin) * time_base) for p in wanted], len(selected)
        # Some packets did not decode to frames with the same timestamps: decode everything instead.

    # Fallback: keep every frame of the segment (memory grows with the clip's length).
    frames: list[np.ndarray] = []
    times: list[float] = []
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
            times.append(t - first)
    if not frames:
        raise no_frames()
    idx = sample_frame_indices(len(frames), num_frames)
    return [frames[i] for i in idx], [times[i] for i in idx], len(frames)


def _decode_by_seeking(
    path: Path, num_frames: int, lo: float, hi: float, src_fps: float, size: tuple[int, int] | None
) -> tuple[list[np.ndarray], list[float]]:
    """Sampled frames of [lo, hi) by seeking to the keyframe before each target time (long videos).

    Targets are the frames `sample_frame_indices` picks on the constant-rate grid of the segment; each
    is the first decoded frame at or after its target time (the last one before it at the stream's end).
    Cost grows with the number of frames and the keyframe interval, not with the video's length.
    """
    seg = max(1, round((hi - lo) * src_fps))
    targets = [lo + i / src_fps for i in sample_frame_indices(seg, num_frames)]
    frames: list[np.ndarray] = []
    times: list[float] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base or Fraction(1, 1)
        origin = stream.start_time or 0
        cache: tuple[float, np.ndarray] | None = None
        for target in targets:
            if cache is not None and abs(cache[0] - target) < 0.5 / src_fps:
                # The previous target's frame also serves this one (targets closer than a frame apart).
                frames.append(cache[1])
                times.append(cache[0])
                continue
            container.seek(origin + int(target / tb), stream=stream, backward=True, any_frame=False)
            found = None  # the first frame at the target, else the stream's last frame
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                found = (float((frame.pts - origin) * tb), frame)
                if found[0] >= target - 0.5 / src_fps:
                    break
            if found is None:
                raise VideoError(path, f"no frame could be decoded near {target:.2f} s")
            t, frame = found
            if size is not None:
                frame = frame.reformat(width=size[1], height=size[0])
            cache = (t, frame.to_ndarray(format="rgb24"))
            frames.append(cache[1])
            times.append(t)
    return frames, times


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


def write_video(
    path: str | Path, frames: np.ndarray, fps: float = 8.0, crf: int = 18, *, lossless: bool = False
) -> None:
    """Write uint8 [T, H, W, 3] RGB frames to an H.264 mp4 (H and W must be even, T >= 1).

    `fps` may be fractional (29.97 is stored as 30000/1001). H.264 is lossy: `crf` 18 keeps solid
    colours within a few levels. `lossless=True` encodes the YUV 4:2:0 frames exactly (qp 0; a
    third bigger at 64 x 64): the decoded frames are then a pure function of `frames`. The lossy
    encoder of this libx264 is not: one clip in 15-20 decodes differently from run to run, even on
    one thread (measured on the toy world), which made the toy demo's numbers move.
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
        quality = {"qp": "0"} if lossless else {"crf": str(crf)}
        stream.options = {**quality, "preset": "veryfast"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
