"""The toy's rule fact-checker (rrpo.toy.factcheck) against ground truth read from the rendered pixels,
and on hand-built descriptions with exactly one wrong fact each."""

from __future__ import annotations

import numpy as np
import pytest

from rrpo.toy.factcheck import check_description, description_verdict, fact_check_judge, parse_description
from rrpo.toy.splits import sample_clips
from rrpo.toy.world import PALETTE, SceneObject, WorldConfig, render_clip
from rrpo.toy.world import Scene as ToyScene

CFG = WorldConfig(description="colour")


def pixel_truth(frames: np.ndarray, colours: tuple[str, ...]) -> list[dict]:
    """What the frames show, computed from pixels alone: per colour present, its first and last visible
    frame and the direction its centroid moves; sorted by first appearance."""
    out = []
    for c in colours:
        mask = np.all(frames == np.array(PALETTE[c], dtype=np.uint8), axis=-1)  # [T, H, W]
        visible = [t for t in range(len(frames)) if mask[t].any()]
        if not visible:
            continue
        ys, xs = zip(*(np.argwhere(mask[t]).mean(axis=0) for t in (visible[0], visible[-1])))
        dx, dy = xs[1] - xs[0], ys[1] - ys[0]
        direction = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
        out.append({"colour": c, "first": visible[0], "last": visible[-1], "direction": direction})
    return sorted(out, key=lambda o: o["first"])


def pixel_description(truth: list[dict], frames: int) -> str:
    """A description written from the pixel truth (not by rrpo.toy.questions.describe)."""
    events = []
    for i, o in enumerate(truth):
        verb = "moves" if (i == 0 and o["first"] == 0) else "appears and moves"
        events.append((o["first"], 0, f"a {o['colour']} object {verb} {o['direction']}"))
        if o["last"] < frames - 1:
            events.append((o["last"] + 1, 1, f"the {o['colour']} object disappears"))
    events.sort(key=lambda e: e[:2])
    text = [t if k == 0 else f"then {t}" for k, (_, _, t) in enumerate(events)]
    return " ".join(s[0].upper() + s[1:] + "." for s in text)


CLIPS = sample_clips("test", 40, seed=3, config=CFG)


@pytest.mark.parametrize("clip", CLIPS[:40:4], ids=lambda c: c.id)
def test_a_description_of_the_rendered_pixels_is_all_right(clip):
    truth = pixel_truth(render_clip(clip.scene), CFG.colours)
    text = pixel_description(truth, clip.scene.frames)
    check = check_description(text, clip.scene)
    assert check.wrong == [] and check.accuracy == 1.0
    assert len(check.facts) == 4 * len(clip.scene.objects)
    assert description_verdict(text, clip.scene).correct is True


# A two-object scene: red from frame 0 moving left until frame 9, blue from frame 4 moving up, staying.
SCENE = ToyScene(
    (
        SceneObject("red", "circle", 0, 9, 40, 30, -3, 0),
        SceneObject("blue", "square", 4, 16, 30, 50, 0, -3),
    )
)
RIGHT = "A red object moves left. Then a blue object appears and moves up. Then the red object disappears."


def test_the_scene_used_below_renders_as_described():
    truth = pixel_truth(render_clip(SCENE), ("red", "green", "blue", "yellow"))
    assert pixel_description(truth, 16) == RIGHT
    assert check_description(RIGHT, SCENE).wrong == []


@pytest.mark.parametrize(
    "text, wrong",
    [
        # direction
        (
            "A red object moves right. Then a blue object appears and moves up. Then the red object disappears.",
            ["red moves left"],
        ),
        # the order of the two appearances
        (
            "A blue object moves up. Then a red object appears and moves left. Then the red object disappears.",
            ["red before blue"],
        ),
        # a disappearance left out
        ("A red object moves left. Then a blue object appears and moves up.", ["red disappears"]),
        # a disappearance that did not happen
        (
            "A red object moves left. Then a blue object appears and moves up. Then the red object disappears. "
            "Then the blue object disappears.",
            ["blue stays"],
        ),
        # an object that is not there
        (
            "A red object moves left. Then a blue object appears and moves up. Then the red object disappears. "
            "Then a green object appears and moves down.",
            ["2 objects", "no green object in the clip"],
        ),
        # one colour twice
        (
            "A red object moves left. Then a blue object appears and moves up. Then a red object appears and "
            "moves left. Then the red object disappears.",
            ["2 objects", "red appears twice"],
        ),
    ],
)
def test_one_wrong_fact_is_found(text, wrong):
    check = check_description(text, SCENE)
    assert check.wrong == wrong
    n = len(check.facts)
    assert check.accuracy == pytest.approx((n - len(wrong)) / n)
    verdict = description_verdict(text, SCENE)
    assert verdict.correct is False and verdict.extracted == text


