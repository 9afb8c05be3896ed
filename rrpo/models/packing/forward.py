"""The packed pair forward: one row per pair, the shared-prefix attention mask, the reference pass with the
adapter disabled, and per-token log-probs and KL from the fused path (`rrpo.models.packing` has the whole
picture)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields

import torch

from rrpo.errors import RRPOError
from rrpo.models.base import VideoLMAdapter, is_peft_model, unwrap_peft
from rrpo.models.packing.attention import segment_lengths_mask, use_shared_prefix_attention
from rrpo.models.packing.collate import IGNORE_INDEX, packed_position_ids, pair_placement

# How the packed row's attention is computed (`pair_forward(attention=...)`, `--attn-implementation`).
PACKED_ATTENTIONS = ("mask", "shared-prefix", "shared-prefix-flex")


@dataclass
class PairOutputs:
    """Per-token tensors of a batch of pairs, all [B, T] (T = longest response in the batch; module doc).

    Log-probs and KL are float32 and zero outside the response; `ref_*` and the KL are None when
    `pair_forward(..., reference=False)`.
    """

    policy_chosen_logps: torch.Tensor
    policy_rejected_logps: torch.Tensor
    ref_chosen_logps: torch.Tensor | None
    ref_rejected_logps: torch.Tensor | None
    chosen_kl: torch.Tensor | None
    rejected_kl: torch.Tensor | None
    chosen_span_ids: torch.Tensor
    rejected_span_ids: torch.Tensor
    chosen_mask: torch.Tensor
    rejected_mask: torch.Tensor
    chosen_labels: torch.Tensor
    rejected_labels: torch.Tensor

    def to_dict(self) -> dict[str, torch.Tensor | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def packed_attention_mask(
    prefix_lengths: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    length: int,
    *,
    dtype: torch.dtype,
    device: torch.device | str | None = None,
    causal_only: bool = False,
) -> torch.Tensor:
    """Additive float mask [B, 1, L, L] for packed rows [prefix | chosen | rejected | padding].

    0 where attention is allowed, `finfo(dtype).min` where blocked (a bool mask would be wrong for eager
    attention, which adds the mask). Causal; rejected queries do not see chosen keys; padding keys are
    blocked, and padding queries see only themselves (their outputs are ignored; a fully blocked row
    could produce NaN in some kernels). `causal_only=True` drops the chosen/rejected separation (the
    negative control: rejected then sees chosen).
    """
    dev = device if device is not None else prefix_lengths.device
    p = prefix_lengths.to(dev).view(-1, 1, 1)
    c = chosen_lengths.to(dev).view(-1, 1, 1)
    n = p + c + rejected_lengths.to(dev).view(-1, 1, 1)
    q = torch.arange(length, device=dev).view(1, -1, 1)
    k = torch.arange(length, device=dev).view(1, 1, -1)
    allowed = (k <= q) & (q < n)
    if not causal_only:
        rejected_q = (q >= p + c) & (q < n)
        chosen_k = (k >= p) & (k < p + c)
        allowed &= ~(rejected_q & chosen_k)
    allowed |= (q >= n) & (q == k)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=dev)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)


def _response_index(
    prefix_lengths: torch.Tensor, lengths: torch.Tensor, width: int, offset: torch.Tensor | None
) -> torch.Tensor:
    """Index [B, width] of the hidden state that scores response token j.

    Token j of a response placed right after the prefix is scored by position P - 1 + j. In the packed
    row the rejected response starts at P + C (`offset` = C): its first token is still scored by the
    prefix's last position P - 1, the others by P + C + j - 1. Padding columns point at 0.
    """
    j = torch.arange(width, device=lengths.device).unsqueeze(0)
    p = prefix_lengths.unsqueeze(1)
    idx = p - 1 + j
    if offset is not None:
        idx = torch.where(j == 0, idx, idx + offset.unsqueeze(1))
    return torch.where(j < lengths.unsqueeze(1), idx, torch.zeros_like(idx))


def _gather(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """hidden [B, L, H] at index [B, T] -> [B, T, H]."""
    return torch.gather(hidden, 1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def _gather_rows(hidden: torch.Tensor, base: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """hidden [R, L, H] of packed rows at column `index` [B, T] of the pair starting at flat position `base`
    [B] (row x L + column) -> [B, T, H]."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    return flat[base.unsqueeze(1) + index]


