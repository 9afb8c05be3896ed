"""Batch encoded pairs into packed rows [prefix | chosen | rejected] (and the plain two-sequence layout),
and the packed rows' positions (`rrpo.models.packing` has the whole picture)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rrpo.errors import RRPOError
from rrpo.models.base import EncodedPair, VideoLMAdapter

IGNORE_INDEX = -100


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
