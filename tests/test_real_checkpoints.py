"""The supported checkpoints fed as their authors feed them, on shrunk copies of the real files.

Real configs, processors, chat templates, tokenizers (the 151k-token Qwen vocabulary) and generation
configs from ../shared/fixtures/real_checkpoints, random weights (tests/real_checkpoints.py). Checked
against independent computations: the templates' own token ids, qwen-vl-utils' sizing rule, the frame
times of a synthetic 60-second clip, and the generation config's eos ids.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from real_checkpoints import REAL_CHECKPOINTS, REAL_FAMILIES, hub_cache_layout, shrink_checkpoint  # noqa: I001

from rrpo.errors import RRPOError
from rrpo.models import encode_pair, load_model
from rrpo.video import sample_frame_indices, write_video
from rrpo.video.io import Clip, decode_clip


@pytest.fixture(scope="session")
def real_dir(shared_fixtures):
    path = shared_fixtures / "real_checkpoints"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def shrunk(real_dir, tmp_path_factory):
    """One shrunk model per family, built once per test run, laid out like a download."""
    root = tmp_path_factory.mktemp("shrunk")
    return {f: shrink_checkpoint(real_dir / f, f, root / f) for f in REAL_FAMILIES}


@pytest.fixture(scope="session")
def vlms(shrunk):
    return {f: load_model(shrunk[f], num_frames=16) for f in REAL_FAMILIES}


def _clip(h, w, t=16, fps=2.0, seed=0):
    frames = np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    return Clip.uniform(frames, fps)


QUESTIONS = {
    "mcq": (
        "Which direction does the car move?\nOptions:\n(A) left\n(B) right\nAnswer with the letter.",
        "(B) right",
        "(A) left",
    ),
    "yesno": ("Is there a dog in the video? Answer yes or no.", "Yes", "No"),
    "open": (
        "Describe what happens in the video.",
        "A red car drives to the left past a tree.",
        "A blue car drives to the right past a house.",
    ),
}


@pytest.mark.parametrize("qtype", list(QUESTIONS))
@pytest.mark.parametrize("family", REAL_FAMILIES)
def test_prompt_and_target_ids_equal_the_real_template(family, qtype, vlms):
    """prefix + chosen (+ end of turn) == the checkpoint's own template rendering of the conversation."""
    vlm = vlms[family]
    prompt, chosen, rejected = QUESTIONS[qtype]
    clip = _clip(240, 320)
    ep = encode_pair(vlm, clip, prompt, chosen, rejected, [], [])
    conv = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]},
        {"role": "assistant", "content": [{"type": "text", "text": chosen}]},
    ]
    text = vlm.processor.apply_chat_template(conv, tokenize=False)
    if family == "qwen3-vl":  # the official layout (see test_qwen3_vl_markers_are_not_nested)
        text = text.replace("<|vision_start|><|video_pad|><|vision_end|>", "<|video_pad|>")
    ref = vlm.video_inputs([text], [clip])["input_ids"][0].tolist()
    ours = ep.prefix_ids.tolist() + ep.chosen_ids.tolist()
    if family == "llava-next-video":
        # Its template closes an assistant turn with a space and no end-of-turn token; the model stops by
        # emitting </s>, so rrpo's target is the content then EOS (the template's trailing space dropped).
        assert ours[-1] == vlm.tokenizer.eos_token_id
        ours = ours[:-1]
    assert ours == ref[: len(ours)]
    # What follows the end of turn in the template is only layout (a newline), never content.
    assert vlm.tokenizer.decode(ref[len(ours) :]).strip() == ""
    assert ep.chosen_ids[-1].item() in vlm.stop_token_ids


