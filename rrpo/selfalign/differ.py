"""Mark the key differing concepts of a preference pair as paired character spans.

RRPO (Sarkar et al., arXiv 2504.12083, Sec. 3.2) rewards sub-sequences, not whole responses: the i-th
differing phrase y_i+ of the preferred (ground-truth) response is paired with the i-th phrase y_i-
of the non-preferred (wrong) response, so both sides must have the same number of spans, in order.
A `Diff` holds those spans as half-open character ranges [start, end) into each response
(`rrpo.data.spans` turns them into per-token span ids and `<MASK>` markup).

Like the paper's data pipeline (its code release, docs/DATA.md: "We use LLM for open-ended long
response, and use regex for mcq, binary qa, and short answers"), closed and short answers are diffed
by rule (`rule_diff`) and long open answers by an LLM (`llm_diff`). Whenever the spans cannot be
found reliably we raise `DiffReject(reason)`: the caller reports the record as rejected; we never
guess.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rrpo.data.answers import answer_type as answer_type_of
from rrpo.data.spans import DiffReject, word_diff
from rrpo.errors import RRPOError

if TYPE_CHECKING:
    from rrpo.llm.client import LLMClient

Span = tuple[int, int]

# -- prompts ----------------------------------------------------------------------------------------
# First turn: the RRPO paper's prompt, verbatim from its code release (github.com/pritamqu/RRPO,
# docs/DATA.md, "Sample prompt / first turn"; line breaks there are only wrapping).
DIFF_FIRST_TURN = (
    "Identify the key differences between these two sentences. "
    "To identify differences focus on the key aspects in the sentences, "
    "such as objects, actions, and their attributes, among others. "
    "If there are no key difference between these two sentences, "
    'please respond with "None" and nothing else.\n\n'
    "Sentence 1: {chosen}\n"
    "Sentence 2: {rejected}"
)
# The paper's second turn, verbatim (same source), kept for reference: it asks for a *rewritten*
# Sentence 1 only, from which the phrases still have to be recovered. We do not send it.
PAPER_SECOND_TURN = (
    'Please rewrite the "Sentence 1" by incorporating the differences you mentioned earlier. '
    "Your final response should contain only the revised sentence and nothing else.\n\n"
    "Sentence 1: {chosen}"
)
# Our second turn: both sentences back, verbatim, with the differences wrapped in <MASK> tags (the
# paper's data format). More reliable, because the reply can be checked against the originals:
# removing the tags must give back each sentence exactly, and both must mark the same number of
# phrases.
DIFF_SECOND_TURN = (
    "Now copy Sentence 1 and Sentence 2 exactly as they are, character for character, and wrap each "
    "key difference you identified in <MASK> and </MASK>. Mark the same number of phrases in both "
    "sentences, in the same order, so that the first marked phrase of Sentence 1 corresponds to the "
    "first marked phrase of Sentence 2, and so on. Do not change, add or remove any other text. Your "
    "final response should contain only these two lines and nothing else:\n"
    "Sentence 1: Sentence 1 with its differing phrases marked\n"
    "Sentence 2: Sentence 2 with its differing phrases marked"
)


@dataclass(frozen=True)
class Diff:
    """Paired differing spans: `chosen_spans[i]` (in the preferred response) pairs with
    `rejected_spans[i]` (in the non-preferred one). Both lists have the same length N >= 1, are sorted
    and do not overlap. `method` says how they were found: "rule-mcq", "rule-mcq-text", "rule-yesno",
    "rule-word", "rule-word-fallback" (a long open answer diffed by rule because no LLM was given),
    or "llm"."""

    chosen_spans: list[Span] = field(default_factory=list)
    rejected_spans: list[Span] = field(default_factory=list)
    method: str = ""


# -- dispatcher -------------------------------------------------------------------------------------
def diff_answers(
    chosen: str,
    rejected: str,
    *,
    answer_type: str,
    options: Sequence[str] | None = None,
    llm: LLMClient | None = None,
    short_max_words: int = 8,
) -> Diff:
    """Spans of the key differences between `chosen` (ground truth) and `rejected` (wrong answer).

    mcq / yesno and open answers of at most `short_max_words` words (on both sides) use `rule_diff`;
    longer open answers use `llm_diff` when `llm` is given, and otherwise fall back to the word-level
    rule diff (method "rule-word-fallback"). Raises DiffReject, or LLMError when the LLM fails.
    """
    kind = answer_type_of(answer_type).value
    if kind in ("mcq", "yesno"):
        return rule_diff(chosen, rejected, answer_type=kind, options=options)
    if max(len(chosen.split()), len(rejected.split())) <= short_max_words:
        return rule_diff(chosen, rejected, answer_type=kind)
    if llm is not None:
        return llm_diff(chosen, rejected, llm)
    diff = rule_diff(chosen, rejected, answer_type=kind)
    return Diff(diff.chosen_spans, diff.rejected_spans, "rule-word-fallback")


# -- rule diffs ---------------------------------------------------------------------------------------
def rule_diff(chosen: str, rejected: str, *, answer_type: str, options: Sequence[str] | None = None) -> Diff:
    """Rule-based spans.

    * mcq: the chosen option letters ("(B) a red circle" vs "(A) a blue square" -> "B" / "A") plus
      the differing words of the option texts ("red circle" / "blue square"); `options` (option
      texts in letter order) lets verbose replies ("The answer is (A) ...") be read.
    * yesno: the first "yes" / "no" word of each (case-insensitive, anywhere in a sentence); both
      saying the same raises DiffReject.
    * open (or "short"): word-level alignment (`word_diff`).
    Identical responses raise DiffReject("no difference").
    """
    kind = answer_type_of(answer_type).value
    _check_texts(chosen, rejected)
    if kind == "mcq":
        return _mcq_diff(chosen, rejected, list(options or []))
    if kind == "yesno":
        return _yesno_diff(chosen, rejected)
    pairs = word_diff(chosen, rejected)
    return Diff([p[0] for p in pairs], [p[1] for p in pairs], "rule-word")


def _check_texts(chosen: str, rejected: str) -> None:
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise DiffReject(
            f"responses must be strings, got {type(chosen).__name__} / {type(rejected).__name__}"
        )
    if not chosen.strip() or not rejected.strip():
        raise DiffReject("empty response")
    if chosen == rejected:
        raise DiffReject("no difference")


_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def _yesno_diff(chosen: str, rejected: str) -> Diff:
    spans = []
    words = []
    for side, text in (("chosen", chosen), ("rejected", rejected)):
        m = _YES_NO.search(text)
        if m is None:
            raise DiffReject(f"no 'yes' or 'no' in the {side} response")
        spans.append(m.span(1))
        words.append(m.group(1).lower())
    if words[0] == words[1]:
        raise DiffReject(f"both responses say {words[0]!r}")
    return Diff([spans[0]], [spans[1]], "rule-yesno")


@dataclass(frozen=True)
class _Letter:
    letter: str
    span: Span  # the letter itself
    label_end: int | None  # end of a leading label ("(B) " -> index after it), None if not leading


def _find_letter(text: str, options: Sequence[str]) -> _Letter | None:
    """Where the chosen option letter is written in `text`, or None.

    Which letter a reply chooses is decided by the shared extractor `rrpo.data.answers.mcq_letter`;
    here we only locate it: a bare letter, a leading label "(B) ...", "B. ...", a bracketed "(B)"
    anywhere, or after "answer/option/choice (is)". A reply that names its option by text only has
    no letter to mark.
    """
    from rrpo.data.answers import mcq_letter

    letter = mcq_letter(text, options)
    if letter is None:
        return None
    L = re.escape(letter)
    m = re.fullmatch(rf"\s*[\(\[]?({L})[\)\]]?[.:)]?\s*", text)
    if m:
        return _Letter(letter, m.span(1), len(text))
    m = re.match(rf"\s*(?:[\(\[]({L})[\)\]]|({L})[.):])(?=\s|$)", text)
    if m:
        group = 1 if m.group(1) else 2
        return _Letter(letter, m.span(group), m.end())
    m = re.search(rf"[\(\[]({L})[\)\]]", text) or re.search(
        rf"(?i:\b(?:answer|option|choice)\b(?:\s+(?:is|would\s+be|should\s+be))?)\s*:?\s*[\(\[]?({L})(?![\w'])",
        text,
    )
    if m:
        return _Letter(letter, m.span(1), None)
    return None


def _option_region(text: str, found: _Letter, options: Sequence[str]) -> Span | None:
    """The part of `text` that holds the chosen option's text, or None when there is none to diff."""
    from rrpo.data.answers import LETTERS, option_text

    if found.label_end is not None:
        return (found.label_end, len(text)) if text[found.label_end :].strip() else None
    index = LETTERS.index(found.letter)
    if index < len(options):
        body = option_text(options[index]).strip()
        m = re.search(re.escape(body), text, re.IGNORECASE) if body else None
        if m:
            return m.span()
    return None


