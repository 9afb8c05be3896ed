"""`rrpo toy pretrain` (examples/toy_pretrain): example format, encoder vs processor, training reduces the
loss, checkpoints load and generate, and the committed checkpoint answers in the evaluation's format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import rrpo.toy
from rrpo.errors import RecordError, RRPOError
from rrpo.toy.pretrain_commands import import_toy_pretrain

pt = import_toy_pretrain()  # the package the command runs
CHECKPOINT = Path(rrpo.toy.__file__).resolve().parent / "checkpoint"
TINY = pt.ModelSpec(
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    vision_depth=1,
    vision_dim=16,
    vision_heads=2,
    vocab_size=400,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A tiny toy world with videos: 12 pretraining clips (3 single-object first), a small pool and
    held-out sets."""
    from rrpo.toy.splits import generate_dataset

    out = tmp_path_factory.mktemp("world")
    generate_dataset(
        out, seed=3, n_pretrain=12, n_train=2, n_test=6, n_prior_break=2, curriculum=0.25, progress=False
    )
    return out


def naive_answer_loss(vlm, frames: np.ndarray, prompt: str, answer: str) -> float:
    """Mean -log p(answer tokens + <|im_end|>) computed through the real processor, token by token."""
    text = vlm.prompt_text(prompt)
    inputs = vlm.processor(text=[text], videos=[frames], return_tensors="pt", do_sample_frames=False)
    ans = vlm.tokenizer(answer + "<|im_end|>", add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = torch.cat([inputs["input_ids"], ans], dim=1)
    types = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(ans)], dim=1)
    with torch.no_grad():
        logits = vlm.model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            mm_token_type_ids=types,
            pixel_values_videos=inputs["pixel_values_videos"],
            video_grid_thw=inputs["video_grid_thw"],
        ).logits[0]
    p = inputs["input_ids"].shape[1]
    total = 0.0
    for k in range(ans.shape[1]):
        total -= float(torch.log_softmax(logits[p + k - 1], -1)[ans[0, k]])
    return total / ans.shape[1]


def test_turn_example_uses_evaluation_format():
    mcq = {
        "kind": "direction",
        "question": "In which direction does the red circle move?",
        "answer": "up",
        "answer_type": "mcq",
        "options": ["left", "right", "up", "down"],
    }
    ex = pt.turn_example(0, mcq, "clip/turn1")
    assert ex.answer == "(C) up" and ex.decisive == 1
    assert ex.prompt.startswith("Question: In which direction does the red circle move?")
    assert "(A) left" in ex.prompt and "(D) down" in ex.prompt
    assert ex.prompt.endswith("Only give the best option.")
    yn = pt.turn_example(
        0,
        {
            "kind": "existence",
            "question": "Is there a red square in the video?",
            "answer": "no",
            "answer_type": "yesno",
        },
        "clip/turn2",
    )
    assert yn.answer == "No" and yn.decisive == 0
    assert yn.prompt == "Is there a red square in the video?\nAnswer the question using 'yes' or 'no'."
    with pytest.raises(RecordError, match="clip/turn3"):
        pt.turn_example(
            0,
            {"question": "Q?", "answer": "maybe", "answer_type": "mcq", "options": ["a", "b"]},
            "clip/turn3",
        )


def test_read_pretrain_names_bad_line(tmp_path):
    (tmp_path / "pretrain.jsonl").write_text('{"id": "a", "video": "v.mp4", "turns": []}\n')
    with pytest.raises(RecordError, match="turns"):
        pt.read_pretrain(tmp_path)
    (tmp_path / "pretrain.jsonl").write_text("{broken\n")
    with pytest.raises(RecordError, match="pretrain.jsonl:1"):
        pt.read_pretrain(tmp_path)
    with pytest.raises(RRPOError, match="not found"):
        pt.read_pretrain(tmp_path / "missing")


