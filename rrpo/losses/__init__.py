"""Preference losses (RRPO, DPO, TDPO, DPA, DDPO) and the per-token log-prob / KL paths they consume.

RRPO: Sarkar et al., arXiv 2504.12083. Per-token tensors are [B, T], zero outside the response.
`LOSS_SPECS` (registry.py) says what each loss needs; `PreferenceLoss.from_config` builds one.
"""

from rrpo.losses.logps import DEFAULT_CHUNK_SIZE, fused_token_logps_and_kl, token_logps_and_kl
from rrpo.losses.preference import (
    LossInputError,
    ddpo_loss,
    dpa_loss,
    dpo_loss,
    rrpo_loss,
    tdpo_loss,
)
from rrpo.losses.registry import (
    LOSS_SPECS,
    LOSS_TYPES,
    LOSSES,
    LossSpec,
    PreferenceLoss,
    default_alpha,
    loss_spec,
    preference_loss,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "LOSSES",
    "LOSS_SPECS",
    "LOSS_TYPES",
    "LossInputError",
    "LossSpec",
    "PreferenceLoss",
    "ddpo_loss",
    "default_alpha",
    "dpa_loss",
    "dpo_loss",
    "fused_token_logps_and_kl",
    "loss_spec",
    "preference_loss",
    "rrpo_loss",
    "tdpo_loss",
    "token_logps_and_kl",
]
