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


def pack_rows(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive pairs grouped into rows of at most `budget` tokens (next fit: the pairs keep their order,
    so the rows' video tokens meet the video tensors in the order they were concatenated); a pair longer
    than the budget has a row of its own."""
    rows: list[list[int]] = []
    used = 0
    for i, n in enumerate(lengths):
        if rows and used + n <= budget:
            rows[-1].append(i)
            used += n
        else:
            rows.append([i])
            used = n
    return rows


def collate_pairs(
    vlm: VideoLMAdapter,
    pairs: Sequence[EncodedPair],
    layout: str = "both",
    *,
    pack_tokens: int | None = None,
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

    `pack_tokens` (packed layout only): padding-free rows. Several pairs share a row of at most that many
    tokens (`pack_rows`), each with its own prefix / chosen / rejected segments and positions restarting at
    its own prefix; `packed_input_ids` is then [R, Lpk] with R <= B rows, and `pair_rows` / `pair_offsets`
    [B] say where each pair sits. It needs the shared-prefix attention (pair_forward's segment mask).
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
    if pack_tokens is not None:
        if layout != "packed":
            raise RRPOError("collate_pairs: pack_tokens needs layout='packed'")
        if getattr(vlm, "ported", False):
            raise RRPOError(f"--pack-pairs: the {vlm.family} port takes one pair per row")
        if pack_tokens < 1:
            raise RRPOError(f"--pack-pairs must be >= 1 token, got {pack_tokens}")
    sizes = [p.numel() + c.numel() + r.numel() for p, c, r in zip(prefixes, chosen, rejected)]
    groups = pack_rows(sizes, pack_tokens) if pack_tokens is not None else [[i] for i in range(len(pairs))]
    if pack_tokens is not None:
        batch["pair_rows"] = torch.tensor([r for r, g in enumerate(groups) for _ in g])
        batch["pair_offsets"] = torch.tensor(
            [sum(sizes[j] for j in g[:k]) for g in groups for k in range(len(g))]
        )
    if packed:
        batch["packed_input_ids"] = _pad_rows(
            [torch.cat([torch.cat([prefixes[i], chosen[i], rejected[i]]) for i in g]) for g in groups], pad
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
            rows = [
                torch.cat(
                    [
                        torch.cat(
                            [types[i], z(chosen[i].numel() + rejected[i].numel(), dtype=types[i].dtype)]
                        )
                        for i in g
                    ]
                )
                for g in groups
            ]
            batch["packed_mm_token_type_ids"] = _pad_rows(rows, 0)
        for side, resp in (("chosen", chosen), ("rejected", rejected)) if plain else ():
            batch[f"{side}_mm_token_type_ids"] = _pad_rows(
                [torch.cat([t, z(r.numel(), dtype=t.dtype)]) for t, r in zip(types, resp)], 0
            )
    batch.update(vlm.collate_mm([p.mm for p in pairs]))
    return batch


def pair_placement(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(row [B], start column [B]) of each pair in the packed rows: its own row at column 0 unless the batch
    was collated with `pack_tokens`."""
    ids = batch["packed_input_ids"]
    n = batch["prefix_lengths"].numel()
    if "pair_rows" in batch:
        return batch["pair_rows"].to(ids.device), batch["pair_offsets"].to(ids.device)
    return torch.arange(n, device=ids.device), torch.zeros(n, dtype=torch.long, device=ids.device)


def packed_position_ids(vlm: VideoLMAdapter, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Position ids of the packed rows of a `collate_pairs` batch, on the batch's device: [R, L], or
    [3, R, L] for mrope families (padding gets 0).

    One `vlm.rope_positions` call over every pair's own prefix plus its first response token (a text token,
    so its position is where text after the video continues), as a batch of one row per pair; both
    responses count up from there; each pair's positions go where the pair sits in its row (restarting
    at every pair when several share a row).
    """
    ids = batch["packed_input_ids"]
    dev, (rows, length) = ids.device, ids.shape
    p_len, c_len, r_len = (batch[k].to(dev) for k in ("prefix_lengths", "chosen_lengths", "rejected_lengths"))
    pair_row, pair_off = pair_placement(batch)
    width = int(p_len.max()) + 1  # every response has at least its end-of-turn token
    head_col = (pair_off.unsqueeze(1) + torch.arange(width, device=dev)).clamp(max=length - 1)  # [B, width]
    head_ids = ids[pair_row.unsqueeze(1), head_col]
    head_mm = {k: batch[k] for k in vlm.mm_keys() if k in batch}
    if "packed_mm_token_type_ids" in batch:
        head_mm["mm_token_type_ids"] = batch["packed_mm_token_type_ids"].to(dev)[
            pair_row.unsqueeze(1), head_col
        ]
    head_mask = (torch.arange(width, device=dev).unsqueeze(0) <= p_len.unsqueeze(1)).long()
    head_ids = head_ids * head_mask  # columns past a pair's first response token belong to something else
    if "mm_token_type_ids" in head_mm:
        head_mm["mm_token_type_ids"] = head_mm["mm_token_type_ids"] * head_mask
    head = vlm.rope_positions(head_ids, head_mask, head_mm)  # [A, B, width]
    start = head.gather(-1, p_len.view(1, -1, 1).expand(head.shape[0], -1, 1))  # [A, B, 1]
    span = int((p_len + c_len + r_len).max())
    rel = torch.arange(span, device=dev).unsqueeze(0) - p_len.unsqueeze(1)  # [B, span]: column - prefix
    in_chosen = (rel >= 0) & (rel < c_len.unsqueeze(1))
    in_rejected = (rel >= c_len.unsqueeze(1)) & (rel < (c_len + r_len).unsqueeze(1))
    response = start + torch.where(in_chosen, rel, rel - c_len.unsqueeze(1))
    prefix = torch.nn.functional.pad(head, (0, max(span - width, 0)))[..., :span]
    per_pair = torch.where(rel < 0, prefix, torch.where(in_chosen | in_rejected, response, 0))  # [A, B, span]
    inside = rel < (c_len + r_len).unsqueeze(1)  # [B, span]: the pair's own columns
    flat = (pair_row * length + pair_off).unsqueeze(1) + torch.arange(span, device=dev)
    out = torch.zeros(head.shape[0], rows * length, dtype=per_pair.dtype, device=dev)
    out[:, flat[inside]] = per_pair[:, inside]
    out = out.view(head.shape[0], rows, length)
    return out if vlm.mrope else out[0]
