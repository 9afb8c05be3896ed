"""The shared-prefix packed pair forward equals separate plain passes, for every family.

Each family gets a tiny random-weight model of its real class, wrapped with a LoRA adapter whose B
matrices are non-zero (so policy != reference). Log-probs are also checked against an independent naive
computation: the full HF forward's logits, log_softmax and a shifted gather, written here.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rrpo.models import FAMILIES, collate_pairs, encode_pair, load_model, pair_forward
from rrpo.models.packing import packed_attention_mask

TOL = 1e-5
NUM_FRAMES = 4

PAIRS = [
    # (prompt, chosen, rejected, chosen_spans, rejected_spans)
    (
        "What color is the car?",
        "The car is blue.",
        "The car is red and small.",
        [(11, 15)],
        [(11, 14), (19, 24)],
    ),
    (
        "What does the man do after opening the door?",
        "He turns left and sits on the brown sofa.",
        "He sits.",
        [(3, 13), (32, 37)],
        [(3, 7)],
    ),
]


def _frames(vlm, seed: int) -> np.ndarray:
    h, w = vlm.frame_size
    return np.random.default_rng(seed).integers(0, 256, (NUM_FRAMES, h, w, 3), dtype=np.uint8)


def _peft(vlm):
    from peft import LoraConfig, get_peft_model

    # init_lora_weights=False: random non-zero B, so the adapter changes the outputs.
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=vlm.lora_target_modules, init_lora_weights=False)
    return get_peft_model(vlm.model, cfg)


@pytest.fixture(scope="module", params=list(FAMILIES))
def setup(request, tmp_path_factory):
    from rrpo.models import build_tiny_model

    family = request.param
    d = build_tiny_model(
        family, tmp_path_factory.mktemp(family.replace(".", "")), num_frames=NUM_FRAMES, seed=1
    )
    vlm = load_model(d, num_frames=NUM_FRAMES)
    torch.manual_seed(0)
    vlm.model = _peft(vlm)
    encoded = [
        encode_pair(vlm, _frames(vlm, i), p, c, r, cs, rs) for i, (p, c, r, cs, rs) in enumerate(PAIRS)
    ]
    return family, d, vlm, encoded


def _lora_grads(model) -> dict[str, torch.Tensor]:
    return {
        n: p.grad.detach().clone()
        for n, p in model.named_parameters()
        if p.requires_grad and p.grad is not None
    }


def _loss(out) -> torch.Tensor:
    """RRPO loss (rrpo.losses.rrpo_loss) summed over the batch."""
    from rrpo.losses import rrpo_loss

    losses, _, _ = rrpo_loss(
        out.policy_chosen_logps,
        out.policy_rejected_logps,
        out.ref_chosen_logps,
        out.ref_rejected_logps,
        out.chosen_span_ids,
        out.rejected_span_ids,
        out.chosen_kl,
        beta=0.5,
        alpha=0.1,
        chosen_mask=out.chosen_mask,
        rejected_mask=out.rejected_mask,
    )
    return losses.sum()


def _run(vlm, batch, **kw):
    vlm.model.zero_grad(set_to_none=True)
    out = pair_forward(vlm, vlm.model, batch, chunk_size=7, **kw)
    _loss(out).backward()
    return out, _lora_grads(vlm.model)


def _naive(vlm, pair, response, disable: bool):
    """Per-token log-probs and full logits of `response` after the prefix: one HF forward with logits."""
    ids = torch.cat([pair.prefix_ids, response]).unsqueeze(0)
    kwargs = {k: v for k, v in pair.mm.items() if k != "mm_token_type_ids"}
    if "mm_token_type_ids" in pair.mm:
        types = pair.mm["mm_token_type_ids"]
        kwargs["mm_token_type_ids"] = torch.cat([types, torch.zeros(response.numel(), dtype=types.dtype)])[
            None
        ]
    ctx = vlm.model.disable_adapter() if disable else torch.enable_grad()
    with torch.no_grad(), ctx:
        logits = vlm.model(input_ids=ids, **kwargs).logits[0]
    p = pair.prefix_ids.numel()
    lsm = F.log_softmax(logits[p - 1 : p - 1 + response.numel()].double(), dim=-1)
    return lsm.gather(1, response.unsqueeze(1)).squeeze(1), lsm


def test_lora_targets_only_language_model_linears(setup):
    family, _, vlm, _ = setup
    targeted = [n for n, m in vlm.model.named_modules() if hasattr(m, "lora_A") and n.count(".") > 2]
    assert targeted, f"{family}: LoRA targeted nothing"
    names = {n.rsplit(".", 1)[-1] for n in targeted}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    # The decoder's own path: `language_model` in transformers classes, `model.layers` in the LongVU port.
    decoder = r"\.model\.layers\.\d+\." if vlm.ported else "language_model"
    for n in targeted:
        assert re.search(decoder, n), n
        assert not re.search(
            r"visual|vision_tower|vision_model|multi_modal_projector|\.projector\.|merger|mm_projector|vision_sampler",
            n,
        ), n
    # The vision tower (and LongVU's connector) does have q/k/v-like linears that a bare "q_proj" regex
    # would catch (LLaVA).
    config = vlm.hf_model.config
    n_layers = getattr(config, "text_config", config).num_hidden_layers
    assert len(targeted) == 7 * n_layers


def test_packed_equals_separate_passes_and_naive(setup):
    family, _, vlm, encoded = setup
    batch = collate_pairs(vlm, encoded)
    packed, g_packed = _run(vlm, batch, packed=True)
    plain, g_plain = _run(vlm, batch, packed=False)
    for name in (
        "policy_chosen_logps",
        "policy_rejected_logps",
        "ref_chosen_logps",
        "ref_rejected_logps",
        "chosen_kl",
        "rejected_kl",
    ):
        a, b = getattr(packed, name), getattr(plain, name)
        assert a.shape == b.shape and a.dtype == torch.float32
        assert (a - b).abs().max().item() < TOL, f"{family} {name}: {(a - b).abs().max().item()}"
    for name in ("chosen_span_ids", "rejected_span_ids", "chosen_mask", "rejected_mask", "chosen_labels"):
        assert torch.equal(getattr(packed, name), getattr(plain, name))
    # LoRA gradients of the RRPO loss agree too.
    assert g_packed.keys() == g_plain.keys() and len(g_packed) > 0
    for n in g_packed:
        assert (g_packed[n] - g_plain[n]).abs().max().item() < TOL, n
    assert max(g.abs().max().item() for g in g_packed.values()) > 1e-4  # gradients are not trivially zero

    # Policy differs from reference (non-zero LoRA B) and KL is positive on the responses.
    assert (packed.policy_chosen_logps - packed.ref_chosen_logps).abs().max() > 1e-4
    assert (packed.chosen_kl[packed.chosen_mask] > 0).all()
    assert (packed.chosen_kl[~packed.chosen_mask] == 0).all()
    assert (packed.policy_rejected_logps[~packed.rejected_mask] == 0).all()

    # Independent check: full HF forward logits -> log_softmax -> gather, for policy and reference.
    for row, pair in enumerate(encoded):
        for side, resp in (("chosen", pair.chosen_ids), ("rejected", pair.rejected_ids)):
            n = resp.numel()
            pol, pol_lsm = _naive(vlm, pair, resp, disable=False)
            ref, ref_lsm = _naive(vlm, pair, resp, disable=True)
            kl = (ref_lsm.exp() * (ref_lsm - pol_lsm)).sum(-1)
            got = getattr(packed, f"policy_{side}_logps")[row, :n].double()
            assert (got - pol).abs().max().item() < TOL, f"{family} {side} row {row}"
            assert (getattr(packed, f"ref_{side}_logps")[row, :n].double() - ref).abs().max().item() < TOL
            assert (getattr(packed, f"{side}_kl")[row, :n].double() - kl).abs().max().item() < TOL
            assert torch.equal(getattr(packed, f"{side}_labels")[row, :n], resp)


def test_causal_mask_only_is_a_failing_control(setup):
    """Without the chosen/rejected separation, rejected tokens see chosen ones and log-probs change."""
    family, _, vlm, encoded = setup
    batch = collate_pairs(vlm, encoded)
    with torch.no_grad():
        good = pair_forward(vlm, vlm.model, batch, packed=True)
        bad = pair_forward(vlm, vlm.model, batch, packed=True, causal_mask_only=True)
    assert (good.policy_chosen_logps - bad.policy_chosen_logps).abs().max() < TOL  # chosen is unaffected
    # The first rejected token is scored from the prefix (unaffected); the rest see the chosen tokens.
    diff = (good.policy_rejected_logps[:, 1:] - bad.policy_rejected_logps[:, 1:]).abs().max().item()
    assert diff > 1e-3, f"{family}: negative control did not change rejected log-probs ({diff})"


def test_batch_equals_pairs_alone(setup):
    family, _, vlm, encoded = setup
    assert encoded[0].chosen_ids.numel() != encoded[1].chosen_ids.numel()
    with torch.no_grad():
        both = pair_forward(vlm, vlm.model, collate_pairs(vlm, encoded))
        for row, pair in enumerate(encoded):
            alone = pair_forward(vlm, vlm.model, collate_pairs(vlm, [pair]))
            for name in (
                "policy_chosen_logps",
                "policy_rejected_logps",
                "ref_chosen_logps",
                "chosen_kl",
                "rejected_kl",
            ):
                a = getattr(alone, name)[0]
                b = getattr(both, name)[row, : a.shape[0]]
                assert (a - b).abs().max().item() < TOL, f"{family} {name} row {row}"
                assert (getattr(both, name)[row, a.shape[0] :] == 0).all()


def test_disable_adapter_reference_equals_base_model(setup):
    family, d, vlm, encoded = setup
    base = load_model(d, num_frames=NUM_FRAMES).model
    pair = encoded[0]
    ids = torch.cat([pair.prefix_ids, pair.chosen_ids]).unsqueeze(0)
    kwargs = {k: v for k, v in pair.mm.items() if k != "mm_token_type_ids"}
    if "mm_token_type_ids" in pair.mm:
        t = pair.mm["mm_token_type_ids"]
        kwargs["mm_token_type_ids"] = torch.cat([t, torch.zeros(pair.chosen_ids.numel(), dtype=t.dtype)])[
            None
        ]
    with torch.no_grad():
        with vlm.model.disable_adapter():
            ref = vlm.model(input_ids=ids, **kwargs).logits
        base_logits = base(input_ids=ids, **kwargs).logits
        pol = vlm.model(input_ids=ids, **kwargs).logits
    assert (ref - base_logits).abs().max().item() < 1e-6
    assert (pol - base_logits).abs().max().item() > 1e-4


def test_no_peft_reference_is_policy(setup):
    """A plain (non-peft) model is its own reference: ref == policy, KL 0."""
    family, d, vlm, encoded = setup
    plain = load_model(d, num_frames=NUM_FRAMES)
    with torch.no_grad():
        out = pair_forward(plain, plain.model, collate_pairs(plain, encoded[:1]))
        no_ref = pair_forward(plain, plain.model, collate_pairs(plain, encoded[:1]), reference=False)
    assert torch.equal(out.policy_chosen_logps, out.ref_chosen_logps)
    assert (out.chosen_kl.abs() < 1e-6).all()
    assert no_ref.ref_chosen_logps is None and no_ref.chosen_kl is None
    assert torch.equal(no_ref.policy_chosen_logps, out.policy_chosen_logps)


def test_packed_attention_mask_layout():
    """Mask for one row P=2, C=2, R=2 padded to 8, written out by hand."""
    m = packed_attention_mask(
        torch.tensor([2]), torch.tensor([2]), torch.tensor([2]), 8, dtype=torch.float32
    )[0, 0]
    allowed = (m == 0).int().tolist()
    expected = [
        # k: p p c c r r pad pad
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 1, 0, 0, 0],
        [1, 1, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 1],
    ]
    assert allowed == expected
    assert m.min().item() == torch.finfo(torch.float32).min


def test_collate_builds_only_the_requested_layout(setup):
    """Training collates the packed layout alone; results equal the both-layouts batch, and asking the
    forward for a layout the batch lacks is a clear error."""
    from rrpo.errors import RRPOError

    family, _, vlm, encoded = setup
    packed_only = collate_pairs(vlm, encoded, layout="packed")
    plain_only = collate_pairs(vlm, encoded, layout="plain")
    assert "packed_input_ids" in packed_only and "chosen_input_ids" not in packed_only
    assert "chosen_input_ids" in plain_only and "packed_position_ids" not in plain_only
    with torch.no_grad():
        want = pair_forward(vlm, vlm.model, collate_pairs(vlm, encoded))
        got = pair_forward(vlm, vlm.model, packed_only)
        got_plain = pair_forward(vlm, vlm.model, plain_only, packed=False)
    torch.testing.assert_close(got.policy_chosen_logps, want.policy_chosen_logps, rtol=0, atol=0)
    assert (got_plain.policy_rejected_logps - want.policy_rejected_logps).abs().max() < TOL
    with pytest.raises(RRPOError, match="layout='plain'"):
        pair_forward(vlm, vlm.model, packed_only, packed=False)
    with pytest.raises(RRPOError, match="layout must be one of"):
        collate_pairs(vlm, encoded, layout="sideways")


def test_pair_forward_reaches_the_model_only_through_the_adapter_hooks(setup):
    """A family that overrides `inner` / `lm_head` (a ported or remote-code model) is what runs."""
    family, _, vlm, encoded = setup
    batch = collate_pairs(vlm, encoded, layout="packed")
    calls = []
    original_inner = type(vlm).inner

    class Spy(type(vlm)):
        @property
        def inner(self):
            module = original_inner.fget(self)

            class Forward:  # records forward calls; other attributes (the rope index) pass through
                def __call__(self, **kwargs):
                    calls.append(sorted(kwargs))
                    return module(**kwargs)

                def __getattr__(self, name):
                    return getattr(module, name)

            return Forward()

    spy = object.__new__(Spy)
    spy.__dict__.update(vlm.__dict__)
    with torch.no_grad():
        out = pair_forward(spy, spy.model, batch)
        want = pair_forward(vlm, vlm.model, batch)
    assert len(calls) == 2, f"{family}: policy and reference passes go through the hook"
    torch.testing.assert_close(out.policy_chosen_logps, want.policy_chosen_logps)


def test_packed_positions_are_computed_in_the_forward_and_equal_per_pair_ones(setup):
    """One batched rope-index call over the padded prefixes gives, row by row, what each pair's own
    prefix positions plus `start + arange` for both responses give (padding 0)."""
    from rrpo.models.packing import packed_position_ids

    family, _, vlm, encoded = setup
    batch = collate_pairs(vlm, encoded, layout="packed")
    assert "packed_position_ids" not in batch  # the collator no longer runs the rope index
    got = packed_position_ids(vlm, batch)
    got = got if vlm.mrope else got.unsqueeze(0)
    length = batch["packed_input_ids"].shape[1]
    for row, pair in enumerate(encoded):
        pos, start = vlm.prefix_positions(pair.prefix_ids, pair.mm)
        c = torch.arange(pair.chosen_ids.numel()) + start
        r = torch.arange(pair.rejected_ids.numel()) + start
        want = torch.cat([pos, c.expand(pos.shape[0], -1), r.expand(pos.shape[0], -1)], dim=1)
        assert torch.equal(got[:, row, : want.shape[1]], want), f"{family} row {row}"
        assert (got[:, row, want.shape[1] : length] == 0).all()
    if vlm.mrope:  # the video's 3-axis positions really differ between axes
        assert not torch.equal(got[0], got[1])


def test_the_reference_pass_reuses_the_video_features_while_lora_trains(setup):
    """With LoRA on the language model only (trainable), nothing outside the adapter's `language_model` /
    `lm_head` trains: the reference pass reuses the policy's video features (for the ports too)."""
    from rrpo.models.packing import vision_is_frozen

    family, _, vlm, _ = setup
    assert any(p.requires_grad for p in vlm.model.parameters())
    assert vision_is_frozen(vlm), family


