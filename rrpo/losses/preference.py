"""Preference losses on per-token log-probabilities: RRPO and the baselines it is compared with.

Every loss takes per-token tensors shaped [B, T] (zero outside the response; see
docs/ARCHITECTURE.md) and returns `(losses [B], chosen_rewards [B], rejected_rewards [B])`; rewards
are detached and only for logging. Sums are taken in float32 or wider (bf16/fp16 inputs upcast).

- `rrpo_loss`: RRPO, Sarkar et al., arXiv 2504.12083 (NeurIPS 2025) -- sub-sequence-level reward on
  the differing spans plus a token-wise KL(pi_ref || pi_theta) regulariser on the chosen response.
- `dpo_loss`: DPO, Rafailov et al., NeurIPS 2023, arXiv 2305.18290.
- `tdpo_loss`: TDPO1/TDPO2, Zeng et al., ICML 2024, arXiv 2404.11999.
- `dpa_loss`: HALVA's data-augmented phrase-level alignment, Sarkar et al., arXiv 2405.18654.
- `ddpo_loss`: RLHF-V's dense DPO, Yu et al., CVPR 2024, arXiv 2312.00849.

`rrpo.losses.registry` names them (`LOSS_SPECS`: what each needs, its defaults) and builds one from a
training config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rrpo.errors import RRPOError

Triple = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

# HALVA's DPA weight on the divergence term: 0.4 for LLaVA-v1.5-7B (src/hallava_7b.sh in
# github.com/pritamqu/HALVA; 0.5 for 13B; the trainer's fallback default is 0.1).
DPA_DEFAULT_ALPHA = 0.4
# RLHF-V (arXiv 2312.00849, Sec. 3.2): weight of the corrected (changed) segments, gamma = 5.
DDPO_DEFAULT_GAMMA = 5.0


class LossInputError(RRPOError, ValueError):
    """Inconsistent loss inputs (shapes, masks, span ids). A ValueError, and printed cleanly by the CLI."""


# ----------------------------------------------------------------------------------------- helpers


def _acc(*tensors: torch.Tensor | None) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        if t is not None and t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _check_2d(name: str, t: torch.Tensor | None, shape: torch.Size | None) -> torch.Size:
    if t is None:
        raise LossInputError(f"{name} is required")
    if t.dim() != 2:
        raise LossInputError(f"{name} must be [B, T], got shape {list(t.shape)}")
    if shape is not None and t.shape != shape:
        raise LossInputError(f"{name} has shape {list(t.shape)}, expected {list(shape)}")
    return t.shape


def _check_same(names_tensors: dict[str, torch.Tensor | None]) -> None:
    """All given tensors are [B, T] with the same shape."""
    shape = None
    for name, t in names_tensors.items():
        shape = _check_2d(name, t, shape)


def _check_pair_inputs(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_mask: torch.Tensor | None,
    rejected_mask: torch.Tensor | None,
    **extra: torch.Tensor | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The checks every pairwise loss makes: the four log-prob tensors (and `extra` per-token tensors)
    are [B, T] of one shape, the masks bool of the matching shapes. Returns the checked masks."""
    _check_same(
        {
            "policy_chosen_logps": policy_chosen_logps,
            "policy_rejected_logps": policy_rejected_logps,
            "ref_chosen_logps": ref_chosen_logps,
            "ref_rejected_logps": ref_rejected_logps,
            **extra,
        }
    )
    return (
        _check_mask("chosen_mask", chosen_mask, policy_chosen_logps),
        _check_mask("rejected_mask", rejected_mask, policy_rejected_logps),
    )


