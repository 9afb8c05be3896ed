"""The toy's rule fact-checker: a description ("Describe the video.") checked fact by fact against the
clip's scene. It stands in for the paper's LLM judge of open answers (GPT-4o-mini) in the toy world,
where the ground truth is known exactly.

A description is read sentence by sentence in the grammar `rrpo.toy.questions.describe` writes:

    "A red object moves left."                      the first object, there from the first frame
    "[Then] a blue object appears and moves up."    an appearance, with its direction
    "[Then] the red object disappears."             a disappearance

(objects may also be named by colour and shape, "a red circle", as in worlds with full descriptions).
Reading stops at the first sentence outside this grammar (a reply cut off by the token limit, a
garbled sentence): the well-formed sentences before it are kept (`ParsedDescription.kept`) and the
rest is reported as `dropped`. A reply with no well-formed sentence is malformed.

The facts of a scene with k objects, 4k in all:

- presence: each object is mentioned (k);
- direction: each object's stated direction is its direction (k; wrong when not mentioned);
- disappearance: each object mentioned is said to disappear exactly when it leaves before the last
  frame (k; wrong when not mentioned);
- order: each two consecutive objects (by appearance) are mentioned in that order (k - 1);
- count: as many objects are mentioned as there are (1).

Every object mentioned that is not in the clip, and every second appearance of one colour, is one more
fact, always false. Fact accuracy = correct facts / all facts; a description is correct when every
fact is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rrpo.data.answers import Verdict
from rrpo.toy.world import DIRECTIONS, PALETTE, SHAPES, Scene

_NAME = rf"(?:a|the) ({'|'.join(PALETTE)}) (?:object|{'|'.join(SHAPES)})"
_DIR = rf"({'|'.join(DIRECTIONS)})"
_APPEARS = re.compile(rf"{_NAME} appears and moves {_DIR}")
_MOVES = re.compile(rf"{_NAME} moves {_DIR}")
_DISAPPEARS = re.compile(rf"{_NAME} disappears")


@dataclass(frozen=True)
class Mention:
    """One sentence read: `event` 'appear' (with `direction`; `at_start` for "A red object moves
    left.", the object there from the first frame) or 'disappear'."""

    event: str
    colour: str
    direction: str | None = None
    at_start: bool = False


@dataclass(frozen=True)
class ParsedDescription:
    mentions: tuple[Mention, ...]
    kept: str  # the well-formed sentences, as written
    dropped: str  # the text after them ("" when every sentence was read)


@dataclass(frozen=True)
class FactCheck:
    """Each checked fact as (name, correct), in a fixed order; `accuracy` = the fraction correct."""

    facts: tuple[tuple[str, bool], ...]
    parsed: ParsedDescription = field(repr=False)

    @property
    def correct(self) -> int:
        return sum(ok for _, ok in self.facts)

    @property
    def accuracy(self) -> float:
        return self.correct / len(self.facts) if self.facts else 0.0

    @property
    def wrong(self) -> list[str]:
        return [name for name, ok in self.facts if not ok]


def parse_description(text: str) -> ParsedDescription:
    """The mentions of `text`'s well-formed sentences, up to the first one outside the grammar."""
    mentions: list[Mention] = []
    kept_end = 0
    pos = 0
    while pos < len(text):
        end = text.find(".", pos)
        if end < 0:
            break  # an unfinished last sentence (the token limit): dropped
        sentence = text[pos:end].strip()
        body = sentence[5:] if sentence.lower().startswith("then ") else sentence
        body = body[:1].lower() + body[1:]
        mention = _read_sentence(body)
        if mention is None:
            break
        mentions.append(mention)
        kept_end = end + 1
        pos = end + 1
    return ParsedDescription(tuple(mentions), text[:kept_end].strip(), text[kept_end:].strip())


def _read_sentence(body: str) -> Mention | None:
    if m := _APPEARS.fullmatch(body):
        return Mention("appear", m.group(1), m.group(2))
    if m := _MOVES.fullmatch(body):
        return Mention("appear", m.group(1), m.group(2), at_start=True)
    if m := _DISAPPEARS.fullmatch(body):
        return Mention("disappear", m.group(1))
    return None


def check_description(text: str, scene: Scene) -> FactCheck:
    """Check a description against the scene it describes (the module docstring lists the facts)."""
    parsed = parse_description(text)
    appearances: dict[str, int] = {}  # colour -> index of its first appearance among the mentions
    directions: dict[str, str | None] = {}
    disappears: set[str] = set()
    extra: list[tuple[str, bool]] = []
    true_colours = {o.colour for o in scene.objects}
    for i, m in enumerate(parsed.mentions):
        if m.colour not in true_colours:
            if m.event == "appear" or m.colour not in appearances:
                extra.append((f"no {m.colour} object in the clip", False))
            appearances.setdefault(m.colour, i)
            continue
        if m.event == "appear":
            if m.colour in appearances:
                extra.append((f"{m.colour} appears twice", False))
                continue
            appearances[m.colour] = i
            directions[m.colour] = m.direction
        else:
            disappears.add(m.colour)
    facts: list[tuple[str, bool]] = []
    for o in scene.objects:
        c = o.colour
        facts.append((f"{c} present", c in appearances))
        facts.append((f"{c} moves {o.direction}", directions.get(c) == o.direction))
        leaves = o.end < scene.frames
        said = c in appearances and (c in disappears) == leaves
        facts.append((f"{c} {'disappears' if leaves else 'stays'}", said))
    for a, b in zip(scene.objects, scene.objects[1:]):
        ok = (
            a.colour in appearances
            and b.colour in appearances
            and appearances[a.colour] < appearances[b.colour]
        )
        facts.append((f"{a.colour} before {b.colour}", ok))
    mentioned = sum(1 for m in parsed.mentions if m.event == "appear")
    facts.append((f"{len(scene.objects)} objects", mentioned == len(scene.objects)))
    return FactCheck(tuple(facts + extra), parsed)


def description_verdict(text: str, scene: Scene) -> Verdict:
    """The judge's verdict on a description: correct when every fact is; `extracted` is the kept
    (well-formed) text, the non-preferred response of a pair; undecided (None) when nothing is
    well-formed."""
    check = check_description(text, scene)
    if not check.parsed.mentions:
        return Verdict(None, f"malformed description: {text[:60]!r}")
    trimmed = f" (trimmed {len(check.parsed.dropped)} characters)" if check.parsed.dropped else ""
    if not check.wrong:
        return Verdict(True, f"every fact right{trimmed}", check.parsed.kept)
    return Verdict(False, f"wrong: {', '.join(check.wrong[:4])}{trimmed}", check.parsed.kept)


def fact_check_judge(scenes: dict[str, Scene]) -> Any:
    """A judge for `generate_pairs(judge=...)`: open questions of the toy world are fact-checked
    against the scene of their clip (`metadata["clip"]`); other questions go to the rule judge."""

    def judge(q: Any, prediction: str) -> Verdict:
        clip = (q.metadata or {}).get("clip")
        if clip not in scenes:
            return Verdict(None, f"fact-check: no scene for clip {clip!r}")
        return description_verdict(prediction, scenes[clip])

    return judge
