"""Per-token log-probabilities and token-wise KL(pi_ref || pi_theta) for preference losses.

RRPO (Sarkar et al., "Self-alignment of Large Video Language Models with Refined Regularized
Preference Optimization", arXiv 2504.12083, NeurIPS 2025) needs, for every response token t, the
log-probability of the label under the policy and under the frozen reference, and the divergence
KL(pi_ref(. | x, y_<t) || pi_theta(. | x, y_<t)) over the full vocabulary (the token-wise KL
regulariser, as in TDPO, Zeng et al. 2024, arXiv 2404.11999).

Two implementations with one contract:

- `token_logps_and_kl(policy_logits, ref_logits, labels)`: from materialised [B, T, V] logits.
- `fused_token_logps_and_kl(policy_hidden, policy_weight, ref_hidden, ref_weight, labels)`: from the
  last hidden states and the lm_head weight, computing logits `chunk_size` rows at a time so that
  neither forward nor backward ever holds more than a few `chunk_size x V` blocks (a full [B, T, V]
  float32 logit tensor is 0.6 GB per 1k tokens for a 152k vocabulary, and autograd keeps several).

Conventions (docs/ARCHITECTURE.md): `labels == -100` marks positions outside the response,
`logits[:, t]` scores `labels[:, t]` (the caller has shifted), every output is [B, T] and zero at
masked positions. Softmax math runs in float32 at least (bf16/fp16 are upcast; float64 stays float64
so that gradcheck can run on double inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

# Tuned on the 2-core CPU for V=151936, H=896 (benchmarks/RESULTS.md): 128 rows keep the vocabulary-major
# chunk matmuls efficient (64 rows cost ~25% more time) while 3-4 live V x 128 float32 blocks
# (~78 MB each) stay far below the ~4 GB that materialised [1, 1024, V] logits need.
DEFAULT_CHUNK_SIZE = 128


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half/bf16/float32 inputs, float64 for float64 ones (never lower than float32)."""
    return torch.promote_types(dtype, torch.float32)