def _mcq_diff(chosen: str, rejected: str, options: list[str]) -> Diff:
    lc = _find_letter(chosen, options)
    lr = _find_letter(rejected, options)
    if lc and lr:
        if lc.letter == lr.letter:
            raise DiffReject(f"both responses choose option {lc.letter}")
        pairs = [(lc.span, lr.span)]
        rc, rr = _option_region(chosen, lc, options), _option_region(rejected, lr, options)
        if rc and rr:
            try:
                text_pairs = word_diff(chosen, rejected, rc, rr)
            except DiffReject:
                text_pairs = []  # e.g. equal option texts: the letters alone differ
            candidate = sorted(pairs + text_pairs)
            if _in_order(candidate):
                pairs = candidate
        return Diff([p[0] for p in pairs], [p[1] for p in pairs], "rule-mcq")
    # At most one side writes a letter: compare option texts, skipping a leading label.
    rc = (lc.label_end, len(chosen)) if lc and lc.label_end is not None else None
    rr = (lr.label_end, len(rejected)) if lr and lr.label_end is not None else None
    pairs = word_diff(chosen, rejected, rc, rr)
    return Diff([p[0] for p in pairs], [p[1] for p in pairs], "rule-mcq-text")


def _in_order(pairs: list[tuple[Span, Span]]) -> bool:
    """Both sides sorted and non-overlapping when the pairs are ordered by their chosen span."""
    for side in (0, 1):
        spans = [p[side] for p in pairs]
        if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
            return False
    return True


