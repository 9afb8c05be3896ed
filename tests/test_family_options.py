"""Family-only loading options (LongVU's towers, VideoChat2's base LLM and Q-Former tokenizer) travel from
every model-loading command to `load_model` as one mapping (issue 24: all but `rrpo train` used to drop
them silently). Given to a qwen2-vl model, each is refused by `load_model` with the owning family named:
the refusal proves the option arrived."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rrpo.cli import main
from rrpo.data.record import PreferencePair, VideoQuestion, write_pairs
from rrpo.models.registry import FAMILY_ENTRIES, family_options
from rrpo.video import write_video


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from rrpo.models import build_tiny_model

    root = tmp_path_factory.mktemp("family_options")
    build_tiny_model("qwen2-vl", root / "model", num_frames=4)
    (root / "videos").mkdir()
    write_video(
        root / "videos" / "v0.mp4", np.random.default_rng(0).integers(0, 255, (4, 56, 56, 3), np.uint8), fps=4
    )
    q = VideoQuestion("q0", "v0.mp4", "What is it?", "B", "mcq", ["a cat", "a dog"]).validate()
    (root / "questions.jsonl").write_text(json.dumps(q.to_dict()) + "\n")
    pair = PreferencePair(id="p0", video="v0.mp4", question="Is it a dog?", chosen="Yes", rejected="No",
                          chosen_spans=[(0, 3)], rejected_spans=[(0, 2)])  # fmt: skip
    write_pairs(root / "pairs.jsonl", [pair])
    vh = root / "vh" / "object_relation"
    vh.mkdir(parents=True)
    item = {"basic": {"video": "v0.mp4", "question": "Is there a dog?", "answer": "yes"},
            "hallucination": {"video": "v0.mp4", "question": "Is there a cat?", "answer": "no"},
            "type": "object_relation"}  # fmt: skip
    (vh / "object_relation.json").write_text(json.dumps([item]))
    from peft import LoraConfig, get_peft_model

    from rrpo.models import load_model

    vlm = load_model(root / "model")
    lora = LoraConfig(r=2, target_modules=vlm.lora_target_modules, init_lora_weights=False)
    get_peft_model(vlm.model, lora).save_pretrained(root / "adapter")
    return root


def _command(name: str, root, out) -> list[str]:
    model, videos = str(root / "model"), str(root / "videos")
    return {
        "generate": ["generate", "--model", model, "--data", str(root / "questions.jsonl"), "--video-root", videos,
                     "--out", str(out / "pairs.jsonl"), "--frames", "4"],
        "train": ["train", "--model", model, "--data", str(root / "pairs.jsonl"), "--video-root", videos,
                  "--out", str(out), "--frames", "4", "--max_steps", "1"],
        "eval": ["eval", "--model", model, "--benchmark", "videohallucer", "--annotations", str(root / "vh"),
                 "--video-root", videos, "--frames", "4", "--out", str(out)],
        "deviation": ["deviation", "--model", model, "--adapter", str(root / "adapter"), "--data", str(root / "pairs.jsonl"), "--video-root", videos,
                      "--frames", "4", "--out", str(out)],
        "inspect": ["inspect", "--model", model, "--video", str(root / "videos" / "v0.mp4"), "--question", "Q?",
                    "--frames", "4", "--sheet", str(out / "sheet.png")],
        "merge": ["merge", "--model", model, "--adapter", str(root / "adapter"), "--out", str(out)],
    }[name]  # fmt: skip


COMMANDS = ("generate", "train", "eval", "deviation", "inspect", "merge")


@pytest.mark.parametrize("option", sorted(family_options()))
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_hands_family_options_to_load_model(command, option, world, tmp_path, capsys):
    owner = family_options()[option][0]
    flag = "--" + option.replace("_", "-")
    assert main([*_command(command, world, tmp_path / "out"), flag, str(tmp_path / "somewhere")]) == 1
    err = capsys.readouterr().err
    assert f"{flag} is for {owner} checkpoints" in err and "is qwen2-vl" in err, err


def test_every_registered_option_is_a_train_option():
    """`rrpo train` parses RRPOConfig (TrainingArguments): each family option needs its field there."""
    from rrpo.train.config import RRPOConfig

    fields = set(RRPOConfig.__dataclass_fields__)
    assert {opt for e in FAMILY_ENTRIES for opt in e.options} <= fields


def test_load_model_refuses_an_option_no_family_has(world):
    from rrpo.errors import RRPOError
    from rrpo.models import load_model

    with pytest.raises(RRPOError, match="--warp-drive: not a loading option of any family"):
        load_model(world / "model", family_options={"warp_drive": "x"})


@pytest.mark.parametrize("command", ("generate", "train", "eval", "deviation", "inspect"))
def test_every_command_that_runs_a_model_says_where_it_runs(command, world, tmp_path, capsys):
    """Each command puts the model on this process's accelerator (`load_model(device="auto")`, the CPU
    here) and says so in one line."""
    assert main(_command(command, world, tmp_path / "out")) == 0
    err = capsys.readouterr().err
    where = "training qwen2-vl on cpu x 1 process(es)" if command == "train" else "(qwen2-vl) on cpu, float32"
    assert where in err, err[-3000:]


def test_load_model_auto_puts_the_model_on_the_accelerator(world, monkeypatch):
    """`device="auto"` moves the model to `accelerator_device()` (here stood in for by the meta device:
    no GPU on this machine)."""
    import torch

    import rrpo.models.loading as loading

    monkeypatch.setattr(loading, "accelerator_device", lambda: torch.device("meta"))
    vlm = loading.load_model(world / "model", device="auto")
    assert {p.device.type for p in vlm.model.parameters()} == {"meta"}
    assert loading.describe_placement(vlm).endswith("(qwen2-vl) on meta, float32")
