"""rrpo.video.io: frame sampling, decoding (real fixture and synthetic clips), writing, errors."""

from __future__ import annotations

import wave
from fractions import Fraction

import av
import numpy as np
import pytest

import rrpo.video.io as vio
from rrpo.errors import VideoError
from rrpo.video.io import read_frames, sample_frame_indices, write_video

FIXTURE_FRAMES = 161  # sample_video.mp4: 640x480, 29.97 fps, 161 frames (shared/fixtures/README.md)

PALETTE = np.array(
    [
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [255, 255, 0],
        [0, 255, 255],
        [255, 0, 255],
        [255, 255, 255],
        [0, 0, 0],
        [128, 64, 0],
        [0, 128, 255],
    ],
    dtype=np.uint8,
)


def naive_centres(num_available: int, num_frames: int, start: int = 0, end: int | None = None) -> list[int]:
    """Exact rational centres of `num_frames` equal segments of [start, end), floored."""
    end = num_available if end is None else end
    seg = Fraction(end - start, num_frames)
    return [start + int(seg * i + seg / 2) for i in range(num_frames)]


def solid_clip(colours: np.ndarray, h: int = 48, w: int = 64) -> np.ndarray:
    """[T, h, w, 3] clip whose frame i is a solid block of colours[i]."""
    return np.ascontiguousarray(np.broadcast_to(colours[:, None, None, :], (len(colours), h, w, 3)))


def decode_all(path, size=None) -> tuple[list[np.ndarray], list[float]]:
    """Every frame and its time in seconds, decoded straight with PyAV (the reference for read_frames)."""
    frames, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            times.append(float(frame.time))
            if size is not None:
                frame = frame.reformat(width=size[1], height=size[0])
            frames.append(frame.to_ndarray(format="rgb24"))
    return frames, times


# --- sample_frame_indices -------------------------------------------------------------------------


def test_sample_indices_match_exact_segment_centres():
    for available in range(1, 70):
        for n in range(1, 25):
            expected = [min(i, available - 1) for i in naive_centres(available, n)]
            assert sample_frame_indices(available, n) == expected, (available, n)


def test_sample_indices_regression_for_float_rounding():
    # 4 frames sampled 14 times: centre 10 is exactly 84/28 = 3; float arithmetic gave 2.
    assert sample_frame_indices(4, 14)[10] == 3


def test_sample_indices_within_range_and_repeat_when_short():
    idx = sample_frame_indices(100, 8, start=20, end=60)
    assert idx == naive_centres(100, 8, 20, 60)
    assert all(20 <= i < 60 for i in idx)
    # Fewer frames than requested: every frame appears, in order, some twice.
    short = sample_frame_indices(3, 7)
    assert short == sorted(short) and set(short) == {0, 1, 2} and len(short) == 7
    # `end` past the clip is clipped to the clip.
    assert sample_frame_indices(10, 5, end=50) == sample_frame_indices(10, 5)


@pytest.mark.parametrize("args", [(0, 4), (10, 0), (10, -1), (10, 4, 5, 5)])
def test_sample_indices_reject_empty_requests(args):
    with pytest.raises(ValueError, match="cannot sample"):
        sample_frame_indices(*args)


# --- decoding the real fixture ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_32(sample_video) -> tuple[list[np.ndarray], list[float]]:
    """Every frame of the fixture at 32x32 with its time, decoded once for the tests below."""
    return decode_all(sample_video, size=(32, 32))


