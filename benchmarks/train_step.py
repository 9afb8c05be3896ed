"""Wall time and peak memory of one RRPO optimizer step: this trainer's packed path vs two baselines.

One preference pair (prompt + video, a chosen and a rejected response that differ in two spans), LoRA on
the language model, AdamW on the LoRA parameters, the RRPO loss (Sarkar et al., arXiv 2504.12083). Modes
(details and exact implementations in benchmarks/_train_step_modes.py):

    ours         rrpo.train PairForward -> pair_forward(packed=True): video encoded once, one packed row
                 [prefix | chosen | rejected] (4D mask), adapter-off reference, fused chunked log-prob/KL at
                 response positions only
    paper_style  separate deepcopied reference; four full HF forwards (policy/ref x chosen/rejected), each
                 encoding the video, full-vocabulary logits over the whole sequence, log_softmax/KL from them
    trl_style    TRL DPOTrainer-like: chosen and rejected as a [2, L] batch (video encoded for both rows),
                 full logits, adapter-off reference on the same [2, L] batch
    paper_code   (extra) the public RRPO code's layout: the [2, L] batch with a separate deepcopied reference

Each mode runs in its own fresh subprocess. Time: median of `--repeats` steps after one warm-up step
(forward + loss + backward + optimizer.step + zero_grad; the processor / patchify of the video is data
loading and is done before). Memory: CPU = increase of the peak RSS (resource.getrusage ru_maxrss; the
kernel's high-water mark is first reset to the current RSS via /proc/self/clear_refs) over the level
after the base model and the batch are loaded; CUDA = torch.cuda.max_memory_allocated over
memory_allocated at the same point. What a mode adds on top of the base model (LoRA, optimizer state,
paper_style's reference copy) counts towards its peak.

The last line printed is one JSON object:
    {"ours": {"seconds", "peak_mb", ...}, "paper_style": {...}, "trl_style": {...},
     "speedup_vs_paper", "memory_vs_paper" (ours peak / paper peak), "speedup_vs_trl", "config", "tokens", ...}

    .venv/bin/python benchmarks/train_step.py                # tiny Qwen2-VL, 16 frames 336x308 (1056 video tokens)
    .venv/bin/python benchmarks/train_step.py --check        # all modes give the same loss and LoRA gradients
    python benchmarks/train_step.py --preset 7b --device cuda   # Qwen2.5-VL-7B shapes, random weights, bf16
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_MODES = "ours,paper_style,trl_style"
ALL_MODES = ("ours", "paper_style", "trl_style", "paper_code", "ours_shared_prefix", "plain", "ours_flex")
# Dense bf16 peak of known accelerators (TFLOP/s, vendor datasheets, SXM parts) for the MFU figure.
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10G": 70.0}
GOALS = {"speedup_vs_paper": 2.5, "memory_vs_paper": 0.4, "speedup_vs_trl": 1.5}
# `--check`: small enough to run in seconds, float32.
CHECK = {
    "hidden": 64,
    "layers": 2,
    "frames": 4,
    "height": 56,
    "width": 84,
    "response_tokens": 12,
    "vocab": 1024,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument(
        "--dtype", default=None, choices=["float32", "bfloat16"], help="float32 (bf16 for --preset 7b)"
    )
    p.add_argument(
        "--family", default="qwen2-vl", choices=["qwen2-vl", "qwen2.5-vl"], help="tiny model family"
    )
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--height", type=int, default=336, help="frame height (multiple of 28)")
    p.add_argument("--width", type=int, default=308, help="frame width (multiple of 28)")
    p.add_argument("--response-tokens", type=int, default=64, help="tokens of each of chosen and rejected")
    p.add_argument("--vocab", type=int, default=32768, help="vocabulary after resize_token_embeddings")
    p.add_argument("--hidden", type=int, default=256, help="tiny text model width")
    p.add_argument("--layers", type=int, default=4, help="tiny text model layers")
    p.add_argument(
        "--lora-r", type=int, default=None, help="LoRA rank (8 tiny, 128 for --preset 7b); alpha = 2r"
    )
    p.add_argument("--lora-b-std", type=float, default=0.01, help="std of the seeded noise put into lora_B")
    p.add_argument("--lr", type=float, default=5e-6)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=0.01, help="RRPO token-wise KL weight")
    p.add_argument(
        "--chunk-size", type=int, default=None, help="fused log-prob chunk (default: TrainConfig's)"
    )
    p.add_argument("--repeats", type=int, default=3, help="timed steps per worker, after one warm-up step")
    p.add_argument(
        "--rounds", type=int, default=1, help="fresh workers per mode, interleaved (noisy machines)"
    )
    p.add_argument("--modes", default=DEFAULT_MODES, help=f"comma list of {', '.join(ALL_MODES)}")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the workers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--preset", choices=["7b"], default=None, help="Qwen2.5-VL-7B shapes (random weights, CUDA)"
    )
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)"
    )
    p.add_argument("--profile", action="store_true", help="workers print a torch.profiler table to stderr")
    p.add_argument(
        "--checkpointing", action="store_true", help="activation checkpointing of the language model's layers"
    )
    p.add_argument("--check", action="store_true", help="self-test: all modes agree (loss, LoRA grads)")
    p.add_argument(
        "--estimate-only",
        action="store_true",
        help="no step: build the model on the meta device and print the analytic FLOP counts (any machine)",
    )
    p.add_argument("--worker", choices=ALL_MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.check and args.preset:
        p.error("--check runs its own small float32 config; it does not combine with --preset")
    if args.check:
        for key, value in CHECK.items():
            setattr(args, key, value)
        args.dtype = args.dtype or "float32"
    if args.preset == "7b":
        if args.device != "cuda" and not args.estimate_only:
            p.error("--preset 7b builds an 8B-parameter model: only meaningful with --device cuda")
        args.dtype = args.dtype or "bfloat16"
    args.dtype = args.dtype or "float32"
    if args.lora_r is None:
        args.lora_r = 128 if args.preset == "7b" else 8
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ALL_MODES]
    if bad or not modes:
        p.error(f"--modes: unknown {bad}; choose from {', '.join(ALL_MODES)}")
    args.mode_list = modes
    return args


# ------------------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------------------
def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# ------------------------------------------------------------------------------------------------------
# worker
# ------------------------------------------------------------------------------------------------------
def _imports(args):
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    import torch

    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.chunk_size is None:
        from rrpo.train.config import TrainConfig

        args.chunk_size = TrainConfig.__dataclass_fields__["chunk_size"].default
    import _train_step_modes as modes

    return torch, modes


def _worker(args) -> dict:
    torch, modes = _imports(args)
    cuda = args.device == "cuda"
    setup = modes.build_setup(args)
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
        reset = True
    else:
        reset = _reset_hwm()
        base = _maxrss_mb()
    rss_at_base = _proc_status_mb("VmRSS")
    step, model, info = modes.prepare_mode(args.worker, setup, args)
    info.pop("grads", None)
    timer = modes.Timer(args.device)
    t0 = time.perf_counter()
    warm_loss = step(timer)
    warm = time.perf_counter() - t0
    times, parts = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step(timer)
        times.append(time.perf_counter() - t0)
        parts.append(dict(timer.parts))
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20 - base
        measure = "torch.cuda.max_memory_allocated increase over the loaded base model + batch"
    else:
        peak = _maxrss_mb() - base
        measure = "ru_maxrss increase over the loaded base model + batch" + (
            "" if reset else " (peak-RSS reset unavailable: baseline may include load transients)"
        )
    part_medians = {k: round(statistics.median(p[k] for p in parts), 4) for k in parts[0]} if parts else {}
    out = {
        "seconds": statistics.median(times) if times else warm,
        "seconds_all": [round(x, 4) for x in times],
        "warmup_seconds": round(warm, 4),
        "peak_mb": round(peak, 1),
        "baseline_mb": round(base, 1),
        "rss_at_baseline_mb": None if rss_at_base is None else round(rss_at_base, 1),
        "measure": measure,
        "loss": warm_loss,
        "parts": part_medians,
        "threads": torch.get_num_threads(),
        "tokens": setup.tokens,
        "params": setup.params,
        **info,
    }
    if args.profile:
        _profile(torch, step, timer, cuda, args.worker)
    return out


def _profile(torch, step, timer, cuda: bool, mode: str) -> None:
    """One more step under torch.profiler; the top operators by self time go to stderr."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts, profile_memory=True) as prof:
        step(timer)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    sys.stderr.write(f"\n===== profile: {mode} =====\n")
    sys.stderr.write(prof.key_averages().table(sort_by=key, row_limit=25) + "\n")


