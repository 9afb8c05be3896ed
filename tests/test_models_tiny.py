"""Tiny models: built offline, reloaded with from_pretrained, encoded pairs, truncation and SkipPair."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rrpo.errors import RRPOError
from rrpo.models import FAMILIES, SkipPair, build_tiny_model, encode_pair, family_of, load_model
from rrpo.video.io import Clip

NUM_FRAMES = 4


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {f: build_tiny_model(f, root / f, num_frames=NUM_FRAMES) for f in FAMILIES}


@pytest.fixture(scope="module")
def qwen(tiny_dirs):
    return load_model(tiny_dirs["qwen2-vl"], num_frames=NUM_FRAMES)


def _frames(vlm, seed=0):
    h, w = vlm.frame_size
    return np.random.default_rng(seed).integers(0, 256, (NUM_FRAMES, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "family", [f for f, cls in FAMILIES.items() if not cls.ported]
)  # ports: test_longvu.py
def test_tiny_model_reloads_offline(family, tiny_dirs):
    import transformers
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    d = tiny_dirs[family]
    cls = FAMILIES[family]
    assert family_of(d) == family
    config = AutoConfig.from_pretrained(d)
    assert config.model_type in cls.model_types
    # family_of also works from the config alone (no rrpo_family.json).
    assert family_of(config) == family and family_of(config.to_dict()) == family
    model = getattr(transformers, cls.model_class).from_pretrained(d)
    assert type(model).__name__ == cls.model_class
    assert model.config.text_config.hidden_size == 64 and model.config.text_config.num_hidden_layers == 2
    tok = AutoTokenizer.from_pretrained(d)
    proc = AutoProcessor.from_pretrained(d)
    assert tok.chat_template and proc.chat_template
    vid = tok.convert_tokens_to_ids(proc.video_token)  # the token the template writes for a video
    assert vid != tok.unk_token_id and getattr(model.config, "video_token_id", None) in (vid, None)
    assert len(tok) <= model.config.text_config.vocab_size
    # The saved weights are the ones loaded: a second build with the same seed is identical, another differs.
    meta = json.loads((d / "rrpo_family.json").read_text())
    assert meta["family"] == family and meta["num_frames"] == NUM_FRAMES
    vlm = load_model(d, num_frames=NUM_FRAMES)
    assert vlm.family == family and tuple(vlm.frame_size) == tuple(meta["frame_size"])
    assert vlm.language_model is vlm.inner.language_model
    assert vlm.lm_head.weight.shape[0] == model.config.text_config.vocab_size


def test_tiny_model_seed_determinism(tmp_path):
    a = build_tiny_model("qwen2-vl", tmp_path / "a", seed=3, num_frames=NUM_FRAMES)
    b = build_tiny_model("qwen2-vl", tmp_path / "b", seed=3, num_frames=NUM_FRAMES)
    c = build_tiny_model("qwen2-vl", tmp_path / "c", seed=4, num_frames=NUM_FRAMES)
    sa, sb, sc = (load_model(x).model.state_dict() for x in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_cli_tiny_model(tmp_path):
    from rrpo.cli import main

    out = tmp_path / "m"
    rc = main(
        [
            "tiny-model",
            "--family",
            "llava-next-video",
            "--out",
            str(out),
            "--hidden-size",
            "32",
            "--layers",
            "1",
        ]
    )
    assert rc == 0
    vlm = load_model(out)
    assert vlm.family == "llava-next-video"
    assert vlm.hf_model.config.text_config.hidden_size == 32
    assert vlm.hf_model.config.text_config.num_hidden_layers == 1


def test_unknown_family_and_bad_dirs(tmp_path):
    with pytest.raises(RRPOError, match="unknown model family 'gpt-9'"):
        build_tiny_model("gpt-9", tmp_path / "x")
    with pytest.raises(RRPOError, match="model directory not found"):
        load_model(tmp_path / "missing")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(RRPOError, match="unsupported model_type 'bert'"):
        family_of(tmp_path / "bert")


def test_encode_pair_tokens_and_spans(qwen):
    chosen, rejected = "The car is blue.", "The car is red and small."
    ep = encode_pair(
        qwen, _frames(qwen), "What color is the car?", chosen, rejected, [(11, 15)], [(11, 14), (19, 24)]
    )
    tok = qwen.tokenizer
    assert not ep.truncated
    # The prefix ends with the generation prompt and holds the expanded video placeholder.
    prefix = tok.decode(ep.prefix_ids)
    assert prefix.endswith("<|im_start|>assistant\n") and "What color is the car?" in prefix
    n_video = int((ep.prefix_ids == tok.convert_tokens_to_ids("<|video_pad|>")).sum())
    t, h, w = ep.mm["video_grid_thw"][0].tolist()
    assert n_video == t * h * w // 4 > 0
    # Responses end with the end-of-turn token and decode back to the text.
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    assert ep.chosen_ids[-1].item() == eos and ep.rejected_ids[-1].item() == eos
    assert tok.decode(ep.chosen_ids, skip_special_tokens=True) == chosen
    # Span ids select exactly the tokens covering each span.
    span_text = tok.decode(ep.chosen_ids[ep.chosen_span_ids == 1]).strip()
    assert span_text == "blue"
    assert tok.decode(ep.rejected_ids[ep.rejected_span_ids == 1]).strip() == "red"
    assert tok.decode(ep.rejected_ids[ep.rejected_span_ids == 2]).strip() == "small"
    assert ep.chosen_span_ids.shape == ep.chosen_ids.shape


def test_encode_pair_qwen25_and_qwen3_video_timing(tiny_dirs):
    """Qwen2.5-VL gets second_per_grid_ts from the sampled fps; Qwen3-VL prompt timestamps follow it."""
    q25 = load_model(tiny_dirs["qwen2.5-vl"], num_frames=NUM_FRAMES)
    ep = encode_pair(q25, Clip.uniform(_frames(q25), 1.0), "q", "a b", "a c", [(2, 3)], [(2, 3)])
    assert ep.mm["second_per_grid_ts"].tolist() == [2.0]  # temporal patch 2 / 1 fps
    q3 = load_model(tiny_dirs["qwen3-vl"], num_frames=NUM_FRAMES)
    ep = encode_pair(q3, Clip.uniform(_frames(q3), 1.0), "q", "a b", "a c", [(2, 3)], [(2, 3)])
    text = q3.tokenizer.decode(ep.prefix_ids)
    # frames 0..3 at 1 fps, two per temporal patch: mean timestamps 0.5 s and 2.5 s.
    assert "<0.5 seconds>" in text and "<2.5 seconds>" in text


def test_truncation_and_skip(qwen):
    frames = _frames(qwen)
    chosen, rejected = "The car is blue and it is parked near the house.", "The car is red."
    full = encode_pair(qwen, frames, "What color?", chosen, rejected, [(11, 15)], [(11, 14)])
    p = full.prefix_ids.numel()
    room = 6
    cut = encode_pair(
        qwen, frames, "What color?", chosen, rejected, [(11, 15)], [(11, 14)], max_length=p + room
    )
    assert cut.truncated
    assert torch.equal(cut.prefix_ids, full.prefix_ids)  # the prefix is never cut
    assert torch.equal(cut.chosen_ids, full.chosen_ids[:room])
    assert torch.equal(cut.chosen_span_ids, full.chosen_span_ids[:room])
    assert cut.rejected_ids.numel() == min(room, full.rejected_ids.numel())
    # Fits exactly: not truncated.
    longest = max(full.chosen_ids.numel(), full.rejected_ids.numel())
    exact = encode_pair(
        qwen, frames, "What color?", chosen, rejected, [(11, 15)], [(11, 14)], max_length=p + longest
    )
    assert not exact.truncated
    with pytest.raises(SkipPair, match=f"take {p} tokens, max_length is {p}"):
        encode_pair(qwen, frames, "What color?", chosen, rejected, [(11, 15)], [(11, 14)], max_length=p)
    # A span at the very end of a response that the cut would drop entirely.
    with pytest.raises(SkipPair, match="chosen response would keep 2 of .* lose every differing-span token"):
        encode_pair(qwen, frames, "What color?", chosen, rejected, [(40, 45)], [(11, 14)], max_length=p + 2)


def test_bad_inputs_raise_clear_errors(qwen):
    frames = _frames(qwen)
    with pytest.raises(RRPOError, match=r"chosen_spans\[0\] = \(5, 99\) is not inside the response of 3"):
        encode_pair(qwen, frames, "q", "abc", "abd", [(5, 99)], [(2, 3)])
    with pytest.raises(RRPOError, match=r"rejected_spans\[0\]: a span must be \(start, end\)"):
        encode_pair(qwen, frames, "q", "abc", "abd", [(2, 3)], [None])
    with pytest.raises(RRPOError, match=r"frames must be uint8 \[T, H, W, 3\], got float32"):
        encode_pair(qwen, frames.astype(np.float32), "q", "abc", "abd", [(2, 3)], [(2, 3)])


def test_generation_gives_back_every_submodules_mode(tiny_dirs):
    """A model in training mode with a frozen part in eval mode (its dropout off) has exactly those modes
    after generating: a blanket train() afterwards would switch that part's dropout on."""
    vlm = load_model(tiny_dirs["qwen2-vl"], num_frames=NUM_FRAMES)
    vlm.model.train()
    vlm.inner.visual.eval()
    before = {name: m.training for name, m in vlm.model.named_modules()}
    vlm.generate([(_frames(vlm), "What happens?")], max_new_tokens=2)
    assert {name: m.training for name, m in vlm.model.named_modules()} == before
    assert vlm.model.training and not vlm.inner.visual.training
