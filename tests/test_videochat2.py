"""The VideoChat2 port's core (UMT ViT, transformers' InstructBLIP Q-Former, Mistral) against the official
code's outputs (../shared/fixtures/official_goldens/videochat2): the merged tiny model, its exact inputs,
every intermediate, the inference log-probs and the greedy tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

TOL = 1e-4


@pytest.fixture(scope="module")
def golden(shared_fixtures: Path) -> Path:
    path = shared_fixtures / "official_goldens" / "videochat2"
    if not (path / "merged_state_dict.safetensors").is_file():
        pytest.skip(f"VideoChat2 goldens not found at {path}")
    return path


@pytest.fixture(scope="module")
def model(golden: Path):
    from safetensors.torch import load_file
    from transformers import InstructBlipQFormerConfig, MistralConfig

    from rrpo.models.families.videochat2.modeling import VideoChat2, qformer_key

    cfg = json.loads((golden / "config_mistral.json").read_text())["model"]
    merged = load_file(golden / "merged_state_dict.safetensors")
    bert = json.loads((golden / "weights" / "bert" / "config.json").read_text())
    qformer = InstructBlipQFormerConfig(
        vocab_size=merged["qformer.bert.embeddings.word_embeddings.weight"].shape[0],
        hidden_size=bert["hidden_size"],
        num_hidden_layers=bert["num_hidden_layers"],
        num_attention_heads=bert["num_attention_heads"],
        intermediate_size=bert["intermediate_size"],
        hidden_act=bert["hidden_act"],
        max_position_embeddings=bert["max_position_embeddings"],
        layer_norm_eps=bert["layer_norm_eps"],
        pad_token_id=bert["pad_token_id"],
        cross_attention_frequency=2,
        encoder_hidden_size=cfg["vision_encoder"]["encoder_embed_dim"],
    )
    mistral = MistralConfig.from_pretrained(golden / "weights" / "mistral")
    mistral._attn_implementation = "eager"
    port = VideoChat2(
        cfg["vision_encoder"], qformer, mistral, cfg["num_query_token"], cfg["extra_num_query_token"]
    )
    state = {qformer_key(k) if k.startswith("qformer.bert.") else k: v for k, v in merged.items()}
    state.pop("qformer.embeddings.position_ids")  # a buffer, not a weight
    port.load_state_dict(state, strict=True)
    return port.eval()


def _case(golden: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    return load_file(golden / "inputs.safetensors"), load_file(golden / "expected.safetensors")


def test_position_table_is_the_official_4_frame_table_interpolated_to_8(golden):
    from rrpo.models.families.videochat2.modeling import sinusoid_table

    inputs, _ = _case(golden)
    assert (sinusoid_table(8, 64) - inputs["vit_pos_embed"]).abs().max() < 1e-6


def test_every_intermediate_and_the_log_probs_equal_the_official_code(golden, model):
    inputs, expected = _case(golden)
    with torch.no_grad():
        visual = model.encode_video(
            inputs["video"], inputs["qformer_input_ids"], inputs["qformer_attention_mask"]
        )
        for name in ("vit_out", "vision_layernorm_out", "qformer_last_hidden", "image_emb"):
            assert (model.stages[name] - expected[name]).abs().max() < TOL, name
        assert visual.shape == (1, 96, 64)  # 32 + 64 query tokens, whatever the frame count
        embed = model.mistral_model.get_input_embeddings()
        embeds = torch.cat([embed(inputs["infer_seg0_ids"]), visual, embed(inputs["infer_seg1_ids"])], dim=1)
        assert (embeds - expected["infer_inputs_embeds"]).abs().max() < TOL
        logits = model.mistral_model(inputs_embeds=embeds).logits
        assert (torch.log_softmax(logits, -1) - expected["infer_logprobs"]).abs().max() < TOL
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        tokens = model.mistral_model.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=6, do_sample=False, num_beams=1
        )
    assert tokens[0].tolist() == expected["infer_generated_ids"].tolist()


@pytest.mark.parametrize("source", ["stage3", "stage3/videochat2_mistral_7b_stage3.pth"])
def test_loading_stage3_and_merging_its_lora_gives_the_official_merged_model(golden, source):
    """Stage 3 (.safetensors or .pth) + the base Mistral, LoRA merged: every weight equals the official
    merged model bit for bit, and the log-probs follow."""
    from safetensors.torch import load_file

    from rrpo.models.families.videochat2.loading import load_videochat2
    from rrpo.models.families.videochat2.modeling import qformer_key

    port = load_videochat2(
        golden / "weights" / source,
        golden / "weights" / "mistral",
        settings={"vit_heads": 4, "qformer_heads": 4},
    )
    merged = load_file(golden / "merged_state_dict.safetensors")
    ours = port.state_dict()
    for key, value in merged.items():
        if key != "qformer.bert.embeddings.position_ids":
            name = qformer_key(key) if key.startswith("qformer.bert.") else key
            assert torch.equal(ours[name], value), key
    inputs, expected = _case(golden)
    with torch.no_grad():
        visual = port.encode_video(
            inputs["video"], inputs["qformer_input_ids"], inputs["qformer_attention_mask"]
        )
        embed = port.mistral_model.get_input_embeddings()
        embeds = torch.cat([embed(inputs["infer_seg0_ids"]), visual, embed(inputs["infer_seg1_ids"])], dim=1)
        logits = port.mistral_model(inputs_embeds=embeds).logits
    assert (torch.log_softmax(logits, -1) - expected["infer_logprobs"]).abs().max() < TOL


def _real_keys(golden: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    sections: dict[str, dict[str, tuple[int, ...]]] = {}
    current = None
    for line in (golden / "real_keys.txt").read_text().splitlines():
        if line.startswith("# ===="):
            current = line.split("(")[1][0]  # A, B or C
            sections[current] = {}
        elif line and not line.startswith("#") and current:
            key, shape = line.split("\t")[:2]
            sections[current][key] = tuple(json.loads(shape))
    return sections


def test_every_real_checkpoint_key_maps_onto_the_port(golden):
    """The real configuration (UMT-L 1024 wide, 23 built blocks; BERT-base Q-Former with [DEC]; Mistral-7B)
    on the meta device: every merged key (C) is a parameter of the port with its shape and nothing else;
    every stage-3 key (A) is one of them or a LoRA factor of one of Mistral's linears; every Mistral-7B key
    (B) is the port's `mistral_model.*` parameter of that shape."""
    from transformers import MistralConfig

    from rrpo.models.families.videochat2.loading import videochat2_from_state
    from rrpo.models.families.videochat2.modeling import qformer_key

    real = _real_keys(golden)
    shapes = {k: torch.empty(s, device="meta") for k, s in real["A"].items()}
    mistral = MistralConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        rope_theta=1e6,
        sliding_window=None,
    )  # fmt: skip - mistralai/Mistral-7B-Instruct-v0.2's config.json
    with torch.device("meta"):
        port = videochat2_from_state(shapes, mistral)
    ours = {k: tuple(v.shape) for k, v in port.state_dict().items()}
    rename = lambda k: qformer_key(k) if k.startswith("qformer.bert.") else k  # noqa: E731
    merged = {rename(k): s for k, s in real["C"].items() if k != "qformer.bert.embeddings.position_ids"}
    assert merged == ours
    for key, shape in real["A"].items():
        if ".lora_" in key:
            base = (
                key.replace("mistral_model.base_model.model.", "mistral_model.").rsplit(".lora_", 1)[0]
                + ".weight"
            )
            assert base in ours, key
        elif key != "qformer.bert.embeddings.position_ids":
            assert ours[rename(key)] == shape, key
    assert {f"mistral_model.{k}": s for k, s in real["B"].items()} == {
        k: s for k, s in ours.items() if k.startswith("mistral_model.")
    }
    assert (
        sum(1 for k in ours if k.startswith("vision_encoder.encoder.blocks.") and k.endswith(".norm1.weight"))
        == 23
    )