# ------------------------------------------------------------------------------------------------------
# check
# ------------------------------------------------------------------------------------------------------
def _check(args) -> dict:
    """Every mode on the same small float32 config: same first-step loss, same LoRA gradients, and the
    same loss after one AdamW step (so the updates agree too)."""
    torch, modes = _imports(args)
    args.capture_grads = True
    args.lr = 1e-3  # a visible update, so the second loss checks that the steps agree
    # Policy clearly away from the reference and a KL weight that matters, so that both loss terms
    # (span log-ratios and token-wise KL) move the loss and the gradients well above float32 noise.
    args.lora_b_std, args.alpha = 0.1, 1.0
    results = {}
    for mode in ALL_MODES:
        if mode == "ours_flex" and args.device == "cpu":
            continue  # FlexAttention's backward does not run on CPU
        setup = modes.build_setup(args)
        step, model, info = modes.prepare_mode(mode, setup, args)
        timer = modes.Timer(args.device)
        first = step(timer)
        grads = dict(info["grads"])
        second = step(timer)
        results[mode] = (first, second, grads, setup.tokens)
    ref_first, ref_second, ref_grads, tokens = results["ours"]
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    report = {"tokens": tokens, "losses": {}, "max_grad_diff_rel": {}, "passed": True}
    for mode, (first, second, grads, _) in results.items():
        if set(grads) != set(ref_grads):
            raise SystemExit(f"--check: {mode} has gradients for other parameters than ours")
        diff = max(float((grads[k] - ref_grads[k]).abs().max()) for k in ref_grads) / scale
        report["losses"][mode] = [first, second]
        report["max_grad_diff_rel"][mode] = diff
        ok = abs(first - ref_first) <= 1e-4 and abs(second - ref_second) <= 1e-4 and diff <= 1e-3
        report["passed"] &= ok
        print(
            f"{mode:12s} loss {first:.7f} -> {second:.7f}  |dloss| {abs(first - ref_first):.2e}"
            f"  grad diff (rel) {diff:.2e}  {'ok' if ok else 'MISMATCH'}",
            file=sys.stderr,
        )
    control = modes.causal_only_loss(modes.build_setup(args), args)
    report["negative_control"] = {"causal_mask_only_loss": control, "dloss": abs(control - ref_first)}
    print(
        f"negative control (rejected sees chosen): loss {control:.7f}, |dloss| {abs(control - ref_first):.2e}"
        " (must exceed 1e-4)",
        file=sys.stderr,
    )
    if abs(control - ref_first) <= 1e-4:
        report["passed"] = False
    if abs(ref_first - ref_second) < 1e-6:
        report["passed"] = False
        print("the AdamW step did not change the loss: the second comparison tests nothing", file=sys.stderr)
    return report