def test_an_object_left_out_costs_all_its_facts():
    check = check_description("A red object moves left. Then the red object disappears.", SCENE)
    assert check.wrong == ["blue present", "blue moves up", "blue stays", "red before blue", "2 objects"]
    assert check.accuracy == pytest.approx(3 / 8)


def test_malformed_replies_are_trimmed_to_their_well_formed_sentences_or_rejected():
    cut = RIGHT + " Then the blue obj"  # cut off by the token limit
    parsed = parse_description(cut)
    assert parsed.kept == RIGHT and parsed.dropped == "Then the blue obj"
    verdict = description_verdict(cut, SCENE)
    assert (
        verdict.correct is True and verdict.extracted == RIGHT and "trimmed 17 characters" in verdict.reason
    )
    garbled = "A red object moves left. Then blue blue up. Then a blue object appears and moves up."
    parsed = parse_description(garbled)
    assert parsed.kept == "A red object moves left." and parsed.dropped.startswith("Then blue blue up.")
    assert description_verdict(garbled, SCENE).extracted == "A red object moves left."
    for text in ("", "moves moves left", "(B) up"):
        verdict = description_verdict(text, SCENE)
        assert verdict.correct is None and verdict.reason.startswith("malformed description")


def test_full_names_are_read_too_and_the_judge_finds_the_clip():
    full = "A red circle moves left. Then a blue square appears and moves up. Then the red circle disappears."
    assert check_description(full, SCENE).wrong == []

    class Q:
        metadata = {"clip": "test_000001"}

    judge = fact_check_judge({"test_000001": SCENE})
    assert judge(Q(), RIGHT).correct is True
    Q.metadata = {"clip": "elsewhere"}
    assert judge(Q(), RIGHT).correct is None


def test_description_pairs_from_the_pipeline(tmp_path):
    """generate_pairs with the fact-checker as the open-answer judge: a wrong description becomes the
    rejected response (trimmed to its well-formed sentences), spans from the word differ; a right
    one is 'correct'; a malformed one is rejected with its reason."""
    from rrpo.data.record import load_questions
    from rrpo.selfalign.pipeline import GenerateConfig, generate_pairs
    from rrpo.toy.questions import describe
    from rrpo.toy.splits import generate_dataset, load_scenes

    world = tmp_path / "w"
    generate_dataset(
        world, n_pretrain=0, n_train=3, n_test=0, n_prior_break=0, description="colour", progress=False
    )
    scenes = load_scenes(world)
    pool = [q for q in load_questions(world / "train.jsonl") if q.answer_type == "open"]
    truth = {q.id: describe(scenes[q.metadata["clip"]], "colour") for q in pool}
    assert [q.answer for q in pool] == [truth[q.id] for q in pool]
    first = scenes[pool[0].metadata["clip"]].objects[0]
    wrong_dir = next(d for d in ("left", "right", "up", "down") if d != first.direction)
    wrong = truth[pool[0].id].replace(f"moves {first.direction}", f"moves {wrong_dir}", 1)
    replies = {pool[0].id: wrong + " Then the", pool[1].id: truth[pool[1].id], pool[2].id: "(B) up"}
    prompts = {q.question: q.id for q in pool}
    assert len(prompts) == 1  # one prompt: answer by position in the batch instead

    def generator(items):
        order = [q.id for q in pool for _ in range(2)]
        return [replies[i] for i in order[: len(items)]]

    cfg = GenerateConfig(frames=16, num_perturbations=2, batch_size=6, judge="rule", max_new_tokens=48)
    out = tmp_path / "pairs.jsonl"
    summary = generate_pairs(
        pool, world, out, generator, cfg, progress=False, open_judge=fact_check_judge(scenes)
    )
    assert summary["pairs_made"] == 1 and summary["correct_on_every_perturbation"] == 1
    assert summary["rejects_by_reason"] == {"unjudged": 1}
    import json

    pair = json.loads(out.read_text())
    assert pair["chosen"] == truth[pool[0].id] and pair["rejected"] == wrong  # trimmed: " Then the" dropped
    spans = [
        (pair["chosen"][a:b], pair["rejected"][c:d])
        for (a, b), (c, d) in zip(pair["chosen_spans"], pair["rejected_spans"])
    ]
    assert spans == [(first.direction, wrong_dir)]
    reject = json.loads((tmp_path / "pairs.rejects.jsonl").read_text())
    assert reject["id"] == pool[2].id and "malformed description" in reject["reason"]
