"""The training loop: optimisation settings (`TrainConfig`), batch order, transformers' schedules,
the vision-tower stage, and full fine-tuning.
"""

from __future__ import annotations

import random
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rrpo.errors import RRPOError

from .encode import Encoder, answer_loss, decisive_labels, forward_logits
from .tasks import Example

# ---------------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainConfig:
    """Optimisation settings. `steps` batches of `batch_size` examples; linear warm-up for `warmup`
    steps, then constant (`schedule` "constant") or cosine decay to `min_lr_ratio` x `lr`; `minutes` stops early (wall clock: the only
    source of run-to-run difference when it triggers)."""

    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    schedule: str = "constant"  # or "cosine"
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    minutes: float | None = None
    eval_every: int = 500
    threads: int | None = None
    kinds: tuple[str, ...] = ()  # train only these turn kinds (empty: all)
    focus_kinds: tuple[str, ...] = ("caption", "describe")
    focus_steps: int = 0  # first steps on focus_kinds only (see `example_order`)
    aux_kinds: tuple[str, ...] = ()  # auxiliary tasks added to every clip (`AUX_TASKS`)
    decisive_loss: bool = False  # mcq / yes-no examples: loss on the deciding token only
    format_loss: bool = False  # with decisive_loss: also the reply's format tokens (not the option text)
    vision_lr_scale: float = 1.0  # the vision tower and merger learn at vision_lr_scale x lr
    vision_steps: int = 0  # steps of `vision_pretrain` before the language-model training
    vision_lr: float = 3e-3


# The committed checkpoint's settings (`rrpo toy pretrain` defaults; see checkpoint/PROVENANCE.md).
DEFAULT_TRAIN = TrainConfig(
    steps=2615,
    batch_size=32,
    lr=2e-3,
    warmup=50,
    weight_decay=0.0,
    eval_every=250,
    threads=1,
    kinds=("order", "direction", "count", "existence"),
    aux_kinds=("colours", "first_colour", "which_colour"),
    focus_kinds=("colours", "first_colour", "which_colour"),
    focus_steps=350,
    decisive_loss=True,
)


def _passes(
    indices: list[int], stages: Sequence[int], clip_of: Sequence[int], rng: random.Random
) -> Iterable[int]:
    """Endless stream of `indices`: the first pass in curriculum order (stage 0, single-object
    clips, first; shuffled within each stage), later passes fully shuffled."""
    for stage in sorted({stages[clip_of[i]] for i in indices}):
        part = [i for i in indices if stages[clip_of[i]] == stage]
        rng.shuffle(part)
        yield from part
    while True:
        part = list(indices)
        rng.shuffle(part)
        yield from part


def example_order(
    examples: Sequence[Example],
    stages: Sequence[int],
    steps: int,
    batch_size: int,
    seed: int,
    *,
    focus_kinds: Sequence[str] = (),
    focus_steps: int = 0,
) -> Iterable[list[int]]:
    """Batches of example indices. The first `focus_steps` batches hold only examples of
    `focus_kinds` (the caption / describe turns: text the language prior cannot produce, so the model
    must read the video); then all examples. Each phase goes through curriculum stage 0 before
    stage 1 on its first pass, later passes are full shuffles. Deterministic for a seed, and a
    shorter run is a prefix of a longer one."""
    rng = random.Random(seed)
    clip_of = [ex.clip for ex in examples]
    focus = [i for i, ex in enumerate(examples) if ex.kind in set(focus_kinds)]
    if focus_steps and not focus:
        raise RRPOError(f"no examples of the focus kinds {list(focus_kinds)}")
    phases = [(_passes(focus, stages, clip_of, rng), min(focus_steps, steps))] if focus_steps else []
    phases.append(
        (_passes(list(range(len(examples))), stages, clip_of, rng), steps - min(focus_steps, steps))
    )
    for stream, n in phases:
        for _ in range(n):
            yield [next(stream) for _ in range(batch_size)]