# ------------------------------------------------------------------------------------------------------
# Shared-prefix attention (rrpo.models.packing.attention): the dense-mask path's numbers without the mask
def test_shared_prefix_attention_equals_the_dense_mask_path(setup):
    """Per-token log-probs, reference log-probs, KL and every LoRA gradient of the RRPO loss, float32, for
    a batch of pairs of different lengths (padding included), on every family."""
    family, _, vlm, encoded = setup
    batch = collate_pairs(vlm, encoded, layout="packed")
    dense, dense_grads = _run(vlm, batch, attention="mask")
    segments, segment_grads = _run(vlm, batch, attention="shared-prefix")
    for name in ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps",
                 "chosen_kl", "rejected_kl"):  # fmt: skip
        assert torch.allclose(getattr(dense, name), getattr(segments, name), atol=1e-5, rtol=1e-5), (
            family,
            name,
        )
    assert dense_grads.keys() == segment_grads.keys() and dense_grads
    for name, grad in dense_grads.items():
        assert torch.allclose(grad, segment_grads[name], atol=1e-5, rtol=1e-5), (family, name)
    assert any(float((grad - segment_grads[n]).abs().max()) > 0 for n, grad in dense_grads.items()), (
        "bit-identical gradients: the segment path did not run"
    )


def test_shared_prefix_attention_hides_chosen_from_rejected(setup):
    """Changing the chosen response leaves the rejected log-probs as they are (the rejected tokens never
    attend to chosen ones), as with the dense mask."""
    family, _, vlm, encoded = setup
    pair = encoded[0]
    other = type(pair)(**{**pair.__dict__, "chosen_ids": pair.chosen_ids.flip(0)})
    with torch.no_grad():
        a = pair_forward(
            vlm, vlm.model, collate_pairs(vlm, [pair], layout="packed"), attention="shared-prefix"
        )
        b = pair_forward(
            vlm, vlm.model, collate_pairs(vlm, [other], layout="packed"), attention="shared-prefix"
        )
    assert torch.allclose(a.policy_rejected_logps, b.policy_rejected_logps, atol=1e-6), family
    assert not torch.allclose(a.policy_chosen_logps, b.policy_chosen_logps), family


