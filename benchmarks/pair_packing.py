"""Padding-free rows (`--pack-pairs`): padding fraction and tokens per second of one RRPO pass (policy +
adapter-off reference, forward + backward) over a micro-batch of pairs whose videos differ in length,
one pair per row (padded to the longest) against several pairs per row.

Pairs: a shrunk random-weight Qwen2.5-VL built from the real checkpoint's files (../shared/fixtures; the
real processor sizes the frames), 8 clips of 4:3 (240 x 320) and 16:9 (180 x 320) at 8, 16, 24 and 32
frames, 24-token responses; shared-prefix attention in both layouts. Median of `--repeats` passes after a
warm-up. One JSON line: {"rows": {...}, "packed": {...}, "speedup"}.

    .venv/bin/python benchmarks/pair_packing.py
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
    p.add_argument(
        "--budget", type=int, default=None, help="tokens per packed row (default: the longest pair x 2)"
    )
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model

    sys.path.insert(0, str(ROOT / "tests"))
    from real_checkpoints import shrink_checkpoint

    from rrpo.models import collate_pairs, encode_pair, load_model, pair_forward
    from rrpo.video.clip import Clip

    src = ROOT.parent / "shared" / "fixtures" / "real_checkpoints" / "qwen2.5-vl"
    with tempfile.TemporaryDirectory() as tmp:
        vlm = load_model(
            shrink_checkpoint(src, "qwen2.5-vl", Path(tmp) / "m"), attn_implementation="shared-prefix"
        )
    torch.manual_seed(0)
    vlm.model = get_peft_model(vlm.model, LoraConfig(r=8, target_modules=vlm.lora_target_modules))
    rng = np.random.default_rng(0)
    pairs = []
    for frames in (8, 16, 24, 32):
        for h, w in ((240, 320), (180, 320)):
            clip = Clip.uniform(rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8), 2.0)
            chosen = "The red ball rolls to the left and stops near the blue box on the floor."
            rejected = "The green ball rolls to the right and stops near the yellow box on the table."
            pairs.append(encode_pair(vlm, clip, "Describe the motion.", chosen, rejected, [(4, 7)], [(4, 9)]))
    sizes = [x.prefix_length + x.chosen_ids.numel() + x.rejected_ids.numel() for x in pairs]
    budget = args.budget or 2 * max(sizes)
    results: dict = {}
    for name, pack in (("rows", None), ("packed", budget)):
        batch = collate_pairs(vlm, pairs, layout="packed", pack_tokens=pack)
        cells = batch["packed_input_ids"].numel()

        def step(batch: dict = batch) -> float:
            start = time.perf_counter()
            vlm.model.zero_grad(set_to_none=True)
            out = pair_forward(vlm, vlm.model, batch)
            (out.policy_chosen_logps.sum() - out.policy_rejected_logps.sum() + out.chosen_kl.sum()).backward()
            return time.perf_counter() - start

        step()
        seconds = statistics.median(step() for _ in range(args.repeats))
        results[name] = {
            "rows": int(batch["packed_input_ids"].shape[0]),
            "row_length": int(batch["packed_input_ids"].shape[1]),
            "padding_fraction": round(1 - sum(sizes) / cells, 3),
            "seconds": round(seconds, 3),
            "tokens_per_second": round(sum(sizes) / seconds, 1),
        }
        print(f"{name:7s} {results[name]}", file=sys.stderr)
    results.update(
        pairs=len(pairs), pair_tokens=sizes, budget=budget,
        speedup=round(results["rows"]["seconds"] / results["packed"]["seconds"], 2),
    )  # fmt: skip
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
