"""The GPU benchmark: one RRPO optimizer step at the paper's settings on a random-weight Qwen2.5-VL-7B.

Qwen2.5-VL-7B's real shapes (its config.json from ../shared/fixtures when present, else the built-in copy
that tests/test_gpu_step.py checks equal to it), bf16, LoRA r 128 on the language model's linears, 16 frames
of 16:9 at the default sizing (560 x 1008 a frame: 5,760 video tokens), 200-token responses. Each mode runs
in fresh processes through benchmarks/train_step.py (its docstring has the measurement rules: median step
time after a warm-up, peak = max_memory_allocated over the loaded model and batch, MFU against the card's
dense bf16 peak):

    ours_flex           rrpo, packed row, --attn-implementation shared-prefix-flex (FlexAttention, compiled)
    ours_shared_prefix  rrpo, packed row, --attn-implementation shared-prefix (no L x L mask)
    ours                rrpo, packed row, the dense 4D mask (sdpa)
    plain               two plain passes (prefix+chosen, prefix+rejected), fused log-probs
    paper_style         the paper code's layout: 4 forwards, a deep-copied reference, full logits
    trl_style           LLaMA-Factory / TRL: chosen and rejected as a [2, L] batch (video encoded twice),
                        full logits, adapter-off reference

every mode with activation checkpointing, and the rrpo modes also without (`--tiny`, on CPU, leaves out
ours_flex: FlexAttention's backward does not run there). A mode that fails (out of
memory) is recorded with its error and the rest go on. The last line printed is one JSON object; `--out`
also writes it to a file.

    python benchmarks/gpu_step.py                 # on one GPU (benchmarks/gpu/run.sh on a lent machine)
    python benchmarks/gpu_step.py --tiny          # CPU smoke run at tiny width (seconds; not a timing)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN_STEP = os.path.join(HERE, "train_step.py")
RRPO_MODES = ("ours_flex", "ours_shared_prefix", "ours")
BASELINES = ("plain", "paper_style", "trl_style")
# (variant, activation checkpointing, modes)
VARIANTS = (
    ("checkpointing", True, RRPO_MODES + BASELINES),
    ("no_checkpointing", False, RRPO_MODES),
)
PAPER = ["--preset", "7b", "--device", "cuda", "--frames", "16", "--height", "560", "--width", "1008",
         "--response-tokens", "200", "--lora-r", "128", "--repeats", "2"]  # fmt: skip
TINY = ["--device", "cpu", "--family", "qwen2.5-vl", "--frames", "4", "--height", "56", "--width", "112",
        "--response-tokens", "8", "--hidden", "64", "--layers", "2", "--vocab", "1024", "--repeats", "1"]  # fmt: skip


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="CPU smoke run at tiny width (not a timing)")
    p.add_argument("--out", default=None, help="also write the JSON object to this file")
    p.add_argument("--mode-timeout", type=int, default=170, help="seconds one mode may take (default 170)")
    return p.parse_args(argv)


def _error(stderr: str) -> str:
    """The line of a failed run that says why (CUDA out of memory first), else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if "out of memory" in line.lower():
            return line[:300]
    return (lines[-1] if lines else "no output")[:300]


def run_mode(base: list[str], mode: str, checkpointing: bool, timeout: int) -> tuple[dict, dict]:
    """(the mode's entry, the run's shared facts: tokens, config, device) from one fresh worker process of
    train_step.py, summarised by train_step.py's own rules (MFU, FLOP estimate)."""
    sys.path.insert(0, HERE)
    import train_step

    args = train_step.parse_args([*base, "--modes", mode, *(["--checkpointing"] if checkpointing else [])])
    cmd = [sys.executable, TRAIN_STEP, f"--worker={mode}", *train_step.worker_args(args)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(HERE))
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout} s"}, {}
    if proc.returncode != 0:
        return {"error": _error(proc.stderr)}, {}
    if args.chunk_size is None:  # resolved inside the worker; the same default for the report
        from rrpo.train.config import TrainConfig

        args.chunk_size = TrainConfig.__dataclass_fields__["chunk_size"].default
    summary = train_step.summarise(args, {mode: [json.loads(proc.stdout.strip().splitlines()[-1])]})
    entry = dict(summary[mode])
    tokens = summary["tokens"]
    entry["tokens_per_second"] = round(
        (tokens["prefix"] + tokens["chosen"] + tokens["rejected"]) / entry["seconds"], 1
    )
    for key in ("seconds_all", "peak_mb_all"):
        entry.pop(key, None)
    shared = {k: summary[k] for k in ("tokens", "params", "config", "device", "peak_tflops_assumed")}
    return entry, shared


def _ratio(a: dict, b: dict, key: str, digits: int = 3) -> float | None:
    if key in a and key in b and b[key]:
        return round(a[key] / b[key], digits)
    return None


def compare(results: dict) -> dict:
    """Speed (how many times faster) and memory (peak / other peak) of rrpo against the rest."""
    ck, no = results.get("checkpointing", {}), results.get("no_checkpointing", {})
    sp = ck.get("ours_shared_prefix", {})
    out = {
        "shared_prefix_vs_mask_speedup": _ratio(ck.get("ours", {}), sp, "seconds"),
        "shared_prefix_vs_mask_memory": _ratio(sp, ck.get("ours", {}), "peak_mb"),
        "flex_vs_shared_prefix_speedup": _ratio(sp, ck.get("ours_flex", {}), "seconds"),
        "checkpointing_memory_saving": _ratio(no.get("ours_shared_prefix", {}), sp, "peak_mb"),
    }
    for other in BASELINES:
        out[f"shared_prefix_vs_{other}_speedup"] = _ratio(ck.get(other, {}), sp, "seconds")
        out[f"shared_prefix_vs_{other}_memory"] = _ratio(sp, ck.get(other, {}), "peak_mb")
    return out


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    base = TINY if args.tiny else PAPER
    started = time.time()
    results: dict[str, dict] = {}
    shared: dict = {}
    for variant, checkpointing, modes in VARIANTS:
        results[variant] = {}
        for mode in [m for m in modes if not (args.tiny and m == "ours_flex")]:
            entry, facts = run_mode(base, mode, checkpointing, args.mode_timeout)
            results[variant][mode] = entry
            shared = shared or facts
            shown = entry.get("error") or f"{entry['seconds']:.3f} s, peak +{entry['peak_mb']:.0f} MB"
            print(f"{variant:17s} {mode:19s} {shown}", file=sys.stderr, flush=True)
    report = {
        "benchmark": "gpu_step",
        "tiny": args.tiny,
        **shared,
        "results": results,
        "comparisons": compare(results),
        "seconds_total": round(time.time() - started, 1),
    }
    line = json.dumps(report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(line + "\n")
    print(line)
    return report


if __name__ == "__main__":
    main()
