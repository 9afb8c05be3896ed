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
`transformers.AttentionInterface` under `SHARED_PREFIX_ATTENTION`; `pair_forward` switches the language
model's config to it for the packed pass alone (`shared_prefix_attention_on`), so the vision tower keeps its
own attention (sdpa) and generation is untouched. The rows' segment lengths travel through the attention-mask
argument as a compact 4D long tensor [B, 1, 1, 3] (`segment_lengths_mask`): transformers hands a 4D mask to
the attention functions as it is, and `cu_seq_lens_*` keyword arguments would also reach the vision tower.

On CUDA the two SDPA calls run on torch's fused kernels (flash for the causal part, memory-efficient for the
masked rejected part). A varlen flash-attn kernel (the prefix K/V duplicated, `cu_seqlens_q != cu_seqlens_k`)
would also batch the rows; it is not written yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from rrpo.errors import RRPOError

SHARED_PREFIX_ATTENTION = "rrpo_shared_prefix"


def segment_lengths_mask(
    prefix_lengths: torch.Tensor, chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor
) -> torch.Tensor:
    """The rows' (P, C, R) as the compact "mask" [B, 1, 1, 3] (long) the attention function reads."""
    return torch.stack([prefix_lengths, chosen_lengths, rejected_lengths], dim=-1).long().view(-1, 1, 1, 3)


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
    from `segment_lengths_mask`. Returns (output [B, L, Hq, D], None); padding positions get zeros."""
    if attention_mask is None or attention_mask.dtype != torch.long or attention_mask.shape[-1] != 3:
        raise RRPOError(
            "shared-prefix attention needs the packed rows' segment lengths as its mask (pair_forward sets "
            "them); it cannot run an ordinary forward or generation"
        )
    groups = query.shape[1] // key.shape[1]
    key, value = _expand_kv(key, groups), _expand_kv(value, groups)
    p_drop = dropout if module.training else 0.0
    out = query.new_zeros(query.shape)
    for row, (p, c, r) in enumerate(attention_mask.view(-1, 3).tolist()):
        n = p + c
        q, k, v = query[row : row + 1], key[row : row + 1], value[row : row + 1]
        out[row : row + 1, :, :n] = F.scaled_dot_product_attention(
            q[:, :, :n], k[:, :, :n], v[:, :, :n], is_causal=True, dropout_p=p_drop, scale=scaling
        )
        if r:
            keys = torch.cat([k[:, :, :p], k[:, :, n : n + r]], dim=2)
            values = torch.cat([v[:, :, :p], v[:, :, n : n + r]], dim=2)
            allowed = torch.ones(r, p + r, dtype=torch.bool, device=query.device)
            allowed[:, p:] = torch.ones(r, r, dtype=torch.bool, device=query.device).tril()
            out[row : row + 1, :, n : n + r] = F.scaled_dot_product_attention(
                q[:, :, n : n + r], keys, values, attn_mask=allowed, dropout_p=p_drop, scale=scaling
            )
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Register the function with transformers (idempotent; done on import of this module)."""
    from transformers import AttentionInterface

    AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)


@contextmanager
def shared_prefix_attention_on(language_model: torch.nn.Module) -> Iterator[None]:
    """Run `language_model`'s attention layers with the shared-prefix function for the duration (its
    config alone: a vision tower with a config of its own keeps its attention)."""
    config = language_model.config
    old = config._attn_implementation
    config._attn_implementation = SHARED_PREFIX_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = old


register()