def test_example_order_curriculum_first_and_deterministic():
    exs = [pt.Example(clip=c, prompt="p", answer="a", kind="k") for c in range(6) for _ in range(2)]
    stages = [0, 0, 1, 1, 1, 1]
    batches = list(pt.example_order(exs, stages, steps=6, batch_size=4, seed=1))
    flat = [i for b in batches for i in b]
    assert all(len(b) == 4 for b in batches)
    # First pass: the 4 examples of the single-object clips, then the 8 others, each exactly once.
    assert sorted(stages[exs[i].clip] for i in flat[:4]) == [0, 0, 0, 0]
    assert sorted(flat[:12]) == list(range(12))
    assert batches == list(pt.example_order(exs, stages, steps=6, batch_size=4, seed=1))
    # A shorter run is a prefix of a longer one (the constant schedule relies on this).
    assert list(pt.example_order(exs, stages, steps=3, batch_size=4, seed=1)) == batches[:3]


def test_lr_schedule():
    cfg = pt.TrainConfig(steps=100, lr=1e-3, warmup=10)
    assert pt.lr_at(0, cfg) == pytest.approx(1e-4)
    assert pt.lr_at(50, cfg) == pytest.approx(1e-3) == pt.lr_at(99, cfg)
    # transformers' cosine-with-min-lr, one step ahead (warm-up counted from 1): step s decays by
    # progress (s + 1 - warmup) / (steps + 1 - warmup), down to min_lr_ratio x lr.
    cos = pt.TrainConfig(steps=100, lr=1e-3, warmup=10, schedule="cosine", min_lr_ratio=0.1)
    assert pt.lr_at(0, cos) == pytest.approx(1e-4)
    assert pt.lr_at(10, cos) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 91))))
    assert pt.lr_at(100, cos) == pytest.approx(1e-4)
    with pytest.raises(RRPOError, match="unknown schedule"):
        pt.lr_at(0, pt.TrainConfig(schedule="linear"))


def test_pretrain_reduces_loss_saves_loadable_model(world, tmp_path):
    from rrpo.models import load_model
    from rrpo.video import read_frames

    cfg = pt.TrainConfig(steps=12, batch_size=8, lr=3e-3, warmup=2, eval_every=0, seed=0, threads=1)
    out = tmp_path / "model"
    summary = pt.run_pretrain(world, out, spec=TINY, cfg=cfg, progress=False, log=lambda s: None)
    assert summary["train"]["steps_done"] == 12
    assert set(summary["heldout"]) >= {"order", "direction", "count", "prior_against", "control"}
    assert 0 <= summary["pool"]["pairs"] <= summary["pool"]["questions"]

    init = pt.build_toy_model(tmp_path / "init", TINY, seed=0)  # the same initial weights
    before, after = load_model(init), load_model(out)
    assert after.frame_size == (64, 64) and after.num_frames == 16
    records = pt.read_pretrain(world)
    checks = [(r["video"], t) for r in records[:4] for t in r["turns"][:3]]
    losses = []
    for vlm in (before, after):
        total = 0.0
        for video, turn in checks:
            ex = pt.turn_example(0, turn, "t")
            total += naive_answer_loss(
                vlm, read_frames(world / video, 16, size=(64, 64)), ex.prompt, ex.answer
            )
        losses.append(total / len(checks))
    assert losses[1] < losses[0] - 0.5, losses
    # The loss run_pretrain reports at step 0 is the same quantity on its own sample.
    assert summary["train"]["initial_loss"] == pytest.approx(losses[0], rel=0.2)

    frames = read_frames(world / records[0]["video"], 16, size=(64, 64))
    replies = after.generate(
        [(frames, pt.turn_example(0, records[0]["turns"][1], "t").prompt)] * 2, max_new_tokens=6, batch_size=2
    )
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    assert replies[0] == replies[1]  # greedy


def test_encoder_matches_processor_and_detects_mismatch(world, tmp_path):
    from rrpo.models import load_model
    from rrpo.video import read_frames

    vlm = load_model(pt.build_toy_model(tmp_path / "m", TINY))
    frames = read_frames(world / "videos/test_000000.mp4", 16, size=(64, 64))
    pt.Encoder(vlm.processor, TINY).check_against_processor(frames, "Describe the video.")
    # The encoder runs the processor itself (prompts cached); a stale or wrong cache entry is caught.
    stale = pt.Encoder(vlm.processor, TINY)
    ids = stale.prefix_ids("Describe the video.")
    stale._prefix_cache["Describe the video."] = [i for i in ids if i != stale.video_id][:-1] + ids[-1:]
    with pytest.raises(RRPOError, match="disagrees"):
        stale.check_against_processor(frames, "Describe the video.")