# ------------------------------------------------------------------------------------------------------
# analytic FLOPs
# ------------------------------------------------------------------------------------------------------
def _estimates(modes_mod, sample: dict, mode_list) -> dict:
    """Per-mode executed-FLOP estimates (TFLOP) and the speedups they imply on a compute-bound device."""
    est = {
        m: modes_mod.estimate_flops(m, sample["tokens"], sample["params"], sample["trainable_params"])
        for m in mode_list
    }
    out = {"executed_tflops": {m: round(v / 1e12, 4) for m, v in est.items()}}
    if "ours" in est:
        out["speedup_if_compute_bound"] = {
            m: round(v / est["ours"], 2) for m, v in est.items() if m != "ours"
        }
    return out


def _estimate_only(args) -> dict:
    """Model on the meta device (no memory, no compute), the real processed prefix: counts and FLOPs."""
    torch, modes = _imports(args)
    args.device = "meta"
    vlm, _tmp = modes.build_model(args)
    _, tokens = modes.build_pair(vlm, args)
    sample = {
        "tokens": tokens,
        "params": modes.count_params(vlm.hf_model),
        "trainable_params": modes.lora_param_count(vlm, args.lora_r),
    }
    return {
        "tokens": tokens,
        "params": {**sample["params"], "lora_trainable": sample["trainable_params"]},
        "model_tflops_per_step": round(_flops(sample) / 1e12, 4),
        **_estimates(modes, sample, ALL_MODES),
        "config": {
            "preset": args.preset,
            "lora_r": args.lora_r,
            "frames": args.frames,
            "frame_hw": [args.height, args.width],
        },
    }


