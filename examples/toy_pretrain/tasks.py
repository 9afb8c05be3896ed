"""Training examples: pretrain.jsonl turns in the evaluation's prompt format, and the auxiliary tasks
(`AUX_TASKS`, one function per task; an unknown name is an error).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rrpo.errors import RecordError, RRPOError

# ---------------------------------------------------------------------------------------------------
# Examples


@dataclass
class Example:
    """One single-turn training / evaluation example: clip `clip` (index into the frame array), the
    exact `prompt` and `answer` text, the question `kind`; for eval, `decisive` is the answer token
    index that decides correctness (1 = the letter after "(", 0 = "Yes"/"No"), None for open text."""

    clip: int
    prompt: str
    answer: str
    kind: str
    id: str = ""
    decisive: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


def question_from_turn(turn: dict[str, Any], where: str):
    """A validated `VideoQuestion` from a pretrain.jsonl turn (RecordError naming `where` otherwise)."""
    from rrpo.data.record import VideoQuestion

    for key in ("question", "answer", "answer_type"):
        if not isinstance(turn.get(key), str):
            raise RecordError(where, key, "missing or not a string")
    q = VideoQuestion(
        id=where,
        video=str(turn.get("video") or "toy.mp4"),
        question=turn["question"],
        answer=turn["answer"],
        answer_type=turn["answer_type"],
        options=turn.get("options"),
    )
    return q.validate(where)


def turn_example(clip: int, turn: dict[str, Any], where: str) -> Example:
    """The training example of one turn, in the evaluation's prompt / answer format."""
    from rrpo.data.answers import reference_answer
    from rrpo.data.prompts import question_prompt

    q = question_from_turn(turn, where)
    decisive = {"mcq": 1, "yesno": 0}.get(q.answer_type)
    return Example(
        clip, question_prompt(q), reference_answer(q), str(turn.get("kind", q.answer_type)), where, decisive
    )


def read_pretrain(data_dir: Path) -> list[dict[str, Any]]:
    """The records of `pretrain.jsonl` (RecordError on a malformed line)."""
    path = data_dir / "pretrain.jsonl"
    if not path.is_file():
        raise RRPOError(
            f"{path}: not found; generate the toy world with `rrpo toy generate --out {data_dir}`"
        )
    records = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(f"{path}:{line_no}", None, f"not JSON ({err})") from err
            for key in ("id", "video", "turns"):
                if key not in rec:
                    raise RecordError(f"{path}:{line_no}", key, "missing")
            if not isinstance(rec["turns"], list) or not rec["turns"]:
                raise RecordError(rec["id"], "turns", "expected a non-empty list")
            records.append(rec)
    return records


def pretrain_examples(records: Sequence[dict[str, Any]]) -> list[Example]:
    """Every turn of every record (caption, describe and QA turns), clip index = record position."""
    out = []
    for i, rec in enumerate(records):
        for k, turn in enumerate(rec["turns"]):
            out.append(turn_example(i, turn, f"{rec['id']}/turn{k}"))
    return out


# Auxiliary "pooling" tasks: the answer depends on the video alone, never on which words the question
# uses. The toy probes (docs/toy.md) found that these are learned from scratch within ~100 steps, while
# every benchmark question (existence, order, direction, yes/no) is an interaction between question
# and video: with balanced answers neither the question nor the video alone predicts them, so the
# gradient has no first-order signal and a tiny model from scratch sits on a plateau.
AUX_PROMPTS = {
    "colours": "Which colours appear in the video?",
    "first_colour": "What colour is the object that appears first?",
    "which_colour": "Which of these colours appears in the video: {} or {}?",
    "earlier_colour": "Which of these colours appears first: {} or {}?",
    "first_direction": "In which direction does the object that appears first move?",
    "directions": "In which directions do the objects move?",
    "which_direction": "Which of these directions does an object move: {} or {}?",
}