def test_shared_prefix_attention_is_set_on_the_language_model_only_and_leaves_generation_as_it_was(setup):
    """The switch names the segment function in the language model's config alone (a vision tower keeps
    its own attention); ordinary forwards then run transformers' sdpa, so greedy generation is unchanged."""
    from rrpo.models.packing.attention import SHARED_PREFIX_ATTENTION, use_shared_prefix_attention

    family, _, vlm, encoded = setup
    configs = {id(m.config): m.config for m in vlm.hf_model.modules() if hasattr(m, "config")}
    old = vlm.language_model.config._attn_implementation  # an earlier shared-prefix pass switched it
    vlm.language_model.config._attn_implementation = "sdpa"
    try:
        before = {k: c._attn_implementation for k, c in configs.items()}
        items = [(_frames(vlm, 9), "What happens?")]
        expected = vlm.generate(items, max_new_tokens=4)
        use_shared_prefix_attention(vlm.language_model)
        now = {k: c._attn_implementation for k, c in configs.items()}
        assert now[id(vlm.language_model.config)] == SHARED_PREFIX_ATTENTION
        assert {k for k in now if now[k] != before[k]} == {id(vlm.language_model.config)}, family
        assert vlm.generate(items, max_new_tokens=4) == expected, family
    finally:
        vlm.language_model.config._attn_implementation = old