def test_the_training_forward_equals_the_official_one(golden, model):
    """The RRPO training path: Q-Former fed the sample's instruction ([CLS] ... [SEP] with the BERT
    tokenizer + [DEC]), position 0 filled with the BOS id, the answer-only targets: logits and loss."""
    from transformers import AutoTokenizer, BertTokenizer

    inputs, expected = _case(golden)
    meta = json.loads((golden / "meta.json").read_text())
    bert = BertTokenizer(str(golden / "weights" / "bert" / "vocab.txt"), do_lower_case=True)
    bert.add_special_tokens({"bos_token": "[DEC]"})
    assert torch.equal(
        bert(meta["qformer_instruction"], return_tensors="pt").input_ids, inputs["qformer_input_ids"]
    )
    tok = AutoTokenizer.from_pretrained(golden / "weights" / "mistral")
    before, after = meta["train_conversation"].split("</Video>")
    ids = [
        tok(t, add_special_tokens=False, return_tensors="pt").input_ids for t in (before, "</Video>" + after)
    ]
    instruction = bert(meta["train_instruction"], return_tensors="pt")
    with torch.no_grad():
        visual = model.encode_video(inputs["video"], instruction.input_ids, instruction.attention_mask)
        embeds = model.training_embeds(visual, ids[0], ids[1], tok.bos_token_id)
        logits = model.mistral_model(inputs_embeds=embeds).logits
    assert (logits - expected["train_logits"]).abs().max() < TOL
    targets = inputs["train_target_ids"][0]
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], targets[1:], ignore_index=-100)
    assert abs(loss.item() - expected["train_loss"].item()) < TOL


def test_preprocessing_of_the_raw_frames_gives_the_official_pixels(golden):
    from rrpo.models.families.videochat2.modeling import videochat2_pixels

    inputs, _ = _case(golden)
    assert torch.equal(videochat2_pixels(inputs["raw_frames_uint8"].numpy()), inputs["video"][0])


