"""The toy world's text: dense captions, descriptions, and the questions asked of a scene (multiple
choice, yes/no, VideoHallucer-style pairs), each a pure function of the scene and a numpy Generator.
The scenes, their sampling and rendering are in `rrpo.toy.world`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rrpo.toy.world import (
    CAPTION_PROMPT,
    DESCRIBE_PROMPT,
    DIRECTIONS,
    Scene,
    SceneObject,
    WorldConfig,
)


def caption(scene: Scene) -> str:
    """Dense caption (the pretraining turn that makes a tiny model look at the video): count, then
    each object in order of appearance with colour, shape, direction and 1-based visible frames.

    "2 objects. red circle: frames 1-12, moves left. blue square: frames 5-16, moves up."
    """
    n = len(scene.objects)
    parts = [f"{n} object{'s' if n != 1 else ''}."]
    for o in scene.objects:
        parts.append(f"{o.name}: frames {o.start + 1}-{o.end}, moves {o.direction}.")
    return " ".join(parts)


def describe(scene: Scene, naming: str = "full") -> str:
    """Short description in time order: appearances and disappearances, with motion. `naming` "full"
    names an object by colour and shape, "colour" by colour alone (`WorldConfig.description`).

    "A red circle moves left. Then a blue square appears and moves up. Then the red circle disappears."
    "A red object moves left. Then a blue object appears and moves up. Then the red object disappears."
    """
    events: list[tuple[int, int, str]] = []  # (frame, order, text); appearances before disappearances
    for i, o in enumerate(scene.objects):
        name = o.name if naming == "full" else f"{o.colour} object"
        if o.start == 0 and i == 0:
            events.append((0, 0, f"a {name} moves {o.direction}"))
        else:
            events.append((o.start, 0, f"a {name} appears and moves {o.direction}"))
        if o.end < scene.frames:
            events.append((o.end, 1, f"the {name} disappears"))
    events.sort(key=lambda e: (e[0], e[1]))
    sentences = [text if i == 0 else f"then {text}" for i, (_, _, text) in enumerate(events)]
    return " ".join(s[0].upper() + s[1:] + "." for s in sentences)


@dataclass(frozen=True)
class QA:
    """A question with its ground truth. `answer_type` is 'mcq' (answer is one of `options`), 'yesno'
    ('yes' / 'no') or 'open'; `info` holds what the question is about (colours, prior flags)."""

    kind: str
    question: str
    answer: str
    answer_type: str
    options: tuple[str, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HallucinationPair:
    """VideoHallucer-style pair: `basic` asks about something true (answer 'yes'), `hallucinated`
    about something false ('no'). `category` names the benchmark folder, `type` the pair's subtype."""

    category: str
    type: str
    basic: QA
    hallucinated: QA


def order_question(scene: Scene, rng: np.random.Generator, cfg: WorldConfig | None = None) -> QA | None:
    """'Which appears first, the red circle or the blue square?' (or 'last'); None with one object.

    The two objects are named in random order, and 'first' / 'last' is random, so the position of the
    right answer in the question carries no information. With `cfg.order_question == "colour"`:
    'Which colour appears first?' (`colour_order_qa`), after the same random draws, so every other
    question of the clip is the same in both kinds of world.
    """
    if len(scene.objects) < 2:
        return None
    i, j = sorted(int(k) for k in rng.choice(len(scene.objects), 2, replace=False))
    early, late = scene.objects[i], scene.objects[j]  # objects are sorted by appearance
    which = "first" if rng.random() < 0.5 else "last"
    named = (early, late) if rng.random() < 0.5 else (late, early)
    if cfg is not None and cfg.order_question == "colour":
        # "first" only: the toy model reads the first colour; "last" stayed below chance (docs/toy.md).
        return colour_order_qa(scene, "first", cfg)
    return order_qa(early, late, which, named)


def order_qa(early: SceneObject, late: SceneObject, which: str, named: tuple[SceneObject, SceneObject]) -> QA:
    """'Which appears <which>, <named[0]> or <named[1]>?' about two objects, `early` appearing first."""
    options = tuple(f"the {o.name}" for o in named)
    answer = f"the {(early if which == 'first' else late).name}"
    question = f"Which appears {which}, {options[0]} or {options[1]}?"
    return QA(
        "order", question, answer, "mcq", options, {"colours": [o.colour for o in named], "which": which}
    )


def colour_order_qa(scene: Scene, which: str, cfg: WorldConfig) -> QA:
    """'Which colour appears first?' (or 'last') with the palette's colours as options, in palette order.

    The fixed options make this the order question a tiny model can answer: read the first (last)
    colour from the video, then its fixed letter, as for direction and count. The two-object
    'Which appears first, X or Y?' also needs the option's letter looked up, a composition the toy
    model never learned (docs/toy.md)."""
    if which not in ("first", "last"):
        raise ValueError(f"which must be 'first' or 'last', got {which!r}")
    obj = scene.objects[0] if which == "first" else scene.objects[-1]  # sorted by appearance
    return QA(
        "order", f"Which colour appears {which}?", obj.colour, "mcq", tuple(cfg.colours), {"which": which}
    )