def _unwrap(model):
    """(peft model or None, transformers model) below DDP / accelerate / peft wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return (model if is_peft_model(model) else None), unwrap_peft(model)


def _reference_context(peft_model):
    return peft_model.disable_adapter() if peft_model is not None else contextlib.nullcontext()


def vision_is_frozen(vlm: VideoLMAdapter) -> bool:
    """True when nothing outside the language model (the adapter's `language_model` and `lm_head`
    hooks) trains, so the reference pass can reuse the policy's video features."""
    language = {id(p) for m in (vlm.language_model, vlm.lm_head) for p in m.parameters()}
    return not any(p.requires_grad for p in vlm.hf_model.parameters() if id(p) not in language)


def _run(inner, modality, input_ids, attention_mask, position_ids, mm_kwargs, video_outputs=None):
    """Multimodal base model forward; returns (last hidden state [B, L, H], video encoder outputs).

    `modality` names the encoder output the video travels in ("video"; "image" where frames enter as
    images): `<modality>_outputs` of the model's output, `mm_encoder_outputs[modality]` to reuse it."""
    kwargs = dict(mm_kwargs)
    if video_outputs is not None:
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("pixel_values")}
        kwargs["mm_encoder_outputs"] = {modality: video_outputs}
    out = inner(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        **kwargs,
    )
    return out.last_hidden_state, getattr(out, f"{modality}_outputs", None)


