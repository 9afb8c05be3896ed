"""Preference pairs through a video LLM: encode, collate, and the one-pass shared-prefix packed forward.

A pair shares its prefix (chat template + video + question + generation prompt), which dominates the
length (hundreds to thousands of video tokens against tens of response tokens). The packed forward
encodes the video once and runs the language model over one row per pair,

    [ prefix (P) | chosen (C) | rejected (R) ]

with an additive float 4D attention mask (0 allowed, finfo.min blocked): causal everywhere, except that
rejected tokens cannot see chosen ones, and padding is never attended to. Positions restart the rejected
part at the end of the prefix (Qwen: 3-axis mrope positions from the model's own rope index for the
prefix, then start + arange on every axis). Each response token then sees exactly what it would see in
its own sequence prefix + response, so log-probs equal those of two separate passes (checked in
tests/test_packing.py to < 1e-5 in float32) at roughly half the language-model cost.

Per-token outputs follow docs/ARCHITECTURE.md: [B, T] float32, zero outside the response, labels -100
there, `x[:, t]` belongs to `labels[:, t]`. Here T indexes *response* tokens: column j of the chosen
tensors is the j-th chosen token, and likewise for rejected; rows are right-padded, and chosen and
rejected share one width T (the longest response of either side in the batch). Log-probs and KL come from `rrpo.losses.fused_token_logps_and_kl`, computed only
at those positions from the last hidden states (never a [B, L, V] logit tensor).

The reference policy is the same model with its LoRA adapter disabled (`model.disable_adapter()`,
under no_grad). When the model is not a peft model, the reference equals the policy (ref log-probs are
the detached policy log-probs and the KL is 0); use that only for debugging or evaluation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from rrpo.data.spans import token_span_ids
from rrpo.errors import RRPOError
from rrpo.models.base import (
    EncodedPair,
    SkipPair,
    VideoLMAdapter,
    as_clip,
    is_peft_model,
    unwrap_peft,
)
from rrpo.video.io import Clip

IGNORE_INDEX = -100


# ------------------------------------------------------------------------------------------------------
# encode
# ------------------------------------------------------------------------------------------------------
def encode_prefix(
    vlm: VideoLMAdapter, clip: Clip | np.ndarray, prompt: str
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Prefix token ids [P] and the video tensors of one (clip, prompt) through the family processor.

    `clip`: a `rrpo.video.Clip` (frames with their real timing) or bare frames (see `as_clip`)."""
    inputs = vlm.video_inputs([vlm.prompt_text(prompt)], [as_clip(clip)])
    mm: dict[str, torch.Tensor] = {}
    for key in vlm.mm_keys():
        if key in inputs and inputs[key] is not None:
            mm[key] = torch.as_tensor(inputs[key])
    if "mm_token_type_ids" in inputs:
        mm["mm_token_type_ids"] = torch.as_tensor(inputs["mm_token_type_ids"])[0]
    return torch.as_tensor(inputs["input_ids"])[0], mm


def _check_spans(spans: Sequence[tuple[int, int]], text: str, field: str) -> list[tuple[int, int]]:
    out = []
    for k, span in enumerate(spans):
        try:
            a, b = int(span[0]), int(span[1])
        except (TypeError, ValueError, IndexError) as err:
            raise RRPOError(f"{field}[{k}]: a span must be (start, end), got {span!r}") from err
        if not 0 <= a < b <= len(text):
            raise RRPOError(f"{field}[{k}] = ({a}, {b}) is not inside the response of {len(text)} characters")
        out.append((a, b))
    return out