# -- LLM diff ---------------------------------------------------------------------------------------
_NONE_REPLY = re.compile(r"[\W_]*none[\W_]*", re.IGNORECASE)
_SENTENCES = re.compile(
    r"[*_]*\s*Sentence\s*1\s*[*_]*\s*:\s*[*_]*(?P<one>.*?)\s*[*_]*\s*Sentence\s*2\s*[*_]*\s*:\s*[*_]*(?P<two>.*)",
    re.IGNORECASE | re.DOTALL,
)


def diff_messages(chosen: str, rejected: str) -> list[dict]:
    """The first-turn chat messages of `llm_diff` (DIFF_FIRST_TURN)."""
    return [{"role": "user", "content": DIFF_FIRST_TURN.format(chosen=chosen, rejected=rejected)}]


def llm_diff(chosen: str, rejected: str, llm: LLMClient) -> Diff:
    """Spans of the key differences of two open-ended answers, found by an LLM in two turns.

    Turn 1 (DIFF_FIRST_TURN, the paper's prompt) asks for the key differences (Sentence 1 = chosen,
    Sentence 2 = rejected); a reply of "None" raises DiffReject("no key difference"). Turn 2
    (DIFF_SECOND_TURN) asks for both sentences back with the differences wrapped in <MASK> tags.
    Each marked copy is parsed with `rrpo.data.spans.parse_masked` and must give back the original
    exactly; a copy that differs from it only in whitespace is mapped back to exact offsets of the
    original, character by character (the original text is what is trained on). Both sides must mark
    the same number N >= 1 of phrases. Anything else raises DiffReject with the reason; LLM failures
    raise LLMError (retryable on a rerun, unlike a reject).
    """
    _check_texts(chosen, rejected)
    messages = diff_messages(chosen, rejected)
    first = llm.chat(messages)
    if _NONE_REPLY.fullmatch(first.strip()):
        raise DiffReject("no key difference")
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": DIFF_SECOND_TURN}]
    second = llm.chat(messages)
    if _NONE_REPLY.fullmatch(second.strip()):
        raise DiffReject("no key difference")
    masked_chosen, masked_rejected = _split_sentences(second)
    chosen_spans = _spans_in_original(masked_chosen, chosen, "Sentence 1 (chosen)")
    rejected_spans = _spans_in_original(masked_rejected, rejected, "Sentence 2 (rejected)")
    if not chosen_spans or not rejected_spans:
        raise DiffReject(
            f"the LLM marked no <MASK> phrase in {'Sentence 1 (chosen)' if not chosen_spans else 'Sentence 2 (rejected)'}"
        )
    if len(chosen_spans) != len(rejected_spans):
        raise DiffReject(
            f"unequal span counts: {len(chosen_spans)} marked in Sentence 1 (chosen), "
            f"{len(rejected_spans)} in Sentence 2 (rejected)"
        )
    return Diff(chosen_spans, rejected_spans, "llm")


