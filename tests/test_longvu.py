"""The LongVU port against the official code's outputs (../shared/fixtures/official_goldens/longvu*): tiny
random weights in the official layout, the exact inputs, every intermediate, log-probs, greedy tokens,
the training forward, the preprocessing, the compression (mix) branch, and the real 7B key list."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from rrpo.models.families.longvu.loading import load_longvu, longvu_config

TOL = 1e-4


@pytest.fixture(scope="module")
def golden(shared_fixtures: Path) -> Path:
    path = shared_fixtures / "official_goldens" / "longvu"
    if not (path / "expected.safetensors").is_file():
        pytest.skip(f"LongVU goldens not found at {path}")
    return path


@pytest.fixture(scope="module")
def model(golden: Path):
    return load_longvu(
        golden / "weights" / "model", vision_towers=golden / "weights", attn_implementation="eager"
    )


def _case(path: Path) -> tuple[dict, dict, dict]:
    from safetensors.torch import load_file

    return (
        load_file(path / "inputs.safetensors"),
        load_file(path / "expected.safetensors"),
        json.loads((path / "meta.json").read_text()),
    )


def _images(inputs: dict) -> list[torch.Tensor]:
    return [inputs["pixel_values_siglip"], inputs["pixel_values_dino"]]  # fp16, as process_images returned


@pytest.mark.parametrize("case", ["longvu", "longvu_compress/mix"])
def test_every_intermediate_and_the_log_probs_equal_the_official_code(golden, model, case):
    path = golden.parent / case
    inputs, expected, meta = _case(path)
    runtime = json.loads((path / "config_runtime.json").read_text())
    model.config.tokenizer_model_max_length = runtime[
        "tokenizer_model_max_length"
    ]  # as the official run set it
    try:
        with torch.no_grad():
            embeds, _, videos = model.splice(inputs["input_ids"], _images(inputs), meta["image_sizes"])
            logits = model(
                input_ids=inputs["input_ids"], images=_images(inputs), image_sizes=meta["image_sizes"]
            ).logits
    finally:
        model.config.tokenizer_model_max_length = 8192
    video = videos[0]
    assert video.kept_frames.tolist() == meta["selected_frame_indices"][0]
    assert (
        video.mix_res
        == meta["branches_fired"]["highres: low-res 8x8 copy of every frame computed (input_mix_res=True)"]
    )
    for name, ours in video.stages.items():
        if name in expected:
            want = expected[name]
            assert (ours.reshape(want.shape) - want).abs().max() < TOL, f"{case}: {name}"
    assert embeds.shape == expected["inputs_embeds"].shape == (1, meta["inputs_embeds_seq_len"], 64)
    assert (embeds - expected["inputs_embeds"]).abs().max() < TOL
    assert (torch.log_softmax(logits.float(), -1) - expected["logprobs"]).abs().max() < TOL


def test_unpad_reads_height_width_as_width_height_like_the_official_code(golden, model):
    """240x320 frames: 12 rows x (10 columns + newline) = 132 tokens per frame (a correct unpad would
    crop rows and give 9 x 13 = 117)."""
    inputs, _, meta = _case(golden)
    with torch.no_grad():
        _, _, videos = model.splice(inputs["input_ids"], _images(inputs), meta["image_sizes"])
    assert videos[0].embeds.shape[0] == 8 * 132 == meta["visual_tokens_total"]


def test_greedy_tokens_equal_the_official_generate(golden, model):
    inputs, expected, meta = _case(golden)
    tokens = model.generate(
        input_ids=inputs["input_ids"],
        images=_images(inputs),
        image_sizes=meta["image_sizes"],
        max_new_tokens=6,
        do_sample=False,
    )
    assert tokens.tolist() == expected["generated_ids"].tolist()


def test_training_forward_equals_the_official_one(golden, model):
    inputs, expected, meta = _case(golden)
    with torch.no_grad():
        out = model(
            input_ids=inputs["train_input_ids"],
            labels=inputs["train_labels"],
            images=_images(inputs),
            image_sizes=meta["image_sizes"],
        )
        _, labels, _ = model.splice(
            inputs["train_input_ids"], _images(inputs), meta["image_sizes"], inputs["train_labels"]
        )
    assert (out.logits - expected["train_logits"]).abs().max() < TOL
    assert abs(out.loss.item() - expected["train_loss"].item()) < TOL
    assert torch.equal(labels, expected["train_labels_expanded"])


def test_preprocessing_of_the_raw_frames_gives_the_official_pixels(golden):
    from rrpo.models.families.longvu.vision import load_tower_processors, longvu_pixels

    inputs, _, _ = _case(golden)
    siglip, dino = load_tower_processors(
        str(golden / "weights" / "siglip"), str(golden / "weights" / "dinov2")
    )
    ours = longvu_pixels(inputs["raw_frames_uint8"].numpy(), siglip, dino)
    for mine, theirs in zip(ours, _images(inputs)):
        assert torch.equal(mine.half(), theirs)  # the official code hands fp16 to the towers


def _real_keys(golden: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """Sections of real_keys.txt: "longvu", "siglip", "dino" -> {key: shape}."""
    sections: dict[str, dict[str, tuple[int, ...]]] = {"longvu": {}}
    current = "longvu"
    for line in (golden / "real_keys.txt").read_text().splitlines():
        if line.startswith("# ---- tower:"):
            current = "siglip" if "Siglip" in line else "dino"
            sections[current] = {}
        elif line and not line.startswith("#"):
            key, shape = line.split("\t")[:2]
            sections[current][key] = tuple(json.loads(shape))
    return sections


def _pattern(key: str) -> str:
    return re.sub(r"\.\d+\.", ".N.", key)


def test_every_real_checkpoint_key_maps_onto_the_port(golden, tmp_path):
    """The real 7B model, built from its real configs on the meta device: every key of the released
    checkpoint is a parameter of the port with its shape, and the port has no other; each real tower
    has the port tower's element count and the key layout of the tiny towers that load (converted by
    transformers' from_pretrained) without a missing or unexpected key."""
    from safetensors import safe_open

    from rrpo.models.families.longvu.modeling import LongVUForCausalLM

    real = _real_keys(golden)
    real_config = golden / "real_config"
    model_dir = tmp_path / "real"
    model_dir.mkdir()
    used = json.loads((real_config / "longvu_qwen2_7b_config_used.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({"model_type": "cambrian_qwen", **used}))  # as released
    towers = tmp_path / "towers"
    for name in ("siglip", "dinov2"):
        (towers / name).mkdir(parents=True)
        (towers / name / "config.json").write_text((real_config / name / "config.json").read_text())
    config = longvu_config(model_dir, vision_towers=towers)
    with torch.device("meta"):
        port = LongVUForCausalLM(config)
    ours = {k: tuple(v.shape) for k, v in port.state_dict().items()}
    language = {k: s for k, s in ours.items() if not k.startswith("vision_towers.")}
    assert language == real["longvu"]
    for section, prefix, tiny in (
        ("siglip", "vision_towers.siglip.", "siglip"),
        ("dino", "vision_towers.dino.", "dinov2"),
    ):
        tower = {k: s for k, s in ours.items() if k.startswith(prefix)}
        count = lambda shapes: sum(int(torch.Size(s).numel()) for s in shapes)  # noqa: E731
        assert count(tower.values()) == count(real[section].values()), section
        with safe_open(str(golden / "weights" / tiny / "model.safetensors"), "pt") as f:
            tiny_patterns = {_pattern(k) for k in f.keys()}
        assert {_pattern(k) for k in real[section]} == tiny_patterns, section


def test_the_family_prompt_and_generation_equal_the_official_ones(golden):
    """Through `load_model` and the adapter: the ChatML prompt gives the official input ids (the video
    as one -200), and generating from the raw frames gives the official greedy tokens."""
    from rrpo.models import load_model
    from rrpo.models.families.longvu.adapter import tokenize_with_video
    from rrpo.models.families.longvu.modeling import IMAGE_TOKEN_INDEX

    inputs, expected, meta = _case(golden)
    vlm = load_model(golden / "weights" / "model", vision_towers=golden / "weights", num_frames=8)
    assert vlm.family == "longvu"
    text = vlm.prompt_text("Describe this video in detail.")
    assert text == meta["prompt"]
    ids = tokenize_with_video(vlm.tokenizer, text, 1)
    assert ids == inputs["input_ids"][0].tolist() and ids.count(IMAGE_TOKEN_INDEX) == 1
    reply = vlm.generate(
        [(inputs["raw_frames_uint8"].numpy(), "Describe this video in detail.")], max_new_tokens=6
    )
    assert reply == [vlm.tokenizer.decode(expected["generated_ids"][0], skip_special_tokens=True).strip()]


def test_a_pair_the_official_rules_would_compress_is_skipped(golden):
    from rrpo.models import SkipPair, encode_pair, load_model

    inputs, _, _ = _case(golden)
    vlm = load_model(golden / "weights" / "model", vision_towers=golden / "weights", num_frames=8)
    frames = inputs["raw_frames_uint8"].numpy()
    pair = encode_pair(vlm, frames, "Describe.", "A cat.", "A dog.", [(2, 5)], [(2, 5)])
    assert int((pair.prefix_ids == -200).sum()) == 8 * 132
    vlm.hf_model.config.tokenizer_model_max_length = 745  # the mix case's context: 8 frames no longer fit
    try:
        with pytest.raises(SkipPair, match="LongVU compresses 8 frames"):
            encode_pair(vlm, frames, "Describe.", "A cat.", "A dog.", [(2, 5)], [(2, 5)])
    finally:
        vlm.hf_model.config.tokenizer_model_max_length = 8192


def test_rrpo_train_and_generate_with_a_tiny_longvu(tmp_path):
    """The whole loop on `rrpo tiny-model --family longvu` (no ../shared needed): train a LoRA adapter
    through the CLI, load it back, generate."""
    import numpy as np

    from rrpo.cli import main
    from rrpo.data.record import PreferencePair, write_pairs
    from rrpo.models import load_model
    from rrpo.video import write_video

    assert main(["tiny-model", "--family", "longvu", "--out", str(tmp_path / "model"), "--frames", "4"]) == 0
    assert (tmp_path / "model" / "siglip" / "config.json").is_file()  # the released layout: towers beside
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(4):
        write_video(
            tmp_path / "videos" / f"v{i}.mp4", rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8), fps=8
        )
        pairs.append(PreferencePair(f"p{i}", f"videos/v{i}.mp4", "What?", "Yes", "No", [(0, 3)], [(0, 2)]))
    write_pairs(tmp_path / "pairs.jsonl", pairs)
    args = [
        "train",
        "--model",
        str(tmp_path / "model"),
        "--data",
        str(tmp_path / "pairs.jsonl"),
        "--video-root",
        str(tmp_path),
    ]
    args += [
        "--out",
        str(tmp_path / "run"),
        "--frames",
        "4",
        "--lora-r",
        "4",
        "--lora-alpha",
        "8",
        "--batch-size",
        "2",
    ]
    assert (
        main(
            [
                *args,
                "--max_steps",
                "2",
                "--warmup-ratio",
                "0",
                "--learning-rate",
                "1e-2",
                "--report_to",
                "none",
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 2 and summary["pairs_used"] == 4
    vlm = load_model(tmp_path / "model", adapter_dir=tmp_path / "run", num_frames=4)
    lora = [n for n, _ in vlm.model.named_parameters() if "lora_" in n]
    assert lora and all(".model.layers." in n for n in lora)
    frames = vlm.read_clip(tmp_path / "videos" / "v0.mp4")
    assert len(vlm.generate([(frames, "What?")], max_new_tokens=3)) == 1
