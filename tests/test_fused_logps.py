"""token_logps_and_kl and fused_token_logps_and_kl against an independent float64 loop computation."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from rrpo.losses import fused_token_logps_and_kl, token_logps_and_kl

F64 = torch.float64


def naive_logps_kl(policy_logits, ref_logits, labels):
    """Per position: log p(label) = z_label - logsumexp(z) written out with max-shift; KL(ref || pol) summed
    over the vocabulary explicitly. float64, differentiable w.r.t. policy_logits."""
    batch, seq, vocab = policy_logits.shape
    zp, zr = policy_logits.to(F64), ref_logits.detach().to(F64)
    lp_rows, lr_rows, kl_rows = [], [], []
    for b in range(batch):
        lp_row, lr_row, kl_row = [], [], []
        for t in range(seq):
            label = int(labels[b, t])
            if label == -100:
                zero = zp.new_zeros(()) * zp[b, t, 0]  # keeps the graph connected
                lp_row.append(zero)
                lr_row.append(zero.detach())
                kl_row.append(zero)
                continue
            mp, mr = zp[b, t].max(), zr[b, t].max()
            lse_p = mp + torch.log(sum(torch.exp(zp[b, t, v] - mp) for v in range(vocab)))
            lse_r = mr + torch.log(sum(torch.exp(zr[b, t, v] - mr) for v in range(vocab)))
            lp_row.append(zp[b, t, label] - lse_p)
            lr_row.append(zr[b, t, label] - lse_r)
            kl = 0.0
            for v in range(vocab):
                log_r = zr[b, t, v] - lse_r
                kl = kl + torch.exp(log_r) * (log_r - (zp[b, t, v] - lse_p))
            kl_row.append(kl)
        lp_rows.append(torch.stack(lp_row))
        lr_rows.append(torch.stack(lr_row))
        kl_rows.append(torch.stack(kl_row))
    return torch.stack(lp_rows), torch.stack(lr_rows), torch.stack(kl_rows)


def make(batch=2, seq=6, hidden=5, vocab=11, seed=0, dtype=F64, masked=((0, 0), (0, 1), (1, 5))):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, seq, hidden, generator=g, dtype=F64).to(dtype)
    hr = torch.randn(batch, seq, hidden, generator=g, dtype=F64).to(dtype)
    w = torch.randn(vocab, hidden, generator=g, dtype=F64).to(dtype)
    wr = torch.randn(vocab, hidden, generator=g, dtype=F64).to(dtype)
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    for b, t in masked:
        labels[b, t] = -100
    return h, w, hr, wr, labels


def test_token_logps_and_kl_matches_naive_values_and_grads():
    h, w, hr, wr, labels = make()
    zp = (h @ w.T).requires_grad_()
    zr = hr @ wr.T
    got = token_logps_and_kl(zp, zr, labels)
    zp_n = zp.detach().clone().requires_grad_()
    want = naive_logps_kl(zp_n, zr, labels)
    for g_, w_ in zip(got, want):
        assert g_.dtype == F64 and g_.shape == labels.shape
        torch.testing.assert_close(g_, w_.detach(), rtol=1e-10, atol=1e-12)
    mask = labels == -100
    assert all(bool((x[mask] == 0).all()) for x in got)
    up1, up2 = torch.randn(labels.shape, dtype=F64), torch.randn(labels.shape, dtype=F64)
    (g1,) = torch.autograd.grad((got[0] * up1 + got[2] * up2).sum(), zp)
    (g2,) = torch.autograd.grad((want[0] * up1 + want[2] * up2).sum(), zp_n)
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)


def test_token_logps_and_kl_float32_and_shape_errors():
    h, w, hr, wr, labels = make(dtype=torch.float32)
    got = token_logps_and_kl(h @ w.T, hr @ wr.T, labels)
    want = naive_logps_kl((h @ w.T).double(), (hr @ wr.T).double(), labels)
    for g_, w_ in zip(got, want):
        assert g_.dtype == torch.float32
        torch.testing.assert_close(g_.double(), w_, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"labels must be \[B, T\]"):
        token_logps_and_kl(h @ w.T, hr @ wr.T, labels[:, :-1])
    bad = labels.clone()
    bad[1, 1] = 11
    with pytest.raises(ValueError, match=r"labels outside the vocabulary \[0, 11\)"):
        token_logps_and_kl(h @ w.T, hr @ wr.T, bad)


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 7, 100])
def test_fused_matches_naive_at_several_chunk_sizes(chunk_size):
    # 9 valid rows: chunk 4 and 7 do not divide N; row 2 is all masked.
    h, w, hr, wr, labels = make(batch=3, seq=4, masked=((0, 0), (1, 3), (2, 0), (2, 1), (2, 2), (2, 3)))
    h.requires_grad_()
    got = fused_token_logps_and_kl(h, w, hr, wr, labels, chunk_size=chunk_size)
    h_n = h.detach().clone().requires_grad_()
    want = naive_logps_kl(h_n @ w.T, hr @ wr.T, labels)
    for g_, w_ in zip(got, want):
        assert g_.shape == labels.shape and g_.dtype == F64
        torch.testing.assert_close(g_, w_.detach(), rtol=1e-10, atol=1e-12)
    assert all(bool((x[2] == 0).all()) for x in got)
    up1, up2 = torch.randn(labels.shape, dtype=F64), torch.randn(labels.shape, dtype=F64)
    (g1,) = torch.autograd.grad((got[0] * up1 + got[2] * up2).sum(), h)
    (g2,) = torch.autograd.grad((want[0] * up1 + want[2] * up2).sum(), h_n)
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)
    assert bool((g1[2] == 0).all())


def test_fused_weight_and_bias_gradients_match_naive():
    h, w, hr, wr, labels = make(seed=3)
    bias = torch.randn(w.shape[0], dtype=F64)
    ref_bias = torch.randn(w.shape[0], dtype=F64)
    params = [x.clone().requires_grad_() for x in (h, w, bias)]
    got = fused_token_logps_and_kl(
        params[0], params[1], hr, wr, labels, chunk_size=4, policy_bias=params[2], ref_bias=ref_bias
    )
    naive_params = [x.clone().requires_grad_() for x in (h, w, bias)]
    want = naive_logps_kl(naive_params[0] @ naive_params[1].T + naive_params[2], hr @ wr.T + ref_bias, labels)
    for g_, w_ in zip(got, want):
        torch.testing.assert_close(g_, w_.detach(), rtol=1e-10, atol=1e-12)
    up1, up2 = torch.randn(labels.shape, dtype=F64), torch.randn(labels.shape, dtype=F64)
    grads = torch.autograd.grad((got[0] * up1 + got[2] * up2).sum(), params)
    naive = torch.autograd.grad((want[0] * up1 + want[2] * up2).sum(), naive_params)
    for g1, g2 in zip(grads, naive):
        torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)


def test_fused_gradcheck_double():
    h, w, hr, wr, labels = make(batch=2, seq=3, hidden=3, vocab=5, masked=((0, 1),))
    bias = torch.randn(5, dtype=F64)

    def hidden_only(x):  # frozen lm_head: the precomputed-basis backward
        lp, _, kl = fused_token_logps_and_kl(x, w, hr, wr, labels, chunk_size=2)
        return lp, kl

    def with_weight(x, weight, b):  # trainable lm_head + bias: the recompute backward
        lp, _, kl = fused_token_logps_and_kl(x, weight, hr, wr, labels, chunk_size=2, policy_bias=b)
        return lp, kl

    assert torch.autograd.gradcheck(hidden_only, (h.clone().requires_grad_(),))
    assert torch.autograd.gradcheck(
        with_weight, tuple(x.clone().requires_grad_() for x in (h, w, bias)), atol=1e-7
    )


def test_fused_tied_weights_and_no_reference_gradient():
    h, w, hr, _, labels = make(seed=5)
    weight = w.clone().requires_grad_()
    hidden = h.clone().requires_grad_()
    ref_hidden = hr.clone().requires_grad_()
    lp, lr, kl = fused_token_logps_and_kl(hidden, weight, ref_hidden, weight, labels, chunk_size=3)
    assert not lr.requires_grad
    (lp.sum() + kl.sum()).backward()
    assert ref_hidden.grad is None
    # Naive with the reference side frozen (detached copy of the same weight).
    hn, wn = h.clone().requires_grad_(), w.clone().requires_grad_()
    lpn, lrn, kln = naive_logps_kl(hn @ wn.T, hr @ w.T, labels)
    (lpn.sum() + kln.sum()).backward()
    torch.testing.assert_close(lr, lrn.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hidden.grad, hn.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(weight.grad, wn.grad, rtol=1e-9, atol=1e-12)


def test_fused_all_masked_batch():
    h, w, hr, wr, labels = make()
    labels[:] = -100
    h.requires_grad_()
    out = fused_token_logps_and_kl(h, w, hr, wr, labels, chunk_size=4)
    assert all(bool((x == 0).all()) for x in out)
    (out[0].sum() + out[2].sum()).backward()
    assert bool((h.grad == 0).all())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_extreme_logits_low_precision_stay_finite(dtype):
    # Hidden/weights chosen so that logits reach about +-1e4 (bf16 / fp16 representable).
    h, w, hr, wr, labels = make(batch=2, seq=4, hidden=4, vocab=9, seed=7, masked=((1, 3),))
    w = (w.sign() * 50).to(dtype)
    wr = (wr.sign() * 50).to(dtype)
    h = (h.sign() * 50).to(dtype).requires_grad_()
    hr = (hr.sign() * 50).to(dtype)
    assert float((h.detach().float() @ w.float().T).abs().max()) == 1e4
    for fn in ("fused", "plain"):
        hh = h.detach().clone().requires_grad_()
        if fn == "fused":
            out = fused_token_logps_and_kl(hh, w, hr, wr, labels, chunk_size=3)
        else:
            out = token_logps_and_kl(hh @ w.T, hr @ wr.T, labels)
        assert all(x.dtype == torch.float32 for x in out)
        assert all(bool(torch.isfinite(x).all()) for x in out), fn
        (out[0].sum() + out[2].sum()).backward()
        assert bool(torch.isfinite(hh.grad.float()).all()), fn
        # float64 reference from the same low-precision logits
        want = naive_logps_kl((h.detach() @ w.T).double(), (hr @ wr.T).double(), labels)
        for g_, w_ in zip(out, want):
            torch.testing.assert_close(g_.double(), w_, rtol=1e-5, atol=1e-3)


class LiveLargeTensors(TorchDispatchMode):
    """Tracks the bytes of live storages produced by any op with at least `min_numel` elements.

    A storage counts from the op that creates it until every tensor object referring to it is gone
    (PyTorch keeps a tensor's Python object alive while autograd still holds the tensor, so saved
    activations stay counted). Also records the largest tensor any op produced.
    """

    def __init__(self, min_numel: int):
        super().__init__()
        self.min_numel = min_numel
        self.live: dict[int, list[int]] = {}
        self.current = self.peak = self.max_numel = 0

    def _release(self, key: int) -> None:
        entry = self.live[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.numel() >= self.min_numel:
                self.max_numel = max(self.max_numel, t.numel())
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key in self.live:
                    self.live[key][1] += 1
                else:
                    self.live[key] = [storage.nbytes(), 1]
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                weakref.finalize(t, self._release, key)
        return out


def _fwd_bwd(path: str, h, w, hr, wr, labels, chunk_size):
    if path == "fused":
        lp, lr, kl = fused_token_logps_and_kl(h, w, hr, wr, labels, chunk_size=chunk_size)
    else:
        lp, lr, kl = token_logps_and_kl(h @ w.T, hr @ wr.T, labels)
    loss = -torch.nn.functional.logsigmoid((lp - lr).sum()) + 0.1 * kl.sum()
    loss.backward()


@pytest.mark.parametrize("weight_grad", [False, True])
def test_fused_live_memory_is_bounded_by_chunk_times_vocab(weight_grad):
    # N = 64 response rows, V = 512, chunk = 8: the naive path must hold >= N x V floats at once,
    # the fused one a few chunk x V blocks (plus the V x H weight gradient when the head trains).
    n_rows, vocab, hidden, chunk = 64, 512, 4, 8
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, n_rows // 2, hidden, generator=g)
    hr = torch.randn(2, n_rows // 2, hidden, generator=g)
    w = torch.randn(vocab, hidden, generator=g)
    wr = torch.randn(vocab, hidden, generator=g)
    labels = torch.randint(0, vocab, (2, n_rows // 2), generator=g)
    block = chunk * vocab * 4  # one float32 chunk x V block, bytes
    peaks = {}
    for path in ("naive", "fused"):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_(weight_grad)
        with LiveLargeTensors(min_numel=vocab) as tracker:
            _fwd_bwd(path, hh, ww, hr, wr, labels, chunk)
        peaks[path] = tracker.peak
        if path == "naive":  # the tracker does see full-size logits: it is able to fail
            assert tracker.max_numel >= n_rows * vocab
            assert tracker.peak >= 2 * n_rows * vocab * 4
        else:
            assert tracker.max_numel <= chunk * vocab
            weight_grad_bytes = vocab * hidden * 4 if weight_grad else 0
            assert tracker.peak <= 4 * block + weight_grad_bytes, (tracker.peak, block)
    assert peaks["naive"] >= 4 * peaks["fused"]
