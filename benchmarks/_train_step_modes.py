"""Model, batch and the three optimizer-step implementations behind `benchmarks/train_step.py`.

Imported only inside worker processes (it imports torch, transformers and peft at module level); the
orchestrating process of `train_step.py` stays light so that the peak-RSS figures of the workers are
not polluted by a large parent (Linux carries the pre-exec high-water mark into `ru_maxrss`).

All modes compute the same RRPO objective (Sarkar et al., arXiv 2504.12083, Eq. 4; `rrpo.losses.rrpo_loss`)
for one preference pair [prompt + video | chosen] / [prompt + video | rejected], with LoRA on the language
model's linear layers and the same frozen reference (the base weights):

- `ours`: the trainer's path, `rrpo.train.trainer.PairForward` -> `rrpo.models.pair_forward(packed=True)`:
  video encoded once, one packed row [prefix | chosen | rejected] with a 4D mask, reference = the same
  peft model with its adapter disabled (reusing the video features), fused chunked log-prob/KL at
  response positions only (never a [L, V] logit tensor).
- `paper_style`: a separate frozen deepcopy of the base as the reference; four full HF forwards
  policy(prefix+chosen), policy(prefix+rejected), ref(prefix+chosen), ref(prefix+rejected), each
  encoding the video and producing full-vocabulary logits for the whole sequence; log_softmax / gather /
  KL from those logits (`rrpo.losses.token_logps_and_kl`).
- `trl_style` (TRL DPOTrainer-like, `concatenated_forward`): chosen and rejected as two rows of one
  [2, L] batch (prompt and video duplicated), full logits; reference = adapter disabled on the same
  model, also a [2, L] batch, under no_grad.
- `paper_code` (extra, not in the default set): what the public RRPO code does
  (github.com/pritamqu/RRPO, llava/train/llava_trainer.py, `RRPOTrainer.concatenated_forward`):
  the [2, L] batch of `trl_style` through the policy and through a separate deepcopied reference.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rrpo.losses import rrpo_loss, token_logps_and_kl
from rrpo.models import EncodedPair, build_tiny_model, collate_pairs, load_model
from rrpo.models.base import is_language_param
from rrpo.models.packing import IGNORE_INDEX, encode_prefix

MODES = ("ours", "paper_style", "trl_style", "paper_code", "ours_shared_prefix", "plain", "ours_flex")
DEFAULT_MODES = ("ours", "paper_style", "trl_style")
PROMPT = "Describe what happens in the video, step by step."

# Qwen2.5-VL-7B-Instruct's published config.json (text and vision shapes; vocabulary 152064).
QWEN25_VL_7B_TEXT = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0},
    "tie_word_embeddings": False,
}
QWEN25_VL_7B_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
    "hidden_act": "silu",
}


REAL_QWEN25_VL_CONFIG = (
    Path(os.environ.get("RRPO_SHARED_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
    / "real_checkpoints"
    / "qwen2.5-vl"
    / "config.json"
)


def qwen25_vl_7b_shapes(path: Path = REAL_QWEN25_VL_CONFIG) -> tuple[dict, dict, str]:
    """(text config, vision config, where they came from): the real checkpoint's config.json when it is on
    this machine (../shared/fixtures), else the built-in copy above (a GPU machine gets only the repository;
    tests/test_benchmarks.py checks the copy equals the real file)."""
    if not path.is_file():
        return (
            dict(QWEN25_VL_7B_TEXT),
            dict(QWEN25_VL_7B_VISION),
            "built-in copy of Qwen2.5-VL-7B-Instruct's config",
        )
    raw = json.loads(path.read_text())
    text = {k: raw[k] for k in QWEN25_VL_7B_TEXT if k in raw}
    text["rope_parameters"] = {
        "rope_type": "default",
        "mrope_section": raw["rope_scaling"]["mrope_section"],
        "rope_theta": raw["rope_theta"],
    }
    vision = {k: raw["vision_config"][k] for k in QWEN25_VL_7B_VISION}
    return text, vision, str(path)


@dataclass
class Setup:
    """What every mode starts from: the adapter (base HF model, not yet peft-wrapped) and one collated pair."""

    vlm: Any
    batch: dict[str, torch.Tensor]
    tokens: dict[str, int]
    params: dict[str, int]
    tmp: Any = None  # keeps the temporary model directory alive
    info: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------
# model and batch
# ------------------------------------------------------------------------------------------------------
def _heads(hidden: int) -> tuple[int, int]:
    """(attention heads, KV heads) for a tiny width: head_dim 64 from 128 up (like Qwen), else 4 heads."""
    heads = hidden // 64 if hidden >= 128 else 4
    return heads, max(1, heads // 2)


def build_model(args) -> tuple[Any, Any]:
    """The base model as a `VideoLMAdapter` (no LoRA yet) and the temporary directory holding its files.

    Tiny (default): `rrpo.models.build_tiny_model` at `--hidden/--layers` with the processor set to keep
    `--height x --width` frames, loaded with `load_model` (sdpa), then `resize_token_embeddings(--vocab)`
    (new rows drawn from a fixed seed, so every process gets identical weights).
    `--preset 7b`: a random-weight Qwen2.5-VL with Qwen2.5-VL-7B's shapes, built by `_from_config` on the
    target device in `--dtype`; the tokenizer / processor are the tiny model's (ids do not matter for
    speed; the config's video / vision token ids are taken from that tokenizer).
    """
    tmp = tempfile.TemporaryDirectory(prefix="rrpo-train-step-")
    family = "qwen2.5-vl" if args.preset == "7b" else args.family
    heads, kv = _heads(args.hidden)
    side = max(args.height, args.width)
    out = build_tiny_model(
        family,
        Path(tmp.name) / "model",
        seed=args.seed,
        hidden_size=64 if args.preset == "7b" else args.hidden,
        num_layers=1 if args.preset == "7b" else args.layers,
        num_heads=4 if args.preset == "7b" else heads,
        num_kv_heads=2 if args.preset == "7b" else kv,
        image_size=side,
        num_frames=args.frames,
    )
    dtype = getattr(torch, args.dtype)
    vlm = load_model(
        out,
        dtype=dtype,
        num_frames=args.frames,
        frame_size=(args.height, args.width),
        attn_implementation="sdpa",
    )
    if args.preset == "7b":
        vlm.model = _build_7b(vlm, dtype, args.device)
    else:
        torch.manual_seed(args.seed + 1)
        vlm.model.resize_token_embeddings(args.vocab, mean_resizing=False)
        vlm.model.to(args.device)
    vlm.model.requires_grad_(False)
    return vlm, tmp


def _build_7b(vlm, dtype: torch.dtype, device: str):
    """Random-weight Qwen2_5_VLForConditionalGeneration with Qwen2.5-VL-7B's shapes, created on `device`."""
    import transformers as tf

    old = vlm.model.config
    ids = {
        k: getattr(old, k)
        for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    }
    tok = vlm.tokenizer
    text, vision, _ = qwen25_vl_7b_shapes()
    text = {**text, "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
    cfg = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
    torch.manual_seed(0)
    with torch.device(device):
        model = tf.Qwen2_5_VLForConditionalGeneration._from_config(
            cfg, dtype=dtype, attn_implementation="sdpa"
        )
    return model.eval()


def _response_ids(gen: np.random.Generator, lo: int, hi: int, n: int, end_id: int) -> torch.Tensor:
    """n token ids: n-1 uniform in [lo, hi) (above the tokenizer's range: ordinary, never video tokens) + end."""
    body = gen.integers(lo, hi, size=max(n - 1, 0))
    return torch.tensor([*body.tolist(), end_id][-n:], dtype=torch.long)


def build_pair(vlm, args) -> tuple[EncodedPair, dict[str, int]]:
    """One preference pair with a real processed video prefix and random-token responses.

    The prefix (chat template + `--frames` random uint8 frames of `--height x --width` + prompt) goes
    through the family's processor (`rrpo.models.packing.encode_prefix`). Responses are built by hand:
    `--response-tokens` ids drawn uniformly from [tokenizer size, vocab) (ids the tiny tokenizer never
    produces, so never a video / vision token) ending with the template's end-of-turn token. Rejected =
    chosen with two differing spans re-drawn (RRPO's fine-grained differences); span ids 1 and 2 mark
    them on both sides.
    """
    gen = np.random.default_rng(args.seed)
    frames = gen.integers(0, 256, size=(args.frames, args.height, args.width, 3), dtype=np.uint8)
    prefix_ids, mm = encode_prefix(vlm, frames, PROMPT)
    vocab = vlm.hf_model.get_output_embeddings().weight.shape[0]
    lo = len(vlm.tokenizer)
    if vocab <= lo:
        raise SystemExit(f"--vocab {vocab} must exceed the tokenizer's {lo} tokens")
    end_id = vlm.tokenizer.convert_tokens_to_ids(vlm.tokenizer.tokenize(vlm.turn_end))[-1]
    n = args.response_tokens
    chosen = _response_ids(gen, lo, vocab, n, end_id)
    rejected = chosen.clone()
    c_spans = torch.zeros(n, dtype=torch.long)
    width = max(1, min(8, n // 8))
    for span, start in ((1, n // 4), (2, n // 2)):
        stop = min(start + width, n - 1) if n > 2 else n
        start = min(start, stop - 1)
        c_spans[start:stop] = span
        rejected[start:stop] = torch.from_numpy(gen.integers(lo, vocab, size=stop - start))
    pair = EncodedPair(prefix_ids, chosen, rejected, c_spans, c_spans.clone(), mm, False)
    video = int((prefix_ids == vlm.hf_model.config.video_token_id).sum())
    tokens = {
        "prefix": int(prefix_ids.numel()),
        "video": video,
        "chosen": n,
        "rejected": n,
        "packed_row": int(prefix_ids.numel()) + 2 * n,
        "plain_row": int(prefix_ids.numel()) + n,
        "vision_patches": int(mm["video_grid_thw"].prod(-1).sum()),
    }
    return pair, tokens


def count_params(hf_model) -> dict[str, int]:
    """Parameter counts of the base model (language model without the input embedding, lm_head included;
    vision tower + merger; input embedding) and the text shapes the FLOP estimate needs."""
    lm = vis = emb = 0
    for name, p in hf_model.named_parameters():
        if "embed_tokens" in name:
            emb += p.numel()
        elif is_language_param(name):
            lm += p.numel()
        else:
            vis += p.numel()
    text = hf_model.config.get_text_config()
    head = hf_model.get_output_embeddings().weight
    return {
        "language_non_embedding": lm,
        "vision": vis,
        "input_embedding": emb,
        "lm_head": head.numel(),
        "hidden": int(text.hidden_size),
        "layers": int(text.num_hidden_layers),
        "vocab": int(head.shape[0]),
    }


def lora_param_count(vlm, r: int) -> int:
    """LoRA parameters r*(in+out) over the linear layers the trainer's regex targets (works on meta tensors)."""
    from rrpo.models.base import lora_targets_ok

    modules = dict(vlm.hf_model.named_modules())
    return sum(r * (modules[n].in_features + modules[n].out_features) for n in lora_targets_ok(vlm.hf_model))


def estimate_flops(mode: str, tokens: dict[str, int], params: dict[str, int], lora: int) -> float:
    """Executed FLOPs of one step of `mode` (multiply-add = 2), an analytic count for compute-bound devices.

    Per language-model pass over L tokens with `rows` lm_head rows: 2*(N_body + lora)*L for the linears
    (N_body = language params without embedding and lm_head; lora only on policy passes),
    4*layers*L^2*H for attention scores and values (the full square: sdpa with an explicit 4D mask does
    not skip the masked half; the same convention for every mode), 2*V*H*rows for the lm_head. Backward
    with frozen weights = activation gradients only: 2*N_body*L + 2*(2*lora*L) + 8*layers*L^2*H +
    2*V*H*rows. Vision: 2*N_vision*patches per encoding (window attention left out). `ours` adds the
    fused path's two basis matmuls per response row (4*V*H*rows) and no lm_head backward matmul.
    """
    p, c, r = tokens["prefix"], tokens["chosen"], tokens["rejected"]
    h, layers, vh = params["hidden"], params["layers"], params["lm_head"]
    body = params["language_non_embedding"] - vh
    vision = 2.0 * params["vision"] * tokens["vision_patches"]

    def fwd(length: int, rows: int, adapter: int) -> float:
        return 2.0 * (body + adapter) * length + 4.0 * layers * length**2 * h + 2.0 * vh * rows

    def bwd(length: int, rows: int) -> float:
        return 2.0 * body * length + 4.0 * lora * length + 8.0 * layers * length**2 * h + 2.0 * vh * rows

    if mode in ("ours", "ours_shared_prefix", "ours_flex"):  # the same work; segments skip masked blocks
        packed = p + c + r
        return fwd(packed, c + r, lora) + fwd(packed, c + r, 0) + 4.0 * vh * (c + r) + bwd(packed, 0) + vision
    if mode == "plain":  # two sequences, fused head at response rows; the reference reuses the video
        total = 0.0
        for length, rows in ((p + c, c), (p + r, r)):
            total += (
                fwd(length, rows, lora) + fwd(length, rows, 0) + 4.0 * vh * rows + bwd(length, 0) + vision
            )
        return total
    if mode == "paper_style":
        total = 4 * vision
        for length in (p + c, p + r):
            total += fwd(length, length, lora) + fwd(length, length, 0) + bwd(length, length)
        return total
    width = p + max(c, r)  # trl_style / paper_code: two padded rows of one batch
    return 2 * (fwd(width, width, lora) + fwd(width, width, 0) + bwd(width, width)) + 4 * vision


def build_setup(args) -> Setup:
    """Base model + one collated pair on `args.device` (the state a worker measures its baseline at)."""
    vlm, tmp = build_model(args)
    pair, tokens = build_pair(vlm, args)
    batch = collate_pairs(vlm, [pair])
    batch = {k: v.to(args.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    return Setup(vlm, batch, tokens, count_params(vlm.hf_model), tmp)


# ------------------------------------------------------------------------------------------------------
# LoRA, optimizer, loss
# ------------------------------------------------------------------------------------------------------
def add_lora(vlm, args):
    """peft LoRA on the language model's linear layers (the trainer's regex); same seed in every mode.

    lora_B starts at zero in peft, which would make the policy equal the reference (log-ratios and KL all
    0, loss exactly log 2); it is filled with small seeded noise so the check compares non-trivial values
    and the step looks like one in mid-training. Dropout is 0 (the RRPO code and TRL disable dropout).
    """
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(args.seed + 2)
    cfg = LoraConfig(
        r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        lora_dropout=0.0,
        target_modules=vlm.lora_target_modules,
        bias="none",
    )
    model = get_peft_model(vlm.model, cfg)
    gen = torch.Generator().manual_seed(args.seed + 3)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * args.lora_b_std)
    model.train()
    return model


def make_optimizer(model, args) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)


def _loss(pc, pr, rc, rr, c_spans, r_spans, c_kl, c_mask, r_mask, args) -> torch.Tensor:
    losses, _, _ = rrpo_loss(
        pc,
        pr,
        rc,
        rr,
        c_spans,
        r_spans,
        c_kl,
        beta=args.beta,
        alpha=args.alpha,
        chosen_mask=c_mask,
        rejected_mask=r_mask,
    )
    return losses.mean()


# ------------------------------------------------------------------------------------------------------
# full-logit helpers (paper_style, trl_style, paper_code)
# ------------------------------------------------------------------------------------------------------
def pair_outputs_loss(out, args) -> torch.Tensor:
    """The RRPO loss of `pair_forward`'s outputs (a `PairOutputs`)."""
    return _loss(
        out.policy_chosen_logps,
        out.policy_rejected_logps,
        out.ref_chosen_logps,
        out.ref_rejected_logps,
        out.chosen_span_ids,
        out.rejected_span_ids,
        out.chosen_kl,
        out.chosen_mask,
        out.rejected_mask,
        args,
    )


def _mm(vlm, batch, side: str, rows: int = 1) -> dict[str, torch.Tensor]:
    """HF forward kwargs of one plain side (prefix + response), the video repeated for `rows` rows."""
    kw = {k: batch[k] for k in vlm.mm_keys() if k in batch}
    if "pixel_values_videos" in kw:
        kw["pixel_values_videos"] = kw["pixel_values_videos"].to(vlm.hf_model.lm_head.weight.dtype)
    if rows > 1:
        kw = {k: torch.cat([v] * rows) for k, v in kw.items()}
    key = f"{side}_mm_token_type_ids"
    if key in batch:
        kw["mm_token_type_ids"] = batch[key]
    return kw


def _full_labels(ids: torch.Tensor, attn: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """Shifted labels [B, L-1] for logits[:, :-1]: ids[:, t+1] at response positions, -100 elsewhere."""
    pos = torch.arange(1, ids.shape[1], device=ids.device).unsqueeze(0)
    keep = (pos >= prefix.unsqueeze(1)) & attn[:, 1:].bool()
    return torch.where(keep, ids[:, 1:], torch.full_like(ids[:, 1:], IGNORE_INDEX))


def _full_spans(span_ids: torch.Tensor, prefix: torch.Tensor, length: int) -> torch.Tensor:
    """Response span ids [B, T] placed at their positions in a full shifted row [B, length]."""
    out = span_ids.new_zeros(span_ids.shape[0], length)
    for b in range(span_ids.shape[0]):
        start = int(prefix[b]) - 1  # logits[:, P-1] scores the first response token
        n = min(span_ids.shape[1], length - start)
        out[b, start : start + n] = span_ids[b, :n]
    return out


def _pad_cols(x: torch.Tensor, width: int, value) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def _two_rows(batch, pad_id: int) -> dict[str, torch.Tensor]:
    """chosen and rejected plain rows stacked into one [2B, L] batch (right-padded to one length)."""
    width = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    out = {}
    for key, value in (("input_ids", pad_id), ("attention_mask", 0), ("mm_token_type_ids", 0)):
        parts = [batch[f"{s}_{key}"] for s in ("chosen", "rejected") if f"{s}_{key}" in batch]
        if parts:
            out[key] = torch.cat([_pad_cols(p, width, value) for p in parts])
    return out


def _logits(model, ids, attn, mm) -> torch.Tensor:
    """A plain HF forward with the video's pixel values: full-vocabulary logits [B, L, V] of every position."""
    return model(input_ids=ids, attention_mask=attn, use_cache=False, **mm).logits


# ------------------------------------------------------------------------------------------------------
# the modes: each returns (step function -> loss tensor value, extra static info)
# ------------------------------------------------------------------------------------------------------
class Timer:
    """Wall time per named part of a step (device-synchronised), for the `parts` breakdown."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.parts: dict[str, float] = {}
        self._t = 0.0

    def start(self) -> None:
        self.parts = {}
        self._sync()
        self._t = time.perf_counter()

    def mark(self, name: str) -> None:
        self._sync()
        now = time.perf_counter()
        self.parts[name] = self.parts.get(name, 0.0) + now - self._t
        self._t = now

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def prepare_mode(mode: str, setup: Setup, args) -> tuple[Callable[[Timer], float], Any, dict[str, Any]]:
    """Build what `mode` needs on top of the setup (LoRA, reference copy, optimizer); return
    (step(timer) -> loss value, the peft model, info)."""
    vlm, batch = setup.vlm, setup.batch
    base = vlm.model
    ref_copy = None
    if mode in ("paper_style", "paper_code"):
        # A second full copy of the base weights, frozen, in eval mode (taken before LoRA is injected).
        ref_copy = copy.deepcopy(base).eval().requires_grad_(False)
    model = add_lora(vlm, args)
    vlm.model = model
    if getattr(args, "checkpointing", False):
        # What --gradient_checkpointing does in training (PairForward): the language model's layers,
        # non-reentrant (works with frozen embeddings and the adapter-off reference pass).
        model.get_base_model().gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    opt = make_optimizer(model, args)
    info = {
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "reference": "separate deepcopy" if ref_copy is not None else "adapter disabled",
    }
    if ref_copy is not None:
        info["reference_copy_mb"] = round(
            sum(p.numel() * p.element_size() for p in ref_copy.parameters()) / 2**20, 1
        )
    prefix = batch["prefix_lengths"]
    pad_id = vlm.tokenizer.pad_token_id or 0

    captured: dict[str, torch.Tensor] = {}
    info["grads"] = captured  # filled by every step when args.capture_grads (the --check)

    def finish(loss: torch.Tensor, timer: Timer) -> float:
        loss.backward()
        timer.mark("backward")
        if getattr(args, "capture_grads", False):
            captured.clear()
            captured.update(lora_grads(model))
        opt.step()
        opt.zero_grad(set_to_none=True)
        timer.mark("optimizer")
        return float(loss.detach())

    if mode in ("ours", "ours_shared_prefix", "ours_flex"):
        from rrpo.train.trainer import PairForward

        if mode != "ours":  # --attn-implementation shared-prefix(-flex): no L x L mask
            import rrpo.models.packing.attention  # noqa: F401  (registers it with transformers)

            vlm.packed_attention = "shared-prefix-flex" if mode == "ours_flex" else "shared-prefix"
        module = PairForward(model, vlm, args.chunk_size)

        def step(timer: Timer) -> float:
            timer.start()
            out = module(**batch)
            timer.mark("pair_forward (policy+reference+fused logps/KL)")
            loss = _loss(
                out["policy_chosen_logps"],
                out["policy_rejected_logps"],
                out["ref_chosen_logps"],
                out["ref_rejected_logps"],
                out["chosen_span_ids"],
                out["rejected_span_ids"],
                out["chosen_kl"],
                out["chosen_mask"],
                out["rejected_mask"],
                args,
            )
            timer.mark("loss")
            return finish(loss, timer)

        return step, model, info

    if mode == "paper_style":
        sides = {}
        for side in ("chosen", "rejected"):
            ids, attn = batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"]
            labels = _full_labels(ids, attn, prefix)
            spans = _full_spans(batch[f"{side}_span_ids"], prefix, labels.shape[1])
            sides[side] = (ids, attn, _mm(vlm, batch, side), labels, spans)
        width = max(s[3].shape[1] for s in sides.values())

        def step(timer: Timer) -> float:
            timer.start()
            pol = {s: _logits(model, v[0], v[1], v[2]) for s, v in sides.items()}
            timer.mark("policy forwards (2, full logits)")
            with torch.no_grad():
                ref = {s: _logits(ref_copy, v[0], v[1], v[2]) for s, v in sides.items()}
            timer.mark("reference forwards (2, copy, full logits)")
            per = {}
            for s, (_, _, _, labels, spans) in sides.items():
                lp, rlp, kl = token_logps_and_kl(pol[s][:, :-1], ref[s][:, :-1], labels)
                per[s] = [_pad_cols(x, width, 0) for x in (lp, rlp, kl)]
                per[s] += [_pad_cols(spans, width, 0), _pad_cols(labels, width, IGNORE_INDEX) != IGNORE_INDEX]
            del pol, ref
            (pc, rc, ckl, cs, cm), (pr, rr, _, rs, rm) = per["chosen"], per["rejected"]
            loss = _loss(pc, pr, rc, rr, cs, rs, ckl, cm, rm, args)
            timer.mark("log_softmax/KL over full logits + loss")
            return finish(loss, timer)

        return step, model, info

    if mode in ("trl_style", "paper_code"):
        rows = _two_rows(batch, pad_id)
        ids, attn = rows["input_ids"], rows["attention_mask"]
        mm = _mm(vlm, batch, "chosen", rows=2)
        if "mm_token_type_ids" in rows:
            mm["mm_token_type_ids"] = rows["mm_token_type_ids"]
        prefix2 = torch.cat([prefix, prefix])
        labels = _full_labels(ids, attn, prefix2)
        spans = torch.cat(
            [_full_spans(batch[f"{s}_span_ids"], prefix, labels.shape[1]) for s in ("chosen", "rejected")]
        )
        mask = labels != IGNORE_INDEX
        n = prefix.shape[0]

        def step(timer: Timer) -> float:
            timer.start()
            logits = _logits(model, ids, attn, mm)
            timer.mark("policy forward ([2, L], full logits)")
            with torch.no_grad():
                if ref_copy is not None:
                    ref = _logits(ref_copy, ids, attn, mm)
                else:
                    with model.disable_adapter():
                        ref = _logits(model, ids, attn, mm)
            timer.mark("reference forward ([2, L], full logits)")
            lp, rlp, kl = token_logps_and_kl(logits[:, :-1], ref[:, :-1], labels)
            del logits, ref
            loss = _loss(
                lp[:n], lp[n:], rlp[:n], rlp[n:], spans[:n], spans[n:], kl[:n], mask[:n], mask[n:], args
            )
            timer.mark("log_softmax/KL over full logits + loss")
            return finish(loss, timer)

        return step, model, info

    if mode == "plain":  # two plain passes (prefix+chosen, prefix+rejected), fused log-probs, no packing
        from rrpo.models import pair_forward

        def step(timer: Timer) -> float:
            timer.start()
            out = pair_forward(vlm, model, batch, reference=True, chunk_size=args.chunk_size, packed=False)
            timer.mark("two plain passes (policy+reference+fused logps/KL)")
            loss = pair_outputs_loss(out, args)
            timer.mark("loss")
            return finish(loss, timer)

        return step, model, info

    raise SystemExit(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")


def causal_only_loss(setup: Setup, args) -> float:
    """Negative control for the check: ours with `causal_mask_only=True` (rejected attends to chosen).
    Must disagree with the other modes, or the check could not catch a wrong packing mask."""
    from rrpo.models import pair_forward

    model = add_lora(setup.vlm, args)
    setup.vlm.model = model
    with torch.no_grad():
        out = pair_forward(
            setup.vlm, model, setup.batch, reference=True, chunk_size=args.chunk_size, causal_mask_only=True
        )
    return float(pair_outputs_loss(out, args))


def lora_grads(model) -> dict[str, torch.Tensor]:
    """Copies of the current LoRA gradients by parameter name (for the equivalence check)."""
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
