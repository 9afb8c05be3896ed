"""Is a model's answer to a video question correct? Rules for closed questions, an LLM for open ones.

The self-alignment loop (RRPO, Sarkar et al., arXiv 2504.12083, Sec. 3) keeps a model's answer on a
perturbed video as the non-preferred response only when it is *wrong*, so the judge decides which
samples become training pairs:

* multiple choice ("mcq") and yes/no ("yesno") questions are judged by rule, with the answer
  extractors shared with evaluation (`rrpo.eval.extract.mcq_letter` / `yes_no`): an answer the rules
  cannot read is reported as unparseable (`correct=None`), never guessed;
* open-ended questions ("open") are judged by an LLM in the style of the Video-ChatGPT judge
  (Maaz et al., 2023) that the paper's open-ended evaluations use: given the question, the correct
  answer and the predicted answer, the LLM replies `{"pred": "yes"|"no", "score": 0-5}`.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rrpo.errors import RecordError, RRPOError

if TYPE_CHECKING:
    from rrpo.selfalign.llm import LLMClient

ANSWER_TYPES = ("mcq", "yesno", "open")

# The open-answer judge prompt (our wording of the Video-ChatGPT judge: question, correct answer,
# predicted answer -> a yes/no match decision and a 0-5 score). temperature 0 (LLMClient default).
JUDGE_SYSTEM_PROMPT = (
    "You evaluate answers to questions about videos. Compare the predicted answer with the correct "
    "answer and decide whether they match in meaning.\n"
    "- Judge the meaning, not the wording: synonyms and paraphrases match.\n"
    "- A predicted answer that contradicts the correct answer, or gets its key facts wrong (objects, "
    "actions, attributes, counts, the order of events), does not match."
)
JUDGE_USER_TEMPLATE = (
    "Evaluate this video question-answer pair.\n"
    "Question: {question}\n"
    "Correct Answer: {answer}\n"
    "Predicted Answer: {prediction}\n"
    'Reply with only a JSON object with two keys: "pred", the string "yes" if the predicted answer '
    'matches the correct answer and "no" if it does not, and "score", an integer from 0 to 5 where 5 '
    'is the best match. For example: {{"pred": "yes", "score": 4}}'
)


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


def judge_answer(question: Any, prediction: str, *, llm: LLMClient | None = None) -> Verdict:
    """Judge `prediction` against `question` (a `rrpo.data.VideoQuestion` or anything with
    `answer_type`, `answer`, `options`, `question`; an `id` is used in error messages).

    Args:
        question: answer_type "mcq" (answer is an option letter, "(B) text", or an option's text),
            "yesno" (answer "yes"/"no", any case), or "open" (free text).
        prediction: the model's reply.
        llm: required for open questions.
    Returns:
        a Verdict; `correct=None` with reason "unparseable" when a closed answer cannot be read, or
        with the failure when the LLM judge fails or replies with something unreadable.
    Raises:
        RecordError: the question's answer_type is unknown or its gold answer cannot be read.
        RRPOError: an open question and no `llm`.
    """
    qid = _question_id(question)
    answer_type = str(getattr(question, "answer_type", "") or "").strip().lower()
    if answer_type not in ANSWER_TYPES:
        raise RecordError(
            qid, "answer_type", f"unknown answer type {answer_type!r}; expected one of {ANSWER_TYPES}"
        )
    if not isinstance(prediction, str):
        raise RRPOError(f"question {qid}: prediction must be a string, got {type(prediction).__name__}")
    if not prediction.strip():
        return Verdict(None, "unparseable: empty prediction")
    if answer_type == "mcq":
        return _judge_mcq(question, qid, prediction)
    if answer_type == "yesno":
        return _judge_yesno(question, qid, prediction)
    if llm is None:
        raise RRPOError(f"question {qid}: open-ended questions need an LLM judge (pass llm=LLMClient(...))")
    return _judge_open(question, prediction, llm)


# -- closed questions ----------------------------------------------------------------------------
def _judge_mcq(question: Any, qid: object, prediction: str) -> Verdict:
    from rrpo.eval.extract import mcq_letter  # lazy: shared extraction code

    options = list(getattr(question, "options", None) or [])
    gold = gold_mcq_letter(getattr(question, "answer", None), options, qid)
    got = mcq_letter(prediction, options)
    if got is None:
        return Verdict(None, "unparseable")
    return Verdict(got == gold, f"predicted {got}, answer {gold}", got)


def _judge_yesno(question: Any, qid: object, prediction: str) -> Verdict:
    from rrpo.eval.extract import yes_no  # lazy: shared extraction code

    answer = getattr(question, "answer", None)
    gold = yes_no(answer) if isinstance(answer, str) else None
    if gold is None:
        raise RecordError(qid, "answer", f"yes/no answer {answer!r} is neither 'yes' nor 'no'")
    got = yes_no(prediction)
    if got is None:
        return Verdict(None, "unparseable")
    return Verdict(got == gold, f"predicted {got}, answer {gold}", got)


_LETTER = re.compile(r"[\(\[]?([A-Z])[\)\]]?[.:)]?")


def gold_mcq_letter(answer: object, options: Sequence[str], qid: object = None) -> str:
    """The option letter of a multiple-choice gold answer given as "B", "(B)", "(B) text" or the
    option's text (case and surrounding punctuation ignored). Raises RecordError if it is none of
    these or names a letter past the options."""
    from rrpo.eval.extract import LETTERS, mcq_letter, option_text

    if not isinstance(answer, str) or not answer.strip():
        raise RecordError(qid, "answer", f"multiple-choice answer must be a non-empty string, got {answer!r}")
    valid = LETTERS[: len(options)] if options else LETTERS
    text = answer.strip()
    m = _LETTER.fullmatch(text)
    if m:
        letter = m.group(1)
        if letter not in valid:
            raise RecordError(qid, "answer", f"answer {answer!r} names no option (options are {valid})")
        return letter
    # The option's own text first: exact match is unambiguous where the extractor's phrase rules
    # ("... the answer is ...") could misread a gold text.
    norm = _norm(text)
    exact = [i for i, o in enumerate(options) if _norm(option_text(o)) == norm or _norm(o) == norm]
    if len(exact) == 1:
        return LETTERS[exact[0]]
    letter = mcq_letter(text, options)
    if letter is None:
        raise RecordError(
            qid, "answer", f"answer {answer!r} is neither an option letter nor an option's text"
        )
    return letter


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .!?,;:\"'`")


# -- open questions ------------------------------------------------------------------------------
def judge_messages(question: str, answer: str, prediction: str) -> list[dict]:
    """The chat messages of the open-answer judge (JUDGE_SYSTEM_PROMPT + JUDGE_USER_TEMPLATE)."""
    user = JUDGE_USER_TEMPLATE.format(
        question=question.strip(), answer=answer.strip(), prediction=prediction.strip()
    )
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def _judge_open(question: Any, prediction: str, llm: LLMClient) -> Verdict:
    from rrpo.selfalign.llm import LLMError

    qid = _question_id(question)
    answer = getattr(question, "answer", None)
    if not isinstance(answer, str) or not answer.strip():
        raise RecordError(qid, "answer", f"open-ended answer must be a non-empty string, got {answer!r}")
    text = str(getattr(question, "question", "") or "")
    try:
        reply = llm.chat(judge_messages(text, answer, prediction))
    except LLMError as err:
        return Verdict(None, f"llm judge failed: {err.reason}")
    parsed = parse_judge_reply(reply)
    if parsed is None:
        return Verdict(None, f"llm judge reply unparseable: {_short(reply)!r}")
    pred, score = parsed
    detail = f"llm judge: {pred}" + (f", score {score:g}" if score is not None else "")
    return Verdict(pred == "yes", detail, None, score)


_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)
_LEADING_YES_NO = re.compile(r"^[\W_]*(yes|no)\b", re.IGNORECASE)


def parse_judge_reply(reply: str) -> tuple[str, float | None] | None:
    """("yes"|"no", score or None) from a judge reply, or None when it cannot be read.

    Accepts a JSON object {"pred": ..., "score": ...} anywhere in the reply (also inside a ``` fence,
    or as a Python dict with single quotes, which Video-ChatGPT-style judges often return), and
    otherwise a reply that starts with the word yes or no. A score outside 0-5 is dropped (None),
    the decision kept.
    """
    text = _FENCE.sub("", reply.strip())
    for m in _OBJECT.finditer(text):
        obj = _load_object(m.group(0))
        if obj is None:
            continue
        fields = {str(k).strip().lower(): v for k, v in obj.items()}
        pred = _yes_no_value(fields.get("pred"))
        if pred is None:
            continue
        return pred, _score_value(fields.get("score"))
    m = _LEADING_YES_NO.match(text)
    if m:
        return m.group(1).lower(), None
    return None


def _load_object(text: str) -> dict | None:
    for load in (json.loads, ast.literal_eval):
        try:
            obj = load(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _yes_no_value(value: object) -> str | None:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value.strip().lower().strip(".!\"'") in ("yes", "no"):
        return value.strip().lower().strip(".!\"'")
    return None


def _score_value(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        score = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return score if 0.0 <= score <= 5.0 else None


def _question_id(question: Any) -> object:
    for attr in ("id", "question_id", "qid"):
        value = getattr(question, attr, None)
        if value not in (None, ""):
            return value
    text = str(getattr(question, "question", "") or "")
    return repr(_short(text, 40)) if text else "<unknown>"


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def make_benchmark_judge(llm: LLMClient):  # noqa: ANN201 - returns rrpo.eval.benchmarks.Judge
    """The evaluation's judge callable (question, gold answer, prediction) -> bool | None, backed by the
    same open-answer LLM judge the data pipeline uses (one prompt, one cache, one client)."""
    from types import SimpleNamespace

    def judge(question: str, answer: str, prediction: str) -> bool | None:
        record = SimpleNamespace(id=None, question=question, answer=answer, answer_type="open", options=None)
        return _judge_open(record, prediction, llm).correct

    return judge
