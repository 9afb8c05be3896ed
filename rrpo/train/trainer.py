"""RRPO training on `transformers.Trainer`: LoRA on the language model, adapter-off reference, one
packed pass per pair.

The Trainer brings accelerate, DeepSpeed ZeRO-2/3, FSDP, gradient accumulation, checkpointing and
`report_to` logging; this module adds only what is specific to preference training on video:
- `PairDataset` decodes a pair's video and encodes [prompt+video | chosen | rejected] for the packed pass,
  counting (never silently dropping) pairs it has to skip;
- `RRPOTrainer.compute_loss` runs `rrpo.models.pair_forward` (policy with LoRA, reference with LoRA
  disabled: no second copy of the weights) and the chosen preference loss, and keeps the DPO-style metrics
  that `log` averages over the optimizer step;
- `train(config)` wires it together and writes the adapter, the config, `metrics.jsonl` and a summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from rrpo.data.record import PreferencePair, read_pairs
from rrpo.data.runs import claim_output
from rrpo.errors import RRPOError, VideoError
from rrpo.losses.registry import PreferenceLoss
from rrpo.train import rundir
from rrpo.train.config import RRPOConfig
from rrpo.train.rundir import SkipLedger
from rrpo.video.clip import video_path


def preflight(
    pairs: list[PreferencePair],
    video_root: Path,
    loss: PreferenceLoss,
    ledger: SkipLedger,
    *,
    allow_outside_root: bool = False,
) -> list[PreferencePair]:
    """Cheap checks before any decoding, each a counted skip with its reason: the video exists inside
    the video root, span losses have a span on both sides (and DPA, which pairs span i with span i, as
    many on each), chosen and rejected differ."""
    loss_type = loss.spec.name
    usable = []
    for pair in pairs:
        try:
            video = video_path(video_root, pair.video, allow_outside=allow_outside_root)
        except VideoError as err:
            ledger.skip(pair.id, f"bad video: {err}")
            continue
        if pair.chosen == pair.rejected:
            ledger.skip(pair.id, "identical responses: chosen and rejected are the same text")
        elif loss.needs_spans and not (pair.chosen_spans and pair.rejected_spans):
            side = "chosen" if not pair.chosen_spans else "rejected"
            ledger.skip(
                pair.id, f"no span: the {side} response has no differing span ({loss_type} needs both)"
            )
        elif loss_type == "dpa" and len(pair.chosen_spans) != len(pair.rejected_spans):
            ledger.skip(
                pair.id,
                f"span count: chosen has {len(pair.chosen_spans)}, rejected {len(pair.rejected_spans)} "
                "(dpa pairs span i with span i)",
            )
        elif not video.is_file():
            ledger.skip(pair.id, f"missing video: {video}")
        else:
            usable.append(pair)
    return usable


class PairDataset(torch.utils.data.Dataset):
    """Pairs -> encoded packed inputs. A pair that fails at load time (undecodable video, too long even
    after truncating the responses) is recorded in the ledger and replaced by the next usable pair, so a
    batch never comes out short; the run's summary lists it."""

    def __init__(
        self, pairs: list[PreferencePair], vlm: Any, video_root: Path, cfg: RRPOConfig, ledger: SkipLedger
    ):
        self.pairs, self.vlm, self.video_root, self.cfg, self.ledger = pairs, vlm, video_root, cfg, ledger

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Any:
        from rrpo.models import SkipPair, encode_pair

        for attempt in range(len(self.pairs)):
            pair = self.pairs[(index + attempt) % len(self.pairs)]
            if pair.id in self.ledger.local:  # this process's own skips: no file read per item
                continue
            try:
                video = video_path(self.video_root, pair.video, allow_outside=self.cfg.allow_outside_root)
                frames = self.vlm.read_clip(video)  # frames with their real timing
                encoded = encode_pair(
                    self.vlm,
                    frames,
                    pair.model_prompt,
                    pair.chosen,
                    pair.rejected,
                    pair.chosen_spans,
                    pair.rejected_spans,
                    max_length=self.cfg.max_length,
                )
            except VideoError as err:
                self.ledger.skip(pair.id, f"bad video: {err}")
                continue
            except SkipPair as err:
                self.ledger.skip(pair.id, f"too long: {err}")
                continue
            if getattr(encoded, "truncated", False):
                self.ledger.mark_truncated(pair.id)
            return encoded
        raise RRPOError(f"every pair was skipped: {self.ledger.describe()}")


