"""Peak memory and time of forward+backward: materialised logits vs the fused, chunked log-prob/KL path.

Naive: `hidden @ W.T` for policy and reference ([B, T, V] each), `token_logps_and_kl`, a loss.
Fused: `fused_token_logps_and_kl(hidden, W, ref_hidden, W_ref, labels, chunk_size=...)`, same loss.
The loss is RRPO-shaped (arXiv 2504.12083): -logsigmoid(beta * sum_t (logp - ref_logp)) + alpha * sum_t kl.

Each path runs in its own subprocess so that one path's allocator state cannot hide the other's peak.
CPU: peak RSS increase (resource.getrusage ru_maxrss) over the process's level after the inputs are
allocated and a tiny warm-up has loaded the kernels. CUDA (`--device cuda`): torch.cuda.max_memory_allocated
over the allocation level at the same point. Prints one JSON line:
{"naive": {"seconds", "peak_mb", ...}, "fused": {...}, "memory_ratio": naive/fused, "time_ratio": fused/naive, ...}

    .venv/bin/python benchmarks/loss_memory.py                  # B=1, T=1024, H=896, V=151936 (Qwen2 0.5B head)
    .venv/bin/python benchmarks/loss_memory.py --small          # quick run
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time

FULL = {"B": 1, "T": 1024, "H": 896, "V": 151936}
SMALL = {"B": 1, "T": 256, "H": 128, "V": 8192}


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--B", type=int, default=None, help="batch size (default 1)")
    p.add_argument("--T", type=int, default=None, help="response tokens per row (default 1024)")
    p.add_argument("--H", type=int, default=None, help="hidden size (default 896)")
    p.add_argument("--V", type=int, default=None, help="vocabulary size (default 151936)")
    p.add_argument("--chunk-size", type=int, default=None, help="fused chunk rows (default: library default)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--repeats", type=int, default=3, help="timed forward+backward runs per path")
    p.add_argument("--weight-grad", action="store_true", help="lm_head weight also requires grad")
    p.add_argument("--tied", action="store_true", help="reference uses the same lm_head weight tensor")
    p.add_argument("--small", action="store_true", help=f"quick preset {SMALL}")
    p.add_argument("--worker", choices=["naive", "fused"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    preset = SMALL if args.small else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _make_inputs(args, torch, b: int, t: int, h: int, v: int, seed: int = 0):
    dtype = getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(b, t, h, generator=g) / h**0.5 * 4).to(args.device, dtype).requires_grad_()
    ref_hidden = hidden.detach() + 0.05 * torch.randn(b, t, h, generator=g).to(args.device, dtype)
    weight = torch.randn(v, h, generator=g).to(args.device, dtype).requires_grad_(args.weight_grad)
    ref_weight = weight if args.tied else weight.detach().clone()
    labels = torch.randint(0, v, (b, t), generator=g).to(args.device)
    return hidden, weight, ref_hidden, ref_weight, labels


def _step(path: str, inputs, chunk_size, torch) -> tuple[float, float]:
    from rrpo.losses import fused_token_logps_and_kl, token_logps_and_kl

    hidden, weight, ref_hidden, ref_weight, labels = inputs
    start, cpu_start = time.perf_counter(), time.process_time()
    if path == "naive":
        logits = hidden @ weight.T
        with torch.no_grad():
            ref_logits = ref_hidden @ ref_weight.T
        logps, ref_logps, kl = token_logps_and_kl(logits, ref_logits, labels)
        del logits, ref_logits
    else:
        kw = {} if chunk_size is None else {"chunk_size": chunk_size}
        logps, ref_logps, kl = fused_token_logps_and_kl(hidden, weight, ref_hidden, ref_weight, labels, **kw)
    loss = (-torch.nn.functional.logsigmoid(0.1 * (logps - ref_logps).sum(-1)) + 0.01 * kl.sum(-1)).mean()
    loss.backward()
    if hidden.is_cuda:
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    hidden.grad = None
    weight.grad = None
    return seconds, cpu_seconds


def _worker(args) -> dict:
    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    # Warm-up on tiny inputs: loads BLAS/OpenMP state so that it is part of the baseline, not the peak.
    tiny = _make_inputs(args, torch, 1, 8, 16, 64, seed=1)
    _step(args.worker, tiny, min(args.chunk_size or 4, 4), torch)
    del tiny
    inputs = _make_inputs(args, torch, args.B, args.T, args.H, args.V)
    gc.collect()
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _peak_rss_mb()
    runs = [_step(args.worker, inputs, args.chunk_size, torch) for _ in range(args.repeats)]
    times, cpu_times = [r[0] for r in runs], [r[1] for r in runs]
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20 - base
        measure = "torch.cuda.max_memory_allocated increase"
    else:
        peak = _peak_rss_mb() - base
        measure = "ru_maxrss increase over post-input baseline"
    return {
        "seconds": statistics.median(times),
        "seconds_all": [round(x, 4) for x in times],
        # CPU time of all threads: less sensitive than wall time to other jobs on a shared machine.
        "cpu_seconds": statistics.median(cpu_times),
        "peak_mb": round(peak, 1),
        "baseline_mb": round(base, 1),
        "measure": measure,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return 0
    passthrough = [
        f"--B={args.B}",
        f"--T={args.T}",
        f"--H={args.H}",
        f"--V={args.V}",
        f"--device={args.device}",
        f"--dtype={args.dtype}",
        f"--repeats={args.repeats}",
    ]
    passthrough += [f"--chunk-size={args.chunk_size}"] if args.chunk_size else []
    passthrough += ["--weight-grad"] if args.weight_grad else []
    passthrough += ["--tied"] if args.tied else []
    results = {}
    for path in ("naive", "fused"):
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), f"--worker={path}", *passthrough],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"{path} worker failed with exit code {proc.returncode}")
        results[path] = json.loads(proc.stdout.strip().splitlines()[-1])
    from rrpo.losses.logps import DEFAULT_CHUNK_SIZE

    out = {
        "naive": results["naive"],
        "fused": results["fused"],
        "memory_ratio": round(results["naive"]["peak_mb"] / max(results["fused"]["peak_mb"], 1e-3), 2),
        "time_ratio": round(results["fused"]["seconds"] / results["naive"]["seconds"], 3),
        "cpu_time_ratio": round(results["fused"]["cpu_seconds"] / results["naive"]["cpu_seconds"], 3),
        "shape": {"B": args.B, "T": args.T, "H": args.H, "V": args.V},
        "chunk_size": args.chunk_size or DEFAULT_CHUNK_SIZE,
        "device": args.device,
        "dtype": args.dtype,
        "weight_grad": args.weight_grad,
        "tied": args.tied,
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    raise SystemExit(main())