def test_committed_checkpoint_answers_in_format(tmp_path):
    from rrpo.eval.benchmarks import BENCHMARKS
    from rrpo.eval.extract import mcq_letter, yes_no
    from rrpo.models import load_model
    from rrpo.toy.splits import generate_dataset
    from rrpo.video import read_frames

    assert (CHECKPOINT / "PROVENANCE.md").is_file(), "the committed checkpoint is missing"
    meta = json.loads((CHECKPOINT / "rrpo_family.json").read_text())
    vlm = load_model(CHECKPOINT, num_frames=meta["num_frames"])
    data = tmp_path / "heldout"
    generate_dataset(data, seed=11, n_pretrain=0, n_train=0, n_test=12, n_prior_break=2, progress=False)
    items = BENCHMARKS["mvbench"].load(data / "benchmarks" / "temporal")[:20]
    yn = BENCHMARKS["videohallucer"].load(data / "benchmarks" / "hallucination" / "object_existence")[:6]
    batch = [(read_frames(data / i.video, vlm.num_frames, size=vlm.frame_size), i.prompt) for i in items + yn]
    replies = vlm.generate(batch, max_new_tokens=8, batch_size=13)
    letters = [mcq_letter(r, i.options) for r, i in zip(replies, items)]
    assert all(letter in "ABCD"[: len(i.options)] for letter, i in zip(letters, items) if letter), replies
    assert None not in letters, replies
    assert all(yes_no(r) in ("yes", "no") for r in replies[len(items) :]), replies


def _pixel_direction(mask: np.ndarray) -> str:
    """Direction of a [T, H, W] mask's centroid between its first and last visible frame."""
    ts = np.flatnonzero(mask.any((1, 2)))
    ys, xs = [np.array([np.argwhere(mask[t])[:, k].mean() for t in (ts[0], ts[-1])]) for k in (0, 1)]
    dx, dy = xs[1] - xs[0], ys[1] - ys[0]
    return ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")


def test_motion_and_yesno_aux_examples_match_rendered_pixels(world):
    from rrpo.toy.splits import load_scenes, load_world
    from rrpo.toy.world import PALETTE, WorldConfig, render_clip

    records = pt.read_pretrain(world)
    scenes = load_scenes(world)
    cfg = load_world(world)["config"]
    colours = cfg["colours"]
    kinds = ["directions", "which_direction", "yesno_motion", "yesno_temporal"]
    exs = pt.aux_examples(records, scenes, colours, kinds, WorldConfig(**cfg))
    counts = {k: sum(e.kind == k for e in exs) for k in kinds}
    assert counts["directions"] == len(records) and counts["yesno_motion"] == 2 * len(records)
    assert counts["yesno_temporal"] > 0 and counts["yesno_temporal"] % 2 == 0
    yes_no = {"Yes": 0, "No": 0}
    for ex in exs:
        frames = render_clip(scenes[records[ex.clip]["id"]])
        masks = {c: (frames == np.array(PALETTE[c], dtype=np.uint8)).all(-1) for c in colours}
        moving = {_pixel_direction(m) for m in masks.values() if m.any()}
        if ex.kind == "directions":
            assert ex.decisive is None
            assert ex.answer.split() == [
                "they",
                "move",
                *[d for d in ("left", "right", "up", "down") if d in moving],
            ]
        elif ex.kind == "which_direction":
            named = ex.prompt.rstrip("?").split(": ")[1].split(" or ")
            assert [d in moving for d in named].count(True) == 1
            assert ex.answer == "the " + next(d for d in named if d in moving)
        else:  # yes/no, in the evaluation's prompt, checked against the named colour's pixels
            assert ex.decisive == 0 and ex.prompt.endswith("Answer the question using 'yes' or 'no'.")
            yes_no[ex.answer] += 1
            words = ex.prompt.split("?")[0].split()
            named = [w for w in words if w in colours]
            visible = {c: np.flatnonzero(masks[c].any((1, 2))) for c in named}
            if words[0] == "Does" and words[-2] == "move":
                truth = _pixel_direction(masks[named[0]]) == words[-1]
            elif words[0] == "Does":  # "Does the A appear before the B?"
                truth = visible[named[0]][0] < visible[named[1]][0]
            else:  # "Is the X visible at the beginning / end of the video?"
                frame = 0 if "beginning" in words else len(frames) - 1
                truth = bool(masks[named[0]][frame].any())
            assert ex.answer == ("Yes" if truth else "No"), ex.prompt
    assert yes_no["Yes"] == yes_no["No"] > 0  # both sides of every pair
    again = pt.aux_examples(records, scenes, colours, kinds, WorldConfig(**cfg))
    assert [(e.prompt, e.answer) for e in again] == [(e.prompt, e.answer) for e in exs]  # reproducible
    with pytest.raises(RRPOError, match="world's config"):
        pt.aux_examples(records, scenes, colours, ["yesno_motion"])


