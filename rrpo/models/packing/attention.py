"""Shared-prefix attention for the packed pair row, without an L x L mask.

A packed row is [prefix (P) | chosen (C) | rejected (R) | padding]. Its attention is two causal
attentions that share the prefix's keys and values:

    prefix + chosen queries:  causal over the first P + C keys          (one plain causal SDPA call)
    rejected queries:         the P prefix keys, then causal over its own R keys
                              (an SDPA call with the prefix's K/V followed by the rejected K/V, and an
                              R x (P + R) mask aligned bottom-right: never an L x L one)

so the chosen tokens are never seen by the rejected ones, and each response token sees exactly what it
would see in its own sequence prefix + response (equal to the dense-mask path: tests/test_packing.py).

How it is plugged in, through transformers' extension points only: the function is registered with
`transformers.AttentionInterface` (and sdpa's mask builder with `AttentionMaskInterface`) under
`SHARED_PREFIX_ATTENTION`, and `use_shared_prefix_attention` sets the language model's config to it (its
config alone: the vision tower keeps sdpa). The rows' segment lengths travel through the attention-mask
argument as a compact 4D long tensor [B, 1, 1, 3] (`segment_lengths_mask`): transformers hands a 4D mask to
the attention functions as it is, and `cu_seq_lens_*` keyword arguments would also reach the vision tower.
Any other mask (generation, a plain forward, the dense-mask path) goes to transformers' own sdpa function
unchanged, so the switch can stay on: gradient checkpointing recomputes the layers during the backward pass,
after the forward has returned, and must find the same function.

On CUDA the two SDPA calls run on torch's fused kernels (flash for the causal part, memory-efficient for the
masked rejected part). A varlen flash-attn kernel (the prefix K/V duplicated, `cu_seqlens_q != cu_seqlens_k`)
would also batch the rows; it is not written yet.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

SHARED_PREFIX_ATTENTION = "rrpo_shared_prefix"
# The same attention through FlexAttention with a BlockMask (`--attn-implementation shared-prefix-flex`): one
# kernel call per layer for all rows, compiled on CUDA. Its backward does not run on CPU (torch's eager flex
# path), so on CPU it is tested for the forward only.
SHARED_PREFIX_FLEX = "rrpo_shared_prefix_flex"


def segment_lengths_mask(
    prefix_lengths: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    pair_rows: torch.Tensor | None = None,
    num_rows: int | None = None,
) -> torch.Tensor:
    """The pairs' (P, C, R) as the compact "mask" [R, 1, K, 3] (long) the attention function reads: row r's
    K slots hold its pairs in order, laid end to end from column 0 (zeros fill the unused slots). One
    pair per row (`pair_rows` None): [B, 1, 1, 3]."""
    lengths = torch.stack([prefix_lengths, chosen_lengths, rejected_lengths], dim=-1).long()
    if pair_rows is None:
        return lengths.view(-1, 1, 1, 3)
    rows = pair_rows.long()
    num_rows = int(num_rows if num_rows is not None else int(rows.max()) + 1)
    counts = torch.bincount(rows, minlength=num_rows)
    slot = torch.arange(rows.numel(), device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
    out = lengths.new_zeros(num_rows, 1, int(counts.max()), 3)
    out[rows, 0, slot] = lengths
    return out


def is_segment_mask(mask: torch.Tensor | None) -> bool:
    """Whether an attention mask is a `segment_lengths_mask` (long, [R, 1, K, 3])."""
    return (
        mask is not None
        and mask.dtype == torch.long
        and mask.dim() == 4
        and mask.shape[1] == 1
        and mask.shape[-1] == 3
    )


def _expand_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, Hkv, L, D] -> [B, Hkv * groups, L, D] (grouped-query attention: each KV head serves `groups`)."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: query [B, Hq, L, D], key / value [B, Hkv, L, D], `attention_mask`
    from `segment_lengths_mask`. Returns (output [B, L, Hq, D], None); padding positions get zeros. Any
    other mask goes to transformers' sdpa function as it is."""
    if not is_segment_mask(attention_mask):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    groups = query.shape[1] // key.shape[1]
    key, value = _expand_kv(key, groups), _expand_kv(value, groups)
    p_drop = dropout if module.training else 0.0
    out = query.new_zeros(query.shape)
    for row, slots in enumerate(attention_mask[:, 0].tolist()):
        q, k, v = query[row : row + 1], key[row : row + 1], value[row : row + 1]
        start = 0
        for p, c, r in slots:
            if p + c + r == 0:
                continue  # an unused slot
            _attend_pair(out[row : row + 1], q, k, v, start, p, c, r, p_drop, scaling)
            start += p + c + r
    return out.transpose(1, 2).contiguous(), None