def _check_mask(name: str, mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    _check_2d(name, mask, like.shape)
    if mask.dtype != torch.bool:
        raise LossInputError(f"{name} must be a bool tensor (True at response positions), got {mask.dtype}")
    return mask


def _check_spans(
    name: str, span_ids: torch.Tensor | None, like: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Validate span ids [B, T] (0 outside spans, 1..N inside) against the response mask."""
    _check_2d(name, span_ids, like.shape)
    if span_ids.is_floating_point() or span_ids.dtype == torch.bool:
        raise LossInputError(f"{name} must be an integer tensor, got {span_ids.dtype}")
    if span_ids.numel() and int(span_ids.min()) < 0:
        raise LossInputError(f"{name} must be >= 0 (0 outside spans, i = 1..N inside the i-th span)")
    if mask is not None:
        outside = (span_ids > 0) & ~mask
        if outside.any():
            row, col = (int(x) for x in outside.nonzero()[0])
            raise LossInputError(
                f"{name}: row {row}, position {col} is inside span {int(span_ids[row, col])} but outside "
                f"the response mask"
            )
    return span_ids.long()


def _masked_sum(x: torch.Tensor, mask: torch.Tensor | None, acc: torch.dtype) -> torch.Tensor:
    """Sum over T of x [B, T] (optionally restricted to mask) -> [B]."""
    x = x.to(acc)
    if mask is not None:
        x = torch.where(mask, x, x.new_zeros(()))
    return x.sum(-1)


def _span_sums(x: torch.Tensor, span_ids: torch.Tensor, n_spans: int, acc: torch.dtype) -> torch.Tensor:
    """Per-span sums [B, n_spans] of x [B, T]: column i-1 sums the tokens with span id i."""
    out = x.new_zeros(x.shape[0], n_spans + 1, dtype=acc)
    return out.scatter_add(1, span_ids, x.to(acc))[:, 1:]


# ------------------------------------------------------------------------------------------ losses


def rrpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_span_ids: torch.Tensor | None,
    rejected_span_ids: torch.Tensor | None,
    chosen_kl: torch.Tensor | None,
    *,
    beta: float = 0.1,
    alpha: float = 0.01,
    fine_grained: bool = True,
    token_kl: bool = True,
    chosen_mask: torch.Tensor | None = None,
    rejected_mask: torch.Tensor | None = None,
) -> Triple:
    """Refined Regularized Preference Optimization loss (Sarkar et al., arXiv 2504.12083, Eq. 4).

        u = sum_i beta * log(pi(y+_i)/ref(y+_i)) - sum_i beta * log(pi(y-_i)/ref(y-_i))
        loss = -log sigmoid(u) + alpha * sum_t KL(pi_ref(.|x, y+_<t) || pi_theta(.|x, y+_<t))

    where y+_i / y-_i are the i-th differing sub-sequences (span ids i) of the chosen / rejected
    response; the log-ratio of a span is the sum of its per-token log-ratios. Matches the reference
    implementation (github.com/pritamqu/RRPO, llava/losses.py): phrase margins are summed, the KL is
    summed over the chosen response's tokens.

    Args:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps: [B, T]
            per-token log-probs (zero outside the response).
        chosen_span_ids, rejected_span_ids: [B, T] int, 0 outside the differing spans, i in 1..N inside.
            Required when `fine_grained`.
        chosen_kl: [B, T] per-token KL(ref || policy) on the chosen response. Required when `token_kl`.
        beta: reward scale. alpha: weight of the token-wise KL term.
        fine_grained: False = ablation using whole responses instead of the spans: sums over all
            positions (the inputs are zero outside the response), restricted to the masks when given.
        token_kl: False = ablation without the KL term.
        chosen_mask, rejected_mask: optional [B, T] bool response masks; when given, spans must lie
            inside them and the KL is summed over `chosen_mask` only.

    Returns:
        (losses [B], chosen_rewards [B], rejected_rewards [B]); rewards = beta * summed (span) log-ratios,
        detached.
    """
    chosen_mask, rejected_mask = _check_pair_inputs(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_mask,
        rejected_mask,
    )
    acc = _acc(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_kl)
    chosen_ratio = policy_chosen_logps.to(acc) - ref_chosen_logps.to(acc)
    rejected_ratio = policy_rejected_logps.to(acc) - ref_rejected_logps.to(acc)
    if fine_grained:
        c_ids = _check_spans("chosen_span_ids", chosen_span_ids, policy_chosen_logps, chosen_mask)
        r_ids = _check_spans("rejected_span_ids", rejected_span_ids, policy_rejected_logps, rejected_mask)
        c_in, r_in = c_ids > 0, r_ids > 0
        empty = ~(c_in.any(-1) | r_in.any(-1))
        if empty.any():
            raise LossInputError(
                f"row {int(empty.nonzero()[0])} has no differing-span tokens in either response; "
                f"RRPO needs at least one span (or use fine_grained=False)"
            )
        chosen_values = _masked_sum(chosen_ratio, c_in, acc)
        rejected_values = _masked_sum(rejected_ratio, r_in, acc)
    else:
        chosen_values = _masked_sum(chosen_ratio, chosen_mask, acc)
        rejected_values = _masked_sum(rejected_ratio, rejected_mask, acc)
    losses = -F.logsigmoid(beta * (chosen_values - rejected_values))
    if token_kl:
        _check_2d("chosen_kl", chosen_kl, policy_chosen_logps.shape)
        losses = losses + alpha * _masked_sum(chosen_kl, chosen_mask, acc)
    return losses, beta * chosen_values.detach(), beta * rejected_values.detach()


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    chosen_mask: torch.Tensor | None = None,
    rejected_mask: torch.Tensor | None = None,
) -> Triple:
    """Direct Preference Optimization (Rafailov et al., NeurIPS 2023, arXiv 2305.18290, Eq. 7).

        loss = -log sigmoid(beta * [log pi(y+)/ref(y+) - log pi(y-)/ref(y-)])

    with sequence log-probs summed over T of the [B, T] per-token inputs (restricted to the masks when
    given). Returns (losses [B], chosen_rewards [B], rejected_rewards [B]), rewards = beta * log-ratios.
    """
    chosen_mask, rejected_mask = _check_pair_inputs(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_mask,
        rejected_mask,
    )
    acc = _acc(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    chosen = _masked_sum(policy_chosen_logps.to(acc) - ref_chosen_logps.to(acc), chosen_mask, acc)
    rejected = _masked_sum(policy_rejected_logps.to(acc) - ref_rejected_logps.to(acc), rejected_mask, acc)
    losses = -F.logsigmoid(beta * (chosen - rejected))
    return losses, beta * chosen.detach(), beta * rejected.detach()


def tdpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_kl: torch.Tensor,
    rejected_kl: torch.Tensor,
    *,
    beta: float = 0.1,
    alpha: float = 0.5,
    version: int = 2,
    chosen_mask: torch.Tensor | None = None,
    rejected_mask: torch.Tensor | None = None,
) -> Triple:
    """Token-level DPO (Zeng et al., ICML 2024, arXiv 2404.11999, Eqs. 16-18).

        margin = sum_t (pc - rc) - sum_t (pr - rr);  seqKL(y) = sum_t KL_t(ref || pi)
        TDPO1: u = margin - (seqKL(y-) - seqKL(y+))
        TDPO2: u = margin - alpha * (seqKL(y-) - stopgrad(seqKL(y+)))
        loss = -log sigmoid(beta * u)

    Args: [B, T] per-token log-probs and KLs (zero outside the response; masks optional),
    `version` 1 or 2. Returns (losses [B], chosen_rewards [B], rejected_rewards [B]) with
    rewards = beta * summed log-ratios, detached (as in the TDPO code).
    """
    if version not in (1, 2):
        raise LossInputError(f"tdpo version must be 1 or 2, got {version}")
    chosen_mask, rejected_mask = _check_pair_inputs(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_mask,
        rejected_mask,
        chosen_kl=chosen_kl,
        rejected_kl=rejected_kl,
    )
    acc = _acc(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_kl)
    chosen = _masked_sum(policy_chosen_logps.to(acc) - ref_chosen_logps.to(acc), chosen_mask, acc)
    rejected = _masked_sum(policy_rejected_logps.to(acc) - ref_rejected_logps.to(acc), rejected_mask, acc)
    seq_kl_c = _masked_sum(chosen_kl, chosen_mask, acc)
    seq_kl_r = _masked_sum(rejected_kl, rejected_mask, acc)
    if version == 1:
        u = (chosen - rejected) - (seq_kl_r - seq_kl_c)
    else:
        u = (chosen - rejected) - alpha * (seq_kl_r - seq_kl_c.detach())
    losses = -F.logsigmoid(beta * u)
    return losses, beta * chosen.detach(), beta * rejected.detach()


def dpa_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    *,
    chosen_span_ids: torch.Tensor,
    rejected_span_ids: torch.Tensor,
    chosen_kl: torch.Tensor | None,
    alpha: float = DPA_DEFAULT_ALPHA,
    chosen_mask: torch.Tensor | None = None,
    rejected_mask: torch.Tensor | None = None,
) -> Triple:
    """Data-augmented phrase-level alignment, HALVA (Sarkar et al., arXiv 2405.18654, Eqs. 2-4).

    For each pair of differing phrases i (span id i in both responses), with lp+_i / lp-_i the summed
    policy log-probs of the chosen / rejected phrase:

        loss = sum_i -log( exp(lp+_i) / (exp(lp+_i) + exp(lp-_i)) )          (= softplus(lp-_i - lp+_i))
               + alpha * sum_t KL(pi_ref(.|x, y+_<t) || pi_theta(.|x, y+_<t))

    Reference-free: `ref_*_logps` are accepted for a uniform call signature and ignored. Choices,
    checked against github.com/pritamqu/HALVA (llava/train/halva_trainer.py): the phrase term per row
    is summed over phrases (HALVA's code averages it over all phrase slots of the batch, which only
    rescales the term); the divergence is taken on the chosen response (HALVA computes it on a
    separate reference response of the same sample, summed over its tokens); alpha defaults to 0.4,
    HALVA's value for LLaVA-v1.5-7B (0.5 for 13B). Every span id must occur in both responses of a row.

    Args: [B, T] per-token policy log-probs, span ids, chosen KL, optional bool masks.
    Returns: (losses [B], chosen_rewards [B], rejected_rewards [B]); rewards are the summed phrase
    log-probs of the policy (detached).
    """
    _check_same({"policy_chosen_logps": policy_chosen_logps, "policy_rejected_logps": policy_rejected_logps})
    chosen_mask = _check_mask("chosen_mask", chosen_mask, policy_chosen_logps)
    rejected_mask = _check_mask("rejected_mask", rejected_mask, policy_rejected_logps)
    c_ids = _check_spans("chosen_span_ids", chosen_span_ids, policy_chosen_logps, chosen_mask)
    r_ids = _check_spans("rejected_span_ids", rejected_span_ids, policy_rejected_logps, rejected_mask)
    n = int(max(int(c_ids.max()) if c_ids.numel() else 0, int(r_ids.max()) if r_ids.numel() else 0))
    if n == 0:
        raise LossInputError("dpa needs differing phrases: chosen_span_ids and rejected_span_ids are all 0")
    acc = _acc(policy_chosen_logps, policy_rejected_logps, chosen_kl)
    ones = torch.ones_like(c_ids, dtype=acc)
    c_present = _span_sums(ones, c_ids, n, acc) > 0
    r_present = _span_sums(ones, r_ids, n, acc) > 0
    mismatch = c_present != r_present
    if mismatch.any():
        row, col = (int(x) for x in mismatch.nonzero()[0])
        where = "chosen" if c_present[row, col] else "rejected"
        raise LossInputError(
            f"row {row}: span {col + 1} occurs only in the {where} response; dpa pairs phrase i of the "
            f"chosen response with phrase i of the rejected one"
        )
    if not c_present.any(-1).all():
        raise LossInputError(f"row {int((~c_present.any(-1)).nonzero()[0])} has no differing phrases")
    lp_c = _span_sums(policy_chosen_logps, c_ids, n, acc)
    lp_r = _span_sums(policy_rejected_logps, r_ids, n, acc)
    phrase = torch.where(c_present, F.softplus(lp_r - lp_c), lp_c.new_zeros(()))
    losses = phrase.sum(-1)
    if alpha:
        _check_2d("chosen_kl", chosen_kl, policy_chosen_logps.shape)
        losses = losses + alpha * _masked_sum(chosen_kl, chosen_mask, acc)
    return losses, lp_c.sum(-1).detach(), lp_r.sum(-1).detach()


def _dense_score(
    ratio: torch.Tensor, span_ids: torch.Tensor, mask: torch.Tensor, gamma: float, acc: torch.dtype
) -> torch.Tensor:
    """RLHF-V weighted score: (sum_unchanged x + gamma * sum_changed x) / (n_unchanged + gamma * n_changed)."""
    weight = torch.where(span_ids > 0, gamma, 1.0).to(acc) * mask.to(acc)
    denom = weight.sum(-1)
    if (denom == 0).any():
        raise LossInputError(f"row {int((denom == 0).nonzero()[0])} has an empty response mask")
    return (weight * torch.where(mask, ratio, ratio.new_zeros(()))).sum(-1) / denom


def ddpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    chosen_span_ids: torch.Tensor,
    rejected_span_ids: torch.Tensor,
    chosen_mask: torch.Tensor,
    rejected_mask: torch.Tensor,
    beta: float = 0.1,
    gamma: float = DDPO_DEFAULT_GAMMA,
) -> Triple:
    """Dense DPO of RLHF-V (Yu et al., CVPR 2024, arXiv 2312.00849, Sec. 3.2, Eq. 2).

    A response's score replaces its log-prob in DPO:
        score(y) = (sum_{unchanged} log p + gamma * sum_{changed} log p) / (n_unchanged + gamma * n_changed)
    where "changed" are span tokens (span id > 0) and "unchanged" the other response tokens; gamma = 5
    in the paper (RLAIF-V's code notes the same). Policy and reference scores share the weights, so the
    log-ratio is the weighted mean of per-token log-ratios.
        loss = -log sigmoid(beta * [(score_pi(y+) - score_ref(y+)) - (score_pi(y-) - score_ref(y-))])

    Args: [B, T] per-token log-probs, span ids and bool response masks (required: they define
    n_unchanged). Returns (losses [B], chosen_rewards [B], rejected_rewards [B]),
    rewards = beta * score log-ratios, detached.
    """
    if chosen_mask is None or rejected_mask is None:
        raise LossInputError("ddpo needs chosen_mask and rejected_mask (bool [B, T] response positions)")
    chosen_mask, rejected_mask = _check_pair_inputs(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_mask,
        rejected_mask,
    )
    c_ids = _check_spans("chosen_span_ids", chosen_span_ids, policy_chosen_logps, chosen_mask)
    r_ids = _check_spans("rejected_span_ids", rejected_span_ids, policy_rejected_logps, rejected_mask)
    acc = _acc(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    chosen = _dense_score(
        policy_chosen_logps.to(acc) - ref_chosen_logps.to(acc), c_ids, chosen_mask, gamma, acc
    )
    rejected = _dense_score(
        policy_rejected_logps.to(acc) - ref_rejected_logps.to(acc), r_ids, rejected_mask, gamma, acc
    )
    losses = -F.logsigmoid(beta * (chosen - rejected))
    return losses, beta * chosen.detach(), beta * rejected.detach()