class MetricsFileCallback(TrainerCallback):
    """Append every log record to `<output_dir>/metrics.jsonl` (main process only)."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - Trainer's signature
        if state.is_world_process_zero and logs:
            record = {"step": state.global_step, "epoch": state.epoch, **logs}
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


class PairForward(torch.nn.Module):
    """What the Trainer trains, and what DDP / FSDP / DeepSpeed wrap: a module whose forward is one packed
    policy pass plus the adapter-off reference pass. Going through a module's forward (rather than calling
    the peft model's parts from compute_loss) is what lets DDP synchronise gradients and FSDP gather
    parameters. The peft model sits in `.module`, so `transformers.modeling_utils.unwrap_model` and the
    Trainer's `save_model` find it and write a peft adapter."""

    def __init__(self, peft_model: torch.nn.Module, vlm: Any, chunk_size: int):
        super().__init__()
        self.module = peft_model
        self.vlm = vlm  # not a Module: holds the processor and the family's hooks
        self.chunk_size = chunk_size
        # The wrapped model's layer classes, which FSDP's transformer auto-wrap (accelerate's
        # TRANSFORMER_BASED_WRAP with no class named) shards one by one; without them the whole model
        # would be a single FSDP unit.
        self._no_split_modules = list(getattr(vlm.hf_model, "_no_split_modules", None) or [])

    @property
    def config(self) -> Any:
        """The wrapped model's config: DeepSpeed fills its "auto" bucket sizes from the hidden size here
        (a VL config's `text_config.hidden_size`), and the Trainer reads it too."""
        return self.vlm.hf_model.config

    def forward(self, **batch: Any) -> dict[str, torch.Tensor]:
        from rrpo.models import pair_forward

        out = pair_forward(self.vlm, self.module, batch, reference=True, chunk_size=self.chunk_size)
        return {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, **options: Any
    ) -> None:
        """What the Trainer calls for `--gradient-checkpointing`: checkpoint the language model's layers.
        Non-reentrant by default: it works with frozen embeddings and the adapter-off reference pass."""
        kwargs = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        base = self.module.get_base_model()
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, **options)
        else:  # transformers before the rename
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    gradient_checkpointing_enable = activation_checkpointing_enable


