"""The open-answer LLM judge, shared by self-alignment (is the model's answer wrong?) and evaluation
(is it right?): one prompt, one reply parser, one cache (through `LLMClient`).

In the style of the Video-ChatGPT judge (Maaz et al., 2023) that the paper's open-ended evaluations use:
given the question, the correct answer and the predicted answer, the LLM replies
`{"pred": "yes"|"no", "score": 0-5}`.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from rrpo.data.answers import Verdict
from rrpo.errors import RecordError
from rrpo.llm.client import LLMClient, LLMError

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


def judge_messages(question: str, answer: str, prediction: str) -> list[dict]:
    """The chat messages of the open-answer judge (JUDGE_SYSTEM_PROMPT + JUDGE_USER_TEMPLATE)."""
    user = JUDGE_USER_TEMPLATE.format(
        question=question.strip(), answer=answer.strip(), prediction=prediction.strip()
    )
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def judge_open(question: Any, prediction: str, llm: LLMClient) -> Verdict:
    """The LLM judge's verdict on an open answer: `question` has `question`, `answer` (and an `id`)."""
    qid = question_id(question)
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


def question_id(question: Any) -> object:
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
        return judge_open(record, prediction, llm).correct

    return judge