def test_order_mcq_aux_examples_match_rendered_pixels(world):
    from rrpo.toy.splits import load_scenes, load_world
    from rrpo.toy.world import PALETTE, render_clip

    records = pt.read_pretrain(world)
    scenes = load_scenes(world)
    colours = load_world(world)["config"]["colours"]
    exs = pt.aux_examples(records, scenes, colours, ["order_mcq"])
    multi = [i for i, r in enumerate(records) if len(scenes[r["id"]].objects) > 1]
    assert len(exs) == 4 * len(multi) > 0
    letters = {}
    for ex in exs:
        assert ex.decisive == 1 and ex.prompt.endswith("Only give the best option.")
        frames = render_clip(scenes[records[ex.clip]["id"]])
        lines = ex.prompt.splitlines()
        options = [line[4:] for line in lines if line[:3] in ("(A)", "(B)")]
        named = [o.split()[1] for o in options]  # "the red circle" -> "red"
        first = {c: int(np.flatnonzero((frames == PALETTE[c]).all(-1).any((1, 2)))[0]) for c in named}
        which = "first" if "appears first" in lines[0] else "last"
        right = (min if which == "first" else max)(named, key=first.get)
        letter = "AB"[named.index(right)]
        assert ex.answer == f"({letter}) {options[named.index(right)]}", ex.prompt
        letters.setdefault((ex.clip, which), []).append(letter)
    # Per clip and question, the two option orders flip the answer's letter.
    assert all(sorted(v) == ["A", "B"] for v in letters.values())


def test_option_lookup_names_the_option_of_an_object_in_the_clip(world):
    from rrpo.toy.splits import load_scenes, load_world
    from rrpo.toy.world import PALETTE, render_clip

    records = pt.read_pretrain(world)
    scenes = load_scenes(world)
    colours = load_world(world)["config"]["colours"]
    exs = pt.aux_examples(records, scenes, colours, ["option_lookup"])
    assert len(exs) == len(records)  # 3 objects of 4 colours at most: there is always an absent one
    letters = []
    for ex in exs:
        frames = render_clip(scenes[records[ex.clip]["id"]])
        lines = ex.prompt.splitlines()
        asked = lines[0].removeprefix("Question: Which option is the ").rstrip("?")
        options = [line[4:] for line in lines if line[:3] in ("(A)", "(B)")]
        seen = [(frames == PALETTE[o.split()[1]]).all(-1).any() for o in options]
        assert seen.count(True) == 1 and options[seen.index(True)] == f"the {asked}"
        letter = "AB"[seen.index(True)]
        assert ex.decisive == 1 and ex.answer == f"({letter}) the {asked}"
        letters.append(letter)
    assert 0.3 < letters.count("A") / len(letters) < 0.7