class RRPOTrainer(Trainer):
    """`transformers.Trainer` whose loss is a preference loss over packed pairs.

    `args` is an `RRPOConfig`; the loss is built from it once (`PreferenceLoss.from_config`: the loss
    type and every option the registry maps to a config field) and applied to the model's outputs."""

    def __init__(
        self,
        *args: Any,
        vlm: Any = None,
        rrpo_config: RRPOConfig | None = None,
        loss: PreferenceLoss | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.vlm = vlm
        self.rrpo_config = rrpo_config or self.args
        self.loss_fn = loss or PreferenceLoss.from_config(self.rrpo_config)
        self._stored: dict[str, list[float]] = defaultdict(list)
        # compute_loss returns a per-pair mean, so let the Trainer divide by the accumulation steps.
        self.model_accepts_loss_kwargs = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        out = model(**inputs)
        losses, chosen_rewards, rejected_rewards = self.loss_fn(out)
        loss = losses.mean()
        with torch.no_grad():
            stats = {
                "rewards/chosen": chosen_rewards.mean(),
                "rewards/rejected": rejected_rewards.mean(),
                "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
                "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
                "kl/chosen": out["chosen_kl"].sum(-1).mean(),
                "kl/rejected": out["rejected_kl"].sum(-1).mean(),
                "logps/chosen": out["policy_chosen_logps"].sum(-1).mean(),
                "logps/rejected": out["policy_rejected_logps"].sum(-1).mean(),
            }
            for key, value in stats.items():
                self._stored[key].append(
                    self.accelerator.gather_for_metrics(value.detach().float()).mean().item()
                )
        return (loss, out) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Average what compute_loss stored since the last log (over micro-batches and processes).
        if "loss" in logs:
            for key, values in self._stored.items():
                if values:
                    logs[key] = sum(values) / len(values)
            self._stored.clear()
        super().log(logs, start_time)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # Write the peft adapter of PairForward.module (ZeRO-3 passes a gathered state dict keyed by the
        # wrapper's parameter names: strip the "module." prefix so peft finds its keys).
        output_dir = output_dir or self.args.output_dir
        if state_dict is not None:
            state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
        self.model.module.save_pretrained(
            output_dir, state_dict=state_dict, is_main_process=self.args.should_save
        )
        if self.args.should_save:
            torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        # Checkpoints hold the peft adapter of PairForward.module; load it back into the same modules.
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        path = Path(resume_from_checkpoint) / "adapter_model.safetensors"
        if not path.is_file():
            raise RRPOError(f"{resume_from_checkpoint}: no adapter_model.safetensors to resume from")
        set_peft_model_state_dict(self.model.module, load_file(str(path)))


def train(cfg: RRPOConfig) -> dict[str, Any]:
    """Train a LoRA adapter with `cfg.loss_type`; returns the run summary (also written to disk, with
    `status` "finished", or "failed" and the error when the run fails; docs/RELIABILITY.md)."""
    for name in ("model", "data", "output_dir"):
        if not cfg._given.get(name):
            raise RRPOError(f"--{'out' if name == 'output_dir' else name} is required")
    output_dir, video_root = Path(cfg.output_dir), Path(cfg.video_root)
    output_dir.mkdir(parents=True, exist_ok=True)
    main = rundir.is_main_process()
    with rundir.RunDirLock(output_dir) if main else contextlib.nullcontext():
        # Rank 0 alone inspects, clears and claims the directory, then tells the other ranks: each rank
        # checking for itself raced with rank 0's run.json ("holds an earlier run" on rank 1 of a fresh
        # --out), and a rank must not append skips to an earlier run's files that rank 0 refused.
        error, done, resume_from = _claim_output_dir(cfg, output_dir) if main else (None, None, None)
        if cfg.world_size > 1:
            shared = [(error, done, resume_from)]
            torch.distributed.broadcast_object_list(shared, src=0)
            error, done, resume_from = shared[0]
        if error is not None:
            raise RRPOError(error)
        if done is not None:
            if main:
                print(
                    f"{output_dir}: this run already finished (step {done.get('global_step')}); nothing to resume"
                )
            return {**done, "already_finished": True}
        ledger = SkipLedger(path=output_dir / rundir.SKIPS_FILE)
        try:
            return _train(cfg, output_dir, video_root, resume_from, ledger, main)
        except BaseException as err:
            if main:  # what happened, with every skip so far, for the user and for a rerun
                reason = str(err) or type(err).__name__
                rundir.write_summary(
                    output_dir, {"status": "failed", "error": reason[:2000], **ledger.summary()}
                )
            raise


def _claim_output_dir(
    cfg: RRPOConfig, output_dir: Path
) -> tuple[str | None, dict[str, Any] | None, str | None]:
    """On rank 0: (error, the finished run's summary for a --resume of a finished run, the checkpoint to
    resume from). Clears an earlier run on --overwrite and writes run.json for this one."""
    resume_from = None
    try:
        if cfg.resume:
            done = rundir.read_summary(output_dir)
            if done is not None and done.get("status", "finished") == "finished":
                return None, done, None
            checkpoint = rundir.last_complete_checkpoint(output_dir)
            if checkpoint is None:
                raise RRPOError(f"--resume: no complete checkpoint-* directory in {output_dir}")
            resume_from = str(checkpoint)
        elif rundir.holds_a_run(output_dir):
            if not cfg.overwrite:
                raise RRPOError(
                    f"{output_dir} holds an earlier run; pass --resume to continue it or --overwrite to start clean"
                )
            rundir.clear_run(output_dir)
        # a resumed run must be the same run: refused, naming what differs, otherwise
        claim_output(output_dir / "run.json", rundir.train_fingerprint(cfg), what=f"--out {output_dir}")
    except RRPOError as err:
        return str(err), None, None
    return None, None, resume_from


def _train(
    cfg: RRPOConfig,
    output_dir: Path,
    video_root: Path,
    resume_from: str | None,
    ledger: SkipLedger,
    main: bool,
) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    from rrpo.models import collate_pairs, load_model
    from rrpo.models.registry import family_options

    loss = PreferenceLoss.from_config(cfg)
    pairs = read_pairs(cfg.data)
    ledger.total = len(pairs)
    if not pairs:
        raise RRPOError(f"{cfg.data}: no preference pairs")
    usable = preflight(pairs, video_root, loss, ledger, allow_outside_root=cfg.allow_outside_root)
    _check_skips(ledger, cfg)
    if cfg.deepspeed:
        _attach_deepspeed_comm()

    vlm = load_model(
        cfg.model,
        revision=cfg.revision,
        num_frames=cfg.frames,
        frame_size=tuple(cfg.frame_size) if cfg.frame_size else None,
        fps=cfg.fps,
        max_frames=cfg.max_frames,
        max_pixels=cfg.max_pixels,
        dtype=cfg.weights_dtype,
        attn_implementation=cfg.attn_implementation,
        family_options={name: getattr(cfg, name) for name in family_options() if getattr(cfg, name, None)},
    )
    if cfg.pack_pairs and vlm.ported:
        raise RRPOError(f"--pack-pairs: the {vlm.family} port takes one pair per row; drop --pack-pairs")
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=vlm.lora_target_modules,
        bias="none",
    )
    # LoRA's A matrices are drawn from the global RNG and the Trainer seeds only later: without this the
    # adapter's start depended on whatever ran before in the process (the toy demo's worker processes
    # run several trainings each, in an order set by timing, which made runs irreproducible).
    set_seed(cfg.seed)
    peft_model = get_peft_model(vlm.model, lora)
    vlm.model = peft_model
    model = PairForward(peft_model, vlm, cfg.chunk_size)
    metrics_path = output_dir / rundir.METRICS_FILE
    if main:
        # A fresh run starts a fresh log; a resumed one keeps the rows up to its checkpoint, so steps
        # logged after that checkpoint (and redone now) are not in the file twice.
        rundir.trim_metrics(metrics_path, int(Path(resume_from).name.split("-")[-1]) if resume_from else 0)
    trainer = RRPOTrainer(
        model=model,
        args=cfg,
        train_dataset=PairDataset(usable, vlm, video_root, cfg, ledger),
        data_collator=lambda features: collate_pairs(
            vlm, features, layout="packed", pack_tokens=cfg.pack_pairs
        ),
        callbacks=[MetricsFileCallback(metrics_path)],
        vlm=vlm,
        loss=loss,
    )
    if main:
        print(
            f"rrpo: training {vlm.family} on {cfg.device} x {cfg.world_size} process(es), "
            f"{str(vlm.dtype).removeprefix('torch.')} weights",
            file=sys.stderr,
        )
    started = time.time()
    result = trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_model(str(output_dir))  # the LoRA adapter, peft format
    summary = {
        "status": "finished",
        "output_dir": str(output_dir),
        "loss_type": cfg.loss_type,
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "seconds": round(time.time() - started, 2),
        **ledger.summary(),
    }
    # Sharded (ZeRO-3, FSDP) ranks hold different pieces by design; the check is for replicated DDP.
    in_sync = None if (cfg.deepspeed or trainer.is_fsdp_enabled) else _ranks_in_sync(peft_model)
    if in_sync is not None:
        summary["ranks_in_sync"] = in_sync
    if trainer.is_world_process_zero():
        cfg.save(output_dir)
        rundir.write_summary(output_dir, summary)
    _check_skips(ledger, cfg)
    return summary


