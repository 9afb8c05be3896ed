"""Answers: the three answer types, option letters, reading an answer out of a reply, gold answers.

One module for what the stages share about answers, so none of them parses what another just wrote:
- `AnswerType` ("mcq", "yesno", "open") and `answer_type(value)`, which also reads the spellings
  benchmarks use ("yes_no", TempCompass) and the differ's "short" (a short open answer);
- `LETTERS`, `option_text`; `match_option` (which option a *gold* answer names: strict, used to validate
  records) and `gold_mcq_letter` (the same, for records that were not validated);
- `mcq_letter` / `yes_no`: the robust extractors of a *model's reply* shared by the self-alignment judge
  and the benchmarks (None rather than a guess);
- `Verdict`, a judge's decision; `reference_answer` / `canonical_wrong_answer`, the two texts of a pair,
  and `pair_texts`, which renders both *with* their spans where the format makes them known (the
  option letters and the option texts' differing words, "Yes" / "No"), so no differ parses them back.

Option letters are upper-case "A", "B", ...; option i (0-based) has letter chr(ord("A") + i).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rrpo.data.spans import DiffReject, Span, word_diff
from rrpo.errors import RecordError, RRPOError


class AnswerType(str, enum.Enum):
    MCQ = "mcq"
    YESNO = "yesno"
    OPEN = "open"


ANSWER_TYPES = tuple(t.value for t in AnswerType)
# Other spellings met in benchmark files and in the differ's API.
_ALIASES = {"yes_no": AnswerType.YESNO, "yes/no": AnswerType.YESNO, "short": AnswerType.OPEN}


def answer_type(value: object) -> AnswerType:
    """The AnswerType of "mcq" / "yesno" / "open" (or "yes_no", "short"); a clear error otherwise."""
    text = str(value.value if isinstance(value, AnswerType) else value or "").strip().lower()
    if text in _ALIASES:
        return _ALIASES[text]
    try:
        return AnswerType(text)
    except ValueError:
        raise RRPOError(
            f"unknown answer_type {value!r}; expected one of {', '.join(ANSWER_TYPES)} (or yes_no, short)"
        ) from None


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# ---------------------------------------------------------------------------------------------
# General extractors (public contract: the judge imports these).
# ---------------------------------------------------------------------------------------------

# "A", "(A)", "A.", "A)", "[A]", "A:" -- the whole reply is a letter, maybe bracketed/punctuated.
_BARE = re.compile(r"^[\(\[]?([A-Z])[\)\]]?[.:)]?$")
# A reply that opens with a labelled option: "B. text", "B) text", "(B) text", "[B] text", "B: text".
_LEADING = re.compile(r"^(?:\(([A-Z])\)|\[([A-Z])\]|([A-Z])[.):])(?:\s|$)")
# "The answer is B", "The correct option is (C).", "Answer: B", "Best option: (B)", "answer is: [D]".
_PHRASE = re.compile(
    r"(?i:\b(?:answer|option|choice)\b(?:\s+(?:is|would\s+be|should\s+be))?\s*:?\s*)"
    r"[\(\[]?([A-Z])\b[\)\]]?(?![\w'])"
)
# A parenthesised letter anywhere, e.g. "I think (B) fits best".
_PAREN_ANY = re.compile(r"\(([A-Z])\)")
# An option text given with its label, e.g. Video-MME's "A. a red car".
_LABELLED_OPTION = re.compile(r"^\s*(?:\([A-Z]\)|\[[A-Z]\]|[A-Z][.:)])\s+")


def _norm_text(text: str) -> str:
    """Lower-case, collapse whitespace and drop surrounding punctuation/quotes for text comparison."""
    return " ".join(text.lower().split()).strip(" .!?,;:\"'`*")


def option_text(option: str) -> str:
    """An option without a leading label: "A. a red car" -> "a red car"; "a red car" unchanged."""
    return _LABELLED_OPTION.sub("", option, count=1) if _LABELLED_OPTION.match(option) else option


def mcq_letter(prediction: str, options: Sequence[str]) -> str | None:
    """The option letter a free-text reply chooses, or None when it cannot be told.

    Accepted, in this order (first rule that applies wins):
    1. the whole reply is a letter: "B", "(B)", "B.", "B)", "[B]";
    2. the reply opens with a labelled option: "B. a dog", "(B) a dog", "B) a dog";
    3. an answer phrase: "The answer is B", "The correct option is (B).", "Answer: B";
    4. the reply is (or opens with) exactly one option's text, case and punctuation ignored;
    5. exactly one distinct parenthesised letter "(B)" appears anywhere.
    A reply naming two different parenthesised letters ("(A) or (B)") is None.
    Letters must be upper-case (a lower-case "a" is an article, not an answer) and name one of
    `options` (any A-Z when `options` is empty). Options may be given with or without a label
    ("A. a dog" or "a dog").

    Args:
        prediction: the model's reply.
        options: the option texts, in letter order.
    Returns:
        "A".."Z", or None if no rule decides (the caller may then ask an LLM judge).
    """
    text = prediction.strip().strip("*`\"' ")
    if not text:
        return None
    valid = LETTERS[: len(options)] if options else LETTERS

    def ok(letter: str | None) -> str | None:
        return letter if letter and letter in valid else None

    m = _BARE.match(text)
    if m:
        return ok(m.group(1))
    if len(set(_PAREN_ANY.findall(text))) > 1:
        return None  # "(A) or (B)": hedged between options
    m = _LEADING.match(text)
    if m:
        return ok(next(g for g in m.groups() if g))
    m = _PHRASE.search(text)
    if m:
        return ok(m.group(1))
    if options:
        norm = _norm_text(text)
        texts = [_norm_text(option_text(o)) for o in options]
        exact = [i for i, t in enumerate(texts) if t and t == norm]
        if len(exact) == 1:
            return LETTERS[exact[0]]
        # Longest-first so an option that is a prefix of another ("red" / "red car") does not win.
        opening = [i for i, t in enumerate(texts) if t and re.match(re.escape(t) + r"\b", norm)]
        if len(opening) == 1:
            return LETTERS[opening[0]]
    found = set(_PAREN_ANY.findall(text))
    if len(found) == 1:
        return ok(found.pop())
    return None


_YES_NO_START = re.compile(r"^(yes|no)\b")
_YES_NO_PHRASE = re.compile(r"\banswer(?:\s+is)?\s*:?\s*[\"'*]*(yes|no)\b")


def yes_no(prediction: str) -> str | None:
    """Return "yes", "no", or None for a reply to a yes/no question.

    Decides when the reply starts with the word yes/no ("Yes.", "no, the man is walking"), after
    any leading quotes/markdown, or states "the answer is yes" / "Answer: no". Anything else
    ("Not sure", "There is a dog") is None: the caller decides whether to ask a judge.
    """
    text = prediction.strip().lower().lstrip("*`\"'([ ")
    m = _YES_NO_START.match(text)
    if m:
        return m.group(1)
    m = _YES_NO_PHRASE.search(text)
    return m.group(1) if m else None


# ----------------------------------------------------------------------------- gold answers

_LETTER_ONLY = re.compile(r"^\(?\s*([A-Za-z])\s*\)?\s*[.:]?$")
_LETTER_PREFIX = re.compile(r"^\(?\s*([A-Za-z])\s*[).:]\s*(.+)$", re.DOTALL)


def _norm_option(text: str) -> str:
    return " ".join(text.split()).rstrip(".").casefold()


def match_option(answer: str, options: Sequence[str]) -> int | None:
    """Index of the option that `answer` names, or None.

    Accepts a letter ("B", "(B)", "b."; a lone letter is always read as a letter), the
    option text (whitespace, case and a trailing period ignored), or letter and text together
    ("(B) the dog sits", "B. the dog sits") when both point at the same option. Options themselves
    may carry a letter prefix ("(B) the dog sits").
    """
    ans = answer.strip()
    m = _LETTER_ONLY.match(ans)
    if m:
        i = LETTERS.index(m.group(1).upper())
        return i if i < len(options) else None
    texts = [_norm_option(o) for o in options]
    bare = [
        _norm_option(p.group(2)) if (p := _LETTER_PREFIX.match(o.strip())) else t
        for o, t in zip(options, texts)
    ]
    target = _norm_option(ans)
    for candidates in (texts, bare):
        if target in candidates:
            return candidates.index(target)
    p = _LETTER_PREFIX.match(ans)
    if p:
        i = LETTERS.index(p.group(1).upper())
        if i < len(options) and _norm_option(p.group(2)) in (texts[i], bare[i]):
            return i
    return None


def gold_mcq_letter(answer: object, options: Sequence[str], qid: object = None) -> str:
    """The option letter of a multiple-choice gold answer given as "B", "(B)", "(B) text" or the
    option's text (case and surrounding punctuation ignored). Raises RecordError if it is none of
    these or names a letter past the options."""
    if not isinstance(answer, str) or not answer.strip():
        raise RecordError(qid, "answer", f"multiple-choice answer must be a non-empty string, got {answer!r}")
    valid = LETTERS[: len(options)] if options else LETTERS
    text = answer.strip()
    m = _BARE.match(text)
    if m:
        if m.group(1) not in valid:
            raise RecordError(qid, "answer", f"answer {answer!r} names no option (options are {valid})")
        return m.group(1)
    index = match_option(text, options) if options else None
    letter = LETTERS[index] if index is not None else mcq_letter(text, options)
    if letter is None:
        raise RecordError(
            qid, "answer", f"answer {answer!r} is neither an option letter nor an option's text"
        )
    return letter


# ----------------------------------------------------------------------------- verdicts, pair texts


@dataclass(frozen=True)
class Verdict:
    """The judge's decision on one prediction.

    correct: True / False, or None when it cannot be decided (unparseable answer, judge failure).
    reason: a short human-readable explanation ("unparseable", "predicted B, answer C", ...).
    extracted: what was read from the prediction ("B", "yes"), or None (open answers, unparseable).
    score: the LLM judge's 0-5 score for open answers, when it gave one.
    """

    correct: bool | None
    reason: str
    extracted: str | None = None
    score: float | None = None


def reference_answer(q: Any) -> str:
    """The preferred response: "(B) a red circle" for mcq, "Yes"/"No" for yes/no, the answer for open."""
    if q.answer_type == "mcq":
        return f"({q.answer_letter}) {q.answer}"
    if q.answer_type == "yesno":
        return q.answer.capitalize()
    return q.answer


def canonical_wrong_answer(q: Any, extracted: str | None, prediction: str) -> str:
    """The non-preferred response in the preferred response's format, so the pair differs in the concept
    and not in style: "(A) a blue square" for an mcq answered "A", "No" for a yes/no answered "no.";
    open answers are kept verbatim, or as far as the judge read them (`extracted`, e.g. the toy
    fact-checker's well-formed sentences)."""
    if q.answer_type == "mcq" and extracted:
        return f"({extracted}) {q.options[LETTERS.index(extracted)]}"
    if q.answer_type == "yesno" and extracted:
        return extracted.capitalize()
    if q.answer_type == "open" and extracted:
        return extracted.strip()
    return prediction.strip()


@dataclass(frozen=True)
class PairTexts:
    """A pair's two texts; `chosen_spans` / `rejected_spans` are their paired differing spans when the
    rendering already knows them, None when a differ has to find them (open answers, an mcq reply
    with no letter). `method` names how the spans were made (the differ's names)."""

    chosen: str
    rejected: str
    chosen_spans: list[Span] | None = None
    rejected_spans: list[Span] | None = None
    method: str | None = None


def pair_texts(q: Any, extracted: str | None, prediction: str) -> PairTexts:
    """Render the preferred and non-preferred responses of a wrong answer (`extracted`: what the judge
    read from `prediction`), with their spans where the format fixes them:

    * mcq answered with a letter: "(B) a red circle" / "(A) a blue square"; span 1 is the letter,
      then the differing words of the two option texts (`word_diff` on the text after "(X)"; none
      when the option texts do not differ in words);
    * yes/no: "Yes" / "No", each the whole word;
    * otherwise (open answers, an mcq reply naming no letter): texts only.
    Raises DiffReject when the wrong answer is the right one (a judge bug, not a pair).
    """
    chosen = reference_answer(q)
    rejected = canonical_wrong_answer(q, extracted, prediction)
    if q.answer_type == "mcq" and extracted:
        if extracted == q.answer_letter:
            raise DiffReject(f"both responses choose option {extracted}")
        label = len("(X)")
        spans = [((1, 2), (1, 2))]
        if chosen[label:].strip() and rejected[label:].strip():
            try:
                spans += word_diff(chosen, rejected, (label, len(chosen)), (label, len(rejected)))
            except DiffReject:
                pass  # e.g. equal option texts: the letters alone differ
        return PairTexts(chosen, rejected, [c for c, _ in spans], [r for _, r in spans], "rule-mcq")
    if q.answer_type == "yesno" and extracted:
        if chosen.lower() == rejected.lower():
            raise DiffReject(f"both responses say {chosen.lower()!r}")
        return PairTexts(chosen, rejected, [(0, len(chosen))], [(0, len(rejected))], "rule-yesno")
    return PairTexts(chosen, rejected)