def test_colour_order_mcq_names_the_first_or_last_colour_in_pixels(world):
    from rrpo.toy.splits import load_scenes, load_world
    from rrpo.toy.world import PALETTE, WorldConfig, render_clip

    records = pt.read_pretrain(world)
    scenes = load_scenes(world)
    cfg = load_world(world)["config"]
    exs = pt.aux_examples(records, scenes, cfg["colours"], ["colour_order_mcq"], WorldConfig(**cfg))
    assert len(exs) == len(records)  # one per clip, single-object clips too
    asked = []
    for ex in exs:
        assert ex.prompt.startswith("Question: Which colour appears first?")
        frames = render_clip(scenes[records[ex.clip]["id"]])
        first = {
            c: int(np.flatnonzero((frames == PALETTE[c]).all(-1).any((1, 2)))[0])
            for c in cfg["colours"]
            if (frames == PALETTE[c]).all(-1).any()
        }
        right = min(first, key=first.get)
        letter = "ABCD"[cfg["colours"].index(right)]
        assert ex.decisive == 1 and ex.answer == f"({letter}) {right}", ex.prompt
        assert [line[4:] for line in ex.prompt.splitlines() if line[:1] == "("] == cfg["colours"]
        asked.append(right)
    assert len(set(asked)) > 1
    with pytest.raises(RRPOError, match="world's config"):
        pt.aux_examples(records, scenes, cfg["colours"], ["colour_order_mcq"])


def test_aux_examples_match_rendered_pixels(world):
    from rrpo.toy.splits import load_scenes, load_world
    from rrpo.toy.world import PALETTE, render_clip

    records = pt.read_pretrain(world)
    scenes = load_scenes(world)
    colours = load_world(world)["config"]["colours"]
    kinds = ["colours", "first_colour", "which_colour", "earlier_colour", "first_direction"]
    exs = pt.aux_examples(records, scenes, colours, kinds)
    multi = sum(len(scenes[r["id"]].objects) > 1 for r in records)
    # 3 objects at most of 4 colours: always one absent; "earlier_colour" needs two objects.
    assert len(exs) == 4 * len(records) + multi and multi > 0
    for ex in exs:
        frames = render_clip(scenes[records[ex.clip]["id"]])
        masks = {c: (frames == np.array(PALETTE[c], dtype=np.uint8)).all(-1) for c in colours}
        seen = {c for c in colours if masks[c].any()}
        assert ex.decisive is None
        if ex.kind == "colours":
            assert ex.prompt == pt.AUX_PROMPTS["colours"]
            assert ex.answer.split() == ["colours:", *[c for c in colours if c in seen]]
        elif ex.kind == "first_colour":  # the colour whose first visible frame is the earliest
            first = {c: int(np.flatnonzero(masks[c].any((1, 2)))[0]) for c in seen}
            assert ex.answer == "the " + min(first, key=first.get)
        elif ex.kind == "which_colour":
            named = ex.prompt.rstrip("?").split(": ")[1].split(" or ")
            assert [c in seen for c in named].count(True) == 1
            assert ex.answer == "the " + next(c for c in named if c in seen)
        elif ex.kind == "earlier_colour":
            named = ex.prompt.rstrip("?").split(": ")[1].split(" or ")
            first = {c: int(np.flatnonzero(masks[c].any((1, 2)))[0]) for c in named}
            assert set(named) <= seen and ex.answer == "the " + min(named, key=first.get)
        else:  # the first colour's pixel centroid moves in the stated direction
            first = {c: int(np.flatnonzero(masks[c].any((1, 2)))[0]) for c in seen}
            assert ex.answer == f"it moves {_pixel_direction(masks[min(first, key=first.get)])}"
    orders = {
        ex.prompt.split(": ")[1].split(" or ")[0] in ex.answer for ex in exs if ex.kind == "which_colour"
    }
    assert orders == {True, False}  # the present colour is named first in some, second in others
    with pytest.raises(RRPOError, match="unknown auxiliary tasks"):
        pt.aux_examples(records, scenes, colours, ["shape"])
    with pytest.raises(RecordError, match="scene"):
        pt.aux_examples(records, {}, colours, ["colours"])