def test_qwen3_vl_markers_are_not_nested(vlms):
    vlm = vlms["qwen3-vl"]
    clip = _clip(240, 320)
    ids = encode_pair(vlm, clip, "q", "a", "b", [], []).prefix_ids
    text = vlm.tokenizer.decode(ids)
    groups = clip.num_frames // 2
    assert text.count("<|vision_start|>") == groups == text.count("<|vision_end|>")
    assert "<|vision_start|><|vision_start|>" not in text and "<|vision_end|><|vision_end|>" not in text
    import re

    # A timestamp comes before each start marker, never inside one.
    assert len(re.findall(r"<[0-9.]+ seconds><\|vision_start\|>", text)) == groups
    assert not re.search(r"<\|vision_start\|><[0-9]", text)


def test_thinking_template_is_refused(shrunk, real_dir, tmp_path):
    import shutil

    d = tmp_path / "thinking"
    shutil.copytree(shrunk["qwen3-vl"], d)
    (d / "chat_template.jinja").write_text(
        (real_dir / "qwen3-vl" / "chat_template.Thinking-variant.jinja.txt").read_text()
    )
    with pytest.raises(RRPOError, match="Thinking"):
        load_model(d)


def _qwen_ref_size(h, w, factor, min_px, max_px):
    """qwen-vl-utils' smart_resize, written out independently."""
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    if hb * wb > max_px:
        beta = math.sqrt(h * w / max_px)
        hb, wb = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif hb * wb < min_px:
        beta = math.sqrt(min_px / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def _expected(family, h, w, t=16):
    """(video tokens, per-frame (h, w)) the reference pipelines give for t frames of h x w (random
    content: VideoLLaMA3's token compression keeps every patch of noise)."""
    if family in ("qwen2-vl", "qwen2.5-vl"):  # VIDEO_MAX_PIXELS 768*28*28, processor min 56*56
        fh, fw = _qwen_ref_size(h, w, 28, 3136, 768 * 28 * 28)
        return (t // 2) * (fh // 28) * (fw // 28), (fh, fw)
    if family == "qwen3-vl":  # factor 32; 768 tokens' worth per frame, 24 M pixels for all frames
        cap = min(768 * 32 * 32, 25165824 // t)
        fh, fw = _qwen_ref_size(h, w, 32, 4096, cap)
        return (t // 2) * (fh // 32) * (fw // 32), (fh, fw)
    if family == "llava-onevision":  # 384 x 384, 27x27 SigLIP patches pooled 2x2 -> 14x14, one newline
        return t * 14 * 14 + 1, (384, 384)
    if family in ("internvl", "internvl3_5-rebuilt"):  # every frame one 448 x 448 image, 256 tokens
        return t * 256, (448, 448)
    if family == "videollama3":  # factor 28 (patch 14, merge 2); the 12.8 M pixel budget shared by the frames
        fh, fw = _qwen_ref_size(h, w, 28, 12544, 12845056 // t)
        return t * (fh // 28) * (fw // 28), (fh, fw)
    return t * 12 * 12, (336, 336)  # NeXT-Video: shortest edge 336, centre crop, 24x24 pooled by 2


# The token that stands for one video feature in each checkpoint's prompt.
VIDEO_TOKEN = {"llava-onevision": "<video>", "llava-next-video": "<video>", "internvl": "<IMG_CONTEXT>",
               "internvl3_5-rebuilt": "<IMG_CONTEXT>"}  # fmt: skip


def _video_token_id(vlm, family):
    return vlm.tokenizer.convert_tokens_to_ids(VIDEO_TOKEN.get(family, "<|video_pad|>"))


@pytest.mark.parametrize("size", [(480, 640), (720, 1280)], ids=["4:3", "16:9"])
@pytest.mark.parametrize("family", REAL_FAMILIES)
def test_video_tokens_and_frame_size_follow_the_reference_sizing(family, size, vlms):
    vlm = vlms[family]
    clip = _clip(*size, seed=1)
    inputs = vlm.video_inputs([vlm.prompt_text("q")], [clip])
    n_tokens = int((inputs["input_ids"][0] == _video_token_id(vlm, family)).sum())
    tokens, (fh, fw) = _expected(family, *size)
    assert n_tokens == tokens
    if "video_grid_thw" in inputs:  # Qwen, VideoLLaMA3: the patch grid of each frame
        patch = vlm.processor.video_processor.patch_size
        _, gh, gw = inputs["video_grid_thw"][0].tolist()
        assert (gh * patch, gw * patch) == (fh, fw)
    if "video_compression_mask" in inputs:  # VideoLLaMA3: the processor's own count of kept features
        assert n_tokens == int(inputs["video_compression_mask"].sum())
    if "pixel_values_videos" in inputs and inputs["pixel_values_videos"].dim() == 5:  # LLaVA: [B, T, C, H, W]
        assert tuple(inputs["pixel_values_videos"].shape[-2:]) == (fh, fw)
    if "pixel_values" in inputs:  # InternVL: one image per frame, in the clip's order
        assert tuple(inputs["pixel_values"].shape) == (clip.num_frames, 3, fh, fw)


def test_llava_next_video_centre_crops_instead_of_squashing(vlms):
    """A 16:9 frame whose left 15 % is white: shortest-edge resize + centre crop removes that band."""
    vlm = vlms["llava-next-video"]
    frames = np.zeros((16, 360, 640, 3), np.uint8)
    frames[:, :, :96] = 255
    px = vlm.video_inputs([vlm.prompt_text("q")], [Clip.uniform(frames, 2.0)])["pixel_values_videos"]
    assert float(px.max()) < -1.0  # all black after normalisation: the white band was cropped away


@pytest.fixture(scope="session")
def minute_clip(tmp_path_factory):
    """A synthetic 60-second clip at 4 fps (240 frames), each frame's brightness its index."""
    path = tmp_path_factory.mktemp("minute") / "minute.mp4"
    frames = np.zeros((240, 48, 64, 3), np.uint8)
    frames[:] = np.arange(240, dtype=np.uint8)[:, None, None, None]
    write_video(path, frames, fps=4.0)
    return path


def test_decoded_timing_is_the_real_frame_times(minute_clip):
    expected = [i / 4.0 for i in sample_frame_indices(240, 16)]
    for seek in (False, True):
        clip = decode_clip(minute_clip, 16, seek=seek)
        assert clip.timestamps == pytest.approx(expected, abs=1e-6)
        assert clip.source_fps == pytest.approx(4.0) and clip.duration == pytest.approx(60.0, abs=0.3)
        # The content is the frame at that time (brightness = index, H.264 within a few levels).
        assert np.abs(clip.frames.mean(axis=(1, 2, 3)) - np.array(expected) * 4).max() < 4
    by_rate = decode_clip(minute_clip, fps=0.5)
    assert by_rate.num_frames == 30 and by_rate.timestamps[1] - by_rate.timestamps[0] == pytest.approx(2.0)


def test_qwen25_vl_temporal_positions_use_the_real_frame_spacing(vlms, minute_clip):
    vlm = vlms["qwen2.5-vl"]
    clip = vlm.read_clip(minute_clip)
    ep = encode_pair(vlm, clip, "q", "a", "b", [], [])
    assert ep.mm["second_per_grid_ts"].tolist() == pytest.approx([7.5])  # 2 frames x 60 s / 16
    pos, _ = vlm.prefix_positions(ep.prefix_ids, ep.mm)
    video_id = vlm.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    t_axis = pos[0][ep.prefix_ids == video_id]
    # tokens_per_second 2 in the config: 7 steps of 7.5 s x 2 = 105 positions from first to last group.
    assert int(t_axis.max() - t_axis.min()) == 105


def test_qwen3_vl_prompt_timestamps_are_the_real_frame_times(vlms, minute_clip):
    vlm = vlms["qwen3-vl"]
    clip = vlm.read_clip(minute_clip)
    text = vlm.tokenizer.decode(encode_pair(vlm, clip, "q", "a", "b", [], []).prefix_ids)
    times = [i / 4.0 for i in sample_frame_indices(240, 16)]
    for a, b in zip(times[::2], times[1::2]):
        assert f"<{(a + b) / 2:.1f} seconds>" in text


@pytest.mark.parametrize("folder", ["internvl", "internvl3_5-rebuilt"])
def test_internvl_frames_are_numbered_images_in_the_clips_order(folder, vlms, minute_clip):
    """InternVL sees no time: `Frame{i}: <img>...</img>` per sampled frame, in order, and the i-th image is
    the i-th frame (the minute clip's brightness is its frame index, so the images brighten in order)."""
    vlm = vlms[folder]
    clip = vlm.read_clip(minute_clip)
    ep = encode_pair(vlm, clip, "q", "a", "b", [], [])
    text = vlm.tokenizer.decode(ep.prefix_ids)
    import re

    assert re.findall(r"Frame(\d+): <img>", text) == [str(i) for i in range(1, 17)]
    assert text.count("<IMG_CONTEXT>") == 16 * 256 and "seconds" not in text and "Time" not in text
    brightness = ep.mm["pixel_values"].mean(dim=(1, 2, 3))
    assert ep.mm["pixel_values"].shape[0] == 16 and bool((brightness.diff() > 0).all())


def test_videollama3_prompt_times_are_the_real_frame_times(vlms, minute_clip):
    """`Time {t:.1f}s:` per frame from the clip's metadata (without it the processor would assume 1 fps:
    0.0, 1.0, 2.0 ...)."""
    vlm = vlms["videollama3"]
    clip = vlm.read_clip(minute_clip)
    text = vlm.tokenizer.decode(encode_pair(vlm, clip, "q", "a", "b", [], []).prefix_ids)
    import re

    times = [i / 4.0 for i in sample_frame_indices(240, 16)]
    assert re.findall(r"Time ([0-9.]+)s:", text) == [f"{t:.1f}" for t in times]
    assert times[-1] > 55  # a real minute, not 16 s at an assumed 1 fps


def test_videollama3_token_count_follows_the_processors_compression(vlms):
    """Token compression drops patches that do not change: a still clip keeps far fewer tokens, and the
    prefix holds exactly as many video tokens as the processor's mask keeps, for still and noisy clips."""
    vlm = vlms["videollama3"]
    still = np.repeat(np.random.default_rng(3).integers(0, 256, (1, 180, 320, 3), dtype=np.uint8), 16, axis=0)
    counts = {}
    for name, frames in (("still", still), ("noise", _clip(180, 320, seed=4).frames)):
        ep = encode_pair(vlm, Clip.uniform(frames, 2.0), "q", "a", "b", [], [])
        kept = int(ep.mm["video_compression_mask"].sum())
        assert int((ep.prefix_ids == _video_token_id(vlm, "videollama3")).sum()) == kept
        counts[name] = (kept, int(ep.mm["video_compression_mask"].numel()))
    assert counts["noise"][0] == counts["noise"][1]  # noise changes everywhere: nothing dropped
    assert counts["still"][0] < counts["still"][1] // 4  # only the first frame's patches (+1 per frame)


@pytest.mark.parametrize("family", REAL_FAMILIES)
def test_generation_stops_at_every_eos_id_of_the_generation_config(family, vlms, real_dir):
    vlm = vlms[family]
    gen_eos = vlm.hf_model.generation_config.eos_token_id
    gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos]
    assert set(gen_eos) <= set(vlm.stop_token_ids)
    word = vlm.tokenizer("Yes", add_special_tokens=False)["input_ids"][-1]
    for eos in gen_eos:
        steps = []

        def force(module, args, output, eos=eos, steps=steps):
            # Two ordinary tokens, then this eos id, then (if generation went on) more ordinary ones.
            target = eos if len(steps) == 2 else word
            steps.append(target)
            output = output.clone()
            output[..., target] = 1e4
            return output

        handle = vlm.lm_head.register_forward_hook(force)
        try:
            out = vlm.generate([(_clip(64, 64), "q")], max_new_tokens=8)
        finally:
            handle.remove()
        assert len(steps) == 3, f"generation did not stop at eos id {eos}"
        # Two forced words and nothing after them (SentencePiece may put a space between them).
        assert out[0].replace(" ", "") == vlm.tokenizer.decode([word, word]).replace(" ", "")
    written = json.loads((real_dir / family / "generation_config.json").read_text())
    assert vlm.pad_token_id == written.get("pad_token_id", vlm.tokenizer.pad_token_id)


def test_hub_id_from_local_cache_offline(shrunk, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    hub_cache_layout(shrunk["qwen2.5-vl"], cache, "Qwen/Qwen2.5-VL-7B-Instruct")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    vlm = load_model("Qwen/Qwen2.5-VL-7B-Instruct")
    assert vlm.family == "qwen2.5-vl"
    with pytest.raises(RRPOError, match="HF_HUB_OFFLINE is set and no copy"):
        load_model("Qwen/Qwen3-VL-8B-Instruct")
    with pytest.raises(RRPOError, match="model directory not found"):
        load_model("./no/such/dir")


def test_early_snapshot_processor_gets_an_error_that_says_what_to_change(shrunk, real_dir, tmp_path):
    import shutil

    d = tmp_path / "early"
    shutil.copytree(shrunk["qwen2.5-vl"], d)
    shutil.copy(
        real_dir / "qwen2.5-vl" / "preprocessor_config.json.mirror-early-revision",
        d / "preprocessor_config.json",
    )
    with pytest.raises(RRPOError, match="Qwen2VLImageProcessor"):
        load_model(d)


def test_unknown_model_type_lists_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(RRPOError, match="unsupported model_type 'gpt2'.*qwen2.5-vl"):
        load_model(tmp_path)


def test_attn_implementation_flash_is_refused_with_the_reason(shrunk):
    with pytest.raises(RRPOError, match="4D float mask"):
        load_model(shrunk["qwen2-vl"], attn_implementation="flash_attention_2")
    assert torch.float32 == load_model(shrunk["qwen2-vl"], dtype="fp32").dtype


HUB_IDS = {
    "qwen2.5-vl": "Qwen/Qwen2.5-VL-7B-Instruct",
    "internvl": "OpenGVLab/InternVL3-8B-hf",
    "videollama3": "lkhl/VideoLLaMA3-7B-Image-HF",
}
E2E_CASES = [(f, "download-dir") for f in REAL_FAMILIES] + [(f, "hub-id") for f in HUB_IDS]


@pytest.mark.parametrize(("family", "source"), E2E_CASES)
def test_generate_train_eval_deviation_merge_end_to_end(family, source, shrunk, tmp_path, monkeypatch):
    """The whole loop on each shrunk real checkpoint (no rrpo_family.json), from a directory laid out
    like a download, and for Qwen2.5-VL, InternVL3 and VideoLLaMA3 from a Hub id served by an offline
    Hugging Face cache."""
    import json

    from rrpo.cli import main

    model = str(shrunk[family])
    assert not (shrunk[family] / "rrpo_family.json").exists()
    if source == "hub-id":
        import huggingface_hub.constants as c

        cache = tmp_path / "hub"
        hub_cache_layout(shrunk[family], cache, HUB_IDS[family])
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
        model = HUB_IDS[family]
    from rrpo.models.base import VideoLMAdapter

    real_generate = VideoLMAdapter.generate

    def answers_no(self, items, **kw):
        # Random weights answer gibberish (unjudged); steer the real generation to "No" + <|im_end|>.
        no, end = self.tokenizer("No", add_special_tokens=False)["input_ids"][-1], self.stop_token_ids[0]

        state = {}

        def step(module, args, kwargs):
            ids = kwargs.get("input_ids")
            state["prefill"] = ids is not None and ids.shape[1] > 1

        def force(module, args, out):
            out = out.clone()
            out[..., no if state["prefill"] else end] = 1e4  # the prompt step says "No", the next stops
            return out

        handles = [
            self.hf_model.register_forward_pre_hook(step, with_kwargs=True),
            self.lm_head.register_forward_hook(force),
        ]
        try:
            return real_generate(self, items, **kw)
        finally:
            for h in handles:
                h.remove()

    monkeypatch.setattr(VideoLMAdapter, "generate", answers_no)
    rng = np.random.default_rng(0)
    videos = tmp_path / "videos"
    qs = []
    for i in range(3):
        write_video(videos / f"v{i}.mp4", rng.integers(0, 255, (8, 48, 64, 3), dtype=np.uint8), fps=4)
        qs.append(
            {
                "id": f"q{i}",
                "video": f"v{i}.mp4",
                "question": f"Is there a dog {i}?",
                "answer": "yes",
                "answer_type": "yesno",
            }
        )
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    common = ["--model", model, "--frames", "4", "--dtype", "fp32"]
    pairs = tmp_path / "gen" / "pairs.jsonl"
    assert (
        main(
            [
                "generate",
                *common,
                "--data",
                str(tmp_path / "q.jsonl"),
                "--video-root",
                str(videos),
                "--out",
                str(pairs),
                "--max-new-tokens",
                "3",
            ]
        )
        == 0
    )
    assert len(pairs.read_text().splitlines()) == 3  # a random model answers every question wrongly
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                *common,
                "--data",
                str(pairs),
                "--video-root",
                str(videos),
                "--out",
                str(run),
                "--max-steps",
                "1",
                "--grad-accum",
                "1",
                "--lora-r",
                "4",
                "--lora-alpha",
                "8",
                # the shrunk real Qwen2.5-VL also trains through the shared-prefix attention (issue 25)
                *(["--attn-implementation", "shared-prefix"] if family == "qwen2.5-vl" else []),
            ]
        )
        == 0
    )
    assert (run / "adapter_model.safetensors").is_file()
    vh = tmp_path / "vh" / "object_relation"
    vh.mkdir(parents=True)
    (vh / "object_relation.json").write_text(
        json.dumps(
            [
                {
                    "basic": {"video": "v0.mp4", "question": "Is there a dog?", "answer": "yes"},
                    "hallucination": {"video": "v1.mp4", "question": "Is there a cat?", "answer": "no"},
                    "type": "object_relation",
                }
            ]
        )
    )
    ev = tmp_path / "ev"
    assert (
        main(
            [
                "eval",
                *common,
                "--adapter",
                str(run),
                "--benchmark",
                "videohallucer",
                "--annotations",
                str(tmp_path / "vh"),
                "--video-root",
                str(videos),
                "--out",
                str(ev),
                "--max-new-tokens",
                "3",
            ]
        )
        == 0
    )
    assert len((ev / "predictions.jsonl").read_text().splitlines()) == 2
    dev = tmp_path / "dev"
    assert (
        main(
            [
                "deviation",
                *common,
                "--adapter",
                str(run),
                "--data",
                str(pairs),
                "--video-root",
                str(videos),
                "--out",
                str(dev),
            ]
        )
        == 0
    )
    assert json.loads((dev / "deviation.json").read_text())["examples"] == 3
    merged = tmp_path / "merged"
    assert main(["merge", "--model", model, "--adapter", str(run), "--out", str(merged)]) == 0
    again = load_model(merged, num_frames=4)
    source_eos = json.loads((shrunk[family] / "generation_config.json").read_text())["eos_token_id"]
    source_eos = source_eos if isinstance(source_eos, list) else [source_eos]
    assert again.family == REAL_CHECKPOINTS[family] and set(source_eos) <= set(again.stop_token_ids)


def test_inspect_json_fields(shrunk, sample_video, tmp_path, capsys):
    import json

    from rrpo.cli import main

    assert (
        main(
            [
                "inspect",
                "--model",
                str(shrunk["qwen2.5-vl"]),
                "--video",
                str(sample_video),
                "--question",
                "What happens?",
                "--sheet",
                str(tmp_path / "s.png"),
                "--json",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    info = json.loads(text[text.index("{\n") :])
    tokens, hw = _expected("qwen2.5-vl", 480, 640)
    assert info["video_tokens"] == tokens and info["frame_hw_seen_by_model"] == list(hw)
    assert info["timestamps_s"] == [round(t, 3) for t in decode_clip(sample_video, 16).timestamps]
    assert (
        info["stop_token_ids"][:2] == [151645, 151643]
        and f"<|video_pad|> x {tokens}<|vision_end|>" in info["prompt"]
    )
    assert info["second_per_grid_ts"] == [round(2 / (16 / 161 * 30000 / 1001), 4)]
    assert (tmp_path / "s.png").is_file() and info["contact_sheet"] == str(tmp_path / "s.png")


@pytest.mark.parametrize("folder", ["internvl", "internvl3_5-rebuilt", "videollama3"])
def test_inspect_shows_what_the_new_families_see(folder, shrunk, sample_video, tmp_path, capsys):
    import json

    from rrpo.cli import main

    args = ["inspect", "--model", str(shrunk[folder]), "--video", str(sample_video), "--question", "Why?"]
    assert main([*args, "--sheet", str(tmp_path / "s.png"), "--json"]) == 0
    text = capsys.readouterr().out
    info = json.loads(text[text.index("{\n") :])
    tokens, hw = _expected(folder, 480, 640)
    assert info["family"] == REAL_CHECKPOINTS[folder] and info["frame_hw_seen_by_model"] == list(hw)
    assert info["video_tokens"] == tokens and info["stop_token_ids"] == [151645]
    token = VIDEO_TOKEN.get(folder, "<|video_pad|>")
    if folder == "videollama3":  # 16 timed frames of 17 x 23 merged patches
        assert info["prompt"].count(f"{token} x {tokens // 16}") == 16 and "Time 5.2s:" in info["prompt"]
        assert info["video_tokens_before_compression"] == tokens
    else:  # 16 numbered 448-px images
        assert info["prompt"].count(f"<img>{token} x 256</img>") == 16 and "Frame16: " in info["prompt"]


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("GatedRepoError", "gated; accept its licence"),
        ("RepositoryNotFoundError", "no such repository"),
        ("RevisionNotFoundError", "revision 'v9' not found"),
    ],
)
def test_hub_errors_say_what_is_wrong(error, message, monkeypatch):
    """The Hub's refusals become one-line errors (the Hub itself is replaced: no network here)."""
    from types import SimpleNamespace

    import huggingface_hub
    import huggingface_hub.errors as errors

    # The error classes read only the response's headers and request.
    response = SimpleNamespace(headers={}, request=None, status_code=404)

    def refuse(*args, **kwargs):
        raise getattr(errors, error)("refused", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(RRPOError, match=message):
        load_model("acme/video-model", revision="v9")


@pytest.mark.parametrize("family", REAL_FAMILIES)
def test_packed_pass_equals_plain_passes_on_the_real_files(family, vlms, minute_clip):
    """With each checkpoint's own processor, template and (shrunk) config: the packed pass, whose
    positions are computed on the device by the batched `rope_positions` (Qwen: the model's 3-axis rope
    index with the real frame timing), gives the log-probs of two plain passes, for a batch of two pairs
    of different lengths."""
    from rrpo.models import collate_pairs, pair_forward
    from rrpo.models.packing import packed_position_ids

    vlm = vlms[family]
    clip = vlm.read_clip(minute_clip)
    pairs = [
        encode_pair(vlm, clip, "What is shown?", "a red ball rolls", "a blue box", [(2, 5)], [(2, 6)]),
        encode_pair(vlm, clip, "Which way?", "(B) left", "(A) right", [(1, 2)], [(1, 2)]),
    ]
    batch = collate_pairs(vlm, pairs, layout="both")
    positions = packed_position_ids(vlm, batch)
    positions = positions if vlm.mrope else positions.unsqueeze(0)
    for row, pair in enumerate(pairs):
        pos, _ = vlm.prefix_positions(pair.prefix_ids, pair.mm)
        assert torch.equal(positions[:, row, : pos.shape[1]], pos), family
    with torch.no_grad():
        packed = pair_forward(vlm, vlm.model, batch, reference=False)
        segments = pair_forward(vlm, vlm.model, batch, reference=False, attention="shared-prefix")
        plain = pair_forward(vlm, vlm.model, batch, reference=False, packed=False)
    for name in ("policy_chosen_logps", "policy_rejected_logps"):
        assert (getattr(packed, name) - getattr(plain, name)).abs().max() < 1e-4, (family, name)
        # The shared-prefix attention (no L x L mask) on the real files: the same numbers.
        assert (getattr(segments, name) - getattr(plain, name)).abs().max() < 1e-4, (family, name, "segments")


@pytest.mark.parametrize("family", REAL_FAMILIES)
def test_reused_video_tensors_equal_one_processor_call(family, vlms):
    """Questions on one clip in a row (rrpo eval's order) reuse its video tensors: the inputs equal one
    plain processor call on the whole batch, and each distinct clip is processed once."""
    vlm = vlms[family]
    a = Clip.uniform(np.random.default_rng(1).integers(0, 256, (16, 90, 160, 3), dtype=np.uint8), 2.0)
    b = Clip.uniform(np.random.default_rng(2).integers(0, 256, (16, 90, 160, 3), dtype=np.uint8), 4.0)
    texts = [vlm.prompt_text(p) for p in ("What happens?", "Is there a dog? Answer yes or no.", "Count.")]
    clips = [a, a, b]
    reference = vlm.processor(
        text=texts,
        videos=[c.frames for c in clips],
        return_tensors="pt",
        padding=True,
        **vlm.processor_video_kwargs(clips),
    )
    vlm._video_reuser = None  # a fresh memo
    first = vlm.video_inputs(texts, clips, padding=True)
    assert vlm._video_reuser.computed == 2
    again = vlm.video_inputs(texts[:1], [a], padding=True)  # the next batch, same clip: nothing recomputed
    assert vlm._video_reuser.computed == 2
    assert set(first) == set(reference)
    for key, value in reference.items():
        assert torch.equal(first[key], value) if torch.is_tensor(value) else first[key] == value, key
    alone = vlm.processor(
        text=texts[:1],
        videos=[a.frames],
        return_tensors="pt",
        padding=True,
        **vlm.processor_video_kwargs([a]),
    )
    for key, value in alone.items():
        assert torch.equal(again[key], value) if torch.is_tensor(value) else again[key] == value, key


def test_tiny_model_from_config_shrinks_a_real_checkpoint(real_dir, tmp_path, capsys):
    """`rrpo tiny-model --from-config DIR`: a random-weight model of the real class from a checkpoint's own
    files, vocabulary and template kept, that loads and answers (the fixtures README's recipe)."""
    from rrpo.cli import main

    out = tmp_path / "shrunk"
    assert main(["tiny-model", "--from-config", str(real_dir / "qwen3-vl"), "--out", str(out)]) == 0
    vlm = load_model(out, num_frames=4)
    real = json.loads((real_dir / "qwen3-vl" / "config.json").read_text())
    assert vlm.family == "qwen3-vl" and not (out / "rrpo_family.json").exists()
    assert vlm.hf_model.config.text_config.vocab_size == real["text_config"]["vocab_size"]
    assert vlm.hf_model.config.text_config.hidden_size == 64
    assert len(vlm.generate([(_clip(64, 64, t=4), "q")], max_new_tokens=2)) == 1
    assert main(["tiny-model", "--out", str(tmp_path / "x")]) == 1
    assert "give --family or --from-config" in capsys.readouterr().err
