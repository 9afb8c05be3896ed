"""Is a model's answer to a video question correct? Rules for closed questions, an LLM for open ones.

The self-alignment loop (RRPO, Sarkar et al., arXiv 2504.12083, Sec. 3) keeps a model's answer on a
perturbed video as the non-preferred response only when it is *wrong*, so the judge decides which
samples become training pairs:

* multiple choice ("mcq") and yes/no ("yesno") questions are judged by rule, with the answer
  extractors shared with evaluation (`rrpo.data.answers.mcq_letter` / `yes_no`): an answer the rules
  cannot read is reported as unparseable (`correct=None`), never guessed;
* open-ended questions ("open") are judged by the LLM judge of `rrpo.llm.judge`, in the style of the Video-ChatGPT judge
  (Maaz et al., 2023) that the paper's open-ended evaluations use: given the question, the correct
  answer and the predicted answer, the LLM replies `{"pred": "yes"|"no", "score": 0-5}`.
"""

from __future__ import annotations

from typing import Any

from rrpo.data.answers import ANSWER_TYPES, Verdict, gold_mcq_letter, mcq_letter, yes_no
from rrpo.errors import RecordError, RRPOError
from rrpo.llm.client import LLMClient
from rrpo.llm.judge import (
    JUDGE_SYSTEM_PROMPT,
    JUDGE_USER_TEMPLATE,
    judge_messages,
    judge_open,
    parse_judge_reply,
    question_id,
)

# Re-exported: the judge's public names since the first release.
__all__ = [
    "ANSWER_TYPES",
    "JUDGE_SYSTEM_PROMPT",
    "JUDGE_USER_TEMPLATE",
    "Verdict",
    "gold_mcq_letter",
    "judge_answer",
    "judge_messages",
    "parse_judge_reply",
]


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
    qid = question_id(question)
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
    return judge_open(question, prediction, llm)


# -- closed questions ----------------------------------------------------------------------------
def _judge_mcq(question: Any, qid: object, prediction: str) -> Verdict:
    options = list(getattr(question, "options", None) or [])
    gold = gold_mcq_letter(getattr(question, "answer", None), options, qid)
    got = mcq_letter(prediction, options)
    if got is None:
        return Verdict(None, "unparseable")
    return Verdict(got == gold, f"predicted {got}, answer {gold}", got)


def _judge_yesno(question: Any, qid: object, prediction: str) -> Verdict:
    answer = getattr(question, "answer", None)
    gold = yes_no(answer) if isinstance(answer, str) else None
    if gold is None:
        raise RecordError(qid, "answer", f"yes/no answer {answer!r} is neither 'yes' nor 'no'")
    got = yes_no(prediction)
    if got is None:
        return Verdict(None, "unparseable")
    return Verdict(got == gold, f"predicted {got}, answer {gold}", got)
