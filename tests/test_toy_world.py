"""The toy video world: ground truth checked against the rendered (and mp4-decoded) pixels.

Every check finds objects in the frames by colour (exact palette match in rendered frames,
nearest-palette classification in decoded mp4s) and recomputes the answer from the pixels, so it
does not trust the scene's own bookkeeping.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from rrpo.errors import RRPOError
from rrpo.toy import commands
from rrpo.toy.questions import (
    caption,
    colour_order_qa,
    count_question,
    describe,
    existence_questions,
    motion_pair,
    order_question,
    temporal_pairs,
)
from rrpo.toy.splits import generate_dataset, load_scenes, sample_clips
from rrpo.toy.world import BACKGROUND, PALETTE, WorldConfig, render_clip, sample_scene
from rrpo.video import read_frames

CFG = WorldConfig()
UNIT = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def scenes(n: int, seed: int = 123, **kwargs):
    return [sample_scene(np.random.default_rng([seed, i]), CFG, **kwargs) for i in range(n)]


def exact_mask(frames: np.ndarray, colour: str) -> np.ndarray:
    """[T, H, W] pixels exactly of a palette colour."""
    return (frames == np.array(PALETTE[colour], dtype=np.uint8)).all(-1)


def nearest_palette(frames: np.ndarray, colours) -> np.ndarray:
    """[T, H, W] index into ['background', *colours] of the nearest RGB colour."""
    ref = np.array([BACKGROUND] + [PALETTE[c] for c in colours], dtype=np.float32)
    d = ((frames[..., None, :].astype(np.float32) - ref) ** 2).sum(-1)
    return d.argmin(-1)


def centroid(mask2d: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask2d)
    return np.array([xs.mean(), ys.mean()])


def visible_frames(mask: np.ndarray, min_pixels: int = 1) -> list[int]:
    return [t for t in range(mask.shape[0]) if mask[t].sum() >= min_pixels]


def direction_from_pixels(mask: np.ndarray, min_pixels: int = 1) -> tuple[str, float]:
    """(direction, mean px/frame along it) from the centroid path of a [T, H, W] mask."""
    ts = visible_frames(mask, min_pixels)
    path = np.array([centroid(mask[t]) for t in ts])
    steps = np.diff(path, axis=0) / np.diff(ts)[:, None]
    mean = steps.mean(0)
    axis = int(np.argmax(np.abs(mean)))
    name = {(0, -1): "left", (0, 1): "right", (1, -1): "up", (1, 1): "down"}[(axis, int(np.sign(mean[axis])))]
    return name, float(np.abs(mean[axis]))


# ---------------------------------------------------------------------------------------------------
# Rendered frames


def test_motion_direction_and_speed_in_pixels():
    for scene in scenes(40):
        frames = render_clip(scene)
        assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8
        for obj in scene.objects:
            mask = exact_mask(frames, obj.colour)
            ts = visible_frames(mask)
            assert ts == list(range(obj.start, obj.end)), obj
            path = np.array([centroid(mask[t]) for t in ts])
            ux, uy = UNIT[obj.direction]
            for a, b in zip(path[:-1], path[1:]):
                along = (b - a) @ np.array([ux, uy])
                across = (b - a) @ np.array([uy, ux])
                assert along >= 3.0, (obj, along)
                assert abs(across) < 1e-9, (obj, across)


def test_shapes_are_large_and_distinct():
    expected_area = {"circle": np.pi * 9**2, "square": 18 * 18, "triangle": 18 * 18 / 2}
    seen = set()
    for scene in scenes(30):
        frames = render_clip(scene)
        for obj in scene.objects:
            m = exact_mask(frames, obj.colour)[obj.start]
            ys, xs = np.nonzero(m)
            assert xs.max() - xs.min() + 1 >= 16 and ys.max() - ys.min() + 1 >= 16
            assert abs(m.sum() - expected_area[obj.shape]) / expected_area[obj.shape] < 0.08, (obj, m.sum())
            seen.add(obj.shape)
    assert seen == {"circle", "square", "triangle"}


def test_objects_never_overlap_and_stay_inside():
    for scene in scenes(60):
        frames = render_clip(scene)
        for obj in scene.objects:
            mask = exact_mask(frames, obj.colour)
            expected = mask[obj.start].sum()
            # A shape fully inside the frame and never covered keeps its pixel count in every frame.
            assert all(mask[t].sum() == expected for t in range(obj.start, obj.end)), obj


def test_order_question_and_temporal_pairs_match_first_appearance():
    checked = 0
    for i, scene in enumerate(scenes(60)):
        frames = render_clip(scene)
        first = {c: visible_frames(exact_mask(frames, c))[0] for c in scene.colours()}
        visible_at = {
            c: (exact_mask(frames, c)[0].any(), exact_mask(frames, c)[-1].any()) for c in scene.colours()
        }
        rng = np.random.default_rng(i)
        qa = order_question(scene, rng)
        if len(scene.objects) < 2:
            assert qa is None
            continue
        colours = [opt.split()[1] for opt in qa.options]  # "the red circle"
        assert len(set(first[c] for c in colours)) == 2  # appearances are distinct frames
        want = min if "first" in qa.question else max
        assert qa.answer.split()[1] == want(colours, key=lambda c: first[c])
        for pair in temporal_pairs(scene, rng):
            for qa_, expected in ((pair.basic, "yes"), (pair.hallucinated, "no")):
                assert qa_.answer == expected
                named = re.findall(r"the (\w+) \w+", qa_.question)
                if pair.type == "temporal_relative":
                    truth = first[named[0]] < first[named[1]]
                else:
                    at_start, at_end = visible_at[named[0]]
                    truth = at_start if "beginning" in qa_.question else at_end
                assert (expected == "yes") == truth, qa_
            checked += 1
    assert checked > 20


def test_count_and_existence_match_pixels():
    for i, scene in enumerate(scenes(50)):
        frames = render_clip(scene)
        present = [c for c in CFG.colours if exact_mask(frames, c).any()]
        assert count_question(scene, CFG).answer == str(len(present))
        yes, no = existence_questions(scene, np.random.default_rng(i), CFG)
        assert (yes.answer, no.answer) == ("yes", "no")
        assert re.search(r"a (\w+) \w+ in", yes.question).group(1) in present
        absent_colour = re.search(r"a (\w+) \w+ in", no.question).group(1)
        assert not exact_mask(frames, absent_colour).any()
        # Nothing but the background and the scene's colours is drawn.
        packed = frames.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
        assert len(np.unique(packed)) == len(present) + 1


def test_caption_and_description_match_pixels():
    for scene in scenes(30):
        frames = render_clip(scene)
        text = caption(scene)
        items = re.findall(r"(\w+) (\w+): frames (\d+)-(\d+), moves (\w+)\.", text)
        assert text.startswith(f"{len(items)} object")
        assert len(items) == len(scene.objects)
        firsts = []
        for colour, _shape, a, b, direction in items:
            mask = exact_mask(frames, colour)
            ts = visible_frames(mask)
            assert (int(a), int(b)) == (ts[0] + 1, ts[-1] + 1)
            assert direction == direction_from_pixels(mask)[0]
            firsts.append(ts[0])
        assert firsts == sorted(firsts)  # listed in order of appearance
        desc = describe(scene)
        # Every object's motion is mentioned, in order of appearance.
        mentions = re.findall(r"\b[Aa] (\w+) \w+ (?:appears and )?moves (\w+)", desc)
        assert [m[0] for m in mentions] == [it[0] for it in items]
        assert [m[1] for m in mentions] == [it[4] for it in items]


def test_motion_pair_probes_prior_for_prior_colour_against_prior():
    for i, scene in enumerate(scenes(40, against_prior=True, n_objects=1)):
        frames = render_clip(scene)
        pair = motion_pair(scene, np.random.default_rng(i), CFG)
        true_dir = direction_from_pixels(exact_mask(frames, CFG.prior_colour))[0]
        assert true_dir != CFG.prior_direction
        assert pair.basic.question.endswith(f"move {true_dir}?")
        assert pair.hallucinated.question.endswith(f"move {CFG.prior_direction}?")


def test_prior_strength_in_training_and_held_out_clips():
    def left_share(clips, colour_is_prior: bool) -> float:
        dirs = [
            o.vx < 0 and o.vy == 0
            for c in clips
            for o in c.scene.objects
            if (o.colour == CFG.prior_colour) == colour_is_prior
        ]
        assert len(dirs) > 150
        return float(np.mean(dirs))

    train = sample_clips("train", 500, seed=7, config=CFG)
    test = sample_clips("test", 500, seed=7, config=CFG, prior_strength=0.5)
    assert abs(left_share(train, True) - 0.75) < 0.06
    assert abs(left_share(test, True) - 0.5) < 0.07
    assert abs(left_share(train, False) - 0.25) < 0.05  # other colours: uniform
    prior = sample_clips("prior_break", 50, seed=7, config=CFG)
    for clip in prior:
        red = clip.scene.by_colour(CFG.prior_colour)
        assert red is not None and red.direction != CFG.prior_direction and len(clip.scene.objects) >= 2


def test_clips_do_not_depend_on_how_many_are_sampled():
    few = sample_clips("pretrain", 5, seed=3, config=CFG, curriculum=0.0)
    many = sample_clips("pretrain", 12, seed=3, config=CFG, curriculum=0.0)
    assert [c.scene for c in few] == [c.scene for c in many[:5]]
    other_split = sample_clips("train", 5, seed=3, config=CFG)
    assert all(a.scene != b.scene for a, b in zip(few, other_split))


def test_render_scales_and_rejects_bad_arguments():
    scene = scenes(1)[0]
    big = render_clip(scene, size=128)
    small = render_clip(scene)
    for obj in scene.objects:
        ratio = exact_mask(big, obj.colour).sum() / exact_mask(small, obj.colour).sum()
        assert 3.6 < ratio < 4.4
    with pytest.raises(ValueError, match="sampled for 16 frames"):
        render_clip(scene, frames=8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_objects": 4}, "max_objects"),
        ({"shape_size": 60}, "lower speed_min"),
        ({"prior_colour": "magenta"}, "prior_colour"),
        ({"colours": ("red", "purple", "blue", "green")}, "unknown colours"),
        ({"size": 63}, "even"),
        ({"prior_strength": 1.5}, "prior_strength"),
        ({"background": "white"}, "background"),
        ({"trail": 4}, "trail"),
        ({"order_question": "which"}, "order_question"),
    ],
)
def test_bad_world_parameters_are_named(kwargs, message):
    with pytest.raises(RRPOError, match=message):
        sample_scene(np.random.default_rng(0), WorldConfig(**kwargs))


def test_colour_order_question_names_the_first_and_last_colour_in_pixels():
    cfg = WorldConfig(order_question="colour")
    seen = {"first": 0, "last": 0}
    for i, scene in enumerate(scenes(40)):
        frames = render_clip(scene)
        first = {c: visible_frames(exact_mask(frames, c))[0] for c in scene.colours()}
        for which, pick in (("first", min), ("last", max)):
            qa = colour_order_qa(scene, which, cfg)
            assert qa.question == f"Which colour appears {which}?" and qa.options == CFG.colours
            assert qa.answer == pick(first, key=first.get) and qa.kind == "order"
        # In a "colour" world the order question keeps the pair question's random draws (so every
        # later question of the clip is the same) and its first / last.
        pair = order_question(scene, np.random.default_rng(i))
        colour = order_question(scene, np.random.default_rng(i), cfg)
        assert (pair is None) == (colour is None)
        if pair is not None:
            assert colour.question == "Which colour appears first?"
            assert colour.answer == min(first, key=first.get)
            seen[pair.info["which"]] += 1  # whatever the pair question would have asked
            rng_pair, rng_colour = np.random.default_rng(i), np.random.default_rng(i)
            order_question(scene, rng_pair), order_question(scene, rng_colour, cfg)
            assert rng_pair.random() == rng_colour.random()
    assert min(seen.values()) > 5
    with pytest.raises(ValueError, match="first"):
        colour_order_qa(scenes(1)[0], "middle", cfg)


def test_colour_order_world_changes_only_the_order_questions(tmp_path):
    pair = generate_dataset(tmp_path / "pair", seed=5, write_mp4=False, **SMALL)
    colour = generate_dataset(tmp_path / "colour", seed=5, write_mp4=False, order_question="colour", **SMALL)
    assert colour["config"]["order_question"] == "colour" and pair["config"]["order_question"] == "pair"

    def files(root: Path) -> dict[str, str]:
        return {
            str(f.relative_to(root)): f.read_text()
            for f in sorted(root.rglob("*.json*"))
            if f.name != "world.json"
        }

    a, b = files(tmp_path / "pair"), files(tmp_path / "colour")
    assert a.keys() == b.keys()
    changed = sorted(k for k in a if a[k] != b[k])
    assert "scenes.jsonl" not in changed and "benchmarks/temporal/order.json" in changed
    assert set(changed) <= {"benchmarks/temporal/order.json", "pretrain.jsonl", "train.jsonl"}
    scenes_by_id = load_scenes(tmp_path / "colour")
    order = json.loads(b["benchmarks/temporal/order.json"])
    assert len(order) == len(json.loads(a["benchmarks/temporal/order.json"])) > 0
    for item in order:
        scene = scenes_by_id[Path(item["video"]).stem]
        assert item["candidates"] == list(CFG.colours)
        assert item["question"] == "Which colour appears first?" and len(scene.objects) > 1
        assert item["answer"] == scene.objects[0].colour  # pixel check: the test above

    # Every other question of the pretraining and pool records is the same in both worlds.
    def split(text: str, kinds: list) -> tuple[list, list]:
        rows = [json.loads(line) for line in text.splitlines()]
        if "turns" in rows[0]:  # pretrain.jsonl: one record per clip, its questions as turns
            rows = [dict(t, clip=r["id"]) for r in rows for t in r["turns"]]
        else:
            rows = [dict(r, kind=r["metadata"]["kind"]) for r in rows]
        kinds.extend(r["kind"] for r in rows)
        return [r for r in rows if r["kind"] == "order"], [r for r in rows if r["kind"] != "order"]

    for name in ("pretrain.jsonl", "train.jsonl"):
        kinds: list = []
        (order_a, rest_a), (order_b, rest_b) = split(a[name], kinds), split(b[name], kinds)
        assert rest_a == rest_b and len(order_a) == len(order_b) > 0
        assert all(r["question"].startswith("Which colour appears") for r in order_b)
        assert all(r["options"] == list(CFG.colours) for r in order_b)


# ---------------------------------------------------------------------------------------------------
# Written dataset


SMALL = dict(n_pretrain=8, n_train=6, n_test=24, n_prior_break=8, progress=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy") / "ds"
    generate_dataset(out, seed=11, **SMALL)
    return out


@functools.lru_cache(maxsize=64)
def decoded_labels(path: Path) -> np.ndarray:
    """Nearest-palette labels [T, H, W] of a decoded mp4 (cached: several tasks share a clip)."""
    return nearest_palette(read_frames(path, 16), CFG.colours)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_mp4_round_trip_keeps_colours_and_positions(dataset):
    scenes_ = load_scenes(dataset)
    for cid in ["train_000000", "test_000001", "prior_break_000000", "pretrain_000007"]:
        raw = render_clip(scenes_[cid])
        decoded = read_frames(dataset / "videos" / f"{cid}.mp4", 16)
        assert decoded.shape == raw.shape
        labels = nearest_palette(decoded, CFG.colours)
        for k, colour in enumerate(CFG.colours, start=1):
            truth = exact_mask(raw, colour)
            seen = labels == k
            for t in range(16):
                if truth[t].any():
                    overlap = (seen[t] & truth[t]).sum() / truth[t].sum()
                    assert overlap > 0.85, (cid, colour, t, overlap)
                    assert np.abs(centroid(seen[t]) - centroid(truth[t])).max() < 1.0
                else:
                    # Compression may tint a few edge pixels; never a shape's worth.
                    assert seen[t].sum() < 15, (cid, colour, t, seen[t].sum())


def test_benchmark_answers_match_decoded_videos(dataset):
    """Direction and count answers of the written benchmarks, recomputed from the decoded mp4s."""
    for rel in ["temporal/direction.json", "prior_break/prior_against.json", "prior_break/control.json"]:
        entries = json.loads((dataset / "benchmarks" / rel).read_text())
        for e in entries:
            colour = re.search(r"the (\w+) \w+ move", e["question"]).group(1)
            mask = decoded_labels(dataset / e["video"]) == 1 + CFG.colours.index(colour)
            direction, speed = direction_from_pixels(mask, min_pixels=60)
            assert e["answer"] == direction and speed >= 2.8, (rel, e)
    for e in json.loads((dataset / "benchmarks/temporal/count.json").read_text()):
        labels = decoded_labels(dataset / e["video"])
        n = sum(1 for k in range(1, len(CFG.colours) + 1) if ((labels == k).sum((1, 2)) >= 60).any())
        assert e["answer"] == str(n)


def test_prior_against_answers_never_follow_prior(dataset):
    entries = json.loads((dataset / "benchmarks/prior_break/prior_against.json").read_text())
    control = json.loads((dataset / "benchmarks/prior_break/control.json").read_text())
    assert len(entries) == len(control) == SMALL["n_prior_break"]
    assert all(CFG.prior_colour in e["question"] and e["answer"] != CFG.prior_direction for e in entries)
    assert all(CFG.prior_colour not in e["question"] for e in control)
    assert [e["video"] for e in entries] == [e["video"] for e in control]


def test_split_formats_parse_back(dataset):
    world = json.loads((dataset / "world.json").read_text())
    assert world["seed"] == 11 and WorldConfig.from_dict(world["config"]) == WorldConfig()
    assert world["splits"] == {"pretrain": 8, "train": 6, "test": 24, "prior_break": 8}
    videos = sorted(p.name for p in (dataset / "videos").iterdir())
    assert len(videos) == sum(world["splits"].values())

    # MVBench / TVBench: one json per task, entries with exactly these keys, answer among candidates.
    for task in ["order", "direction", "count"]:
        entries = json.loads((dataset / "benchmarks/temporal" / f"{task}.json").read_text())
        assert entries and world["files"][f"benchmarks/temporal/{task}.json"] == len(entries)
        for e in entries:
            assert set(e) == {"video", "question", "candidates", "answer"}
            assert e["answer"] in e["candidates"] and (dataset / e["video"]).is_file()
    # VideoHallucer pairs.
    for category in ["object_existence", "temporal", "motion"]:
        pairs = json.loads((dataset / "benchmarks/hallucination" / category / f"{category}.json").read_text())
        assert pairs
        for p in pairs:
            assert set(p) == {"basic", "hallucination", "type"}
            assert p["basic"]["answer"] == "yes" and p["hallucination"]["answer"] == "no"
            assert (
                p["basic"]["video"] == p["hallucination"]["video"]
                and (dataset / p["basic"]["video"]).is_file()
            )
            assert p["basic"]["question"] != p["hallucination"]["question"]
    # VideoQuestion records.
    train = read_jsonl(dataset / "train.jsonl")
    assert len({r["id"] for r in train}) == len(train) == world["files"]["train.jsonl"]
    kinds = {r["metadata"]["kind"] for r in train}
    assert {"direction", "count", "existence", "describe"} <= kinds
    for r in train + read_jsonl(dataset / "benchmarks/open/open.jsonl"):
        assert set(r) == {"id", "video", "question", "answer", "answer_type", "options", "metadata"}
        assert (dataset / r["video"]).is_file() and r["metadata"]["caption"]
        if r["answer_type"] == "mcq":
            assert r["answer"] in r["options"]
        elif r["answer_type"] == "yesno":
            assert r["answer"] in ("yes", "no") and r["options"] is None
        else:
            assert r["answer_type"] == "open" and r["options"] is None
    assert {r["answer_type"] for r in read_jsonl(dataset / "benchmarks/open/open.jsonl")} == {"open"}
    # Pretraining examples: caption turn first; curriculum puts single-object clips first.
    pretrain = read_jsonl(dataset / "pretrain.jsonl")
    assert all(p["turns"][0]["kind"] == "caption" for p in pretrain)
    n_single = round(0.25 * len(pretrain))
    assert [p["metadata"]["n_objects"] for p in pretrain[:n_single]] == [1] * n_single
    assert [p["metadata"]["curriculum_stage"] for p in pretrain] == [0] * n_single + [1] * (
        len(pretrain) - n_single
    )
    # No held-out clip is a training clip.
    train_videos = {r["video"] for r in train} | {p["video"] for p in pretrain}
    assert not train_videos & {r["video"] for r in read_jsonl(dataset / "benchmarks/open/open.jsonl")}


def test_hallucination_files_have_videohallucer_structure(dataset, shared_fixtures):
    real = json.loads((shared_fixtures / "benchmarks/videohallucer/temporal.json").read_text())
    ours = json.loads((dataset / "benchmarks/hallucination/temporal/temporal.json").read_text())
    assert set(ours[0]) == set(real[0])
    assert set(ours[0]["basic"]) == set(real[0]["basic"])
    assert {p["type"] for p in ours} <= {p["type"] for p in real}  # temporal_relative / temporal_absolute


def test_same_seed_gives_identical_files_and_frames(dataset, tmp_path):
    again = tmp_path / "again"
    generate_dataset(again, seed=11, **SMALL)
    names = sorted(str(p.relative_to(dataset)) for p in dataset.rglob("*.json*"))
    assert names == sorted(str(p.relative_to(again)) for p in again.rglob("*.json*"))
    for name in names:
        assert (dataset / name).read_bytes() == (again / name).read_bytes(), name
    for cid in ["train_000003", "test_000010"]:
        a = read_frames(dataset / "videos" / f"{cid}.mp4", 16)
        b = read_frames(again / "videos" / f"{cid}.mp4", 16)
        assert np.array_equal(a, b)
    other = tmp_path / "other"
    generate_dataset(other, seed=12, write_mp4=False, **SMALL)
    assert (other / "train.jsonl").read_bytes() != (dataset / "train.jsonl").read_bytes()


def test_existing_dataset_needs_overwrite(tmp_path):
    out = tmp_path / "ds"
    generate_dataset(out, seed=0, n_pretrain=2, n_train=1, n_test=1, n_prior_break=1, progress=False)
    (out / "videos" / "stale.mp4").write_bytes(b"x")
    with pytest.raises(RRPOError, match="overwrite"):
        generate_dataset(out, seed=0, n_pretrain=2, write_mp4=False, progress=False)
    generate_dataset(
        out, seed=0, n_pretrain=2, n_train=1, n_test=1, n_prior_break=1, overwrite=True, progress=False
    )
    assert not (out / "videos" / "stale.mp4").exists()
    assert len(list((out / "videos").iterdir())) == 5


def test_cli_generate_and_extension_hook(tmp_path, capsys):
    added = []

    def add_dummy(toy_sub):
        p = toy_sub.add_parser("dummy")
        p.set_defaults(func=lambda args: added.append(args.toy_command) or 0)

    commands.register_toy_subcommand(add_dummy)
    try:
        parser = argparse.ArgumentParser(prog="rrpo")
        commands.register(parser.add_subparsers(dest="command"))
        out = tmp_path / "cli"
        args = parser.parse_args(
            ["toy", "generate", "--out", str(out), "--pretrain", "3", "--train", "2", "--test", "2",
             "--prior-break", "1", "--seed", "5", "--no-videos"]
        )  # fmt: skip
        assert args.func(args) == 0
        world = json.loads((out / "world.json").read_text())
        assert world["seed"] == 5 and world["splits"]["pretrain"] == 3 and not world["videos_written"]
        assert "wrote 8 clips" in capsys.readouterr().out
        assert world["config"]["order_question"] == "pair"
        args = parser.parse_args(
            ["toy", "generate", "--out", str(out), "--overwrite", "--no-videos", "--order-question", "colour"]
        )
        assert args.func(args) == 0
        assert json.loads((out / "world.json").read_text())["config"]["order_question"] == "colour"
        order = json.loads((out / "benchmarks/temporal/order.json").read_text())
        assert order and all(o["question"] == "Which colour appears first?" for o in order)
        args = parser.parse_args(["toy", "dummy"])
        assert args.func(args) == 0 and added == ["dummy"]
        assert commands.TOY_SUBPARSERS is not None and "generate" in commands.TOY_SUBPARSERS.choices
    finally:
        commands._REGISTRARS.remove(add_dummy)


def test_written_files_load_with_the_project_readers(dataset):
    """Contract with rrpo.data.record and rrpo.eval.benchmarks: the files load, and the loaders
    see the answers the files state."""
    from rrpo.data.record import load_questions
    from rrpo.eval.benchmarks import get_benchmark

    train = load_questions(dataset / "train.jsonl")
    assert len(train) == len(read_jsonl(dataset / "train.jsonl"))
    assert {q.answer_type for q in load_questions(dataset / "benchmarks/open/open.jsonl")} == {"open"}
    items = get_benchmark("mvbench").load(dataset / "benchmarks/temporal")
    direction = json.loads((dataset / "benchmarks/temporal/direction.json").read_text())
    loaded = [i for i in items if i.task == "direction"]
    assert [i.options[ord(i.answer) - ord("A")] for i in loaded] == [e["answer"] for e in direction]
    prior = get_benchmark("mvbench").load(dataset / "benchmarks/prior_break")
    assert {i.task for i in prior} == {"prior_against", "control"}
    pairs = get_benchmark("videohallucer").load(dataset / "benchmarks/hallucination")
    assert {i.category for i in pairs} == {"object_existence", "temporal", "motion"}
    assert all(i.answer == ("yes" if i.id.endswith("/basic") else "no") for i in pairs)


def test_gradient_background_tells_position_and_survives_mp4(tmp_path):
    """The 'gradient' world: objects are drawn exactly as on black, the background's red rises left
    to right and its blue top to bottom, the option round-trips through the files, and after H.264
    the background still tells each 8-px patch's column and row apart (what the option is for)."""
    from rrpo.toy.world import GRADIENT_MAX, Scene, background_image

    cfg = WorldConfig(background="gradient")
    scene = sample_scene(np.random.default_rng(3), cfg)
    assert scene.background == "gradient" and Scene.from_dict(scene.to_dict()) == scene
    black = Scene.from_dict({**scene.to_dict(), "background": "black"})
    assert "background" not in black.to_dict()  # black worlds keep their earlier files
    frames, plain = render_clip(scene), render_clip(black)
    objects = plain.any(-1)
    assert np.array_equal(frames[objects], plain[objects])  # shapes untouched
    size = cfg.size
    x = (np.arange(size) + 0.5) / size
    want = np.zeros((size, size, 3))
    want[:, :, 0], want[:, :, 2] = GRADIENT_MAX * x[None, :], GRADIENT_MAX * x[:, None]
    assert np.abs(frames[~objects] - np.broadcast_to(want, frames.shape)[~objects]).max() <= 0.5
    assert np.array_equal(background_image("black", 8), np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="unknown background"):
        background_image("white", 8)

    out = tmp_path / "g"
    world = generate_dataset(out, seed=2, background="gradient", **SMALL)
    assert world["config"]["background"] == "gradient"
    scenes_ = load_scenes(out)
    assert {s.background for s in scenes_.values()} == {"gradient"}
    cid = "test_000000"
    decoded = read_frames(out / "videos" / f"{cid}.mp4", 16).astype(np.float32)
    empty = ~render_clip(black_of(scenes_[cid])).any(-1)  # background pixels in every frame
    empty = empty.all(0)
    patches = decoded.mean(0).reshape(size // 8, 8, size // 8, 8, 3)
    keep = empty.reshape(size // 8, 8, size // 8, 8).all((1, 3))
    red = np.where(keep, patches[..., 0].mean((1, 3)), np.nan)
    blue = np.where(keep, patches[..., 2].mean((1, 3)), np.nan)
    assert np.all(np.diff(np.nanmean(red, 0)) > 5)  # columns: red rises left to right
    assert np.all(np.diff(np.nanmean(blue, 1)) > 5)  # rows: blue rises top to bottom


def black_of(scene):
    from rrpo.toy.world import Scene

    return Scene.from_dict({**scene.to_dict(), "background": "black"})


def test_trail_lies_behind_the_object_and_reads_as_background():
    """With `trail`, the pixels a moving object covered in the last frames are drawn dimmed behind it:
    in any single frame the dim pixels' centroid is displaced against the motion, the object itself
    is drawn exactly as without a trail, and every dim pixel is nearest to the background colour, so
    the palette tests (and H.264's colour rounding) see only the objects."""
    from rrpo.toy.world import DIRECTIONS, TRAIL_ALPHAS, Scene

    cfg = WorldConfig(trail=3)
    checked = 0
    for scene in [sample_scene(np.random.default_rng([5, i]), cfg) for i in range(30)]:
        assert scene.trail == 3 and Scene.from_dict(scene.to_dict()) == scene
        plain = render_clip(Scene.from_dict({**scene.to_dict(), "trail": 0}))
        frames = render_clip(scene)
        exact = np.zeros(frames.shape[:3], dtype=bool)
        for obj in scene.objects:
            mask = exact_mask(plain, obj.colour)
            assert np.array_equal(exact_mask(frames, obj.colour), mask)  # the object is untouched
            exact |= mask
        dim = frames.any(-1) & ~exact
        labels = nearest_palette(frames, CFG.colours)
        assert (labels[dim] == 0).all()  # trail pixels read as background
        for obj in scene.objects:
            level = np.array(PALETTE[obj.colour], dtype=np.float32)
            for t in range(obj.start + 2, obj.end):
                # dim pixels of this object's colour hue: a multiple of its colour below TRAIL_ALPHAS[0]
                ratio = frames[t].astype(np.float32) / level
                mine = dim[t] & (np.ptp(ratio, -1) < 0.05) & (ratio.max(-1) <= TRAIL_ALPHAS[0] + 0.01)
                if mine.sum() < 10:
                    continue  # the trail hidden under another object
                behind = centroid(mine) - centroid(exact_mask(frames[t : t + 1], obj.colour)[0])
                dx, dy = DIRECTIONS[obj.direction]
                assert behind @ np.array([dx, dy]) < -3, (obj, t, behind)
                checked += 1
    assert checked > 50