def lr_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """transformers' schedule for `cfg` (each param group scaled from its own initial lr): linear
    warm-up over `cfg.warmup` steps, then flat ("constant_with_warmup") or cosine decay to
    `cfg.min_lr_ratio` x lr ("cosine_with_min_lr"). The flat schedule makes step N of a longer run
    identical to the end of an N-step run, so any intermediate checkpoint is reproducible.

    transformers counts the first step as 0 (lr 0 there); this loop has always counted warm-up steps
    from 1 (lr / warmup at the first step, as the committed checkpoint was trained), so the schedule
    is advanced by one step before training starts."""
    from transformers import get_scheduler

    if cfg.schedule == "constant":
        sched = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=cfg.warmup)
    elif cfg.schedule == "cosine":
        sched = get_scheduler(
            "cosine_with_min_lr",
            optimizer,
            num_warmup_steps=cfg.warmup,
            num_training_steps=cfg.steps + 1,
            scheduler_specific_kwargs={"min_lr_rate": cfg.min_lr_ratio},
        )
    else:
        raise RRPOError(f"unknown schedule {cfg.schedule!r}; use constant or cosine")
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": on purpose, see above
        warnings.simplefilter("ignore", UserWarning)
        sched.step()
    return sched


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate `lr_schedule` gives step `step` (0-based) at scale 1."""
    group = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([group], lr=cfg.lr)
    sched = lr_schedule(opt, cfg)
    for _ in range(step):
        opt.step()
        sched.step()
    return opt.param_groups[0]["lr"]


def visual_tower(model):
    """The vision tower (with its merger) of a Qwen2-VL-class model."""
    inner = getattr(model, "model", model)
    return inner.visual if hasattr(inner, "visual") else model.visual


def video_features(model, encoder: Encoder, clips: np.ndarray) -> torch.Tensor:
    """Mean over each clip's video tokens of the vision tower's output: [N, hidden] for frames [N, T, H, W, 3]."""
    visual = visual_tower(model)
    inputs = encoder.video_inputs(clips)
    out = visual(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"])
    out = getattr(out, "pooler_output", out)
    return out.reshape(len(clips), -1, out.shape[-1]).float().mean(1)


def direction_targets(scenes: Sequence[Any], colours: Sequence[str]) -> torch.Tensor:
    """[N, len(colours)] class per clip and colour: 0 = the colour is not in the clip, 1 + k = its
    object moves in the k-th of left / right / up / down."""
    from rrpo.toy.world import DIRECTIONS

    names = list(DIRECTIONS)
    out = torch.zeros(len(scenes), len(colours), dtype=torch.long)
    for i, scene in enumerate(scenes):
        for o in scene.objects:
            out[i, list(colours).index(o.colour)] = 1 + names.index(o.direction)
    return out


def vision_pretrain(
    model,
    encoder: Encoder,
    frames: np.ndarray,
    targets: torch.Tensor,
    heldout: tuple[np.ndarray, torch.Tensor] | None,
    cfg: TrainConfig,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the vision tower (and merger) alone, as real video LLMs start from a pretrained vision
    encoder: a linear probe on the mean of a clip's video tokens predicts, for every colour, whether
    it is in the clip and which way its object moves (`direction_targets`). The probe is discarded.

    Why: the language-model loss alone never taught the tiny tower to see motion (docs/toy.md), while
    this direct signal does within a few hundred steps. `cfg.vision_steps` steps of `cfg.batch_size`
    clips at `cfg.vision_lr` (AdamW, no decay); `heldout` = (frames, targets) is scored every 100 steps
    and at the end: accuracy over (clip, colour) cells where the colour is present."""
    torch.manual_seed(cfg.seed)
    visual = visual_tower(model)
    with torch.no_grad():  # the tower's output width (the merger's, = the text hidden size)
        hidden = int(video_features(model, encoder, frames[:1]).shape[-1])
    n_colours = targets.shape[1]
    head = torch.nn.Sequential(torch.nn.LayerNorm(hidden), torch.nn.Linear(hidden, 5 * n_colours))
    opt = torch.optim.AdamW([*visual.parameters(), *head.parameters()], lr=cfg.vision_lr, weight_decay=0.0)
    rng = np.random.default_rng([cfg.seed, 11])

    def logits(clips: np.ndarray) -> torch.Tensor:
        return head(video_features(model, encoder, clips)).reshape(len(clips), n_colours, 5)

    def accuracy() -> float | None:
        if heldout is None:
            return None
        hf, ht = heldout
        with torch.no_grad():
            pred = torch.cat([logits(hf[i : i + 64]).argmax(-1) for i in range(0, len(hf), 64)])
        present = ht > 0
        return float((pred[present] == ht[present]).float().mean())

    visual.train()
    losses, accs = [], {}
    for step in range(cfg.vision_steps):
        idx = np.sort(rng.choice(len(frames), min(cfg.batch_size, len(frames)), replace=False))
        out = logits(frames[idx])
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, 5), targets[idx].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*visual.parameters(), *head.parameters()], cfg.grad_clip)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == cfg.vision_steps:
            accs[step + 1] = accuracy()
            acc = "" if accs[step + 1] is None else f", held-out direction {100 * accs[step + 1]:.0f} %"
            log(f"vision step {step + 1}: loss {np.mean(losses[-100:]):.3f}{acc}")
    model.eval()
    return {"losses": losses, "heldout_accuracy": accs}