def _split_sentences(reply: str) -> tuple[str, str]:
    text = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", reply.strip())
    m = _SENTENCES.search(text)
    if m is None:
        raise DiffReject(f"the LLM reply has no 'Sentence 1:' / 'Sentence 2:' lines: {_short(reply)!r}")
    return m.group("one").strip(), m.group("two").strip()


def _spans_in_original(masked: str, original: str, side: str) -> list[Span]:
    """Spans of `masked` (the LLM's marked copy) as exact offsets into `original`, or DiffReject."""
    from rrpo.data.spans import parse_masked

    # A copy wrapped in quotes the original does not have.
    for q in ('"', "'", "“"):
        close = "”" if q == "“" else q
        if (
            len(masked) > 1
            and masked.startswith(q)
            and masked.endswith(close)
            and not original.lstrip().startswith(q)
        ):
            masked = masked[1:-1].strip()
    try:
        plain, spans = parse_masked(masked)
    except (RRPOError, ValueError) as err:
        raise DiffReject(f"bad <MASK> markup in {side}: {err}") from None
    if plain == original:
        return list(spans)
    # Whitespace may differ (the LLM re-spaces around tags); every other character must be the same,
    # in order. Map each span through the non-whitespace characters to exact original offsets.
    p_idx = [i for i, c in enumerate(plain) if not c.isspace()]
    o_idx = [i for i, c in enumerate(original) if not c.isspace()]
    if len(p_idx) != len(o_idx) or any(plain[i] != original[j] for i, j in zip(p_idx, o_idx)):
        raise DiffReject(f"the LLM's copy of {side} does not match the original text: {_short(plain)!r}")
    mapped = []
    for s, e in spans:
        k_s = bisect.bisect_left(p_idx, s)  # first non-space character at or after s
        k_e = bisect.bisect_left(p_idx, e) - 1  # last non-space character before e
        if k_e < k_s:
            raise DiffReject(f"an empty <MASK> span in {side}")
        mapped.append((o_idx[k_s], o_idx[k_e] + 1))
    return mapped


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