def test_decisive_labels_keep_only_the_deciding_token(world, tmp_path):
    from rrpo.models import load_model

    init = pt.build_toy_model(tmp_path / "m", TINY, seed=0)
    vlm = load_model(init)
    enc = pt.Encoder(vlm.processor, TINY)
    records = pt.read_pretrain(world)
    exs = [pt.turn_example(0, t, f"t{k}") for k, t in enumerate(records[-1]["turns"])]
    assert {e.decisive for e in exs} == {None, 0, 1}
    frames = np.zeros((1, 16, 64, 64, 3), dtype=np.uint8)
    batch = enc.batch(exs, frames)
    labels = pt.decisive_labels(batch, exs)
    tok = vlm.processor.tokenizer
    for i, ex in enumerate(exs):
        kept = labels[i][labels[i] != pt.IGNORE].tolist()
        if ex.decisive is None:
            assert kept == batch["labels"][i][batch["labels"][i] != pt.IGNORE].tolist()
        else:
            word = tok.decode(kept).strip()
            want = ex.answer.split(")")[0].lstrip("(") if ex.decisive == 1 else ex.answer
            assert len(kept) == 1 and word == want, (ex.answer, word)
    assert torch.equal(batch["labels"], enc.batch(exs, frames)["labels"])  # input left untouched


def test_run_pretrain_with_aux_tasks_and_decisive_loss(world, tmp_path):
    cfg = pt.TrainConfig(
        steps=3,
        batch_size=4,
        warmup=1,
        eval_every=0,
        threads=1,
        kinds=("count", "existence"),
        aux_kinds=("colours", "first_colour", "which_colour"),
        focus_kinds=("colours", "first_colour"),
        focus_steps=2,
        decisive_loss=True,
    )
    summary = pt.run_pretrain(world, tmp_path / "m", spec=TINY, cfg=cfg, progress=False, log=lambda s: None)
    n = len(pt.read_pretrain(world))
    by_kind = summary["data"]["examples_by_kind"]
    assert by_kind["colours"] == by_kind["first_colour"] == by_kind["which_colour"] == by_kind["count"] == n
    assert set(by_kind) == {"colours", "first_colour", "which_colour", "count", "existence"}
    assert (
        list(summary["train"]["aux_kinds"]) == ["colours", "first_colour", "which_colour"]
        and summary["train"]["decisive_loss"]
    )
    assert summary["train"]["steps_done"] == 3


def test_pretrain_command_flags_reach_the_config(world, tmp_path, monkeypatch):
    """The CLI passes --kinds / --aux-tasks / --focus-kinds / --decisive-loss through, on top of the
    committed checkpoint's defaults, and records them in pretrain_metrics.json and PROVENANCE.md."""
    from rrpo.cli import main

    # The command reads ModelSpec from the toy_pretrain package when it runs and builds ModelSpec(): keep it tiny.
    monkeypatch.setattr(pt, "ModelSpec", lambda: TINY)

    out = tmp_path / "m"
    args = ["toy", "pretrain", "--data", str(world), "--out", str(out), "--steps", "2", "--batch-size", "4"]
    args += ["--kinds", "count", "--aux-tasks", "colours", "--focus-kinds", "colours", "--focus-steps", "1"]
    args += ["--eval-every", "0", "--vision-lr-scale", "3", "--no-progress"]
    assert main(args) == 0
    summary = json.loads((out / "pretrain_metrics.json").read_text())
    train = summary["train"]
    assert train["kinds"] == ["count"] and train["aux_kinds"] == ["colours"] and train["focus_steps"] == 1
    assert train["decisive_loss"] is pt.DEFAULT_TRAIN.decisive_loss is True  # default kept
    assert set(summary["data"]["examples_by_kind"]) == {"count", "colours"}
    assert train["vision_lr_scale"] == 3.0
    assert "--aux-tasks colours" in (out / "PROVENANCE.md").read_text()


