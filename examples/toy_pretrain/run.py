"""A whole pretraining run (`run_pretrain`, what `rrpo toy pretrain` calls), the benchmark check and
the provenance file.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rrpo.errors import RRPOError

from .encode import (
    Encoder,
    decisions,
    eval_examples_from_benchmarks,
    load_frames,
    perturbed_frames,
    quick_eval,
)
from .model import ModelSpec, build_toy_model
from .tasks import Example, aux_examples, pretrain_examples, read_pretrain
from .train import (
    TrainConfig,
    direction_targets,
    format_table,
    initial_loss,
    kind_counts,
    train,
    vision_pretrain,
)

# ---------------------------------------------------------------------------------------------------
# The whole run


def benchmark_videos(data_dir: Path) -> list[str]:
    """Every video the held-out benchmark files name (sorted, unique)."""
    videos: set[str] = set()
    for path in sorted((data_dir / "benchmarks").rglob("*.json")):
        for rec in json.loads(path.read_text(encoding="utf-8")):
            for side in (rec, rec.get("basic") or {}, rec.get("hallucination") or {}):
                if isinstance(side.get("video"), str):
                    videos.add(side["video"])
    return sorted(videos)


def pool_examples(data_dir: Path, video_index: dict[str, int]) -> list[Example]:
    """The mcq and yes/no questions of the self-alignment pool (train.jsonl) as examples keyed by
    their record id (the perturbation key the pipeline uses)."""
    from rrpo.data.answers import reference_answer
    from rrpo.data.prompts import question_prompt
    from rrpo.data.record import VideoQuestion

    out = []
    path = data_dir / "train.jsonl"
    with path.open(encoding="utf-8") as f:
        for line in f:
            q = VideoQuestion.from_dict(json.loads(line))
            if q.answer_type not in ("mcq", "yesno"):
                continue
            decisive = 1 if q.answer_type == "mcq" else 0
            kind = str(q.metadata.get("kind", q.answer_type))
            out.append(
                Example(video_index[q.video], question_prompt(q), reference_answer(q), kind, q.id, decisive)
            )
    return out


def expected_pairs(
    model, encoder: Encoder, examples: Sequence[Example], frames: np.ndarray, variants: int = 2
) -> dict[str, Any]:
    """How many pool questions the model gets wrong under at least one of `variants` perturbations
    (the pipeline makes a pair for exactly those, before judge / differ rejects), per kind."""
    wrong = np.zeros(len(examples), dtype=bool)
    clips = frames[[e.clip for e in examples]]
    local = [Example(i, e.prompt, e.answer, e.kind, e.id, e.decisive) for i, e in enumerate(examples)]
    for v in range(variants):
        pf = perturbed_frames(clips, [e.id for e in examples], variant=v)
        wrong |= ~np.array([c for c, _ in decisions(model, encoder, local, pf)])
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e, w in zip(examples, wrong):
        by_kind[e.kind][0] += int(w)
        by_kind[e.kind][1] += 1
    return {
        "questions": len(examples),
        "pairs": int(wrong.sum()),
        "by_kind": {k: {"pairs": a, "questions": b} for k, (a, b) in by_kind.items()},
    }


def run_pretrain(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    spec: ModelSpec | None = None,
    cfg: TrainConfig | None = None,
    eval_limit: int = 100,
    save_every: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    init: str | Path | None = None,
) -> dict[str, Any]:
    """Build a fresh toy model in `out_dir` (or start from the toy model in `init`: its weights, tokenizer
    and processor, with a fresh optimizer), pretrain it on `data_dir`'s pretrain.jsonl, save it there
    and return a summary (also written to `out_dir/pretrain_metrics.json`): the data and model
    parameters, losses, throughput, and the final quick-eval metrics (held-out clean vs perturbed per
    question kind, prior-break, and the expected number of pairs from the pool).

    Every `cfg.eval_every` steps a quick clean eval on `eval_limit` items per group is logged; with
    `save_every` the model is also saved to `out_dir/step_<N>` then."""
    from rrpo.models import load_model
    from rrpo.toy.splits import load_world

    data_dir, out = Path(data_dir), Path(out_dir)
    spec = spec or ModelSpec()
    cfg = cfg or TrainConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = load_world(data_dir)
    if init is not None:  # checked before the minute of decoding
        init = Path(init)
        if not (init / "config.json").is_file():
            raise RRPOError(f"--init {init}: no model there (config.json missing)")
        if init.resolve() == out.resolve():
            raise RRPOError("--init and --out must be different directories")
        family = json.loads((init / "rrpo_family.json").read_text())
        if family.get("toy_model_spec") != asdict(spec):
            raise RRPOError(f"--init {init}: its toy_model_spec differs from the spec of this run")
    if not world.get("videos_written", True):
        raise RRPOError(f"{data_dir}: generated without videos (--no-videos); cannot pretrain on it")
    records = read_pretrain(data_dir)
    examples = pretrain_examples(records)
    if cfg.kinds:
        examples = [e for e in examples if e.kind in cfg.kinds]
    if cfg.aux_kinds:
        from rrpo.toy.splits import load_scenes
        from rrpo.toy.world import WorldConfig

        examples += aux_examples(
            records,
            load_scenes(data_dir),
            world["config"]["colours"],
            cfg.aux_kinds,
            WorldConfig(**world["config"]),
        )
    stages = [int(r.get("metadata", {}).get("curriculum_stage", 1)) for r in records]
    held = benchmark_videos(data_dir) if (data_dir / "benchmarks").is_dir() else []
    pool_videos = []
    if (data_dir / "train.jsonl").is_file():
        with (data_dir / "train.jsonl").open(encoding="utf-8") as f:
            pool_videos = sorted({json.loads(line)["video"] for line in f})
    videos = [r["video"] for r in records] + held + pool_videos
    video_index = {v: i for i, v in enumerate(videos)}  # pretraining clips keep their record position
    t0 = time.perf_counter()
    frames = load_frames(data_dir, videos, spec, progress=progress)
    log(f"decoded {len(videos)} clips in {time.perf_counter() - t0:.0f} s")

    if init is None:
        build_toy_model(out, spec, seed=cfg.seed)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for f in init.iterdir():  # the model, not the init's own training record
            if f.is_file() and f.name not in ("PROVENANCE.md", "pretrain_metrics.json"):
                shutil.copy2(f, out / f.name)
    vlm = load_model(out, num_frames=spec.num_frames)
    model = vlm.model
    encoder = Encoder(vlm.processor, spec)
    encoder.check_against_processor(frames[0], examples[0].prompt)
    vision_summary = None
    if cfg.vision_steps:
        from rrpo.toy.splits import load_scenes

        scenes = load_scenes(data_dir)
        colours = world["config"]["colours"]
        targets = direction_targets([scenes[r["id"]] for r in records], colours)
        test_ids = sorted({Path(v).stem for v in held} & {k for k in scenes if k.startswith("test_")})
        heldout = None
        if test_ids:
            rows = [video_index[f"videos/{k}.mp4"] for k in test_ids]
            heldout = (frames[rows], direction_targets([scenes[k] for k in test_ids], colours))
        vision_summary = vision_pretrain(
            model, encoder, frames[: len(records)], targets, heldout, cfg, log=log
        )
    groups = eval_examples_from_benchmarks(data_dir, video_index) if held else {}
    small = {k: v[:eval_limit] for k, v in groups.items()}
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"model: {n_params} parameters; {len(examples)} examples from {len(records)} clips {kind_counts(examples)}"
    )

    def on_eval(step: int) -> dict:
        metrics = quick_eval(model, encoder, small, frames, perturb=False)
        log(f"step {step}: " + ", ".join(f"{k} {v['clean']:.0f}" for k, v in metrics.items()))
        if save_every and step % save_every == 0:
            # A whole model (tokenizer, processor, rrpo_family.json too): `load_model` and `--init` take it.
            model.save_pretrained(out / f"step_{step}")
            for f in out.iterdir():
                if f.is_file() and not (out / f"step_{step}" / f.name).exists():
                    shutil.copy2(f, out / f"step_{step}" / f.name)
        return metrics

    loss0 = initial_loss(
        model,
        encoder,
        [examples[i] for i in range(0, len(examples), max(1, len(examples) // 64))][:64],
        frames,
    )
    result = train(
        model, encoder, examples, frames, stages, cfg, on_eval=on_eval if groups else None, progress=progress
    )
    model.save_pretrained(out)
    summary: dict[str, Any] = {
        "data": {
            "dir": str(data_dir),
            "world": world,
            "pretrain_clips": len(records),
            "examples": len(examples),
            "examples_by_kind": kind_counts(examples),
        },
        "model": {"spec": asdict(spec), "parameters": n_params, "init": str(init) if init else None},
        "train": {
            **asdict(cfg),
            "initial_loss": loss0,
            "final_loss": float(np.mean(result["losses"][-50:])),
            "steps_done": result["steps_done"],
            "seconds": result["seconds"],
            "examples_per_s": result["examples_per_s"],
            "threads": torch.get_num_threads(),
        },
        "evals": result["evals"],
    }
    if groups:
        summary["heldout"] = quick_eval(model, encoder, groups, frames, perturb=True)
        log(format_table(summary["heldout"]))
    if pool_videos:
        summary["pool"] = expected_pairs(model, encoder, pool_examples(data_dir, video_index), frames)
        log(
            f"pool: {summary['pool']['pairs']} of {summary['pool']['questions']} questions wrong under a perturbation"
        )
    if vision_summary is not None:
        summary["vision_pretrain"] = vision_summary
    summary["losses"] = result["losses"]
    (out / "pretrain_metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def benchmark_eval(
    model_dir: str | Path,
    data_dir: str | Path,
    *,
    perturb: str | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 8,
) -> dict[str, dict[str, Any]]:
    """Score a model on a toy dataset's held-out files with the evaluation code: greedy replies from
    `vlm.generate`, scored by `BENCHMARKS["mvbench"]` (temporal/, prior_break/) and
    `BENCHMARKS["videohallucer"]` (hallucination/). With `perturb` (e.g. "mask+local_shuffle") every
    item's frames are perturbed with seed 0 and key = the item id first. Returns {set: score dict}."""
    from rrpo.eval.benchmarks import BENCHMARKS
    from rrpo.models import load_model
    from rrpo.video.perturb import perturb_frames

    data_dir = Path(data_dir)
    vlm = load_model(model_dir)
    sets = {
        "temporal": ("mvbench", data_dir / "benchmarks" / "temporal"),
        "prior_break": ("mvbench", data_dir / "benchmarks" / "prior_break"),
        "hallucination": ("videohallucer", data_dir / "benchmarks" / "hallucination"),
    }
    cache: dict[str, Any] = {}  # video -> Clip (frames with their timing)
    results = {}
    for name, (bench_name, path) in sets.items():
        bench = BENCHMARKS[bench_name]
        items = bench.load(path)
        inputs = []
        for item in items:
            if item.video not in cache:
                cache[item.video] = vlm.read_clip(data_dir / item.video)
            clip = cache[item.video]
            if perturb:
                clip = clip.with_frames(perturb_frames(clip.frames, perturb, seed=0, key=item.id)[0])
            inputs.append((clip, item.prompt))
        replies = vlm.generate(inputs, max_new_tokens=max_new_tokens, batch_size=batch_size)
        results[name] = bench.score(items, {i.id: r for i, r in zip(items, replies)})
    return results