def test_read_fixture_16_frames_full_size(sample_video):
    frames = read_frames(sample_video, 16)
    assert frames.shape == (16, 480, 640, 3) and frames.dtype == np.uint8
    wanted = naive_centres(FIXTURE_FRAMES, 16)
    # Reference: decode in presentation order and keep the wanted ordinals (only those, to save memory).
    reference = {}
    with av.open(str(sample_video)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if n in wanted:
                reference[n] = frame.to_ndarray(format="rgb24")
        assert n + 1 == FIXTURE_FRAMES
    for j, i in enumerate(wanted):
        np.testing.assert_array_equal(frames[j], reference[i], err_msg=f"output {j} should be frame {i}")


def test_read_fixture_resized(sample_video, fixture_32):
    frames = read_frames(sample_video, 8, size=(32, 32))
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    reference, _ = fixture_32
    np.testing.assert_array_equal(frames, np.stack([reference[i] for i in naive_centres(FIXTURE_FRAMES, 8)]))


def test_read_fixture_segment(sample_video, fixture_32):
    frames = read_frames(sample_video, 6, size=(32, 32), start_sec=1.0, end_sec=3.0)
    reference, times = fixture_32
    inside = [i for i, t in enumerate(times) if 1.0 <= t <= 3.0]
    assert 55 <= len(inside) <= 62  # two seconds at 29.97 fps
    expected = [inside[k] for k in naive_centres(len(inside), 6)]
    np.testing.assert_array_equal(frames, np.stack([reference[i] for i in expected]))
    # Open-ended segments.
    head = read_frames(sample_video, 4, size=(32, 32), end_sec=1.0)
    head_idx = [i for i, t in enumerate(times) if t <= 1.0]
    np.testing.assert_array_equal(
        head, np.stack([reference[head_idx[k]] for k in naive_centres(len(head_idx), 4)])
    )
    tail = read_frames(sample_video, 4, size=(32, 32), start_sec=4.0)
    tail_idx = [i for i, t in enumerate(times) if t >= 4.0]
    np.testing.assert_array_equal(
        tail, np.stack([reference[tail_idx[k]] for k in naive_centres(len(tail_idx), 4)])
    )


def test_segment_outside_video_raises(sample_video):
    with pytest.raises(VideoError, match="no decodable frames in the requested segment") as err:
        read_frames(sample_video, 4, start_sec=100.0)
    assert err.value.path == str(sample_video)
    with pytest.raises(ValueError, match="before start_sec"):
        read_frames(sample_video, 4, start_sec=3.0, end_sec=1.0)


def test_fallback_decoder_gives_the_same_frames(sample_video, monkeypatch):
    """When packets' timestamps do not line up with decoded frames, read_frames decodes everything."""
    normal = read_frames(sample_video, 5, size=(32, 32), start_sec=0.5, end_sec=2.5)
    monkeypatch.setattr(vio, "_decode_pts", lambda *a, **k: {})
    fallback = read_frames(sample_video, 5, size=(32, 32), start_sec=0.5, end_sec=2.5)
    np.testing.assert_array_equal(fallback, normal)


# --- write_video round trip -------------------------------------------------------------------------


def test_write_read_round_trip_keeps_order(tmp_path):
    clip = solid_clip(PALETTE)
    path = tmp_path / "sub" / "clip.mp4"
    write_video(path, clip, fps=10)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (64, 48)
        assert stream.average_rate == 10
        assert sum(1 for _ in container.decode(stream)) == len(PALETTE)

    back = read_frames(path, len(PALETTE))
    assert back.shape == clip.shape and back.dtype == np.uint8
    for j, frame in enumerate(back):
        mean = frame.reshape(-1, 3).mean(axis=0)
        nearest = int(np.argmin(np.abs(PALETTE.astype(float) - mean).sum(axis=1)))
        assert nearest == j, f"frame {j} decoded as colour {nearest}"
        assert np.abs(frame.astype(int) - clip[j].astype(int)).max() <= 16  # lossy, but close

    # Sampling fewer frames picks the segment centres of the written clip.
    four = read_frames(path, 4)
    for j, i in enumerate(naive_centres(len(PALETTE), 4)):
        assert np.abs(four[j].astype(int) - clip[i].astype(int)).mean() < 4


def test_write_fractional_fps(tmp_path):
    path = tmp_path / "ntsc.mp4"
    write_video(path, solid_clip(PALETTE[:3]), fps=30000 / 1001)
    with av.open(str(path)) as container:
        assert abs(float(container.streams.video[0].average_rate) - 29.97) < 0.01


@pytest.mark.parametrize(
    "frames, fps, message",
    [
        (np.zeros((2, 48, 64, 3), np.float32), 8, "uint8"),
        (np.zeros((2, 48, 64), np.uint8), 8, "uint8"),
        (np.zeros((2, 47, 64, 3), np.uint8), 8, "even"),
        (np.zeros((0, 48, 64, 3), np.uint8), 8, "no frames"),
        (np.zeros((2, 48, 64, 3), np.uint8), 0, "fps"),
    ],
)
def test_write_video_rejects_bad_input(tmp_path, frames, fps, message):
    with pytest.raises(ValueError, match=message):
        write_video(tmp_path / "x.mp4", frames, fps=fps)
    assert not (tmp_path / "x.mp4").exists()


# --- errors ---------------------------------------------------------------------------------------


def test_missing_file_raises_video_error_naming_path(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoError, match="not found") as err:
        read_frames(path)
    assert err.value.path == str(path) and str(path) in str(err.value)


@pytest.mark.parametrize("payload", [b"", np.random.default_rng(7).bytes(4096)])
def test_corrupt_file_raises_video_error_naming_path(tmp_path, payload):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(payload)
    with pytest.raises(VideoError) as err:
        read_frames(path, 4)
    assert err.value.path == str(path) and str(path) in str(err.value)
    assert "cannot decode" in err.value.reason


def test_file_without_video_stream(tmp_path):
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(800, np.int16).tobytes())
    with pytest.raises(VideoError, match="no video stream") as err:
        read_frames(path, 4)
    assert err.value.path == str(path)


def test_non_positive_frame_count(sample_video):
    with pytest.raises(ValueError, match="num_frames"):
        read_frames(sample_video, 0)