def test_shared_prefix_attention_passes_any_other_mask_to_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from rrpo.models.packing.attention import shared_prefix_attention

    module = torch.nn.Linear(1, 1).eval()
    module.is_causal, module.num_key_value_groups = True, 2
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    mask = torch.zeros(2, 1, 6, 6).masked_fill(torch.ones(6, 6).triu(1).bool(), float("-inf"))
    for m in (mask, None):
        ours, _ = shared_prefix_attention(module, q, k, v, m, scaling=0.3)
        theirs, _ = sdpa_attention_forward(module, q, k, v, m, scaling=0.3)
        assert torch.equal(ours, theirs)


# ------------------------------------------------------------------------------------------------------
# Padding-free rows: several pairs per row (collate_pairs(pack_tokens=...))
def test_pack_rows_keeps_the_order_and_the_budget():
    from rrpo.models.packing.collate import pack_rows

    assert pack_rows([5, 4, 3, 9, 2], 10) == [[0, 1], [2], [3], [4]]
    assert pack_rows([5, 4, 3, 9, 2], 12) == [[0, 1, 2], [3, 4]]
    assert pack_rows([20, 1], 10) == [[0], [1]]  # a pair over the budget has a row of its own
    assert pack_rows([3, 3, 3], 100) == [[0, 1, 2]]


