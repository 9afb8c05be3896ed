"""Decode 16 frames from a 60-minute 720p video: seek-per-frame vs decode-all (rrpo.video.decode_clip).

    .venv/bin/python benchmarks/long_video_decode.py [--minutes 60] [--fps 5] [--out build/bench]

Writes a synthetic H.264 clip (1280x720, GOP 250, a moving bar so frames differ), then times
`decode_clip(..., seek=True)` and `seek=False` (decode-all is skipped above --max-decode-all-minutes,
with its cost extrapolated from a shorter clip), checks both return the same timestamps, and prints
JSON. Results go in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from rrpo.video.io import decode_clip


def write_clip(path: Path, minutes: float, fps: int) -> float:
    t0 = time.time()
    n = int(minutes * 60 * fps)
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = 1280, 720, "yuv420p"
        s.options = {"preset": "ultrafast", "g": "250", "crf": "28"}
        img = np.zeros((720, 1280, 3), np.uint8)
        for i in range(n):
            img[:] = (i * 7) % 256
            x = (i * 8) % 1200
            img[:, x : x + 80] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--fps", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("build/bench"))
    ap.add_argument("--max-decode-all-minutes", type=float, default=5)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for minutes in sorted({args.max_decode_all_minutes, args.minutes}):
        path = args.out / f"long_{minutes:g}min_720p.mp4"
        if not path.exists():
            results[f"write_{minutes:g}min_s"] = round(write_clip(path, minutes, args.fps), 1)
        row = {}
        t = time.time()
        seek = decode_clip(path, 16, seek=True)
        row["seek_s"] = round(time.time() - t, 2)
        if minutes <= args.max_decode_all_minutes:
            t = time.time()
            full = decode_clip(path, 16, seek=False)
            row["decode_all_s"] = round(time.time() - t, 2)
            row["same_timestamps"] = full.timestamps == seek.timestamps
            row["max_pixel_diff"] = int(np.abs(full.frames.astype(int) - seek.frames).max())
        row["frames"] = list(seek.frames.shape)
        row["duration_s"] = round(seek.duration, 1)
        results[f"{minutes:g}min"] = row
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
