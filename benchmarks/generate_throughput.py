"""Answers per second of greedy generation (what `rrpo generate` spends its time on) at batch sizes 1, 4
and 16, on a shrunk random-weight Qwen2.5-VL built from the real checkpoint's files (../shared/fixtures;
tests/real_checkpoints.py's recipe: the real processor, template and vocabulary, a 2-layer 64-wide model).

Each item is a different random clip (16 frames of 180 x 320, 16:9) with a question; every item gets exactly
`--new-tokens` new tokens (the eos ids are taken away, so that batch sizes compare equal work). Median of
`--repeats` runs after a warm-up. One JSON line: {"batch_size": {"answers_per_second", "seconds"}, ...}.

    .venv/bin/python benchmarks/generate_throughput.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-sizes", default="1,4,16")
    args = p.parse_args(argv)
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from real_checkpoints import shrink_checkpoint

    from rrpo.models import load_model
    from rrpo.video.clip import Clip

    src = ROOT.parent / "shared" / "fixtures" / "real_checkpoints" / "qwen2.5-vl"
    with tempfile.TemporaryDirectory() as tmp:
        vlm = load_model(shrink_checkpoint(src, "qwen2.5-vl", Path(tmp) / "m"), num_frames=16)
    vlm.hf_model.generation_config.eos_token_id = None  # equal work: every item runs to --new-tokens
    vlm.__class__.stop_token_ids = property(lambda self: [])  # noqa: B010 - this benchmark's process only
    rng = np.random.default_rng(0)
    items = [
        (
            Clip.uniform(rng.integers(0, 256, (16, 180, 320, 3), dtype=np.uint8), 2.0),
            f"What happens in clip {i}?",
        )
        for i in range(args.items)
    ]
    torch.manual_seed(0)
    out: dict = {}
    for size in [int(x) for x in args.batch_sizes.split(",")]:
        vlm.generate(items[:size], max_new_tokens=2, batch_size=size)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            vlm.generate(items, max_new_tokens=args.new_tokens, batch_size=size)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        out[str(size)] = {"seconds": round(seconds, 3), "answers_per_second": round(args.items / seconds, 2)}
        print(f"batch {size:3d}: {out[str(size)]}", file=sys.stderr)
    out.update(items=args.items, new_tokens=args.new_tokens, threads=torch.get_num_threads())
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
