"""Preference losses (RRPO, DPO, TDPO, DPA, DDPO) and the per-token log-prob / KL paths they consume.

RRPO: Sarkar et al., arXiv 2504.12083. Per-token tensors are [B, T], zero outside the response.
"""

from rrpo.losses.logps import DEFAULT_CHUNK_SIZE, fused_token_logps_and_kl, token_logps_and_kl
from rrpo.losses.preference import (
    LOSSES,
    LossInputError,
    ddpo_loss,
    dpa_loss,
    dpo_loss,
    preference_loss,
    rrpo_loss,
    tdpo_loss,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "LOSSES",
    "LossInputError",
    "ddpo_loss",
    "dpa_loss",
    "dpo_loss",
    "fused_token_logps_and_kl",
    "preference_loss",
    "rrpo_loss",
    "tdpo_loss",
    "token_logps_and_kl",
]