# ------------------------------------------------------------------------------------------------------
# orchestration
# ------------------------------------------------------------------------------------------------------
def worker_args(args) -> list[str]:
    keys = (
        "device dtype family frames height width response_tokens vocab hidden layers lora_r lora_b_std lr beta "
        "alpha chunk_size repeats threads seed preset"
    ).split()
    out = []
    for key in keys:
        value = getattr(args, key)
        if value is not None:
            out.append(f"--{key.replace('_', '-')}={value}")
    return out + (["--profile"] if args.profile else []) + (["--checkpointing"] if args.checkpointing else [])


def _run_worker(args, mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), f"--worker={mode}", *worker_args(args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if args.profile or proc.returncode != 0:
        sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} worker failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _flops(sample: dict) -> float:
    """Model FLOPs of one step (the same for every mode: the work the step needs, not what a mode spends).

    6 * N * T with N = all language-model parameters except the input embedding (frozen base + LoRA +
    lm_head) and T = P + C + R, the pair's distinct tokens: policy forward 2N + policy backward 2N
    (activation gradients only: frozen weights get no weight gradients) + reference forward 2N per token.
    Plus the frozen vision tower's forward once, 2 * N_vision * patches. Attention-score FLOPs
    (~4 * layers * L^2 * H) are left out, as in the usual 6N approximation.
    """
    t, p = sample["tokens"], sample["params"]
    n_lm = p["language_non_embedding"] + sample.get("trainable_params", 0)
    lm_tokens = t["prefix"] + t["chosen"] + t["rejected"]
    return 6.0 * n_lm * lm_tokens + 2.0 * p["vision"] * t["vision_patches"]


def _peak_tflops(args, device_name: str) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    for key, value in PEAK_TFLOPS.items():
        if key in device_name:
            return value
    return None


def _device_name(args) -> str:
    if args.device == "cuda":
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "cuda"
    cpu = "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} logical CPUs)"


def _ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, digits)