def test_pretrain_command_generates_the_background_it_is_given(world, tmp_path, monkeypatch, capsys):
    """Without --data the command generates the default world with --background; with --data the
    flag is an error (the dataset has its own background), never silently ignored."""
    from rrpo.cli import main
    from rrpo.toy import splits

    seen = {}

    def fake_generate(out, **params):
        seen.update(params, out=out)
        raise RuntimeError("stop here")

    monkeypatch.setattr(splits, "generate_dataset", fake_generate)
    args = ["toy", "pretrain", "--out", str(tmp_path / "m"), "--data-cache", str(tmp_path / "w")]
    with pytest.raises(RuntimeError, match="stop here"):
        main([*args, "--background", "gradient", "--no-progress"])
    assert seen["background"] == "gradient" and seen["n_pretrain"] == pt.DEFAULT_DATA["n_pretrain"]
    assert "order_question" not in seen  # the default world: the same cache name as before the flag
    seen.clear()
    with pytest.raises(RuntimeError, match="stop here"):
        main([*args, "--order-question", "colour", "--no-progress"])
    assert seen["order_question"] == "colour" and "background" not in seen
    args = [
        "toy",
        "pretrain",
        "--data",
        str(world),
        "--out",
        str(tmp_path / "m2"),
        "--background",
        "gradient",
    ]
    assert main(args) == 1
    assert "--data has its own" in capsys.readouterr().err
    assert main([*args[:-2], "--order-question", "colour"]) == 1
    assert "--data has its own" in capsys.readouterr().err


def test_vision_pretrain_trains_only_the_vision_tower_on_pixel_true_targets(world, tmp_path):
    """`direction_targets` agrees with the rendered pixels; `--vision-steps` moves the vision tower
    and merger, leaves every language-model weight as it was, and is recorded in the summary."""
    from safetensors.torch import load_file

    from rrpo.toy.splits import load_scenes, load_world
    from rrpo.toy.world import DIRECTIONS, PALETTE, render_clip

    records = pt.read_pretrain(world)
    scenes = load_scenes(world)
    colours = load_world(world)["config"]["colours"]
    targets = pt.direction_targets([scenes[r["id"]] for r in records], colours)
    for i, r in enumerate(records):
        frames = render_clip(scenes[r["id"]])
        for k, c in enumerate(colours):
            mask = (frames == np.array(PALETTE[c], dtype=np.uint8)).all(-1)
            want = 0 if not mask.any() else 1 + list(DIRECTIONS).index(_pixel_direction(mask))
            assert int(targets[i, k]) == want

    init = pt.build_toy_model(tmp_path / "init", TINY, seed=5)
    cfg = pt.TrainConfig(steps=1, batch_size=2, lr=0.0, warmup=1, eval_every=0, threads=1, vision_steps=3)
    out = tmp_path / "out"
    summary = pt.run_pretrain(world, out, spec=TINY, cfg=cfg, progress=False, log=lambda s: None, init=init)
    before, after = load_file(init / "model.safetensors"), load_file(out / "model.safetensors")
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(".visual." in f".{k}" for k in moved)  # lr 0 for the language model
    vision = summary["vision_pretrain"]
    assert len(vision["losses"]) == 3 and all(np.isfinite(vision["losses"]))
    assert 0.0 <= vision["heldout_accuracy"][3] <= 1.0  # scored on the world's test clips


def test_run_pretrain_from_init_starts_from_its_weights(world, tmp_path):
    from safetensors.torch import load_file

    init = pt.build_toy_model(tmp_path / "init", TINY, seed=5)
    cfg = pt.TrainConfig(steps=1, batch_size=2, lr=0.0, warmup=1, eval_every=0, threads=1, seed=0)
    out = tmp_path / "out"
    summary = pt.run_pretrain(world, out, spec=TINY, cfg=cfg, progress=False, log=lambda s: None, init=init)
    before, after = load_file(init / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)  # lr 0
    assert (out / "tokenizer.json").read_bytes() == (init / "tokenizer.json").read_bytes()
    assert summary["model"]["init"] == str(init)
    # An intermediate checkpoint (save_every) is a whole model: it loads and initialises another run.
    cfg_save = pt.TrainConfig(steps=1, batch_size=2, lr=0.0, warmup=1, eval_every=1, threads=1, seed=0)
    pt.run_pretrain(
        world,
        tmp_path / "s",
        spec=TINY,
        cfg=cfg_save,
        progress=False,
        log=lambda s: None,
        init=init,
        save_every=1,
    )
    steps = sorted((tmp_path / "s").glob("step_*"))
    assert steps and (steps[0] / "rrpo_family.json").is_file() and (steps[0] / "tokenizer.json").is_file()
    pt.run_pretrain(
        world, tmp_path / "s2", spec=TINY, cfg=cfg, progress=False, log=lambda s: None, init=steps[0]
    )
    saved = load_file(tmp_path / "s2" / "model.safetensors")
    assert all(torch.equal(before[k], saved[k]) for k in before)
    other = pt.ModelSpec(**{**TINY.__dict__, "hidden_size": 64})
    with pytest.raises(RRPOError, match="toy_model_spec differs"):
        pt.run_pretrain(
            world, tmp_path / "x", spec=other, cfg=cfg, progress=False, log=lambda s: None, init=init
        )
    with pytest.raises(RRPOError, match="no model there"):
        pt.run_pretrain(
            world, tmp_path / "y", spec=TINY, cfg=cfg, progress=False, log=lambda s: None, init=tmp_path
        )