def direction_question(scene: Scene, obj: SceneObject, cfg: WorldConfig) -> QA:
    """'In which direction does the red circle move?' with options left/right/up/down."""
    info = {
        "colour": obj.colour,
        "prior_colour": obj.colour == cfg.prior_colour,
        "follows_prior": obj.colour == cfg.prior_colour and obj.direction == cfg.prior_direction,
    }
    return QA(
        "direction",
        f"In which direction does the {obj.name} move?",
        obj.direction,
        "mcq",
        tuple(DIRECTIONS),
        info,
    )


def count_question(scene: Scene, cfg: WorldConfig) -> QA:
    """'How many objects appear in the video?' with options 1 .. max_objects + 1."""
    options = tuple(str(k) for k in range(1, cfg.max_objects + 2))
    return QA("count", "How many objects appear in the video?", str(len(scene.objects)), "mcq", options)


def absent_object(scene: Scene, rng: np.random.Generator, cfg: WorldConfig) -> tuple[str, str]:
    """(colour, shape) of an object that is not in the clip: its colour is in no frame at all."""
    free = [c for c in cfg.colours if c not in scene.colours()]
    return free[int(rng.integers(len(free)))], cfg.shapes[int(rng.integers(len(cfg.shapes)))]


def existence_questions(scene: Scene, rng: np.random.Generator, cfg: WorldConfig) -> tuple[QA, QA]:
    """('Is there a <present object> in the video?' -> yes, 'Is there a <absent object> ...?' -> no)."""
    present = scene.objects[int(rng.integers(len(scene.objects)))]
    colour, shape = absent_object(scene, rng, cfg)
    yes = QA(
        "existence",
        f"Is there a {present.name} in the video?",
        "yes",
        "yesno",
        None,
        {"colour": present.colour},
    )
    no = QA(
        "existence", f"Is there a {colour} {shape} in the video?", "no", "yesno", None, {"colour": colour}
    )
    return yes, no


def describe_question(scene: Scene, cfg: WorldConfig | None = None) -> QA:
    naming = cfg.description if cfg is not None else "full"
    return QA("describe", DESCRIBE_PROMPT, describe(scene, naming), "open")


def caption_question(scene: Scene) -> QA:
    return QA("caption", CAPTION_PROMPT, caption(scene), "open")


def clip_questions(scene: Scene, rng: np.random.Generator, cfg: WorldConfig) -> list[QA]:
    """Every question kind a clip supports: order (2+ objects), one direction question per object,
    count, one existence 'yes' and one 'no', and the open description."""
    out: list[QA] = []
    order = order_question(scene, rng, cfg)
    if order is not None:
        out.append(order)
    out.extend(direction_question(scene, o, cfg) for o in scene.objects)
    out.append(count_question(scene, cfg))
    out.extend(existence_questions(scene, rng, cfg))
    out.append(describe_question(scene, cfg))
    return out


def existence_pair(scene: Scene, rng: np.random.Generator, cfg: WorldConfig) -> HallucinationPair:
    """VideoHallucer object-existence pair (type 'object')."""
    yes, no = existence_questions(scene, rng, cfg)
    return HallucinationPair("object_existence", "object", yes, no)


def temporal_pairs(scene: Scene, rng: np.random.Generator) -> list[HallucinationPair]:
    """VideoHallucer temporal pairs: 'temporal_relative' (A before B? yes / B before A? no) with 2+
    objects, and 'temporal_absolute' (visible at the beginning / at the end) for an object visible at
    exactly one of the two ends of the clip."""
    pairs = []
    if len(scene.objects) >= 2:
        i, j = sorted(int(k) for k in rng.choice(len(scene.objects), 2, replace=False))
        a, b = scene.objects[i], scene.objects[j]
        basic = QA("temporal", f"Does the {a.name} appear before the {b.name}?", "yes", "yesno")
        hall = QA("temporal", f"Does the {b.name} appear before the {a.name}?", "no", "yesno")
        pairs.append(HallucinationPair("temporal", "temporal_relative", basic, hall))
    last = scene.frames - 1
    one_end = [o for o in scene.objects if o.visible(0) != o.visible(last)]
    if one_end:
        o = one_end[int(rng.integers(len(one_end)))]
        true_end, false_end = ("beginning", "end") if o.visible(0) else ("end", "beginning")
        basic = QA("temporal", f"Is the {o.name} visible at the {true_end} of the video?", "yes", "yesno")
        hall = QA("temporal", f"Is the {o.name} visible at the {false_end} of the video?", "no", "yesno")
        pairs.append(HallucinationPair("temporal", "temporal_absolute", basic, hall))
    return pairs


def motion_pair(scene: Scene, rng: np.random.Generator, cfg: WorldConfig) -> HallucinationPair:
    """'Does the red circle move left?' yes / '... move <other direction>?' no (type 'direction').

    For the prior colour moving against the prior, the false direction is the prior direction: the
    probe a model answering from the language prior gets wrong."""
    o = scene.objects[int(rng.integers(len(scene.objects)))]
    if o.colour == cfg.prior_colour and o.direction != cfg.prior_direction:
        wrong = cfg.prior_direction
    else:
        others = [d for d in DIRECTIONS if d != o.direction]
        wrong = others[int(rng.integers(len(others)))]
    info = {"colour": o.colour, "prior_colour": o.colour == cfg.prior_colour}
    basic = QA("motion", f"Does the {o.name} move {o.direction}?", "yes", "yesno", None, info)
    hall = QA("motion", f"Does the {o.name} move {wrong}?", "no", "yesno", None, info)
    return HallucinationPair("motion", "direction", basic, hall)
