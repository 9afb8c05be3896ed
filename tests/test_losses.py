"""Preference losses against independent float64 loop computations written here."""

from __future__ import annotations

import math

import pytest
import torch

from rrpo.errors import RRPOError
from rrpo.losses import (
    LOSSES,
    LossInputError,
    ddpo_loss,
    dpa_loss,
    dpo_loss,
    preference_loss,
    rrpo_loss,
    tdpo_loss,
)

F64 = torch.float64


def neg_log_sigmoid(u: float) -> float:
    """-log(1 / (1 + exp(-u))), overflow-safe."""
    return max(-u, 0.0) + math.log1p(math.exp(-abs(u)))


def make_batch(seed: int = 0, dtype=F64):
    """Two pairs, T=8. Response masks of different lengths; 2 spans in row 0, 1 span in row 1."""
    g = torch.Generator().manual_seed(seed)
    batch, seq = 2, 8
    c_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    r_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    c_ids = torch.tensor([[0, 0, 0, 1, 1, 0, 2, 0], [0, 0, 1, 1, 1, 0, 0, 0]])
    r_ids = torch.tensor([[0, 0, 1, 0, 0, 2, 2, 0], [0, 0, 0, 1, 0, 0, 0, 0]])

    def logps(mask):
        x = -torch.rand(batch, seq, generator=g, dtype=F64) * 3
        return torch.where(mask, x, 0.0).to(dtype)

    def kl(mask):
        return torch.where(mask, torch.rand(batch, seq, generator=g, dtype=F64), 0.0).to(dtype)

    return {
        "policy_chosen_logps": logps(c_mask),
        "policy_rejected_logps": logps(r_mask),
        "ref_chosen_logps": logps(c_mask),
        "ref_rejected_logps": logps(r_mask),
        "chosen_span_ids": c_ids,
        "rejected_span_ids": r_ids,
        "chosen_mask": c_mask,
        "rejected_mask": r_mask,
        "chosen_kl": kl(c_mask),
        "rejected_kl": kl(r_mask),
    }


def rows(d, key):
    return d[key].tolist()


# ------------------------------------------------------------------------- naive references (loops)


def naive_rrpo(d, beta, alpha, fine_grained=True, token_kl=True):
    out = []
    for b in range(2):
        u = 0.0
        for t in range(8):
            c_sel = d["chosen_span_ids"][b][t] > 0 if fine_grained else d["chosen_mask"][b][t]
            r_sel = d["rejected_span_ids"][b][t] > 0 if fine_grained else d["rejected_mask"][b][t]
            if c_sel:
                u += beta * (d["policy_chosen_logps"][b][t] - d["ref_chosen_logps"][b][t])
            if r_sel:
                u -= beta * (d["policy_rejected_logps"][b][t] - d["ref_rejected_logps"][b][t])
        loss = neg_log_sigmoid(u)
        if token_kl:
            loss += alpha * sum(d["chosen_kl"][b])
        out.append(loss)
    return out


def naive_dpo(d, beta):
    out = []
    for b in range(2):
        c = sum(p - r for p, r in zip(d["policy_chosen_logps"][b], d["ref_chosen_logps"][b]))
        r = sum(p - q for p, q in zip(d["policy_rejected_logps"][b], d["ref_rejected_logps"][b]))
        out.append((neg_log_sigmoid(beta * (c - r)), beta * c, beta * r))
    return out


def naive_tdpo(d, beta, alpha, version):
    out = []
    for b, (_, c, r) in enumerate(naive_dpo(d, 1.0)):
        kc, kr = sum(d["chosen_kl"][b]), sum(d["rejected_kl"][b])
        u = (c - r) - (kr - kc) if version == 1 else (c - r) - alpha * (kr - kc)
        out.append(neg_log_sigmoid(beta * u))
    return out


