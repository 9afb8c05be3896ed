"""`rrpo demo`: the paper's experiment in miniature, end to end on a laptop CPU.

base model (the committed toy checkpoint, which answers multiple-choice and yes/no questions and
describes clips) -> self-alignment pairs from its own mistakes on perturbed training clips (two
pools: descriptions judged by the rule fact-checker, short answers by the rule judge) -> the paper's
protocol at equal pairs and steps for every method:

- description arm: DPO and RRPO at 2e-4 and 1e-3, RRPO without the fine-grained reward and without
  the token-wise KL at 1e-3;
- short-answer arm: DPO and RRPO at 2e-4, one epoch (answers of 2-5 tokens: RRPO = DPO expected);

each for several seeds -> every model scored on 400 held-out clips and 100 prior-breaking clips
(MVBench-format temporal tasks, VideoHallucer-format pairs, descriptions fact-checked) and its KL from
the base per token -> claims decided by paired clip-level bootstrap intervals -> `report.md`,
`results.json` and plots.

Every number in report.md is read from results.json, which is assembled from the files the stages
wrote (`rrpo.toy.demo_results`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rrpo.errors import RRPOError

CHECKPOINT_DIR = Path(__file__).parent / "checkpoint"

# Each method is a loss type plus the RRPO ablation switches.
METHODS = {
    "dpo": {"loss_type": "dpo"},
    "rrpo": {"loss_type": "rrpo"},
    "rrpo_no_fine_grained": {"loss_type": "rrpo", "fine_grained": False},
    "rrpo_no_tkl": {"loss_type": "rrpo", "token_kl": False},
}
# The protocol: (arm, method, learning rate). 1e-3 = 5x the paper-like 2e-4 (the toy's "10x").
PROTOCOL: tuple[tuple[str, str, float], ...] = (
    ("describe", "dpo", 2e-4),
    ("describe", "rrpo", 2e-4),
    ("describe", "dpo", 1e-3),
    ("describe", "rrpo", 1e-3),
    ("describe", "rrpo_no_fine_grained", 1e-3),
    ("describe", "rrpo_no_tkl", 1e-3),
    ("short", "dpo", 2e-4),
    ("short", "rrpo", 2e-4),
)


def model_name(arm: str, method: str, lr: float) -> str:
    """'describe/rrpo@0.001': one trained configuration (its seeds share the name)."""
    return f"{arm}/{method}@{lr:g}"


@dataclass
class DemoConfig:
    out: Path = Path("runs/demo")
    checkpoint: Path = CHECKPOINT_DIR
    quick: bool = False
    official: bool = False  # score by generation through `rrpo eval` (slower) instead of the fast scorer
    seeds: int = 2
    workers: int = 2  # processes of one torch thread each (trainings and evaluations are independent)
    world_seed: int | None = None  # None: the seed the checkpoint was pretrained with
    n_train: int = 700  # training clips: each gives a description question to the description pool
    n_short: int = 200  # the first n_short of them give their multiple-choice / yes-no questions
    n_test: int = 400
    n_prior_break: int = 100
    num_perturbations: int = 2
    # Training, identical for every method within an arm (the paper compares at equal settings).
    lora_r: int = 16
    lora_alpha: int = 32
    beta: float = 0.1
    epochs: float = 1.0
    batch_size: int = 8
    kl_limit: int | None = None  # responses per KL set (None: all held-out ones)
    bootstrap_resamples: int = 2000
    protocol: list[list[Any]] = field(default_factory=lambda: [list(p) for p in PROTOCOL])

    def __post_init__(self) -> None:
        self.out, self.checkpoint = Path(self.out), Path(self.checkpoint)
        if self.quick:
            self.seeds = 1
            self.n_train, self.n_short, self.n_test, self.n_prior_break = 64, 24, 40, 16
            self.bootstrap_resamples = 500
        if self.seeds < 1:
            raise RRPOError("--seeds must be >= 1")
        if self.workers < 1:
            raise RRPOError("--workers must be >= 1")
        if not 0 < self.n_short <= self.n_train:
            raise RRPOError(f"n_short ({self.n_short}) must be in [1, n_train ({self.n_train})]")


class Stage:
    """Prints what the demo is doing and how long each stage took."""

    def __init__(self, timings: dict[str, float]):
        self.timings = timings

    def __call__(self, name: str):
        stage = self

        class _Ctx:
            def __enter__(self):
                print(f"\n== {name}", flush=True)
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                stage.timings[name] = round(time.perf_counter() - self.t0, 1)
                print(f"== {name}: {stage.timings[name]:.0f} s", flush=True)

        return _Ctx()


def _checkpoint_meta(checkpoint: Path) -> dict[str, Any]:
    if not (checkpoint / "config.json").is_file():
        raise RRPOError(
            f"{checkpoint}: no toy base model here; build it with `rrpo toy pretrain --out {checkpoint}`"
        )
    metrics = checkpoint / "pretrain_metrics.json"
    return json.loads(metrics.read_text()) if metrics.is_file() else {}


def _world_params(meta: dict[str, Any], cfg: DemoConfig) -> dict[str, Any]:
    """generate_dataset arguments: the checkpoint's world, with the demo's split sizes and no pretraining clips."""
    world = meta.get("data", {}).get("world", {})
    params = dict(world.get("params", {}))
    config = world.get("config")
    args: dict[str, Any] = {
        "seed": cfg.world_seed
        if cfg.world_seed is not None
        else int(world.get("seed", params.get("seed", 0))),
        "n_pretrain": 0,
        "n_train": cfg.n_train,
        "n_test": cfg.n_test,
        "n_prior_break": cfg.n_prior_break,
    }
    for key in ("heldout_prior_strength", "curriculum", "fps"):
        if key in params:
            args[key] = params[key]
    if config:
        from rrpo.toy.world import WorldConfig

        args["config"] = WorldConfig.from_dict(config)
    return args


class _Pool:
    """Runs jobs in `workers` spawned processes (one torch thread each), or inline with one worker."""

    def __init__(self, workers: int):
        self.workers = workers
        self.executor = None
        if workers > 1:
            import multiprocessing

            os.environ.setdefault("OMP_NUM_THREADS", "1")
            self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def map(self, fn, jobs: list[tuple], label: str) -> list[Any]:  # noqa: ANN001
        if self.executor is None:
            out = []
            for i, args in enumerate(jobs, 1):
                out.append(fn(*args))
                print(f"  {label}: {i}/{len(jobs)} done", flush=True)
            return out
        futures = {self.executor.submit(fn, *args): i for i, args in enumerate(jobs)}
        out = [None] * len(jobs)
        for done, fut in enumerate(as_completed(futures), 1):
            out[futures[fut]] = fut.result()
            print(f"  {label}: {done}/{len(jobs)} done", flush=True)
        return out

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the whole loop; returns results.json's content."""
    from rrpo.toy import demo_jobs
    from rrpo.toy.demo_report import render_report, write_plots
    from rrpo.toy.demo_results import assemble
    from rrpo.toy.splits import generate_dataset

    started = time.perf_counter()
    timings: dict[str, float] = {}
    stage = Stage(timings)
    out = cfg.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    meta = _checkpoint_meta(cfg.checkpoint)
    ck, world_dir = str(cfg.checkpoint), out / "world"
    pool = _Pool(cfg.workers)
    threads = 1 if cfg.workers > 1 else max(1, os.cpu_count() or 1)
    try:
        with stage("toy world: held-out clips and the self-alignment pool"):
            generate_dataset(world_dir, **_world_params(meta, cfg), progress=False)

        with stage("self-alignment data: the base model's mistakes on perturbed clips"):
            pool.map(
                demo_jobs.make_pairs,
                [
                    (
                        "describe",
                        str(world_dir),
                        ck,
                        str(out / "data" / "describe" / "pairs.jsonl"),
                        cfg.num_perturbations,
                        None,
                        threads,
                    ),
                    (
                        "short",
                        str(world_dir),
                        ck,
                        str(out / "data" / "short" / "pairs.jsonl"),
                        cfg.num_perturbations,
                        cfg.n_short,
                        threads,
                    ),
                ],
                "pools",
            )
            for arm in ("describe", "short"):
                s = json.loads((out / "data" / arm / "pairs.summary.json").read_text())
                print(
                    f"  {arm}: {s['records_seen']} questions -> {s['pairs_made']} pairs "
                    f"({s['correct_on_every_perturbation']} always right, {s['rejects']} rejected)"
                )
                if s["pairs_made"] < 2:
                    raise RRPOError(
                        f"{arm} pool: only {s['pairs_made']} pairs; the base makes too few mistakes"
                    )

        runs = []
        for arm, method, lr in cfg.protocol:
            for seed in range(cfg.seeds):
                name = f"{model_name(arm, method, lr)}/seed{seed}"
                runs.append(
                    {
                        "name": name,
                        "checkpoint": ck,
                        "pairs": str(out / "data" / arm / "pairs.jsonl"),
                        "world": str(world_dir),
                        "out": str(out / "runs" / name),
                        "eval_dir": str(out / "eval" / name),
                        "method": METHODS[method],
                        "learning_rate": lr,
                        "seed": seed,
                        "lora_r": cfg.lora_r,
                        "lora_alpha": cfg.lora_alpha,
                        "beta": cfg.beta,
                        "epochs": cfg.epochs,
                        "batch_size": cfg.batch_size,
                        "official": cfg.official,
                        "threads": threads,
                        "kl_limit": cfg.kl_limit,
                    }
                )
        with stage(f"train and evaluate: the base and {len(runs)} runs in {cfg.workers} process(es)"):
            base_job = [
                (
                    demo_jobs.evaluate,
                    (ck, None, str(world_dir), str(out / "eval" / "base")),
                    {"official": cfg.official, "threads": threads},
                )
            ]
            pool.map(_call, base_job + [(demo_jobs.train_and_evaluate, (r,), {}) for r in runs], "jobs")
    finally:
        pool.close()

    with stage("results, claims and report"):
        results = assemble(out, cfg, meta, runs)
        results["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
        results["timings_s"] = {**timings, "total": round(time.perf_counter() - started, 1)}
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        write_plots(results, out)
        (out / "report.md").write_text(render_report(results))
    print(f"\nreport: {out / 'report.md'}  ({results['timings_s']['total']:.0f} s in all)")
    return results


def _call(fn, args: tuple, kwargs: dict) -> Any:  # noqa: ANN001
    """A job of the pool: fn(*args, **kwargs) (module level, so that spawned workers can run it)."""
    return fn(*args, **kwargs)