def _attach_deepspeed_comm() -> None:
    """Hand DeepSpeed the process group accelerate already started. ZeRO-3 builds the model inside
    `deepspeed.zero.Init` (in `from_pretrained`), which reads the world size from DeepSpeed's own comm
    layer; on CPU (gloo) nothing else has initialised it by then, so it saw a world of 1 and refused the
    batch sizes. `init_distributed` adopts an existing torch process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        import deepspeed

        deepspeed.init_distributed(dist_backend=dist.get_backend())


def _ranks_in_sync(model: torch.nn.Module) -> bool | None:
    """Under data parallelism every rank must end with the same adapter; None when running alone."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    trainable = [p.detach().float().flatten() for p in model.parameters() if p.requires_grad]
    local = torch.cat(trainable).to(torch.float64)
    checksum = torch.stack(
        [local.sum(), (local * torch.arange(1, local.numel() + 1, dtype=torch.float64)).sum()]
    )
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    return all(torch.allclose(g, gathered[0], rtol=1e-6, atol=1e-9) for g in gathered)


def _check_skips(ledger: SkipLedger, cfg: RRPOConfig) -> None:
    if ledger.skipped and ledger.fraction() > cfg.max_skip_fraction:
        raise RRPOError(f"{ledger.describe()}: more than max_skip_fraction={cfg.max_skip_fraction}")