def naive_dpa(d, alpha):
    out = []
    for b in range(2):
        ids = sorted({i for i in d["chosen_span_ids"][b] if i > 0})
        loss = 0.0
        for i in ids:
            lp = sum(x for x, s in zip(d["policy_chosen_logps"][b], d["chosen_span_ids"][b]) if s == i)
            lm = sum(x for x, s in zip(d["policy_rejected_logps"][b], d["rejected_span_ids"][b]) if s == i)
            loss += -math.log(math.exp(lp) / (math.exp(lp) + math.exp(lm)))
        out.append(loss + alpha * sum(d["chosen_kl"][b]))
    return out


def naive_ddpo(d, beta, gamma):
    def score(b, side):
        num = den = 0.0
        for t in range(8):
            if not d[f"{side}_mask"][b][t]:
                continue
            w = gamma if d[f"{side}_span_ids"][b][t] > 0 else 1.0
            num += w * (d[f"policy_{side}_logps"][b][t] - d[f"ref_{side}_logps"][b][t])
            den += w
        return num / den

    return [neg_log_sigmoid(beta * (score(b, "chosen") - score(b, "rejected"))) for b in range(2)]


def as_lists(batch):
    return {k: v.tolist() for k, v in batch.items()}


LOGP_KEYS = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")


def call_rrpo(batch, **kw):
    return rrpo_loss(
        *(batch[k] for k in LOGP_KEYS),
        batch["chosen_span_ids"],
        batch["rejected_span_ids"],
        batch["chosen_kl"],
        **kw,
    )


# -------------------------------------------------------------------------------------------- RRPO


def test_rrpo_matches_naive_values_rewards_and_grads():
    batch = make_batch()
    batch["policy_chosen_logps"].requires_grad_()
    batch["policy_rejected_logps"].requires_grad_()
    batch["chosen_kl"].requires_grad_()
    losses, cr, rr = call_rrpo(batch, beta=0.3, alpha=0.05, chosen_mask=batch["chosen_mask"])
    want = naive_rrpo(as_lists({k: v.detach() for k, v in batch.items()}), 0.3, 0.05)
    torch.testing.assert_close(losses, torch.tensor(want, dtype=F64), rtol=1e-12, atol=1e-12)
    assert not cr.requires_grad and not rr.requires_grad
    for b in range(2):  # rewards: beta * summed span log-ratios
        c = (batch["chosen_span_ids"][b] > 0) * (
            batch["policy_chosen_logps"][b] - batch["ref_chosen_logps"][b]
        )
        r = (batch["rejected_span_ids"][b] > 0) * (
            batch["policy_rejected_logps"][b] - batch["ref_rejected_logps"][b]
        )
        assert cr[b].item() == pytest.approx(0.3 * c.sum().item(), rel=1e-12)
        assert rr[b].item() == pytest.approx(0.3 * r.sum().item(), rel=1e-12)
    # Gradients: d loss / d policy chosen logp = -beta * sigmoid(-u) on span tokens, 0 elsewhere;
    # d loss / d chosen_kl = alpha on every token.
    losses.sum().backward()
    for b in range(2):
        u = (cr[b] - rr[b]).item()
        s = 1.0 / (1.0 + math.exp(u))
        for t in range(8):
            in_c = batch["chosen_span_ids"][b, t].item() > 0
            in_r = batch["rejected_span_ids"][b, t].item() > 0
            assert batch["policy_chosen_logps"].grad[b, t].item() == pytest.approx(-0.3 * s * in_c, abs=1e-12)
            assert batch["policy_rejected_logps"].grad[b, t].item() == pytest.approx(
                0.3 * s * in_r, abs=1e-12
            )
    mask = batch["chosen_mask"].to(F64)
    torch.testing.assert_close(batch["chosen_kl"].grad, 0.05 * mask)


