"""The concept differ: rule spans checked by slicing the strings; the LLM differ with scripted replies."""

from __future__ import annotations

import json
import re

import pytest
from fake_openai_server import Fail, FakeOpenAIServer, Reply

from rrpo.errors import RRPOError
from rrpo.llm.client import LLMClient, LLMError
from rrpo.selfalign.differ import (
    DIFF_SECOND_TURN,
    Diff,
    DiffReject,
    diff_answers,
    llm_diff,
    rule_diff,
)

OPTIONS = ["the dog jumps", "the dog sits", "the dog barks"]


def texts(diff: Diff, chosen: str, rejected: str) -> tuple[list[str], list[str]]:
    return [chosen[a:b] for a, b in diff.chosen_spans], [rejected[a:b] for a, b in diff.rejected_spans]


def assert_well_formed(diff: Diff, chosen: str, rejected: str) -> None:
    """Equal counts >= 1, every span non-empty, in range, sorted and non-overlapping on each side."""
    assert len(diff.chosen_spans) == len(diff.rejected_spans) >= 1
    for spans, text in ((diff.chosen_spans, chosen), (diff.rejected_spans, rejected)):
        prev = 0
        for a, b in spans:
            assert prev <= a < b <= len(text)
            assert text[a:b] == text[a:b].strip()
            prev = b


# -- rule diff: mcq ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "chosen, rejected, options, want_chosen, want_rejected",
    [
        ("(B) a red circle", "(A) a blue square", None, ["B", "red circle"], ["A", "blue square"]),
        ("B", "A", OPTIONS, ["B"], ["A"]),
        ("(B) the dog sits", "A", OPTIONS, ["B"], ["A"]),
        ("B. the dog sits", "A. the dog jumps", OPTIONS, ["B", "sits"], ["A", "jumps"]),
        (
            "(B) the dog sits",
            "I think the answer is (A) the dog jumps.",
            OPTIONS,
            ["B", "sits"],
            ["A", "jumps"],
        ),
    ],
)
def test_mcq_letter_and_option_text(chosen, rejected, options, want_chosen, want_rejected):
    diff = rule_diff(chosen, rejected, answer_type="mcq", options=options)
    assert diff.method == "rule-mcq"
    assert texts(diff, chosen, rejected) == (want_chosen, want_rejected)
    assert_well_formed(diff, chosen, rejected)


def test_mcq_option_text_without_letter():
    chosen, rejected = "the dog sits", "(A) the dog jumps"
    diff = rule_diff(chosen, rejected, answer_type="mcq", options=OPTIONS)
    assert diff.method == "rule-mcq-text"
    assert texts(diff, chosen, rejected) == (["sits"], ["jumps"])


def test_mcq_same_option_is_rejected():
    with pytest.raises(DiffReject, match="both responses choose option B"):
        rule_diff("(B) the dog sits", "B", answer_type="mcq", options=OPTIONS)


# -- rule diff: yes / no -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "chosen, rejected, want",
    [
        ("Yes", "No", (["Yes"], ["No"])),
        ("yes.", "NO!", (["yes"], ["NO"])),
        ("Yes, the man is walking towards the camera.", "No, he walks away.", (["Yes"], ["No"])),
        ("I think the answer is no.", "The answer is yes, he is.", (["no"], ["yes"])),
    ],
)
def test_yesno_words(chosen, rejected, want):
    diff = rule_diff(chosen, rejected, answer_type="yesno")
    assert diff.method == "rule-yesno"
    assert texts(diff, chosen, rejected) == want


@pytest.mark.parametrize(
    "chosen, rejected, reason",
    [
        ("Yes, he is.", "yes, definitely", "both responses say 'yes'"),
        ("Yes", "Perhaps", "no 'yes' or 'no' in the rejected response"),
        ("Nothing happens", "No", "no 'yes' or 'no' in the chosen response"),  # "Nothing" is not "no"
        ("Yes", "Yes", "no difference"),
    ],
)
def test_yesno_rejects(chosen, rejected, reason):
    with pytest.raises(DiffReject) as info:
        rule_diff(chosen, rejected, answer_type="yesno")
    assert info.value.reason == reason