def test_packed_rows_of_several_pairs_equal_one_pair_rows(setup):
    """Pairs of different lengths packed two and three to a row (positions restarting at every pair, 3-axis
    mrope included) give each pair the per-token log-probs, reference log-probs, KL and LoRA gradients of
    one-pair rows."""
    family, _, vlm, encoded = setup
    if vlm.ported:
        pytest.skip("a port takes one pair per row")
    pairs = encoded + encoded[:1]  # three pairs, two lengths
    single = collate_pairs(vlm, pairs, layout="packed")
    total = sum(p.prefix_length + p.chosen_ids.numel() + p.rejected_ids.numel() for p in pairs)
    for budget in (total, total - 1):  # all in one row; then two rows
        packed = collate_pairs(vlm, pairs, layout="packed", pack_tokens=budget)
        rows = packed["packed_input_ids"].shape[0]
        assert rows == (1 if budget == total else 2)
        a, grads_a = _run(vlm, single, attention="shared-prefix")
        b, grads_b = _run(vlm, packed, attention="shared-prefix")
        for name in ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps",
                     "chosen_kl", "rejected_kl"):  # fmt: skip
            assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-5), (
                family,
                budget,
                name,
            )
        for name, grad in grads_a.items():
            assert torch.allclose(grad, grads_b[name], atol=1e-5, rtol=1e-5), (family, budget, name)
    one_row = collate_pairs(vlm, pairs, layout="packed", pack_tokens=total)["packed_input_ids"]
    assert one_row.numel() == total < single["packed_input_ids"].numel()  # no padding at all