def test_rrpo_gradients_match_finite_differences_of_naive():
    batch = make_batch(seed=2)
    x = batch["policy_chosen_logps"].clone().requires_grad_()
    losses, _, _ = call_rrpo({**batch, "policy_chosen_logps": x}, beta=0.7, alpha=0.02)
    (grad,) = torch.autograd.grad(losses.sum(), x)
    eps = 1e-6
    for b, t in [(0, 3), (0, 6), (0, 2), (1, 4), (1, 5)]:
        plus, minus = as_lists(batch), as_lists(batch)
        plus["policy_chosen_logps"][b][t] += eps
        minus["policy_chosen_logps"][b][t] -= eps
        fd = (sum(naive_rrpo(plus, 0.7, 0.02)) - sum(naive_rrpo(minus, 0.7, 0.02))) / (2 * eps)
        assert grad[b, t].item() == pytest.approx(fd, abs=1e-7)


def test_rrpo_ablations_change_exactly_their_term():
    batch = make_batch(seed=1)
    full, _, _ = call_rrpo(batch, beta=0.2, alpha=0.1)
    no_kl, cr, rr = call_rrpo(batch, beta=0.2, alpha=0.1, token_kl=False)
    torch.testing.assert_close(no_kl, full - 0.1 * batch["chosen_kl"].sum(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        no_kl, torch.tensor(naive_rrpo(as_lists(batch), 0.2, 0.1, token_kl=False), dtype=F64)
    )
    whole, wcr, _ = call_rrpo(
        batch,
        beta=0.2,
        alpha=0.1,
        fine_grained=False,
        chosen_mask=batch["chosen_mask"],
        rejected_mask=batch["rejected_mask"],
    )
    want = naive_rrpo(as_lists(batch), 0.2, 0.1, fine_grained=False)
    torch.testing.assert_close(whole, torch.tensor(want, dtype=F64), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(whole, full)
    # whole-response rewards = DPO rewards
    _, dcr, _ = dpo_loss(*(batch[k] for k in LOGP_KEYS), beta=0.2)
    torch.testing.assert_close(wcr, dcr)
    # The losses' contract: per-token inputs are zero outside the response, so the whole-response sums
    # need no mask (issue 14 restored it; the masks only restrict the sums further).
    unmasked, ucr, urr = call_rrpo(batch, beta=0.2, alpha=0.1, fine_grained=False)
    torch.testing.assert_close(unmasked, torch.tensor(want, dtype=F64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ucr, dcr)


def test_rrpo_input_errors_name_the_problem():
    batch = make_batch()
    bad = batch["chosen_span_ids"].clone()
    bad[1, 7] = 3  # position 7 of row 1 is outside the chosen response
    with pytest.raises(
        LossInputError, match=r"chosen_span_ids: row 1, position 7 is inside span 3 but outside"
    ):
        call_rrpo({**batch, "chosen_span_ids": bad}, chosen_mask=batch["chosen_mask"])
    assert issubclass(LossInputError, RRPOError) and issubclass(LossInputError, ValueError)
    empty = dict(batch)
    empty["chosen_span_ids"] = batch["chosen_span_ids"].clone()
    empty["rejected_span_ids"] = batch["rejected_span_ids"].clone()
    empty["chosen_span_ids"][1] = 0
    empty["rejected_span_ids"][1] = 0
    with pytest.raises(LossInputError, match="row 1 has no differing-span tokens"):
        call_rrpo(empty)
    with pytest.raises(LossInputError, match=r"ref_chosen_logps has shape \[2, 7\], expected \[2, 8\]"):
        call_rrpo({**batch, "ref_chosen_logps": batch["ref_chosen_logps"][:, :7]})
    with pytest.raises(LossInputError, match="chosen_span_ids must be >= 0"):
        call_rrpo({**batch, "chosen_span_ids": -batch["chosen_span_ids"]})
    with pytest.raises(LossInputError, match="chosen_mask must be a bool tensor"):
        call_rrpo(batch, chosen_mask=batch["chosen_mask"].long())


def test_rrpo_bf16_and_extreme_inputs_stay_finite():
    batch = make_batch(seed=3)
    big = {k: v * 3000 if k in LOGP_KEYS else v for k, v in batch.items()}
    big["ref_chosen_logps"] = big["ref_chosen_logps"] * -1  # huge margins of both signs
    bf = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in big.items()}
    bf["policy_chosen_logps"].requires_grad_()
    losses, cr, rr = call_rrpo(bf, beta=1.0, alpha=0.01)
    assert losses.dtype == torch.float32
    assert torch.isfinite(losses).all() and torch.isfinite(cr).all() and torch.isfinite(rr).all()
    losses.sum().backward()
    assert torch.isfinite(bf["policy_chosen_logps"].grad.float()).all()
    want = naive_rrpo(
        as_lists({k: v.detach().double() if v.is_floating_point() else v for k, v in bf.items()}), 1.0, 0.01
    )
    torch.testing.assert_close(losses.double(), torch.tensor(want, dtype=F64), rtol=1e-5, atol=1e-3)


# --------------------------------------------------------------------------------------- baselines


def test_dpo_matches_naive():
    batch = make_batch(seed=4)
    losses, cr, rr = dpo_loss(*(batch[k] for k in LOGP_KEYS), beta=0.5)
    want = naive_dpo(as_lists(batch), 0.5)
    torch.testing.assert_close(losses, torch.tensor([w[0] for w in want], dtype=F64))
    torch.testing.assert_close(cr, torch.tensor([w[1] for w in want], dtype=F64))
    torch.testing.assert_close(rr, torch.tensor([w[2] for w in want], dtype=F64))


@pytest.mark.parametrize("version", [1, 2])
def test_tdpo_matches_naive_and_stops_chosen_kl_gradient_in_v2(version):
    batch = make_batch(seed=5)
    kc = batch["chosen_kl"].clone().requires_grad_()
    kr = batch["rejected_kl"].clone().requires_grad_()
    losses, _, _ = tdpo_loss(*(batch[k] for k in LOGP_KEYS), kc, kr, beta=0.3, alpha=0.7, version=version)
    want = naive_tdpo(as_lists(batch), 0.3, 0.7, version)
    torch.testing.assert_close(losses, torch.tensor(want, dtype=F64), rtol=1e-12, atol=1e-12)
    losses.sum().backward()
    if version == 2:
        assert kc.grad is None or bool((kc.grad == 0).all())
    else:
        assert bool((kc.grad[batch["chosen_mask"]] != 0).all())
    assert bool((kr.grad[batch["rejected_mask"]] != 0).all())
    with pytest.raises(ValueError, match="tdpo version must be 1 or 2"):
        tdpo_loss(*(batch[k] for k in LOGP_KEYS), kc, kr, version=3)


def test_dpa_matches_naive_and_requires_paired_phrases():
    batch = make_batch(seed=6)
    losses, cr, rr = dpa_loss(
        batch["policy_chosen_logps"],
        batch["policy_rejected_logps"],
        chosen_span_ids=batch["chosen_span_ids"],
        rejected_span_ids=batch["rejected_span_ids"],
        chosen_kl=batch["chosen_kl"],
        alpha=0.4,
    )
    want = naive_dpa(as_lists(batch), 0.4)
    torch.testing.assert_close(losses, torch.tensor(want, dtype=F64), rtol=1e-12, atol=1e-12)
    c_sum = (batch["policy_chosen_logps"] * (batch["chosen_span_ids"] > 0)).sum(-1)
    torch.testing.assert_close(cr, c_sum)
    bad = batch["rejected_span_ids"].clone()
    bad[0, 5:7] = 0  # row 0 rejected loses span 2
    with pytest.raises(LossInputError, match="row 0: span 2 occurs only in the chosen response"):
        dpa_loss(
            batch["policy_chosen_logps"],
            batch["policy_rejected_logps"],
            chosen_span_ids=batch["chosen_span_ids"],
            rejected_span_ids=bad,
            chosen_kl=batch["chosen_kl"],
        )


def test_ddpo_matches_naive_and_gamma_one_is_mean_dpo():
    batch = make_batch(seed=7)
    kw = {k: batch[k] for k in ("chosen_span_ids", "rejected_span_ids", "chosen_mask", "rejected_mask")}
    losses, _, _ = ddpo_loss(*(batch[k] for k in LOGP_KEYS), beta=0.4, **kw)  # default gamma = 5
    want = naive_ddpo(as_lists(batch), 0.4, 5.0)
    torch.testing.assert_close(losses, torch.tensor(want, dtype=F64), rtol=1e-12, atol=1e-12)
    ones, cr, _ = ddpo_loss(*(batch[k] for k in LOGP_KEYS), beta=0.4, gamma=1.0, **kw)
    n_c = batch["chosen_mask"].sum(-1)
    c_mean = (batch["policy_chosen_logps"] - batch["ref_chosen_logps"]).sum(-1) / n_c
    torch.testing.assert_close(cr, 0.4 * c_mean)
    with pytest.raises(LossInputError, match="ddpo needs chosen_mask and rejected_mask"):
        ddpo_loss(*(batch[k] for k in LOGP_KEYS), **{**kw, "chosen_mask": None})


def test_preference_loss_dispatches_every_loss_with_one_set_of_tensors():
    batch = make_batch(seed=8)
    assert set(LOSSES) == {"rrpo", "dpo", "tdpo", "dpa", "ddpo"}
    direct = {
        "rrpo": call_rrpo(
            batch, beta=0.2, chosen_mask=batch["chosen_mask"], rejected_mask=batch["rejected_mask"]
        ),
        "dpo": dpo_loss(*(batch[k] for k in LOGP_KEYS), beta=0.2),
        "tdpo": tdpo_loss(*(batch[k] for k in LOGP_KEYS), batch["chosen_kl"], batch["rejected_kl"], beta=0.2),
        "dpa": dpa_loss(
            batch["policy_chosen_logps"],
            batch["policy_rejected_logps"],
            chosen_span_ids=batch["chosen_span_ids"],
            rejected_span_ids=batch["rejected_span_ids"],
            chosen_kl=batch["chosen_kl"],
        ),
        "ddpo": ddpo_loss(
            *(batch[k] for k in LOGP_KEYS),
            beta=0.2,
            **{k: batch[k] for k in ("chosen_span_ids", "rejected_span_ids", "chosen_mask", "rejected_mask")},
        ),
    }
    for name, want in direct.items():
        got = preference_loss(name, beta=0.2, alpha=None, **batch)
        for g_, w_ in zip(got, want):
            torch.testing.assert_close(g_, w_)
    # an explicit alpha reaches the losses that have one, and is ignored by dpo
    got = preference_loss("rrpo", beta=0.2, alpha=0.3, **batch)[0]
    torch.testing.assert_close(got, torch.tensor(naive_rrpo(as_lists(batch), 0.2, 0.3), dtype=F64))
    torch.testing.assert_close(preference_loss("dpo", beta=0.2, alpha=0.3, **batch)[0], direct["dpo"][0])
    with pytest.raises(LossInputError, match="unknown loss_type 'ipo'"):
        preference_loss("ipo", **batch)


def test_registry_defaults_match_the_loss_functions():
    """LOSS_SPECS states each loss's default alpha and options; they must agree with the functions."""
    import inspect

    from rrpo.losses import LOSS_SPECS, PreferenceLoss

    for name, spec in LOSS_SPECS.items():
        params = inspect.signature(spec.fn).parameters
        alpha = params.get("alpha")
        assert spec.default_alpha == (None if alpha is None else alpha.default), name
        assert set(spec.options) <= set(params), f"{name}: options the function does not take"
        assert set(spec.inputs) <= set(params), f"{name}: inputs the function does not take"
    assert [n for n, s in LOSS_SPECS.items() if s.needs_spans()] == ["rrpo", "dpa", "ddpo"]
    assert not PreferenceLoss("rrpo", fine_grained=False).needs_spans
    with pytest.raises(LossInputError, match="dpo takes no option.*gamma"):
        PreferenceLoss("dpo", gamma=2.0)