def pair_forward(
    vlm: VideoLMAdapter,
    model,
    batch: dict[str, torch.Tensor],
    *,
    reference: bool = True,
    chunk_size: int = 1024,
    packed: bool = True,
    causal_mask_only: bool = False,
    attention: str | None = None,
) -> PairOutputs:
    """Policy (and reference) per-token log-probs and KL for a batch from `collate_pairs`.

    `model` is the model being trained (`vlm.model`, possibly wrapped by DDP / accelerate / peft); the
    reference is the same model with its LoRA adapter disabled (see module doc). `packed=True` runs one
    packed row per pair (video encoded once, one language-model pass); `packed=False` is the plain
    baseline with separate prefix+chosen and prefix+rejected sequences and the model's own causal mask
    and positions. `causal_mask_only=True` (packed only) is a debug negative control that lets rejected
    tokens attend to chosen ones. KL is KL(pi_ref || pi) per token. `attention` (packed only; default
    `vlm.packed_attention`, what `--attn-implementation` chose): "mask", the dense additive 4D mask through
    the model's own attention (the reference path), or "shared-prefix", the segment attention of
    `rrpo.models.packing.attention` (no L x L mask).
    """
    from rrpo.losses import fused_token_logps_and_kl

    peft_model, hf = _unwrap(model)
    if hf is not vlm.hf_model:
        raise RRPOError("pair_forward: `model` must be the adapter's own model (vlm.model), possibly wrapped")
    # Only through the adapter's structure hooks, so a ported or remote-code family overrides them once.
    inner, weight = vlm.inner, vlm.lm_head.weight
    needed = "packed_input_ids" if packed else "chosen_input_ids"
    if needed not in batch:
        raise RRPOError(
            f"pair_forward(packed={packed}): the batch has no {needed}; collate it with "
            f"layout={'packed' if packed else 'plain'!r} (or 'both')"
        )
    dev, dtype = weight.device, weight.dtype
    b = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()}
    mm = vlm.model_mm_kwargs({k: b[k] for k in vlm.mm_keys() if k in b})
    for key in [k for k in mm if k.startswith("pixel_values")]:
        mm[key] = mm[key].to(dtype)
    reuse_video = vision_is_frozen(vlm)
    p_len, c_len, r_len = b["prefix_lengths"], b["chosen_lengths"], b["rejected_lengths"]
    c_labels, r_labels = b["chosen_labels"], b["rejected_labels"]
    c_idx = _response_index(p_len, c_len, c_labels.shape[1], None)

    def types(name: str) -> dict[str, torch.Tensor]:
        key = f"{name}_mm_token_type_ids"
        return {"mm_token_type_ids": b[key]} if key in b else {}

    if packed:
        ids = b["packed_input_ids"]
        attention = attention or getattr(vlm, "packed_attention", "mask")
        if attention not in PACKED_ATTENTIONS:
            raise RRPOError(
                f"pair_forward: attention must be one of {', '.join(PACKED_ATTENTIONS)}, got {attention!r}"
            )
        segments = attention.startswith("shared-prefix") and not causal_mask_only
        pair_row, pair_off = pair_placement(b)
        if "pair_rows" in b and not segments:
            raise RRPOError("pair packing (--pack-pairs) needs --attn-implementation shared-prefix")
        if segments:
            mask = segment_lengths_mask(p_len, c_len, r_len, pair_row, ids.shape[0])
            # stays on: checkpointing recomputes the layers after the forward has returned
            use_shared_prefix_attention(vlm.language_model, flex=attention == "shared-prefix-flex")
        else:
            mask = packed_attention_mask(
                p_len, c_len, r_len, ids.shape[1], dtype=dtype, device=dev, causal_only=causal_mask_only
            )
        pos = packed_position_ids(vlm, b)  # on the device, not in the collator
        r_idx = _response_index(p_len, r_len, r_labels.shape[1], c_len)
        base = pair_row * ids.shape[1] + pair_off
        hidden, video = _run(inner, vlm.encoder_modality, ids, mask, pos, {**mm, **types("packed")})
        pol_c, pol_r = _gather_rows(hidden, base, c_idx), _gather_rows(hidden, base, r_idx)
        ref_c = ref_r = None
        if reference and peft_model is not None:
            with torch.no_grad(), _reference_context(peft_model):
                ref_hidden, _ = _run(
                    inner,
                    vlm.encoder_modality,
                    ids,
                    mask,
                    pos,
                    {**mm, **types("packed")},
                    video if reuse_video else None,
                )
            ref_c, ref_r = _gather_rows(ref_hidden, base, c_idx), _gather_rows(ref_hidden, base, r_idx)
    else:
        r_idx = _response_index(p_len, r_len, r_labels.shape[1], None)
        pols, refs = [], []
        for side, idx in (("chosen", c_idx), ("rejected", r_idx)):
            ids, attn = b[f"{side}_input_ids"], b[f"{side}_attention_mask"]
            hidden, video = _run(inner, vlm.encoder_modality, ids, attn, None, {**mm, **types(side)})
            pols.append(_gather(hidden, idx))
            if reference and peft_model is not None:
                with torch.no_grad(), _reference_context(peft_model):
                    ref_hidden, _ = _run(
                        inner,
                        vlm.encoder_modality,
                        ids,
                        attn,
                        None,
                        {**mm, **types(side)},
                        video if reuse_video else None,
                    )
                refs.append(_gather(ref_hidden, idx))
        pol_c, pol_r = pols
        ref_c, ref_r = refs if refs else (None, None)

    if reference and ref_c is None:  # not a peft model: the reference is the policy itself
        ref_c, ref_r = pol_c.detach(), pol_r.detach()
    outs = {}
    for side, pol, ref, labels in (("chosen", pol_c, ref_c, c_labels), ("rejected", pol_r, ref_r, r_labels)):
        ref_h = ref if ref is not None else pol.detach()
        lp, ref_lp, kl = fused_token_logps_and_kl(pol, weight, ref_h, weight, labels, chunk_size=chunk_size)
        outs[side] = (lp.float(), ref_lp.float() if reference else None, kl.float() if reference else None)
    return PairOutputs(
        policy_chosen_logps=outs["chosen"][0],
        policy_rejected_logps=outs["rejected"][0],
        ref_chosen_logps=outs["chosen"][1],
        ref_rejected_logps=outs["rejected"][1],
        chosen_kl=outs["chosen"][2],
        rejected_kl=outs["rejected"][2],
        chosen_span_ids=b["chosen_span_ids"],
        rejected_span_ids=b["rejected_span_ids"],
        chosen_mask=c_labels != IGNORE_INDEX,
        rejected_mask=r_labels != IGNORE_INDEX,
        chosen_labels=c_labels,
        rejected_labels=r_labels,
    )