def _attend_pair(out, q, k, v, s: int, p: int, c: int, r: int, p_drop: float, scaling) -> None:  # noqa: ANN001
    """One pair laid out from column `s`: prefix + chosen causal, rejected over the prefix and itself."""
    n = s + p + c
    out[:, :, s:n] = F.scaled_dot_product_attention(
        q[:, :, s:n], k[:, :, s:n], v[:, :, s:n], is_causal=True, dropout_p=p_drop, scale=scaling
    )
    if r:
        keys = torch.cat([k[:, :, s : s + p], k[:, :, n : n + r]], dim=2)
        values = torch.cat([v[:, :, s : s + p], v[:, :, n : n + r]], dim=2)
        allowed = torch.ones(r, p + r, dtype=torch.bool, device=q.device)
        allowed[:, p:] = torch.ones(r, r, dtype=torch.bool, device=q.device).tril()
        out[:, :, n : n + r] = F.scaled_dot_product_attention(
            q[:, :, n : n + r], keys, values, attn_mask=allowed, dropout_p=p_drop, scale=scaling
        )


def segment_layout(attention_mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column of each row: the pair it belongs to ([R, L], -1 on padding) and its part (0 prefix,
    1 chosen, 2 rejected), from a `segment_lengths_mask`."""
    rows = attention_mask.shape[0]
    pair = torch.full((rows, length), -1, dtype=torch.long)
    part = torch.zeros((rows, length), dtype=torch.long)
    for row, slots in enumerate(attention_mask[:, 0].tolist()):
        start = 0
        for k, (p, c, r) in enumerate(slots):
            pair[row, start : start + p + c + r] = k
            part[row, start + p : start + p + c] = 1
            part[row, start + p + c : start + p + c + r] = 2
            start += p + c + r
    dev = attention_mask.device
    return pair.to(dev), part.to(dev)


# (segment mask, row length, BlockMask) of the current forward: built once for all its layers.
_LAST_BLOCK_MASK: list[tuple[torch.Tensor, int, Any]] = []


def shared_prefix_block_mask(attention_mask: torch.Tensor, length: int) -> Any:
    """FlexAttention BlockMask of packed rows: same pair, causal, rejected queries never see chosen keys."""
    from torch.nn.attention.flex_attention import create_block_mask

    if _LAST_BLOCK_MASK and _LAST_BLOCK_MASK[0][0] is attention_mask and _LAST_BLOCK_MASK[0][1] == length:
        return _LAST_BLOCK_MASK[0][2]
    pair, part = segment_layout(attention_mask, length)

    def mask_mod(b, h, q, kv):  # noqa: ANN001, ANN202 - FlexAttention's signature
        same = (pair[b, q] == pair[b, kv]) & (pair[b, q] >= 0)
        return same & (kv <= q) & ~((part[b, q] == 2) & (part[b, kv] == 1))

    block = create_block_mask(
        mask_mod, attention_mask.shape[0], None, length, length, device=attention_mask.device
    )
    _LAST_BLOCK_MASK[:] = [(attention_mask, length, block)]
    return block


def shared_prefix_flex_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """`shared_prefix_attention` through FlexAttention (one call for every row); attention dropout, which
    FlexAttention does not do, falls back to the SDPA segments."""
    if not is_segment_mask(attention_mask) or (dropout and module.training):
        return shared_prefix_attention(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    from torch.nn.attention.flex_attention import flex_attention

    block = shared_prefix_block_mask(attention_mask, query.shape[2])
    run = _compiled_flex() if query.is_cuda else flex_attention
    out = run(query, key, value, block_mask=block, scale=scaling, enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


_COMPILED: list[Any] = []


def _compiled_flex() -> Any:
    """flex_attention compiled once (its fused kernel on CUDA)."""
    if not _COMPILED:
        from torch.nn.attention.flex_attention import flex_attention

        _COMPILED.append(torch.compile(flex_attention))
    return _COMPILED[0]


def register() -> None:
    """Register both functions, and sdpa's mask builder for ordinary forwards, with transformers
    (idempotent; done on import of this module)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)
    AttentionInterface.register(SHARED_PREFIX_FLEX, shared_prefix_flex_attention)
    AttentionMaskInterface.register(SHARED_PREFIX_ATTENTION, sdpa_mask)
    AttentionMaskInterface.register(SHARED_PREFIX_FLEX, sdpa_mask)


def use_shared_prefix_attention(language_model: torch.nn.Module, *, flex: bool = False) -> None:
    """Point `language_model`'s attention layers at the shared-prefix function (its config alone: a vision
    tower with a config of its own keeps its attention). Ordinary forwards then run transformers' sdpa."""
    language_model.config._attn_implementation = SHARED_PREFIX_FLEX if flex else SHARED_PREFIX_ATTENTION


register()
