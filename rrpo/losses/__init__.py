"""Preference losses (RRPO, DPO, TDPO, DPA, DDPO) and the per-token log-prob / KL paths they consume."""

from rrpo.losses.logps import fused_token_logps_and_kl, token_logps_and_kl

__all__ = ["fused_token_logps_and_kl", "token_logps_and_kl"]