# -- rule diff: words ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "chosen, rejected, want_chosen, want_rejected",
    [
        ("red", "blue", ["red"], ["blue"]),
        (
            "Three people enter the room.",
            "Two people enter the kitchen.",
            ["Three", "room"],
            ["Two", "kitchen"],
        ),
        ("The man opens the door", "The woman closes the door", ["man opens"], ["woman closes"]),
        # insertion / deletion: widened by the next word so both sides have text
        ("the dog", "the big dog", ["dog"], ["big dog"]),
        ("the big red dog", "the dog", ["big red dog"], ["dog"]),
        # at the end there is no next word: widened by the previous one
        ("the dog", "the dog runs", ["dog"], ["dog runs"]),
        # a widened pair that touches the next difference is merged with it
        ("a cat sat", "a black dog sat", ["cat"], ["black dog"]),
        (
            "He takes out a bottle of milk and pours it into a glass.",
            "He takes out an apple and puts it on the table.",
            ["a bottle of milk", "pours", "into a glass"],
            ["an apple", "puts", "on the table"],
        ),
        ("It's on the left-hand side", "It's on the right-hand side", ["left-hand"], ["right-hand"]),
    ],
)
def test_word_diff(chosen, rejected, want_chosen, want_rejected):
    diff = rule_diff(chosen, rejected, answer_type="open")
    assert diff.method == "rule-word"
    assert texts(diff, chosen, rejected) == (want_chosen, want_rejected)
    assert_well_formed(diff, chosen, rejected)


@pytest.mark.parametrize(
    "chosen, rejected",
    [
        (
            "A man walks his dog in the park while it rains.",
            "A woman walks her cat in the park while it snows.",
        ),
        ("the ball rolls left, then stops", "the red ball rolls right and then stops suddenly"),
        ("Two cars pass.", "Five cars pass slowly by the old house."),
        ("first he sits, then he stands", "first he stands, then he sits"),
    ],
)
def test_word_diff_outside_spans_the_words_agree(chosen, rejected):
    """Independent check: with every span cut out, both responses have the same words left."""
    diff = rule_diff(chosen, rejected, answer_type="open")
    assert_well_formed(diff, chosen, rejected)

    def words_outside(text: str, spans: list[tuple[int, int]]) -> list[str]:
        kept, pos = [], 0
        for a, b in spans:
            kept.append(text[pos:a])
            pos = b
        kept.append(text[pos:])
        return re.findall(r"\w+", " | ".join(kept).lower())

    assert words_outside(chosen, diff.chosen_spans) == words_outside(rejected, diff.rejected_spans)
    for (a, b), (c, d) in zip(diff.chosen_spans, diff.rejected_spans):
        assert chosen[a:b].lower() != rejected[c:d].lower()


@pytest.mark.parametrize(
    "chosen, rejected, reason",
    [
        ("A man is cooking.", "A man is cooking.", "no difference"),
        ("A man is cooking.", "a man is cooking", "no difference beyond case, punctuation or spacing"),
        ("", "a dog", "empty response"),
        ("a dog", "a dog!?", "no difference beyond case, punctuation or spacing"),
    ],
)
def test_word_diff_rejects(chosen, rejected, reason):
    with pytest.raises(DiffReject) as info:
        rule_diff(chosen, rejected, answer_type="short")
    assert info.value.reason == reason
    assert isinstance(info.value, RRPOError)


def test_unknown_answer_type():
    with pytest.raises(RRPOError, match="unknown answer_type"):
        rule_diff("a", "b", answer_type="ranking")