def aux_examples(
    records: Sequence[dict[str, Any]],
    scenes: dict[str, Any],
    colours: Sequence[str],
    kinds: Sequence[str],
    world_config: Any = None,
) -> list[Example]:
    """Auxiliary examples of `kinds` (names in `AUX_TASKS`) for each pretraining record (clip index =
    record position), with `scenes` mapping record id -> `world.Scene` (`splits.load_scenes`):

    - "colours": the clip's colours in palette order, "colours: blue yellow";
    - "first_colour": the colour of the object that appears first, "the blue";
    - "which_colour": one present and one absent colour named (in either order), the present one
      answered, "the blue". Unlike "Is there a blue ...?", this is solved by adding two signals
      (named in the question + seen in the video) in the colour-word logits, so it is learned without
      the interaction plateau and gives the model the pieces existence questions need;
    - "earlier_colour": two of the clip's colours named (clips with 2+ objects), the one that appears
      first answered, "the blue" (named + early, added: the same idea for order questions);
    - "first_direction": the direction of the object that appears first, "it moves left" (motion
      read from the video alone);
    - "directions": every direction some object moves in, in left/right/up/down order, "they move
      left up" (pooling over all objects, as "colours" is for colour);
    - "which_direction": one direction some object moves in and one no object moves in, the present
      one answered, "the left" (the additive trick of "which_colour", for motion);
    - "yesno_motion" / "yesno_temporal": both sides of `questions.motion_pair` / `questions.temporal_pairs`
      ("Does the red circle move left?" -> "Yes"), the VideoHallucer questions' kinds, with the
      evaluation's yes/no prompt; `world_config` (`world.WorldConfig`, for the prior) is required.
      Their random choices come from a generator seeded by the record's position, so a run is
      reproducible;
    - "order_mcq": for clips with 2+ objects, one pair of objects (chosen by the record's position)
      asked "Which appears first / last, X or Y?" with the options in both orders: four questions on
      one video whose answer letter flips with the option order, so only reading the options and the
      video together answers them (the model answered "Does X appear before Y?" at 87 % while
      choosing the order question's letter at chance);
    - "option_lookup": "Which option is the blue circle?" with two options in the benchmark's format
      (one of the clip's objects and an absent object of another colour, in either order), answered
      with that option: the letter-finding half of the order question, learnable from the text alone;
    - "colour_order_mcq": "Which colour appears first?" with the palette as options, for every clip
      (`questions.colour_order_qa`; the order question of worlds generated with `--order-question
      colour` asks it of clips with 2+ objects); `world_config` is required.

    Every answer puts a space before the colour, so it is the same token as in the questions
    (" blue"; the toy tokenizer splits a bare "blue" at the start of a reply into pieces)."""
    unknown = sorted(set(kinds) - set(AUX_TASKS))
    if unknown:
        raise RRPOError(f"unknown auxiliary tasks {unknown}; known: {sorted(AUX_TASKS)}")
    if world_config is None and set(NEEDS_WORLD_CONFIG) & set(kinds):
        raise RRPOError(
            "the yesno_motion, yesno_temporal and colour_order_mcq auxiliary tasks need the world's config"
        )
    out = []
    for i, rec in enumerate(records):
        scene = scenes.get(rec["id"])
        if scene is None:
            raise RecordError(rec["id"], "scene", "no scene in scenes.jsonl for this pretraining record")
        clip = _Clip(i, rec["id"], scene, [o.colour for o in scene.objects], list(colours), world_config)
        for kind in kinds:
            out += AUX_TASKS[kind](clip, kind)
    return out


@dataclass(frozen=True)
class _Clip:
    """What an auxiliary task reads of one pretraining clip: its position `i` (the seed of every
    choice, so a run is reproducible), record id, scene, colours in order of appearance (`present`),
    the palette and the world's config."""

    i: int
    id: str
    scene: Any
    present: list[str]
    colours: list[str]
    world_config: Any


def _qa(c: _Clip, kind: str, prompt: str, answer: str) -> list[Example]:
    return [Example(c.i, prompt, answer, kind, f"{c.id}/{kind}")]


def _colours(c: _Clip, kind: str) -> list[Example]:
    return _qa(c, kind, AUX_PROMPTS[kind], "colours: " + " ".join(x for x in c.colours if x in c.present))


def _first_colour(c: _Clip, kind: str) -> list[Example]:
    return _qa(c, kind, AUX_PROMPTS[kind], f"the {c.present[0]}")


