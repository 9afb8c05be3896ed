"""Peak memory and time of one packed pair pass (policy + adapter-off reference, forward + backward): the
dense 4D mask (`--attn-implementation sdpa`) against the shared-prefix segment attention (`shared-prefix`,
rrpo.models.packing.attention), on one long packed row.

The row is [prefix | chosen | rejected] of `--tokens` tokens in all, on a tiny random LLaVA-OneVision (1-D
positions; hidden 64, 2 layers, 4 heads) whose prefix is text only: what is measured is the language
model's attention, where the two paths differ. The dense path's mask alone is L x L float32
(16384 tokens: 1024 MiB). Each path runs in its own subprocess; CPU peak = ru_maxrss increase over the
level after the model, the batch and a short warm-up pass; CUDA (`--device cuda`) peak =
max_memory_allocated over the level at the same point. One JSON line:
{"mask": {"peak_mb", "seconds"}, "shared-prefix": {...}, "mask_mb": L*L*4 / 2**20, "saved_mb", ...}

    .venv/bin/python benchmarks/shared_prefix_memory.py                 # 16384 tokens
    .venv/bin/python benchmarks/shared_prefix_memory.py --tokens 2048   # quick run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATHS = ("mask", "shared-prefix")


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=16384, help="packed row length (default 16384)")
    p.add_argument("--response", type=int, default=200, help="tokens of each response (default 200)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _peak_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _worker(args: argparse.Namespace) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from rrpo.models import EncodedPair, collate_pairs, load_model, pair_forward

    torch.manual_seed(0)
    vlm = load_model(args.model_dir, device=args.device, attn_implementation="sdpa")
    vlm.model = get_peft_model(vlm.model, LoraConfig(r=8, target_modules=vlm.lora_target_modules))
    vocab = len(vlm.tokenizer)
    r = args.response

    def pair(tokens: int) -> EncodedPair:
        g = torch.Generator().manual_seed(tokens)
        ids = torch.randint(0, 200, (tokens,), generator=g)  # ordinary text tokens (no video placeholder)
        chosen, rejected = torch.randint(0, 200, (2, r), generator=g)
        spans = torch.ones(r, dtype=torch.long)
        return EncodedPair(ids[: tokens - 2 * r], chosen, rejected, spans, spans.clone(), {})

    assert vocab > 200

    def step(batch: dict) -> float:
        start = time.perf_counter()
        vlm.model.zero_grad(set_to_none=True)
        out = pair_forward(vlm, vlm.model, batch, attention=args.worker)
        loss = out.policy_chosen_logps.sum() - out.policy_rejected_logps.sum() + out.chosen_kl.sum()
        loss.backward()
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    step(collate_pairs(vlm, [pair(4 * r)], layout="packed"))  # warm-up: kernels, allocator
    batch = collate_pairs(vlm, [pair(args.tokens)], layout="packed")
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = _peak_mb(args.device) if args.device == "cpu" else torch.cuda.memory_allocated() / 2**20
    seconds = step(batch)
    return {"peak_mb": round(_peak_mb(args.device) - base, 1), "seconds": round(seconds, 3)}


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return {}
    from rrpo.models import build_tiny_model

    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model("llava-onevision", Path(tmp) / "model", num_frames=4)
        for path in PATHS:
            cmd = [sys.executable, __file__, "--worker", path, "--model-dir", str(model), "--tokens",
                   str(args.tokens), "--response", str(args.response), "--device", args.device]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[path] = json.loads(done.stdout.strip().splitlines()[-1])
    mask_mb = args.tokens * args.tokens * 4 / 2**20
    results.update(
        tokens=args.tokens,
        device=args.device,
        mask_mb=round(mask_mb, 1),
        saved_mb=round(results["mask"]["peak_mb"] - results["shared-prefix"]["peak_mb"], 1),
    )
    results["saved_at_least_the_mask"] = results["saved_mb"] >= mask_mb
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