def train(
    model,
    encoder: Encoder,
    examples: Sequence[Example],
    frames: np.ndarray,
    stages: Sequence[int],
    cfg: TrainConfig,
    *,
    on_eval: Callable[[int], dict] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Full fine-tuning of every weight; returns {"losses": [per step], "steps_done", "seconds",
    "examples_per_s", "evals": {step: on_eval(step)}}."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    model.train()
    groups = []
    for vision in (False, True):
        params = [(n, p) for n, p in model.named_parameters() if (".visual." in f".{n}") == vision]
        scale = cfg.vision_lr_scale if vision else 1.0
        for decays in (True, False):
            chosen = [p for n, p in params if (p.ndim >= 2) == decays]
            if chosen:
                wd = cfg.weight_decay if decays else 0.0
                groups.append({"params": chosen, "weight_decay": wd, "lr": cfg.lr * scale})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))
    sched = lr_schedule(opt, cfg)
    losses: list[float] = []
    evals: dict[int, Any] = {}
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.steps, desc="pretrain", unit="step", disable=not progress)
    step = 0
    for step, idx in enumerate(
        example_order(
            examples,
            stages,
            cfg.steps,
            cfg.batch_size,
            cfg.seed,
            focus_kinds=cfg.focus_kinds,
            focus_steps=cfg.focus_steps,
        )
    ):
        if cfg.minutes is not None and time.perf_counter() - t0 > 60 * cfg.minutes:
            break
        chosen = [examples[i] for i in idx]
        b = encoder.batch(chosen, frames)
        labels = decisive_labels(b, chosen, keep_format=cfg.format_loss) if cfg.decisive_loss else b["labels"]
        loss = answer_loss(forward_logits(model, b), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.update()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        if on_eval is not None and cfg.eval_every and (step + 1) % cfg.eval_every == 0:
            evals[step + 1] = on_eval(step + 1)
            model.train()
    else:
        step += 1
    bar.close()
    seconds = time.perf_counter() - t0
    model.eval()
    done = len(losses)
    return {
        "losses": losses,
        "steps_done": done,
        "seconds": seconds,
        "examples_per_s": done * cfg.batch_size / max(seconds, 1e-9),
        "evals": evals,
    }


def initial_loss(model, encoder: Encoder, examples: Sequence[Example], frames: np.ndarray) -> float:
    """Answer-token loss of `examples` without training (for checks that training reduces it)."""
    model.eval()
    with torch.no_grad():
        b = encoder.batch(examples, frames)
        return float(answer_loss(forward_logits(model, b), b["labels"]))


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    """Markdown table of `quick_eval` / benchmark metrics."""
    lines = ["| group | n | clean % | perturbed % |", "|---|---|---|---|"]
    for name, row in metrics.items():
        pert = f"{row['perturbed']:.1f}" if "perturbed" in row else "-"
        lines.append(f"| {name} | {row['n']} | {row['clean']:.1f} | {pert} |")
    return "\n".join(lines)


def kind_counts(examples: Sequence[Example]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for ex in examples:
        counts[ex.kind] += 1
    return dict(counts)
