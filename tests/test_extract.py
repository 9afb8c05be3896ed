"""Answer extraction: the general extractors and each benchmark's official / paper rule."""

from __future__ import annotations

import pytest

from rrpo.eval.extract import (
    first_letter,
    mcq_letter,
    mlvu_letter,
    mvbench_correct,
    option_text,
    paper_letter,
    tempcompass_mc_rating,
    tempcompass_yn_rating,
    videohallucer_hit,
    videomme_letter,
    videomme_letter_paper,
    yes_no,
)

OPTS = ["a red car", "a blue bus", "a green bike", "a red car park"]


@pytest.mark.parametrize(
    "reply, letter",
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("B)", "B"),
        ("  [C] ", "C"),
        ("B. a blue bus", "B"),
        ("(C) a green bike, clearly", "C"),
        ("The answer is B", "B"),
        ("The answer is (B).", "B"),
        ("The correct option is C.", "C"),
        ("Answer: D", "D"),
        ("Best option: (A)", "A"),
        ("A blue bus.", "B"),  # the exact option text, case and punctuation ignored
        ("a red car park", "D"),  # exact beats "a red car" being a prefix
        ("I would pick (C) here", "C"),
    ],
)
def test_mcq_letter_reads(reply, letter):
    assert mcq_letter(reply, OPTS) == letter


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "   ",
        "E",  # not one of four options
        "A man is driving",  # the article "A" is not an answer
        "a",  # lower-case: an article, not a letter
        "I am not sure",
        "(A) or (B)",  # two different letters
        "The answer is not B",
    ],
)
def test_mcq_letter_undecidable(reply):
    assert mcq_letter(reply, OPTS) is None


def test_mcq_letter_labelled_options_and_no_options():
    assert mcq_letter("blue bus", ["A. red car", "B. blue bus"]) == "B"
    assert mcq_letter("Z", []) == "Z"  # any letter when the options are unknown
    assert option_text("A. a dog") == "a dog" and option_text("A dog") == "A dog"


@pytest.mark.parametrize(
    "reply, answer",
    [
        ("Yes", "yes"),
        ("yes.", "yes"),
        ("No, the man is walking.", "no"),
        ('"Yes", there is', "yes"),
        ("**No**", "no"),
        ("The answer is yes.", "yes"),
        ("Answer: no", "no"),
        ("Not sure", None),  # "not" is not "no"
        ("There is a dog", None),
        ("", None),
        ("Yesterday it rained", None),
    ],
)
def test_yes_no(reply, answer):
    assert yes_no(reply) == answer


def test_videohallucer_hit_is_whole_word_any_case():
    assert videohallucer_hit("Yes, there is.", "yes")
    assert videohallucer_hit("NO", "no")
    assert not videohallucer_hit("Nope", "no")
    assert not videohallucer_hit("yesterday", "yes")
    assert videohallucer_hit("No, yes", "yes") and videohallucer_hit("No, yes", "no")  # the official rule


@pytest.mark.parametrize(
    "reply, gold, ok",
    [
        ("B", "B", True),
        ("(B)", "B", True),
        ("(B) a dog", "B", True),
        ("B.", "B", True),
        ("b) a dog", "B", True),
        ("(B).", "B", True),
        ("B, because", "B", False),  # first token "b," is not part of "(b)"
        ("Answer: B", "B", False),
        ("A", "B", False),
        ("", "B", False),  # official would accept ("" is in "(b)"): documented deviation
        ("( B", "B", False),  # first token "(" -- same deviation
    ],
)
def test_mvbench_official(reply, gold, ok):
    assert mvbench_correct(reply, gold) is ok


def test_mlvu_official_and_paper_differ_on_the_answer_is():
    # The paper's regex takes the first letter of any kind: "The answer is (B)" -> "T".
    assert paper_letter("The answer is (B)") == "T"
    assert mlvu_letter("The answer is (B)") == "B"  # character before the first ")"
    assert mlvu_letter("(B) a dog") == "B" and mlvu_letter("B") == "B"
    assert mlvu_letter("B. a dog") == "B. a dog"  # no ")": the whole reply must equal the letter
    assert paper_letter("B. a dog") == "B" and paper_letter("b") == "B"
    assert paper_letter("123") is None


def test_videomme_official_and_paper():
    assert videomme_letter("The best answer is C.") == "C"
    assert videomme_letter("Answer: B") == "A"  # "Answer" keeps its capital A
    assert videomme_letter_paper("Answer: B") == "B"  # the paper drops "Answer:"
    assert videomme_letter("(D) the cat") == "D"
    assert videomme_letter("it is hard to say") is None
    assert videomme_letter_paper("The correct option is (B)") == "B"


def test_first_letter():
    assert first_letter("The answer is B", "ABCDE") == "B"
    assert first_letter("E.", "ABCDE") == "E"
    assert first_letter("E.", "ABCD") is None
    assert first_letter("none", "ABCDE") is None


@pytest.mark.parametrize(
    "reply, rating",
    [
        ("A. dunking a basketball", 1),  # exact answer
        ("A", 1),
        ("B", 0),
        ("A. something else", 1),  # label decides
        ("C) passing", 0),
        ("A</s>", 1),  # "</s>" removed first
        (" A", None),  # the official rule does not strip: no rule decides
        ("(A)", None),
        ("The answer is A", None),
    ],
)
def test_tempcompass_mc_rules(reply, rating):
    assert tempcompass_mc_rating(reply, "A. dunking a basketball") == rating


@pytest.mark.parametrize(
    "reply, gold, rating",
    [
        ("Yes.", "yes", 1),
        ("no", "yes", 0),
        ("NO, it is not", "no", 1),
        ("Not sure", "no", 1),
        ("Maybe", "no", None),
    ],
)
def test_tempcompass_yes_no_rules(reply, gold, rating):
    assert tempcompass_yn_rating(reply, gold) == rating