def encode_response(
    vlm: VideoLMAdapter, text: str, spans: Sequence[tuple[int, int]], *, field: str = "response"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [N] of `text` + the template's end-of-turn, and their span ids [N] (0 outside spans).

    The response is tokenised on its own (with offsets) rather than inside the templated conversation:
    a processor's offsets refer to the text after the video placeholder is expanded.
    """
    spans = _check_spans(spans, text, f"{field}_spans")
    # The spans lie in `text`, so they mark the same characters of `text + turn_end`.
    input_ids, token_spans = token_span_ids(vlm.tokenizer, text + vlm.turn_end, spans)
    ids = torch.tensor(input_ids, dtype=torch.long)
    span_ids = torch.tensor(token_spans, dtype=torch.long)
    if spans and not bool((span_ids > 0).any()):
        raise RRPOError(f"{field}: no token overlaps the spans {spans}")
    return ids, span_ids


def encode_pair(
    vlm: VideoLMAdapter,
    frames: Clip | np.ndarray,
    prompt: str,
    chosen: str,
    rejected: str,
    chosen_spans: Sequence[tuple[int, int]],
    rejected_spans: Sequence[tuple[int, int]],
    *,
    max_length: int | None = None,
) -> EncodedPair:
    """Tokenise one preference pair (`frames`: a `Clip`, or bare uint8 [T, H, W, 3] frames).

    `max_length` bounds each sequence prefix + response (the length either would have on its own). The
    prefix is never truncated; responses lose tokens at their end (`truncated=True`). Raises `SkipPair`
    when the prefix alone reaches `max_length`, or a response that had span tokens would keep none.
    The clip's timing feeds Qwen2.5-VL's temporal positions and Qwen3-VL's prompt timestamps.
    """
    prefix_ids, mm = encode_prefix(vlm, frames, prompt)
    c_ids, c_spans = encode_response(vlm, chosen, chosen_spans, field="chosen")
    r_ids, r_spans = encode_response(vlm, rejected, rejected_spans, field="rejected")
    truncated = False
    if max_length is not None:
        p = prefix_ids.numel()
        room = max_length - p
        if room <= 0:
            raise SkipPair(f"the prompt and video take {p} tokens, max_length is {max_length}")
        cut = []
        for name, ids, sp in (("chosen", c_ids, c_spans), ("rejected", r_ids, r_spans)):
            if ids.numel() > room:
                truncated = True
                if bool((sp > 0).any()) and not bool((sp[:room] > 0).any()):
                    raise SkipPair(
                        f"{name} response would keep {room} of {ids.numel()} tokens (max_length {max_length}, "
                        f"prompt+video {p}) and lose every differing-span token"
                    )
                ids, sp = ids[:room], sp[:room]
            cut.append((ids, sp))
        (c_ids, c_spans), (r_ids, r_spans) = cut
    return EncodedPair(prefix_ids, c_ids, r_ids, c_spans, r_spans, mm, truncated)


# ------------------------------------------------------------------------------------------------------
# collate
# ------------------------------------------------------------------------------------------------------
def _pad_rows(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=value)


def _pad_to(rows: list[torch.Tensor], width: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
    return out


LAYOUTS = ("packed", "plain", "both")


def collate_pairs(
    vlm: VideoLMAdapter, pairs: Sequence[EncodedPair], layout: str = "both"
) -> dict[str, torch.Tensor]:
    """Batch encoded pairs for `pair_forward(packed=True)` (`layout="packed"`, what training uses), for
    the plain baseline (`"plain"`), or both (the default, for comparisons). All entries are tensors
    (right-padded rows); keys:

    packed_input_ids [B, Lpk]: the packed rows (their positions are computed in `pair_forward`, on the
    device: `packed_position_ids`);
    chosen_input_ids / rejected_input_ids [B, L], chosen_attention_mask / rejected_attention_mask:
    the plain rows prefix+response; prefix_lengths / chosen_lengths / rejected_lengths [B];
    chosen_labels / rejected_labels [B, T] (-100 padding; one width T = longest response of either side),
    chosen_span_ids / rejected_span_ids [B, T];
    *_mm_token_type_ids (Qwen) for each layout; the video tensors under the processor's names
    (concatenated along dim 0); truncated [B] bool.
    """
    if not pairs:
        raise RRPOError("collate_pairs: empty batch")
    if layout not in LAYOUTS:
        raise RRPOError(f"collate_pairs: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    packed, plain = layout in ("packed", "both"), layout in ("plain", "both")
    tok = vlm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    batch: dict[str, torch.Tensor] = {}
    prefixes = [p.prefix_ids for p in pairs]
    chosen = [p.chosen_ids for p in pairs]
    rejected = [p.rejected_ids for p in pairs]
    batch["prefix_lengths"] = torch.tensor([x.numel() for x in prefixes])
    batch["chosen_lengths"] = torch.tensor([x.numel() for x in chosen])
    batch["rejected_lengths"] = torch.tensor([x.numel() for x in rejected])
    if packed:
        batch["packed_input_ids"] = _pad_rows(
            [torch.cat([p, c, r]) for p, c, r in zip(prefixes, chosen, rejected)], pad
        )
    for side, resp in (("chosen", chosen), ("rejected", rejected)) if plain else ():
        rows = [torch.cat([p, r]) for p, r in zip(prefixes, resp)]
        batch[f"{side}_input_ids"] = _pad_rows(rows, pad)
        batch[f"{side}_attention_mask"] = _pad_rows([torch.ones_like(r) for r in rows], 0)
    # Chosen and rejected per-token tensors share one width T (the losses take them side by side).
    width = max(max(x.numel() for x in chosen), max(x.numel() for x in rejected))
    for side, resp in (("chosen", chosen), ("rejected", rejected)):
        batch[f"{side}_labels"] = _pad_to([*resp], width, IGNORE_INDEX)
        batch[f"{side}_span_ids"] = _pad_to([getattr(p, f"{side}_span_ids") for p in pairs], width, 0)
    batch["truncated"] = torch.tensor([p.truncated for p in pairs])
    if "mm_token_type_ids" in pairs[0].mm:
        types = [p.mm["mm_token_type_ids"] for p in pairs]
        z = torch.zeros
        if packed:
            batch["packed_mm_token_type_ids"] = _pad_rows(
                [
                    torch.cat([t, z(c.numel() + r.numel(), dtype=t.dtype)])
                    for t, c, r in zip(types, chosen, rejected)
                ],
                0,
            )
        for side, resp in (("chosen", chosen), ("rejected", rejected)) if plain else ():
            batch[f"{side}_mm_token_type_ids"] = _pad_rows(
                [torch.cat([t, z(r.numel(), dtype=t.dtype)]) for t, r in zip(types, resp)], 0
            )
    batch.update(vlm.collate_mm([p.mm for p in pairs]))
    return batch


def packed_position_ids(vlm: VideoLMAdapter, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Position ids of the packed rows of a `collate_pairs` batch, on the batch's device: [B, L], or
    [3, B, L] for mrope families (padding gets 0).

    One `vlm.rope_positions` call over the prefixes plus the first response token (a text token, so
    its position is where text after the video continues); both responses count up from there.
    """
    ids = batch["packed_input_ids"]
    p_len, c_len, r_len = (
        batch[k].to(ids.device) for k in ("prefix_lengths", "chosen_lengths", "rejected_lengths")
    )
    col = torch.arange(ids.shape[1], device=ids.device)
    width = int(p_len.max()) + 1  # every response has at least its end-of-turn token
    head_mm = {k: batch[k] for k in vlm.mm_keys() if k in batch}
    if "packed_mm_token_type_ids" in batch:
        head_mm["mm_token_type_ids"] = batch["packed_mm_token_type_ids"][:, :width]
    head_mask = (col[:width].unsqueeze(0) <= p_len.unsqueeze(1)).long()
    head = vlm.rope_positions(ids[:, :width], head_mask, head_mm)  # [A, B, width]
    start = head.gather(-1, p_len.view(1, -1, 1).expand(head.shape[0], -1, 1))  # [A, B, 1]
    rel = col.unsqueeze(0) - p_len.unsqueeze(1)  # [B, L]: column minus prefix length
    in_chosen = (rel >= 0) & (rel < c_len.unsqueeze(1))
    in_rejected = (rel >= c_len.unsqueeze(1)) & (rel < (c_len + r_len).unsqueeze(1))
    response = start + torch.where(in_chosen, rel, rel - c_len.unsqueeze(1))
    prefix = torch.nn.functional.pad(head, (0, ids.shape[1] - width))
    out = torch.where(rel < 0, prefix, torch.where(in_chosen | in_rejected, response, 0))
    return out if vlm.mrope else out[0]


# ------------------------------------------------------------------------------------------------------
# forward
# ------------------------------------------------------------------------------------------------------
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


def _unwrap(model):
    """(peft model or None, transformers model) below DDP / accelerate / peft wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return (model if is_peft_model(model) else None), unwrap_peft(model)


def _reference_context(peft_model):
    return peft_model.disable_adapter() if peft_model is not None else contextlib.nullcontext()


def _vision_is_frozen(vlm: VideoLMAdapter) -> bool:
    """True when nothing outside the language model (the adapter's `language_model` and `lm_head`
    hooks) trains, so the reference pass can reuse the policy's video features."""
    language = {id(p) for m in (vlm.language_model, vlm.lm_head) for p in m.parameters()}
    return not any(p.requires_grad for p in vlm.hf_model.parameters() if id(p) not in language)


def _run(inner, input_ids, attention_mask, position_ids, mm_kwargs, video_outputs=None):
    """Multimodal base model forward; returns (last hidden state [B, L, H], video encoder outputs)."""
    kwargs = dict(mm_kwargs)
    if video_outputs is not None:
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("pixel_values")}
        kwargs["mm_encoder_outputs"] = {"video": video_outputs}
    out = inner(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        **kwargs,
    )
    return out.last_hidden_state, getattr(out, "video_outputs", None)


