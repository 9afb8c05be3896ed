"""Batched greedy generation with left padding (random-weight tiny models: shapes and determinism)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rrpo.models import FAMILIES, build_tiny_model, load_model
from rrpo.models.packing import encode_prefix

NUM_FRAMES = 4


def _frames(vlm, seed):
    h, w = vlm.frame_size
    return np.random.default_rng(seed).integers(0, 256, (NUM_FRAMES, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    return {f: build_tiny_model(f, root / f, num_frames=NUM_FRAMES, seed=2) for f in FAMILIES}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_generate_batch_is_deterministic_and_matches_single(family, dirs):
    vlm = load_model(dirs[family], num_frames=NUM_FRAMES)
    items = [
        (_frames(vlm, 0), "What color is the car?"),
        (_frames(vlm, 1), "How many birds are on the wire now?"),
    ]
    out = vlm.generate(items, max_new_tokens=6, batch_size=2)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
    assert vlm.generate(items, max_new_tokens=6, batch_size=2) == out
    # Left padding does not change what each item gets: batch of 2 == each alone.
    assert [vlm.generate([it], max_new_tokens=6)[0] for it in items] == out
    assert "<|im_end|>" not in "".join(out) and "</s>" not in "".join(out)


def test_greedy_equals_manual_argmax_loop(dirs):
    """Qwen2-VL: generate() == a hand-written argmax loop over full forwards (no cache)."""
    vlm = load_model(dirs["qwen2-vl"], num_frames=NUM_FRAMES)
    frames, prompt = _frames(vlm, 3), "Describe the video."
    n_new = 5
    prefix, mm = encode_prefix(vlm, frames, prompt)
    eos = vlm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = prefix.clone()
    with torch.no_grad():
        for _ in range(n_new):
            types = torch.cat(
                [mm["mm_token_type_ids"], torch.zeros(ids.numel() - prefix.numel(), dtype=torch.long)]
            )
            logits = vlm.model(
                input_ids=ids[None],
                pixel_values_videos=mm["pixel_values_videos"],
                video_grid_thw=mm["video_grid_thw"],
                mm_token_type_ids=types[None].to(mm["mm_token_type_ids"].dtype),
            ).logits
            nxt = int(logits[0, -1].argmax())
            ids = torch.cat([ids, torch.tensor([nxt])])
            if nxt == eos:
                break
    manual = vlm.tokenizer.decode(ids[prefix.numel() :], skip_special_tokens=True).strip()
    assert vlm.generate([(frames, prompt)], max_new_tokens=n_new)[0] == manual


def test_generate_rejects_bad_frames(dirs):
    from rrpo.errors import RRPOError

    vlm = load_model(dirs["llava-next-video"], num_frames=NUM_FRAMES)
    with pytest.raises(RRPOError, match=r"item 1: frames must be uint8"):
        vlm.generate([(_frames(vlm, 0), "a"), (np.zeros((2, 8, 8), dtype=np.uint8), "b")])


def test_real_video_frames_through_encode_and_generate(dirs, sample_video):
    """Frames decoded with PyAV from the shared fixture mp4 go through the processor and the model."""
    from rrpo.models import collate_pairs, encode_pair, pair_forward

    vlm = load_model(dirs["qwen2.5-vl"], num_frames=NUM_FRAMES)
    frames = vlm.read_frames(sample_video)
    assert frames.shape == (NUM_FRAMES, *vlm.frame_size, 3) and frames.dtype == np.uint8
    assert len(vlm.generate([(frames, "What happens?")], max_new_tokens=3)) == 1
    ep = encode_pair(vlm, frames, "What happens?", "A man walks.", "A man runs.", [(6, 11)], [(6, 10)])
    out = pair_forward(vlm, vlm.model, collate_pairs(vlm, [ep]))
    assert (
        torch.isfinite(out.policy_chosen_logps).all() and (out.policy_chosen_logps[out.chosen_mask] < 0).all()
    )


def test_generate_with_saved_lora_adapter(dirs, tmp_path):
    """A LoRA adapter saved by peft and loaded with load_model(adapter_dir=...) generates like the
    in-memory peft model, and differently from the base model."""
    from peft import LoraConfig, get_peft_model

    vlm = load_model(dirs["qwen2-vl"], num_frames=NUM_FRAMES)
    torch.manual_seed(0)
    cfg = LoraConfig(r=4, target_modules=vlm.lora_target_modules, init_lora_weights=False)
    vlm.model = get_peft_model(vlm.model, cfg)
    item = [(_frames(vlm, 3), "Describe the video.")]
    in_memory = vlm.generate(item, max_new_tokens=5)
    vlm.model.save_pretrained(tmp_path / "adapter")
    loaded = load_model(dirs["qwen2-vl"], adapter_dir=tmp_path / "adapter", num_frames=NUM_FRAMES)
    assert loaded.is_peft
    assert loaded.generate(item, max_new_tokens=5) == in_memory
    assert load_model(dirs["qwen2-vl"], num_frames=NUM_FRAMES).generate(item, max_new_tokens=5) != in_memory