def test_the_family_generates_the_official_greedy_tokens_from_the_raw_frames(golden, tmp_path):
    """`load_model` on a stage-3 directory (no config.json: the release has none) with `base_llm` and
    `qformer_tokenizer`: the official inference layout and preprocessing from the raw frames give the
    official greedy tokens."""
    import shutil

    from rrpo.models import family_of, load_model

    stage3 = tmp_path / "stage3"
    stage3.mkdir()
    shutil.copy(golden / "weights" / "stage3" / "videochat2_mistral_7b_stage3.safetensors", stage3)
    (stage3 / "videochat2_settings.json").write_text('{"vit_heads": 4, "qformer_heads": 4}')
    assert family_of(stage3) == "videochat2"
    vlm = load_model(
        stage3,
        base_llm=golden / "weights" / "mistral",
        qformer_tokenizer=golden / "weights" / "bert",
        num_frames=8,
    )
    inputs, expected = _case(golden)
    reply = vlm.generate([(inputs["raw_frames_uint8"].numpy(), "Describe this video.")], max_new_tokens=6)
    assert reply == [vlm.tokenizer.decode(expected["infer_generated_ids"], skip_special_tokens=True).strip()]


def test_rrpo_train_and_generate_with_a_tiny_videochat2(tmp_path):
    """The whole loop on `rrpo tiny-model --family videochat2` (no ../shared needed)."""
    import numpy as np

    from rrpo.cli import main
    from rrpo.data.record import PreferencePair, write_pairs
    from rrpo.models import load_model
    from rrpo.video import write_video

    assert (
        main(["tiny-model", "--family", "videochat2", "--out", str(tmp_path / "model"), "--frames", "4"]) == 0
    )
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(4):
        write_video(
            tmp_path / "videos" / f"v{i}.mp4", rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8), fps=8
        )
        pairs.append(PreferencePair(f"p{i}", f"videos/v{i}.mp4", "What?", "Yes", "No", [(0, 3)], [(0, 2)]))
    write_pairs(tmp_path / "pairs.jsonl", pairs)
    args = ["train", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "pairs.jsonl")]
    args += ["--video-root", str(tmp_path), "--out", str(tmp_path / "run"), "--frames", "4", "--lora-r", "4"]
    args += [
        "--lora-alpha",
        "8",
        "--batch-size",
        "2",
        "--max_steps",
        "2",
        "--warmup-ratio",
        "0",
        "--report_to",
        "none",
    ]
    assert main(args) == 0
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["status"] == "finished" and summary["pairs_used"] == 4
    vlm = load_model(tmp_path / "model", adapter_dir=tmp_path / "run", num_frames=4)
    lora = [n for n, _ in vlm.model.named_parameters() if "lora_" in n]
    assert lora and all(".mistral_model.model.layers." in n for n in lora)
    frames = vlm.read_clip(tmp_path / "videos" / "v0.mp4")
    assert len(vlm.generate([(frames, "What?")], max_new_tokens=3)) == 1


def test_the_packed_pair_pass_equals_the_official_rrpo_forward(golden, tmp_path):
    """`rrpo train`'s packed [prefix | chosen | rejected] pass of the family, on the raw frames, gives
    the log-probs of the official RRPO `concatenated_forward` (its two rows: the preferred and the
    non-preferred conversation), and the same target tokens."""
    import shutil

    from rrpo.models import collate_pairs, encode_pair, load_model, pair_forward

    stage3 = tmp_path / "stage3"
    stage3.mkdir()
    shutil.copy(golden / "weights" / "stage3" / "videochat2_mistral_7b_stage3.safetensors", stage3)
    (stage3 / "videochat2_settings.json").write_text('{"vit_heads": 4, "qformer_heads": 4}')
    vlm = load_model(
        stage3,
        base_llm=golden / "weights" / "mistral",
        qformer_tokenizer=golden / "weights" / "bert",
        num_frames=8,
    )
    inputs, expected = _case(golden)
    chosen, rejected = "The cat jumps onto the table.", "The dog runs outside."
    pair = encode_pair(
        vlm,
        inputs["raw_frames_uint8"].numpy(),
        "What is the cat doing?",
        chosen,
        rejected,
        [(4, 7)],
        [(4, 7)],
    )
    with torch.no_grad():
        out = pair_forward(vlm, vlm.model, collate_pairs(vlm, [pair], layout="packed"), reference=False)
    targets = inputs["rrpo_target_ids"]
    official = torch.log_softmax(expected["rrpo_logits"].float(), -1)
    for row, side in ((0, "chosen"), (1, "rejected")):
        at = (targets[row] != -100).nonzero().flatten()
        assert targets[row, at].tolist() == getattr(pair, f"{side}_ids").tolist()
        want = official[row, at - 1].gather(-1, targets[row, at].unsqueeze(-1)).squeeze(-1)
        assert (getattr(out, f"policy_{side}_logps")[0, : len(at)] - want).abs().max() < TOL, side