def _check_labels(labels: torch.Tensor, shape: torch.Size, vocab: int, what: str) -> torch.Tensor:
    """Validate labels against [B, T] `shape` and vocabulary size; return the response mask."""
    if labels.dim() != 2 or labels.shape != shape:
        raise ValueError(f"labels must be [B, T] = {list(shape)} to match {what}, got {list(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    mask = labels != IGNORE_INDEX
    if mask.any():
        picked = labels[mask]
        lo, hi = int(picked.min()), int(picked.max())
        if lo < 0 or hi >= vocab:
            raise ValueError(
                f"labels outside the vocabulary [0, {vocab}) at response positions "
                f"(min {lo}, max {hi}); use -100 for positions outside the response"
            )
    return mask


def token_logps_and_kl(
    policy_logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the labels under policy and reference, and token-wise KL(ref || policy).

    Args:
        policy_logits: [B, T, V] policy logits; `policy_logits[:, t]` scores `labels[:, t]`.
        ref_logits: [B, T, V] reference logits (no gradient flows to them).
        labels: [B, T] int; -100 outside the response.

    Returns:
        (policy_logps, ref_logps, kl), each [B, T] float32 (float64 for float64 logits), zero where
        `labels == -100`. `kl[b, t] = sum_v p_ref(v) (log p_ref(v) - log p_pol(v))`, the per-position
        KL of RRPO (arXiv 2504.12083, Eq. for the token-wise KL regulariser) and TDPO (arXiv 2404.11999).
        Uses log_softmax throughout (softmax().log() underflows to -inf for large logit gaps).
    """
    if policy_logits.dim() != 3 or policy_logits.shape != ref_logits.shape:
        raise ValueError(
            f"policy_logits and ref_logits must both be [B, T, V], got {list(policy_logits.shape)} "
            f"and {list(ref_logits.shape)}"
        )
    mask = _check_labels(labels, policy_logits.shape[:2], policy_logits.shape[-1], "the logits")
    acc = _acc_dtype(policy_logits.dtype)
    index = labels.masked_fill(~mask, 0).long().unsqueeze(-1)
    policy_lsm = F.log_softmax(policy_logits.to(acc), dim=-1)
    ref_lsm = F.log_softmax(ref_logits.detach().to(acc), dim=-1)
    policy_logps = policy_lsm.gather(-1, index).squeeze(-1)
    ref_logps = ref_lsm.gather(-1, index).squeeze(-1)
    kl = (ref_lsm.exp() * (ref_lsm - policy_lsm)).sum(-1)
    zero = policy_logps.new_zeros(())
    # torch.where (not a product) so that whatever sits at padded positions cannot leak into sums.
    return (
        torch.where(mask, policy_logps, zero),
        torch.where(mask, ref_logps, zero),
        torch.where(mask, kl, zero),
    )


def _chunk_log_softmax_t(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, acc: torch.dtype
) -> torch.Tensor:
    """Vocabulary-major log_softmax of one chunk: [V, c] = log_softmax(weight @ hidden.T + bias, dim=0).

    Vocabulary-major because `W @ h.T` ([V, H] x [H, c]) runs about twice as fast in MKL as
    `h @ W.T` for small c on this CPU (benchmarks/RESULTS.md). The matmul runs in the input dtype, the
    softmax in `acc`; F.log_softmax shifts by the max, so label log-probs keep full precision even for
    logits around 1e4 (z - logsumexp(z) would lose ~1e-3 to the rounding of the normaliser).
    """
    z = weight @ hidden.t() if bias is None else torch.addmm(bias.unsqueeze(1), weight, hidden.t())
    return F.log_softmax(z.to(acc), dim=0)


class _FusedLogpsKL(torch.autograd.Function):
    """Chunked lm_head + log_softmax + label gather + KL(ref || policy), on the selected rows only.

    Inputs are already restricted to response rows: hp/hr [N, H], target [N]. Gradients (upstream
    g_lp for policy_logps and g_kl for kl) w.r.t. the policy logits z of one row are
        d/dz = g_lp * (onehot(target) - p_pol) + g_kl * (p_pol - p_ref).
    Two backward strategies, both holding at most a few V x chunk blocks:
    - only the hidden states need a gradient (frozen lm_head, the LoRA case): since dL/dh = dL/dz @ W
      is linear in (g_lp, g_kl), the forward stores the two [N, H] bases
      A = W[target] - p_pol @ W and K = (p_pol - p_ref) @ W, and backward is g_lp*A + g_kl*K
      (no logit recomputation: 4 chunk matmuls in all instead of 5);
    - the weight or bias needs a gradient: backward recomputes each chunk's logits and forms dL/dz
      explicitly (dL/dW = dL/dz^T @ h needs the per-row upstream gradients).
    """

    @staticmethod
    def forward(ctx, hp, wp, bp, hr, wr, br, target, chunk_size: int):
        acc = _acc_dtype(hp.dtype)
        n, dtype = hp.shape[0], hp.dtype
        logp_pol = hp.new_empty(n, dtype=acc)
        logp_ref = hp.new_empty(n, dtype=acc)
        kl = hp.new_empty(n, dtype=acc)
        need_h = ctx.needs_input_grad[0]
        recompute = ctx.needs_input_grad[1] or (bp is not None and ctx.needs_input_grad[2])
        use_basis = need_h and not recompute
        basis_lp = hp.new_empty(n, hp.shape[1], dtype=acc) if use_basis else None
        basis_kl = hp.new_empty(n, hp.shape[1], dtype=acc) if use_basis else None
        cols = torch.arange(min(chunk_size, n), device=hp.device)
        with torch.no_grad():
            for s in range(0, n, chunk_size):
                e = min(s + chunk_size, n)
                t, c = target[s:e], cols[: e - s]
                lsp = _chunk_log_softmax_t(hp[s:e], wp, bp, acc)  # [V, c]
                lsr = _chunk_log_softmax_t(hr[s:e], wr, br, acc)
                logp_pol[s:e] = lsp[t, c]
                logp_ref[s:e] = lsr[t, c]
                pr = lsr.exp()
                kl[s:e] = lsr.sub_(lsp).mul_(pr).sum(0)  # sum_v p_ref (log p_ref - log p_pol)
                del lsr
                if use_basis:
                    lsp.exp_()  # the block now holds p_pol
                    basis_lp[s:e] = wp[t].to(acc) - (wp.t() @ lsp.to(dtype)).t().to(acc)
                    torch.sub(lsp, pr, out=pr)  # p_pol - p_ref, in the p_ref block
                    basis_kl[s:e] = (wp.t() @ pr.to(dtype)).t().to(acc)
                # Drop every name bound to a block before the next chunk allocates its own.
                del lsp, pr
        ctx.chunk_size = chunk_size
        ctx.in_dtype = dtype
        ctx.recompute = recompute
        ctx.has_bias = bp is not None
        if use_basis:
            ctx.save_for_backward(basis_lp, basis_kl)
        elif recompute:
            ctx.save_for_backward(hp, wp, bp, hr, wr, br, target)
        ctx.mark_non_differentiable(logp_ref)
        return logp_pol, logp_ref, kl

    @staticmethod
    def backward(ctx, g_lp, g_ref, g_kl):
        del g_ref  # the reference is frozen
        if not ctx.recompute:
            if not ctx.needs_input_grad[0]:
                return (None,) * 8
            basis_lp, basis_kl = ctx.saved_tensors
            grad_h = g_lp.unsqueeze(1) * basis_lp + g_kl.unsqueeze(1) * basis_kl
            return grad_h.to(ctx.in_dtype), None, None, None, None, None, None, None
        hp, wp, bp, hr, wr, br, target = ctx.saved_tensors
        acc, dtype, n = _acc_dtype(hp.dtype), hp.dtype, hp.shape[0]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = ctx.has_bias and ctx.needs_input_grad[2]
        grad_h = torch.empty_like(hp) if need_h else None
        grad_w = torch.zeros(wp.shape, dtype=acc, device=wp.device) if need_w else None
        grad_b = torch.zeros(wp.shape[0], dtype=acc, device=wp.device) if need_b else None
        cols = torch.arange(min(ctx.chunk_size, n), device=hp.device)
        for s in range(0, n, ctx.chunk_size):
            e = min(s + ctx.chunk_size, n)
            t, c = target[s:e], cols[: e - s]
            a, k = g_lp[s:e].to(acc).unsqueeze(0), g_kl[s:e].to(acc).unsqueeze(0)  # [1, c]
            pp = _chunk_log_softmax_t(hp[s:e], wp, bp, acc).exp_()  # [V, c]
            pr = _chunk_log_softmax_t(hr[s:e], wr, br, acc).exp_()
            # dz = p_pol * (g_kl - g_lp) - g_kl * p_ref, then + g_lp at the label
            pp.mul_(k - a).sub_(pr.mul_(k))
            del pr
            pp[t, c] += a.squeeze(0)
            if need_h:
                grad_h[s:e] = (wp.t() @ pp.to(dtype)).t()
            if need_w:
                grad_w += (pp.to(dtype) @ hp[s:e]).to(acc)
            if need_b:
                grad_b += pp.sum(1)
            del pp
        grad_w = grad_w.to(wp.dtype) if need_w else None
        grad_b = grad_b.to(bp.dtype) if need_b else None
        return grad_h, grad_w, grad_b, None, None, None, None, None


def fused_token_logps_and_kl(
    policy_hidden: torch.Tensor,
    policy_weight: torch.Tensor,
    ref_hidden: torch.Tensor,
    ref_weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    policy_bias: torch.Tensor | None = None,
    ref_bias: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Memory-bounded `token_logps_and_kl(policy_hidden @ policy_weight.T, ref_hidden @ ref_weight.T, labels)`.

    Only positions with `labels != -100` are computed, `chunk_size` rows at a time, in forward and
    backward, so at most a few `chunk_size x V` blocks exist at once (never [B, T, V]). Used for the
    RRPO objective (arXiv 2504.12083), whose token-wise KL needs full-vocabulary distributions of both
    models at every response token.

    Args:
        policy_hidden: [B, T, H] last hidden states of the policy (gets a gradient).
        policy_weight: [V, H] policy lm_head weight (gets a gradient if it requires one).
        ref_hidden: [B, T, H] reference hidden states (no gradient).
        ref_weight: [V, H] reference lm_head weight (no gradient); may be `policy_weight` itself
            (tied / frozen lm_head).
        labels: [B, T] int, -100 outside the response; `hidden[:, t]` scores `labels[:, t]`.
        chunk_size: rows of logits materialised at once.
        policy_bias, ref_bias: optional [V] lm_head biases; `bias` sets both when they are None (the
            reference side is always frozen, so a shared bias gets its gradient via the policy only).

    Returns:
        (policy_logps, ref_logps, kl), each [B, T] float32 (float64 for float64 inputs), zero where
        `labels == -100`. The matmul runs in the input dtype, the softmax math in float32 or wider.
    """
    if policy_hidden.dim() != 3 or ref_hidden.shape != policy_hidden.shape:
        raise ValueError(
            f"policy_hidden and ref_hidden must both be [B, T, H], got {list(policy_hidden.shape)} "
            f"and {list(ref_hidden.shape)}"
        )
    hidden = policy_hidden.shape[-1]
    for name, w in (("policy_weight", policy_weight), ("ref_weight", ref_weight)):
        if w.dim() != 2 or w.shape[1] != hidden:
            raise ValueError(f"{name} must be [V, H] with H = {hidden}, got {list(w.shape)}")
    if ref_weight.shape != policy_weight.shape:
        raise ValueError(
            f"policy_weight {list(policy_weight.shape)} and ref_weight {list(ref_weight.shape)} differ"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    policy_bias = bias if policy_bias is None else policy_bias
    ref_bias = bias if ref_bias is None else ref_bias
    vocab = policy_weight.shape[0]
    for name, b in (("policy_bias", policy_bias), ("ref_bias", ref_bias)):
        if b is not None and b.shape != (vocab,):
            raise ValueError(f"{name} must be [V] = [{vocab}], got {list(b.shape)}")
    mask = _check_labels(labels, policy_hidden.shape[:2], vocab, "the hidden states")

    batch, seq = labels.shape
    flat_mask = mask.reshape(-1)
    idx = flat_mask.nonzero().squeeze(1)
    hp = policy_hidden.reshape(-1, hidden).index_select(0, idx)
    hr = ref_hidden.detach().reshape(-1, hidden).index_select(0, idx)
    target = labels.reshape(-1).index_select(0, idx).long()
    logp_pol, logp_ref, kl = _FusedLogpsKL.apply(
        hp,
        policy_weight,
        policy_bias,
        hr,
        ref_weight.detach(),
        None if ref_bias is None else ref_bias.detach(),
        target,
        int(chunk_size),
    )

    def scatter(values: torch.Tensor) -> torch.Tensor:
        out = values.new_zeros(batch * seq)
        return out.index_copy(0, idx, values).view(batch, seq)

    return scatter(logp_pol), scatter(logp_ref), scatter(kl)