def _which_colour(c: _Clip, kind: str) -> list[Example]:
    absent = [x for x in c.colours if x not in c.present]
    if not absent:
        return []  # every colour is in the clip: nothing to contrast with
    i = c.i
    seen, unseen = c.present[i % len(c.present)], absent[(i // 2) % len(absent)]
    named = (seen, unseen) if i % 3 else (unseen, seen)
    return _qa(c, kind, AUX_PROMPTS[kind].format(*named), f"the {seen}")


def _earlier_colour(c: _Clip, kind: str) -> list[Example]:
    present, i = c.present, c.i
    if len(present) < 2:
        return []
    j = (i // 3) % (len(present) - 1)
    early, late = present[j], present[j + 1 + (i // 5) % (len(present) - 1 - j)]
    named = (early, late) if i % 2 else (late, early)
    return _qa(c, kind, AUX_PROMPTS[kind].format(*named), f"the {early}")


def _first_direction(c: _Clip, kind: str) -> list[Example]:
    return _qa(c, kind, AUX_PROMPTS[kind], f"it moves {c.scene.objects[0].direction}")


def _directions(c: _Clip, kind: str) -> list[Example]:
    from rrpo.toy.world import DIRECTIONS

    moving = {o.direction for o in c.scene.objects}
    return _qa(c, kind, AUX_PROMPTS[kind], "they move " + " ".join(d for d in DIRECTIONS if d in moving))


def _which_direction(c: _Clip, kind: str) -> list[Example]:
    from rrpo.toy.world import DIRECTIONS

    moving_in = [o.direction for o in c.scene.objects]
    still = [d for d in DIRECTIONS if d not in moving_in]
    if not still:
        return []
    i = c.i
    seen, unseen = moving_in[i % len(moving_in)], still[(i // 2) % len(still)]
    named = (seen, unseen) if i % 3 else (unseen, seen)
    return _qa(c, kind, AUX_PROMPTS[kind].format(*named), f"the {seen}")


def _order_mcq(c: _Clip, kind: str) -> list[Example]:
    from rrpo.toy.questions import order_qa

    objs = c.scene.objects
    if len(objs) < 2:
        return []
    pairs = [(a, b) for a in range(len(objs)) for b in range(a + 1, len(objs))]
    a, b = pairs[c.i % len(pairs)]
    early, late = objs[a], objs[b]
    out = []
    for which in ("first", "last"):
        for named in ((early, late), (late, early)):
            qa = order_qa(early, late, which, named)  # the benchmark's own wording
            turn = {"kind": kind, "question": qa.question, "answer": qa.answer, "answer_type": "mcq",
                    "options": list(qa.options)}  # fmt: skip
            out.append(turn_example(c.i, turn, f"{c.id}/{kind}/{which}-{named[0].colour}"))
    return out


def _option_lookup(c: _Clip, kind: str) -> list[Example]:
    absent = [x for x in c.colours if x not in c.present]
    if not absent:
        return []
    i, objs = c.i, c.scene.objects
    obj = objs[i % len(objs)]
    other = f"the {absent[(i // 2) % len(absent)]} {objs[(i // 3) % len(objs)].shape}"
    options = [f"the {obj.name}", other] if (i // 5) % 2 else [other, f"the {obj.name}"]
    turn = {"kind": kind, "question": f"Which option is the {obj.name}?", "answer": f"the {obj.name}",
            "answer_type": "mcq", "options": options}  # fmt: skip
    return [turn_example(i, turn, f"{c.id}/{kind}")]


def _colour_order_mcq(c: _Clip, kind: str) -> list[Example]:
    from rrpo.toy.questions import colour_order_qa

    qa = colour_order_qa(c.scene, "first", c.world_config)
    turn = {"kind": kind, "question": qa.question, "answer": qa.answer, "answer_type": "mcq",
            "options": list(qa.options)}  # fmt: skip
    return [turn_example(c.i, turn, f"{c.id}/{kind}")]


def _yesno_pairs(c: _Clip, kind: str) -> list[Example]:
    from rrpo.toy.questions import motion_pair, temporal_pairs

    rng = np.random.default_rng([7, c.i])
    pairs = (
        [motion_pair(c.scene, rng, c.world_config)]
        if kind == "yesno_motion"
        else temporal_pairs(c.scene, rng)
    )
    out = []
    for k, pair in enumerate(pairs):
        for side, qa in (("basic", pair.basic), ("hallucinated", pair.hallucinated)):
            turn = {"question": qa.question, "answer": qa.answer, "answer_type": qa.answer_type, "kind": kind}
            out.append(turn_example(c.i, turn, f"{c.id}/{kind}{k}/{side}"))
    return out


# Every auxiliary task: name -> the function making its examples for one clip. The prompted ones of
# AUX_PROMPTS; VideoHallucer-style yes/no pairs made by the world's own generators (both sides, the
# evaluation's prompt), the benchmark's motion and temporal kinds that pretrain.jsonl lacks;
# "order_mcq" the benchmark's own order question in all four variants for one pair per clip;
# "option_lookup" the step of every multiple-choice answer that reads no video: naming an option's
# letter; "colour_order_mcq" the order question with the palette as options (`--order-question colour`).
AUX_TASKS: dict[str, Callable[[_Clip, str], list[Example]]] = {
    "colours": _colours,
    "first_colour": _first_colour,
    "which_colour": _which_colour,
    "earlier_colour": _earlier_colour,
    "first_direction": _first_direction,
    "directions": _directions,
    "which_direction": _which_direction,
    "yesno_motion": _yesno_pairs,
    "yesno_temporal": _yesno_pairs,
    "order_mcq": _order_mcq,
    "option_lookup": _option_lookup,
    "colour_order_mcq": _colour_order_mcq,
}
NEEDS_WORLD_CONFIG = ("yesno_motion", "yesno_temporal", "colour_order_mcq")