def test_decisive_labels_keep_format_trains_the_reply_frame_not_the_option_text(world, tmp_path):
    from rrpo.models import load_model

    vlm = load_model(pt.build_toy_model(tmp_path / "m", TINY, seed=0))
    enc = pt.Encoder(vlm.processor, TINY)
    exs = [pt.turn_example(0, t, f"t{k}") for k, t in enumerate(pt.read_pretrain(world)[-1]["turns"])]
    batch = enc.batch(exs, np.zeros((1, 16, 64, 64, 3), dtype=np.uint8))
    labels = pt.decisive_labels(batch, exs, keep_format=True)
    tok = vlm.processor.tokenizer
    for i, ex in enumerate(exs):
        kept = tok.decode(labels[i][labels[i] != pt.IGNORE].tolist())
        full = tok.decode(batch["labels"][i][batch["labels"][i] != pt.IGNORE].tolist())
        if ex.decisive == 1:  # "(B) left<|im_end|>" -> "(B)<|im_end|>"
            assert kept == ex.answer.split(")")[0] + ")<|im_end|>", (kept, full)
        else:  # yes/no and open answers: every token
            assert kept == full


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_vision_lr_scale_scales_only_the_vision_tower(world, tmp_path, scale):
    from rrpo.models import load_model

    init = pt.build_toy_model(tmp_path / "m", TINY, seed=0)
    vlm = load_model(init)
    before = {n: p.detach().clone() for n, p in vlm.model.named_parameters()}
    records = pt.read_pretrain(world)
    exs = [pt.turn_example(0, t, f"t{k}") for k, t in enumerate(records[0]["turns"])]
    frames = np.random.default_rng(0).integers(0, 255, (1, 16, 64, 64, 3), dtype=np.uint8)
    cfg = pt.TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup=1, eval_every=0, vision_lr_scale=scale)
    pt.train(vlm.model, pt.Encoder(vlm.processor, TINY), exs, frames, [0], cfg, progress=False)
    moved = {n: not torch.equal(before[n], p) for n, p in vlm.model.named_parameters()}
    vision = [m for n, m in moved.items() if n.startswith("model.visual.")]
    language = [m for n, m in moved.items() if n.startswith("model.language_model.")]
    assert vision and language and any(language)
    assert any(vision) is (scale > 0)  # scale 0: the vision tower and merger are frozen


def test_pretrain_outside_a_source_checkout_is_a_clear_error(tmp_path, monkeypatch, capsys):
    """Installed without examples/ (a wheel), `rrpo toy pretrain` says where the code lives."""
    from rrpo.cli import main
    from rrpo.toy import pretrain_commands

    monkeypatch.setattr(pretrain_commands, "EXAMPLES", tmp_path / "examples")
    assert main(["toy", "pretrain", "--out", str(tmp_path / "m"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "source checkout" in err and "examples/toy_pretrain" in err and "Traceback" not in err


def test_unknown_auxiliary_task_is_an_error(world):
    from rrpo.toy.splits import load_scenes

    records = pt.read_pretrain(world)
    with pytest.raises(RRPOError, match=r"unknown auxiliary tasks \['colour'\]"):
        pt.aux_examples(records, load_scenes(world), ["red"], ["colours", "colour"])
    assert set(pt.AUX_TASKS) >= {"colours", "which_colour", "order_mcq", "yesno_motion"}