# -- LLM diff (scripted fake server) --------------------------------------------------------------------
CHOSEN = "He takes out a bottle of milk and pours it into a glass."
REJECTED = "He takes out an apple and puts it on the table."
GOOD = (
    "Sentence 1: He takes out <MASK> a bottle of milk </MASK> and <MASK> pours it into a glass </MASK>.\n"
    "Sentence 2: He takes out <MASK> an apple </MASK> and <MASK> puts it on the table </MASK>."
)
FIRST = "1. Object: a bottle of milk vs an apple. 2. Action: pours it into a glass vs puts it on the table."


@pytest.fixture
def server():
    with FakeOpenAIServer() as s:
        yield s


@pytest.fixture
def llm(server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return LLMClient(
        server.base_url, "differ-model", cache_dir=tmp_path / "cache", max_retries=0, timeout=5.0
    )


def test_llm_diff_good_reply_and_the_conversation(server, llm):
    server.push(Reply(FIRST), Reply(GOOD))
    diff = llm_diff(CHOSEN, REJECTED, llm)
    assert diff.method == "llm"
    assert texts(diff, CHOSEN, REJECTED) == (
        ["a bottle of milk", "pours it into a glass"],
        ["an apple", "puts it on the table"],
    )
    assert server.request_count == 2
    first, second = (r.body["messages"] for r in server.requests)
    prompt = first[0]["content"]
    assert prompt.startswith("Identify the key differences between these two sentences.")
    assert "objects, actions, and their attributes" in prompt
    assert 'please respond with "None" and nothing else' in prompt
    assert prompt.endswith(f"Sentence 1: {CHOSEN}\nSentence 2: {REJECTED}")
    assert second[:1] == first
    assert second[1] == {"role": "assistant", "content": FIRST}
    assert second[2] == {"role": "user", "content": DIFF_SECOND_TURN}
    # A rerun is served from the cache.
    assert llm_diff(CHOSEN, REJECTED, llm) == diff
    assert server.request_count == 2


@pytest.mark.parametrize(
    "reply",
    [
        # Tags glued to the words: the copy differs from the original only in whitespace.
        "Sentence 1: He takes out<MASK>a bottle of milk</MASK> and<MASK>pours it into a glass</MASK>.\n"
        "Sentence 2: He takes out <MASK>an apple</MASK>  and <MASK>puts it on the table</MASK>.",
        # Markdown labels, quotes around the sentences, a code fence.
        '```\n**Sentence 1:** "He takes out <MASK> a bottle of milk </MASK> and <MASK> pours it into a glass '
        '</MASK>."\n**Sentence 2:** "He takes out <MASK> an apple </MASK> and <MASK> puts it on the table </MASK>."\n```',
    ],
)
def test_llm_diff_maps_respaced_copies_to_exact_offsets(server, llm, reply):
    server.push(Reply(FIRST), Reply(reply))
    diff = llm_diff(CHOSEN, REJECTED, llm)
    assert texts(diff, CHOSEN, REJECTED) == (
        ["a bottle of milk", "pours it into a glass"],
        ["an apple", "puts it on the table"],
    )


@pytest.mark.parametrize(
    "second, reason",
    [
        (  # the tags changed the text: "carton" is not in the original
            GOOD.replace("a bottle of milk", "a carton of milk"),
            "does not match the original text",
        ),
        (  # "pours it into a glass" lost its final word
            GOOD.replace("pours it into a glass </MASK>.", "pours it into a </MASK>."),
            "does not match the original text",
        ),
        (  # two phrases marked in one sentence, one in the other
            GOOD.replace("<MASK> pours it into a glass </MASK>", "pours it into a glass"),
            "unequal span counts: 1 marked in Sentence 1 (chosen), 2 in Sentence 2 (rejected)",
        ),
        (
            f"Sentence 1: {CHOSEN}\nSentence 2: {REJECTED}",
            "the LLM marked no <MASK> phrase in Sentence 1 (chosen)",
        ),
        (GOOD.replace("</MASK> and", "and", 1), "bad <MASK> markup in Sentence 1 (chosen)"),
        ("The differences are milk vs apple.", "no 'Sentence 1:' / 'Sentence 2:' lines"),
        ("None", "no key difference"),
    ],
)
def test_llm_diff_rejects_bad_replies(server, llm, second, reason):
    server.push(Reply(FIRST), Reply(second))
    with pytest.raises(DiffReject) as info:
        llm_diff(CHOSEN, REJECTED, llm)
    assert reason in info.value.reason


@pytest.mark.parametrize("first", ["None", "None.", '"None"', "**None**"])
def test_llm_diff_none_means_no_key_difference(server, llm, first):
    server.push(Reply(first))
    with pytest.raises(DiffReject) as info:
        llm_diff(CHOSEN, REJECTED, llm)
    assert info.value.reason == "no key difference"
    assert server.request_count == 1  # no second turn


def test_llm_diff_identical_texts_make_no_request(server, llm):
    with pytest.raises(DiffReject, match="no difference"):
        llm_diff(CHOSEN, CHOSEN, llm)
    assert server.request_count == 0


def test_llm_failure_propagates_as_llm_error(server, llm):
    server.default = Fail(500)
    with pytest.raises(LLMError):
        llm_diff(CHOSEN, REJECTED, llm)


def test_llm_diff_on_the_paper_format_fixture(server, llm, shared_fixtures):
    """Replay the fixture's masked texts as the LLM's reply: the good record gives its spans, the
    'masked_text_mismatch' record (masks that change the text) is rejected."""
    records = {
        r["src"]: r for r in json.loads((shared_fixtures / "paper_format" / "pairs_masked.json").read_text())
    }
    good = records["open_ended"]
    server.push(
        Reply(FIRST), Reply(f"Sentence 1: {good['answer_masked']}\nSentence 2: {good['pred_masked']}")
    )
    diff = llm_diff(good["answer"], good["pred"], llm)
    assert texts(diff, good["answer"], good["pred"]) == (
        ["a bottle of milk", "pours it into a glass"],
        ["an apple", "puts it on the table"],
    )
    bad = records["masked_text_mismatch"]
    server.push(Reply(FIRST), Reply(f"Sentence 1: {bad['answer_masked']}\nSentence 2: {bad['pred_masked']}"))
    with pytest.raises(DiffReject, match="Sentence 2 \\(rejected\\) does not match"):
        llm_diff(bad["answer"], bad["pred"], llm)


# -- dispatcher ----------------------------------------------------------------------------------------
LONG_CHOSEN = "The man in the blue shirt opens the fridge and takes out a bottle of milk."
LONG_REJECTED = "The man in the blue shirt opens the cupboard and takes out a loaf of bread."


def test_dispatch_rules_for_closed_and_short_answers():
    assert diff_answers("(B) the dog sits", "A", answer_type="mcq", options=OPTIONS).method == "rule-mcq"
    assert diff_answers("Yes", "No", answer_type="yesno").method == "rule-yesno"
    diff = diff_answers("a red ball", "a blue ball", answer_type="open")
    assert diff.method == "rule-word" and texts(diff, "a red ball", "a blue ball") == (["red"], ["blue"])


def test_dispatch_long_open_answer_without_llm_falls_back_and_says_so():
    diff = diff_answers(LONG_CHOSEN, LONG_REJECTED, answer_type="open", short_max_words=8)
    assert diff.method == "rule-word-fallback"
    # "of" is shared, so the words around it pair up separately.
    assert texts(diff, LONG_CHOSEN, LONG_REJECTED) == (
        ["fridge", "bottle", "milk"],
        ["cupboard", "loaf", "bread"],
    )


def test_dispatch_long_open_answer_uses_the_llm(server, llm):
    server.push(
        Reply("fridge vs cupboard; milk vs bread"),
        Reply(
            "Sentence 1: The man in the blue shirt opens the <MASK> fridge </MASK> and takes out a bottle of "
            "<MASK> milk </MASK>.\nSentence 2: The man in the blue shirt opens the <MASK> cupboard </MASK> and "
            "takes out a <MASK> loaf of bread </MASK>."
        ),
    )
    diff = diff_answers(LONG_CHOSEN, LONG_REJECTED, answer_type="open", llm=llm)
    assert diff.method == "llm"
    assert texts(diff, LONG_CHOSEN, LONG_REJECTED) == (["fridge", "milk"], ["cupboard", "loaf of bread"])
    # ... while a short open answer never reaches the LLM.
    assert diff_answers("red", "blue", answer_type="open", llm=llm).method == "rule-word"
    assert server.request_count == 2


# -- pair texts rendered with their spans (rrpo.data.answers.pair_texts) ----------------------------
def _mcq(options, answer):
    from rrpo.data.record import VideoQuestion

    return VideoQuestion("q", "v.mp4", "Which?", answer, "mcq", list(options)).validate()


@pytest.mark.parametrize(
    "options, answer, wrong",
    [
        (["a red circle", "a blue square", "a red square"], "a red circle", "B"),
        (["a red circle", "a blue square", "a red square"], "a red circle", "C"),
        (["left", "right", "up", "down"], "up", "A"),
        (["the man opens the fridge", "the man closes the door"], "the man closes the door", "A"),
        (["same words", "Same words."], "same words", "B"),  # option texts differ only in case/punctuation
        (["3", "4"], "4", "A"),
    ],
)
def test_mcq_pair_texts_carry_the_spans_the_rule_differ_finds(options, answer, wrong):
    from rrpo.data.answers import pair_texts

    q = _mcq(options, answer)
    texts = pair_texts(q, wrong, f"I think it is {wrong}.")
    assert texts.chosen == f"({q.answer_letter}) {answer}"
    assert texts.rejected == f"({wrong}) {options['ABCD'.index(wrong)]}"
    parsed = rule_diff(texts.chosen, texts.rejected, answer_type="mcq", options=options)
    assert (texts.chosen_spans, texts.rejected_spans, texts.method) == (
        parsed.chosen_spans,
        parsed.rejected_spans,
        parsed.method,
    )
    assert texts.chosen[slice(*texts.chosen_spans[0])] == q.answer_letter


def test_yesno_and_open_pair_texts():
    from rrpo.data.answers import pair_texts
    from rrpo.data.record import VideoQuestion

    yn = VideoQuestion("y", "v.mp4", "Is it red?", "no", "yesno").validate()
    texts = pair_texts(yn, "yes", "yes, it is.")
    assert (texts.chosen, texts.rejected, texts.chosen_spans, texts.rejected_spans) == (
        "No",
        "Yes",
        [(0, 2)],
        [(0, 3)],
    )
    parsed = rule_diff(texts.chosen, texts.rejected, answer_type="yesno")
    assert (parsed.chosen_spans, parsed.rejected_spans) == (texts.chosen_spans, texts.rejected_spans)
    op = VideoQuestion("o", "v.mp4", "What?", "a red ball", "open").validate()
    texts = pair_texts(op, None, "  a blue ball ")
    assert (texts.chosen, texts.rejected, texts.chosen_spans) == ("a red ball", "a blue ball", None)
    mcq_text_only = pair_texts(_mcq(["left", "right"], "left"), None, "it goes right")
    assert mcq_text_only.chosen_spans is None and mcq_text_only.rejected == "it goes right"


def test_pair_texts_refuse_a_wrong_answer_that_is_right():
    from rrpo.data.answers import pair_texts

    with pytest.raises(DiffReject, match="both responses choose option A"):
        pair_texts(_mcq(["left", "right"], "left"), "A", "A")
