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

from rrpo.models.packing.collate import IGNORE_INDEX, LAYOUTS, collate_pairs, packed_position_ids
from rrpo.models.packing.encode import encode_pair, encode_prefix, encode_response
from rrpo.models.packing.forward import PairOutputs, packed_attention_mask, pair_forward, vision_is_frozen

__all__ = [
    "IGNORE_INDEX",
    "LAYOUTS",
    "PairOutputs",
    "collate_pairs",
    "encode_pair",
    "encode_prefix",
    "encode_response",
    "packed_attention_mask",
    "packed_position_ids",
    "pair_forward",
    "vision_is_frozen",
]