def test_packed_positions_restart_at_every_pair(setup):
    """Each pair's positions in a shared row are exactly its positions in a row of its own."""
    from rrpo.models.packing import packed_position_ids
    from rrpo.models.packing.collate import pair_placement

    family, _, vlm, encoded = setup
    if vlm.ported:
        pytest.skip("a port takes one pair per row")
    single = collate_pairs(vlm, encoded, layout="packed")
    packed = collate_pairs(vlm, encoded, layout="packed", pack_tokens=10**6)
    one, many = packed_position_ids(vlm, single), packed_position_ids(vlm, packed)
    one, many = (x if vlm.mrope else x.unsqueeze(0) for x in (one, many))
    rows, offs = pair_placement(packed)
    for i, pair in enumerate(encoded):
        n = pair.prefix_length + pair.chosen_ids.numel() + pair.rejected_ids.numel()
        assert torch.equal(many[:, rows[i], offs[i] : offs[i] + n], one[:, i, :n]), (family, i)


def test_pair_packing_needs_the_shared_prefix_attention(setup):
    from rrpo.errors import RRPOError

    family, _, vlm, encoded = setup
    if vlm.ported:
        with pytest.raises(RRPOError, match="takes one pair per row"):
            collate_pairs(vlm, encoded, layout="packed", pack_tokens=10**6)
        return
    batch = collate_pairs(vlm, encoded, layout="packed", pack_tokens=10**6)
    with pytest.raises(RRPOError, match="needs --attn-implementation shared-prefix"):
        pair_forward(vlm, vlm.model, batch, attention="mask")


def test_shared_prefix_flex_attention_forward_equals_the_sdpa_segments(setup):
    """FlexAttention with the packed rows' BlockMask (one call for all rows): the same forward numbers as
    the SDPA segments, one pair per row and several pairs per row (its backward runs only on a GPU)."""
    family, _, vlm, encoded = setup
    layouts = [collate_pairs(vlm, encoded, layout="packed")]
    if not vlm.ported:
        layouts.append(collate_pairs(vlm, encoded, layout="packed", pack_tokens=10**6))
    for batch in layouts:
        with torch.no_grad():
            sdpa = pair_forward(vlm, vlm.model, batch, attention="shared-prefix")
            flex = pair_forward(vlm, vlm.model, batch, attention="shared-prefix-flex")
        for name in (
            "policy_chosen_logps",
            "policy_rejected_logps",
            "ref_chosen_logps",
            "chosen_kl",
            "rejected_kl",
        ):
            assert torch.allclose(getattr(sdpa, name), getattr(flex, name), atol=1e-5, rtol=1e-5), (
                family,
                name,
            )


def test_shared_prefix_flex_training_on_cpu_is_refused():
    from rrpo.errors import RRPOError
    from rrpo.train.config import parse_train_args

    with pytest.raises(RRPOError, match="shared-prefix-flex trains on GPUs only"):
        parse_train_args(["--attn-implementation", "shared-prefix-flex"])
