"""The judge: rule-based mcq / yes-no verdicts, and the LLM judge for open answers (fake server)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from fake_openai_server import Fail, FakeOpenAIServer, Reply

from rrpo.errors import RecordError, RRPOError
from rrpo.llm.client import LLMClient
from rrpo.selfalign.judge import (
    JUDGE_USER_TEMPLATE,
    Verdict,
    gold_mcq_letter,
    judge_answer,
    parse_judge_reply,
)

OPTIONS = ["the dog jumps", "the dog sits", "the dog barks"]


@dataclass
class Q:
    """A VideoQuestion-like record."""

    answer_type: str
    answer: str
    options: list[str] = field(default_factory=list)
    question: str = "What does the dog do?"
    id: str = "q1"


@pytest.fixture
def server():
    with FakeOpenAIServer() as s:
        yield s


@pytest.fixture
def llm(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return LLMClient(server.base_url, "judge-model", max_retries=1, backoff=0.001, timeout=5.0)


# -- multiple choice ---------------------------------------------------------------------------------
@pytest.mark.parametrize("gold", ["B", "(B)", "B.", "(B) the dog sits", "the dog sits", "The dog sits."])
@pytest.mark.parametrize(
    "prediction, correct, extracted",
    [
        ("B", True, "B"),
        ("(B) the dog sits", True, "B"),
        ("The answer is (B).", True, "B"),
        ("the dog sits", True, "B"),
        ("A", False, "A"),
        ("(C) the dog barks", False, "C"),
    ],
)
def test_mcq_letter_or_text_answers(gold, prediction, correct, extracted):
    v = judge_answer(Q("mcq", gold, OPTIONS), prediction)
    assert v == Verdict(correct, f"predicted {extracted}, answer B", extracted)


def test_mcq_labelled_options():
    options = ["A. a red car", "B. a blue car"]
    assert gold_mcq_letter("a blue car", options) == "B"
    assert gold_mcq_letter("B. a blue car", options) == "B"
    assert judge_answer(Q("mcq", "a blue car", options), "A. a red car").correct is False


@pytest.mark.parametrize("prediction", ["I am not sure.", "", "   ", "Both could be right"])
def test_mcq_unreadable_prediction_is_unparseable(prediction):
    v = judge_answer(Q("mcq", "B", OPTIONS), prediction)
    assert v.correct is None and v.reason.startswith("unparseable") and v.extracted is None


@pytest.mark.parametrize(
    "gold, message",
    [("D", "names no option"), ("a cat", "neither an option letter nor an option's text"), ("", "non-empty")],
)
def test_mcq_bad_gold_answer_names_record_and_field(gold, message):
    with pytest.raises(RecordError, match=message) as info:
        judge_answer(Q("mcq", gold, OPTIONS, id="rec-7"), "A")
    assert info.value.record == "rec-7" and info.value.field == "answer"


# -- yes / no ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "gold, prediction, correct, extracted",
    [
        ("Yes", "Yes, the man is walking towards the camera.", True, "yes"),
        ("yes", "no.", False, "no"),
        ("No", "No", True, "no"),
        ("no", "The answer is yes", False, "yes"),
    ],
)
def test_yesno(gold, prediction, correct, extracted):
    v = judge_answer(Q("yesno", gold), prediction)
    assert (v.correct, v.extracted) == (correct, extracted)


def test_yesno_unparseable_and_bad_gold():
    assert judge_answer(Q("yesno", "yes"), "It is hard to say.") == Verdict(None, "unparseable")
    with pytest.raises(RecordError, match="neither 'yes' nor 'no'"):
        judge_answer(Q("yesno", "maybe"), "yes")


def test_unknown_answer_type():
    with pytest.raises(RecordError, match="unknown answer type") as info:
        judge_answer(Q("ranking", "x"), "x")
    assert info.value.field == "answer_type"


# -- open-ended (LLM judge) ----------------------------------------------------------------------------
def test_open_without_llm_is_a_clear_error():
    with pytest.raises(RRPOError, match="need an LLM judge"):
        judge_answer(Q("open", "He pours milk."), "He pours water.")


def test_open_yes_with_score_and_prompt_contents(server, llm):
    server.push(Reply('{"pred": "yes", "score": 4}'))
    q = Q("open", "He takes out a bottle of milk.", question="What does the man take out of the fridge?")
    v = judge_answer(q, "A milk bottle.", llm=llm)
    assert v.correct is True and v.score == 4.0 and "yes" in v.reason
    (request,) = server.requests
    user = request.body["messages"][-1]["content"]
    assert user == JUDGE_USER_TEMPLATE.format(
        question=q.question, answer=q.answer, prediction="A milk bottle."
    )
    assert "Question: What does the man take out of the fridge?" in user
    assert "Correct Answer: He takes out a bottle of milk." in user
    assert "Predicted Answer: A milk bottle." in user
    assert request.body["messages"][0]["role"] == "system"


@pytest.mark.parametrize(
    "reply, correct, score",
    [
        ("{'pred': 'no', 'score': 1}", False, 1.0),  # Python-dict style, as Video-ChatGPT judges reply
        ('```json\n{"pred": "Yes", "score": 5}\n```', True, 5.0),
        ('Sure! {"score": 2, "pred": "no"}', False, 2.0),
        ("No, the prediction names the wrong object.", False, None),
        ('{"pred": "yes", "score": 9}', True, None),  # out-of-range score dropped, decision kept
    ],
)
def test_open_reply_variants(server, llm, reply, correct, score):
    server.push(Reply(reply))
    v = judge_answer(Q("open", "a red ball"), "a blue ball", llm=llm)
    assert (v.correct, v.score) == (correct, score)


def test_open_unreadable_reply_is_undecided(server, llm):
    server.push(Reply("I would rather not say."))
    v = judge_answer(Q("open", "a red ball"), "a blue ball", llm=llm)
    assert v.correct is None and "unparseable" in v.reason and "rather not say" in v.reason


def test_open_judge_failure_is_reported_per_record(server, llm):
    server.default = Fail(500)
    v = judge_answer(Q("open", "a red ball"), "a blue ball", llm=llm)
    assert v.correct is None and v.reason.startswith("llm judge failed") and "HTTP 500" in v.reason
    assert server.request_count == 2  # 1 + max_retries
    assert llm.failures == 1


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('{"pred": "yes", "score": 3}', ("yes", 3.0)),
        ('{"PRED": "NO"}', ("no", None)),
        ('{"pred": true, "score": "4"}', ("yes", 4.0)),
        ('{"pred": "maybe"} yes', None),  # no usable decision, and it does not *start* with yes/no
        ("yes.", ("yes", None)),
        ("**No**", ("no", None)),
        ("Nope", None),
        ("{broken", None),
        ("", None),
    ],
)
def test_parse_judge_reply(reply, expected):
    assert parse_judge_reply(reply) == expected