def pair_forward(
    vlm: VideoLMAdapter,
    model,
    batch: dict[str, torch.Tensor],
    *,
    reference: bool = True,
    chunk_size: int = 1024,
    packed: bool = True,
    causal_mask_only: bool = False,
) -> PairOutputs:
    """Policy (and reference) per-token log-probs and KL for a batch from `collate_pairs`.

    `model` is the model being trained (`vlm.model`, possibly wrapped by DDP / accelerate / peft); the
    reference is the same model with its LoRA adapter disabled (see module doc). `packed=True` runs one
    packed row per pair (video encoded once, one language-model pass); `packed=False` is the plain
    baseline with separate prefix+chosen and prefix+rejected sequences and the model's own causal mask
    and positions. `causal_mask_only=True` (packed only) is a debug negative control that lets rejected
    tokens attend to chosen ones. KL is KL(pi_ref || pi) per token.
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
    reuse_video = _vision_is_frozen(vlm)
    p_len, c_len, r_len = b["prefix_lengths"], b["chosen_lengths"], b["rejected_lengths"]
    c_labels, r_labels = b["chosen_labels"], b["rejected_labels"]
    c_idx = _response_index(p_len, c_len, c_labels.shape[1], None)

    def types(name: str) -> dict[str, torch.Tensor]:
        key = f"{name}_mm_token_type_ids"
        return {"mm_token_type_ids": b[key]} if key in b else {}

    if packed:
        ids = b["packed_input_ids"]
        mask = packed_attention_mask(
            p_len, c_len, r_len, ids.shape[1], dtype=dtype, device=dev, causal_only=causal_mask_only
        )
        pos = packed_position_ids(vlm, b)  # on the device, not in the collator
        r_idx = _response_index(p_len, r_len, r_labels.shape[1], c_len)
        hidden, video = _run(inner, ids, mask, pos, {**mm, **types("packed")})
        pol_c, pol_r = _gather(hidden, c_idx), _gather(hidden, r_idx)
        ref_c = ref_r = None
        if reference and peft_model is not None:
            with torch.no_grad(), _reference_context(peft_model):
                ref_hidden, _ = _run(
                    inner, ids, mask, pos, {**mm, **types("packed")}, video if reuse_video else None
                )
            ref_c, ref_r = _gather(ref_hidden, c_idx), _gather(ref_hidden, r_idx)
    else:
        r_idx = _response_index(p_len, r_len, r_labels.shape[1], None)
        pols, refs = [], []
        for side, idx in (("chosen", c_idx), ("rejected", r_idx)):
            ids, attn = b[f"{side}_input_ids"], b[f"{side}_attention_mask"]
            hidden, video = _run(inner, ids, attn, None, {**mm, **types(side)})
            pols.append(_gather(hidden, idx))
            if reference and peft_model is not None:
                with torch.no_grad(), _reference_context(peft_model):
                    ref_hidden, _ = _run(
                        inner, ids, attn, None, {**mm, **types(side)}, video if reuse_video else None
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