def summarise(args, samples: dict[str, list[dict]]) -> dict:
    device = _device_name(args)
    peak = _peak_tflops(args, device)
    out: dict = {}
    for mode, runs in samples.items():
        times = [t for r in runs for t in (r["seconds_all"] or [r["seconds"]])]
        first = runs[0]
        flops = _flops(first)
        seconds = statistics.median(times)
        entry = {
            "seconds": round(seconds, 4),
            "seconds_min": round(min(times), 4),
            "peak_mb": round(statistics.median(r["peak_mb"] for r in runs), 1),
            "seconds_all": times,
            "peak_mb_all": [r["peak_mb"] for r in runs],
            "parts": first["parts"],
            "loss": first["loss"],
            "reference": first["reference"],
            "model_tflops_per_step": round(flops / 1e12, 4),
            "achieved_tflops": round(flops / seconds / 1e12, 4),
            "mfu": None if peak is None else round(flops / seconds / (peak * 1e12), 4),
        }
        if "reference_copy_mb" in first:
            entry["reference_copy_mb"] = first["reference_copy_mb"]
        out[mode] = entry
    sec = {m: out[m]["seconds"] if m in out else None for m in ALL_MODES}
    mem = {m: out[m]["peak_mb"] if m in out else None for m in ALL_MODES}
    out["speedup_vs_paper"] = _ratio(sec["paper_style"], sec["ours"])
    out["memory_vs_paper"] = _ratio(mem["ours"], mem["paper_style"], 3)
    out["speedup_vs_trl"] = _ratio(sec["trl_style"], sec["ours"])
    out["memory_vs_trl"] = _ratio(mem["ours"], mem["trl_style"], 3)
    if "paper_code" in out:
        out["speedup_vs_paper_code"] = _ratio(sec["paper_code"], sec["ours"])
        out["memory_vs_paper_code"] = _ratio(mem["ours"], mem["paper_code"], 3)
    out["goals_met"] = {
        "speedup_vs_paper>=2.5": None if out["speedup_vs_paper"] is None else out["speedup_vs_paper"] >= 2.5,
        "memory_vs_paper<=0.4": None if out["memory_vs_paper"] is None else out["memory_vs_paper"] <= 0.4,
        "speedup_vs_trl>=1.5": None if out["speedup_vs_trl"] is None else out["speedup_vs_trl"] >= 1.5,
    }
    first = next(iter(samples.values()))[0]
    sys.path[:0] = [ROOT, HERE]
    import _train_step_modes as modes_mod  # after the workers: the parent's size no longer matters

    out["flop_estimate"] = _estimates(modes_mod, first, list(samples))
    out["tokens"] = first["tokens"]
    out["params"] = {**first["params"], "lora_trainable": first["trainable_params"]}
    out["config"] = {
        "model": "Qwen2.5-VL-7B shapes (random weights)" if args.preset == "7b" else f"tiny {args.family}",
        "hidden": 3584 if args.preset == "7b" else args.hidden,
        "layers": 28 if args.preset == "7b" else args.layers,
        "vocab": 152064 if args.preset == "7b" else args.vocab,
        "frames": args.frames,
        "frame_hw": [args.height, args.width],
        "response_tokens": args.response_tokens,
        "lora_r": args.lora_r,
        "dtype": args.dtype,
        "chunk_size": args.chunk_size,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "threads": first["threads"],
        "memory_measure": first["measure"],
        "checkpointing": bool(args.checkpointing),
    }
    out["device"] = device
    out["peak_tflops_assumed"] = peak
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return 0
    if args.estimate_only:
        print(json.dumps(_estimate_only(args)))
        return 0
    if args.check:
        report = _check(args)
        print(json.dumps(report))
        return 0 if report["passed"] else 1
    samples: dict[str, list[dict]] = {m: [] for m in args.mode_list}
    for _ in range(args.rounds):
        for mode in args.mode_list:
            samples[mode].append(_run_worker(args, mode))
            run = samples[mode][-1]
            print(
                f"{mode:12s} {run['seconds']:.3f} s  peak +{run['peak_mb']:.0f} MB  {run['parts']}",
                file=sys.stderr,
            )
    if args.chunk_size is None:  # resolved inside the workers; the same default here for the report
        sys.path.insert(0, ROOT)
        from rrpo.train.config import TrainConfig

        args.chunk_size = TrainConfig.__dataclass_fields__["chunk_size"].default
    print(json.dumps(summarise(args, samples)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