def write_provenance(out_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write `out_dir/PROVENANCE.md`: the command, seeds, dataset parameters, model, optimisation,
    wall time, machine and the final quick-eval metrics of a `run_pretrain` summary."""
    out = Path(out_dir) / "PROVENANCE.md"
    tr, data, world = summary["train"], summary["data"], summary["data"]["world"]
    lines = [
        "# Toy base model: provenance",
        "",
        f"Command: `{summary.get('command', '?')}`",
        "",
        f"- dataset: seed {world['seed']}, splits {world['splits']}, curriculum {world.get('curriculum')}, "
        f"held-out prior strength {world.get('heldout_prior_strength')}, world config `{json.dumps(world['config'])}`",
        f"- examples: {data['examples']} single-turn examples from {data['pretrain_clips']} clips "
        f"{data['examples_by_kind']}",
        f"- model: tiny Qwen2-VL, {summary['model']['parameters']} parameters, spec "
        f"`{json.dumps(summary['model']['spec'])}`",
        f"- training: seed {tr['seed']}, {tr['steps_done']} of {tr['steps']} steps x batch {tr['batch_size']}, "
        f"AdamW lr {tr['lr']} ({tr['schedule']}, warm-up {tr['warmup']}), weight decay {tr['weight_decay']}, "
        f"first {tr['focus_steps']} steps on {tr['focus_kinds']} only, float32, {tr['threads']} torch thread(s)",
        f"- loss: {tr['initial_loss']:.3f} at step 0 -> {tr['final_loss']:.3f} (mean of the last 50 steps)",
        f"- time: {tr['seconds'] / 60:.1f} min training ({tr['examples_per_s']:.1f} examples/s), "
        f"{summary.get('wall_seconds', 0) / 60:.1f} min wall in all",
        f"- machine: `{json.dumps(summary.get('machine', {}))}`",
        "",
        "Held-out quick eval (teacher-forced decisive token = the greedy choice; perturbed: "
        "`mask+local_shuffle`, seed 0, key = item id):",
        "",
        format_table(summary.get("heldout", {})),
    ]
    if "pool" in summary:
        pool = summary["pool"]
        lines += [
            "",
            f"Self-alignment pool (train.jsonl, mcq + yes/no): {pool['pairs']} of {pool['questions']} questions "
            "answered wrong under at least one of 2 perturbation variants (= pairs before judge / differ "
            f"rejects); by kind {json.dumps(pool['by_kind'])}",
        ]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
