"""PreferencePair / VideoQuestion records: validation, JSONL round trips, all-at-once error reports."""

from __future__ import annotations

import json

import pytest

from rrpo.data.record import (
    PreferencePair,
    RecordErrors,
    VideoQuestion,
    load_questions,
    read_pairs,
    write_pairs,
    write_questions,
)
from rrpo.errors import RecordError, RRPOError


def make_pair(**over) -> PreferencePair:
    chosen = "The man pours milk into a glass."
    rejected = "The man pours juice into a cup."
    d = dict(
        id="p1",
        video="clips/a.mp4",
        question="What does the man pour?",
        chosen=chosen,
        rejected=rejected,
        chosen_spans=[
            (chosen.index("milk"), chosen.index("milk") + 4),
            (chosen.index("glass"), len(chosen) - 1),
        ],
        rejected_spans=[
            (rejected.index("juice"), rejected.index("juice") + 5),
            (rejected.index("cup"), len(rejected) - 1),
        ],
        source="test",
        metadata={"perturbation": "shuffle", "seed": 3},
    )
    d.update(over)
    return PreferencePair(**d)


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# ----------------------------------------------------------------------------- PreferencePair


def test_pair_dict_round_trip_through_json():
    pair = make_pair(options=["milk", "juice"], answer_type="mcq")
    d = json.loads(json.dumps(pair.to_dict()))
    assert d["chosen_spans"] == [list(s) for s in pair.chosen_spans]
    back = PreferencePair.from_dict(d)
    assert back == pair
    assert all(isinstance(s, tuple) for s in back.chosen_spans + back.rejected_spans)
    assert [back.chosen[a:b] for a, b in back.chosen_spans] == ["milk", "glass"]
    assert back.has_spans


@pytest.mark.parametrize(
    "change, field, reason",
    [
        (dict(chosen_spans=[(5, 3)]), "chosen_spans", "not a non-empty range"),
        (dict(chosen_spans=[(0, 999)]), "chosen_spans", "inside the text"),
        (dict(rejected_spans=[(-1, 2)]), "rejected_spans", "inside the text"),
        (dict(chosen_spans=[(10, 14), (0, 3)]), "chosen_spans", "precedes"),
        (dict(chosen_spans=[(0, 5), (4, 8)]), "chosen_spans", "overlaps"),
        (dict(chosen_spans=[(0, 2, 3)]), "chosen_spans", "pair of ints"),
        (dict(chosen_spans=[("0", 2)]), "chosen_spans", "pair of ints"),
        (dict(chosen_spans=[(True, 2)]), "chosen_spans", "pair of ints"),
        (dict(chosen_spans="0-3"), "chosen_spans", "list of"),
        (dict(chosen=""), "chosen", "empty"),
        (dict(rejected=7), "rejected", "expected a string"),
        (dict(video=None), "video", "expected a string"),
        (dict(answer_type="choice"), "answer_type", "must be one of"),
        (dict(answer_type="mcq"), "options", "need a list of options"),
        (dict(options=["a", ""]), "options", "non-empty strings"),
        (dict(metadata=[1]), "metadata", "expected an object"),
        (dict(metadata={"x": object()}), "metadata", "not JSON-serialisable"),
    ],
)
def test_pair_validate_names_record_and_field(change, field, reason):
    pair = make_pair(**change)
    with pytest.raises(RecordError) as info:
        pair.validate(where="pairs.jsonl line 4")
    err = info.value
    assert err.field == field
    assert reason in err.reason
    assert "pairs.jsonl line 4" in str(err) and "'p1'" in str(err) and f"'{field}'" in str(err)


def test_touching_spans_are_allowed():
    pair = make_pair(chosen_spans=[(0, 3), (3, 7)])
    assert pair.validate().chosen_spans == [(0, 3), (3, 7)]


def test_from_dict_unknown_and_missing_fields():
    d = make_pair().to_dict()
    with pytest.raises(RecordError, match="unknown field.*'chosen_span'"):
        PreferencePair.from_dict({**d, "chosen_span": []})
    del d["rejected"]
    with pytest.raises(RecordError, match="missing required field.*'rejected'"):
        PreferencePair.from_dict(d, where="x line 1")


def test_write_and_read_pairs_round_trip(tmp_path):
    pairs = [make_pair(id=f"p{i}", metadata={"i": i, "text": "ünïcode ✓"}) for i in range(4)]
    pairs.append(make_pair(id="nospan", chosen_spans=[], rejected_spans=[]))
    path = tmp_path / "sub" / "pairs.jsonl"
    write_pairs(path, pairs)
    assert read_pairs(path) == pairs
    assert len(path.read_text(encoding="utf-8").splitlines()) == 5
    assert not read_pairs(path)[-1].has_spans


def test_write_pairs_refuses_duplicates_and_invalid(tmp_path):
    with pytest.raises(RecordErrors, match="duplicate id"):
        write_pairs(tmp_path / "a.jsonl", [make_pair(), make_pair()])
    with pytest.raises(RecordError, match="chosen_spans"):
        write_pairs(tmp_path / "a.jsonl", [make_pair(chosen_spans=[(0, 999)])])
    assert not (tmp_path / "a.jsonl").exists()


def test_read_pairs_reports_every_bad_line_at_once(tmp_path):
    good = [make_pair(id=f"g{i}").to_dict() for i in range(3)]
    bad_span = make_pair(id="b1", rejected_spans=[(0, 500)]).to_dict()
    missing = make_pair(id="b2").to_dict()
    del missing["question"]
    lines = [
        json.dumps(good[0]),
        '{"id": "broken", "video": ',  # line 2: not JSON
        json.dumps(bad_span),  # line 3
        "",  # blank lines are fine
        json.dumps(good[1]),
        json.dumps(missing),  # line 6
        json.dumps(good[0]),  # line 7: duplicate id
        json.dumps(good[2]),
    ]
    path = tmp_path / "pairs.jsonl"
    write_lines(path, lines)
    with pytest.raises(RecordErrors) as info:
        read_pairs(path)
    err = info.value
    assert len(err.problems) == 4
    msg = str(err)
    assert msg.startswith(f"{path}: 4 problems")
    for expected in (
        "line 2: not valid JSON",
        "line 3 (id 'b1'), field 'rejected_spans'",
        "line 6 (id 'b2'), field 'question': missing required field",
        "line 7 (id 'g0'), field 'id': duplicate id, first used at",
    ):
        assert expected in msg

    pairs, problems = read_pairs(path, errors="collect")
    assert [p.id for p in pairs] == ["g0", "g1", "g2"]
    assert [p.field for p in problems] == [None, "rejected_spans", "question", "id"]


def test_read_pairs_missing_file(tmp_path):
    with pytest.raises(RRPOError, match="no such file"):
        read_pairs(tmp_path / "nope.jsonl")


# ----------------------------------------------------------------------------- VideoQuestion

OPTIONS = ["the dog jumps", "the dog sits", "the dog barks"]


@pytest.mark.parametrize(
    "given", ["B", "(B)", "b", "B.", "the dog sits", "The dog sits.", "(B) the dog sits", "B. the dog sits"]
)
def test_mcq_answer_forms_normalise_to_the_same_option(given):
    q = VideoQuestion.from_dict(
        {
            "id": "q",
            "video": "v.mp4",
            "question": "Which?",
            "answer": given,
            "answer_type": "mcq",
            "options": OPTIONS,
        }
    )
    assert q.answer == "the dog sits"
    assert q.answer_letter == "B"
    assert q.answer_index == 1
    d = q.to_dict()
    assert d["answer_letter"] == "B" and d["answer"] == "the dog sits"
    assert VideoQuestion.from_dict(d) == q


def test_mcq_options_with_letter_prefixes():
    opts = ["(A) red", "(B) green", "(C) blue"]
    q = VideoQuestion(
        id="q", video="v", question="Colour?", answer="blue", answer_type="mcq", options=opts
    ).validate()
    assert q.answer == "(C) blue" and q.answer_letter == "C"


@pytest.mark.parametrize(
    "record, field, reason",
    [
        (dict(answer="D"), "answer", "neither an option letter (A-C)"),
        (dict(answer="the cat sits"), "answer", "neither an option letter"),
        (dict(answer="(A) the dog sits"), "answer", "neither"),  # letter and text disagree
        (dict(options=None), "options", "need a list of options"),
        (dict(options=["only one"], answer="A"), "options", "at least 2 options"),
        (dict(options=["x", "X", "y"], answer="A"), "options", "repeat"),
        (dict(answer_letter="C"), "answer_letter", "disagrees"),
        (dict(answer_type="multiple"), "answer_type", "must be one of"),
        (dict(answer_type="yesno", answer="maybe", options=None), "answer", "'yes' or 'no'"),
        (dict(answer_type="yesno", answer="yes"), "options", "only multiple-choice"),
        (dict(answer_type="open", answer="x"), "options", "only multiple-choice"),
        (dict(answer_type="open", answer="  ", options=None), "answer", "empty"),
        (dict(colour="red"), "colour", "unknown field"),
    ],
)
def test_question_errors(record, field, reason):
    d = {
        "id": "q7",
        "video": "v.mp4",
        "question": "Which?",
        "answer": "B",
        "answer_type": "mcq",
        "options": OPTIONS,
    }
    d.update(record)
    with pytest.raises(RecordError) as info:
        VideoQuestion.from_dict(d, where="qs.jsonl line 9")
    assert info.value.field == field
    assert reason in info.value.reason
    assert "qs.jsonl line 9" in str(info.value)


def test_yesno_and_open_answers():
    base = {"id": "q", "video": "v.mp4", "question": "Is it red?"}
    q = VideoQuestion.from_dict({**base, "answer": " Yes. ", "answer_type": "yesno"})
    assert q.answer == "yes" and q.answer_letter is None
    q = VideoQuestion.from_dict({**base, "answer": "A red ball.", "answer_type": "open"})
    assert q.answer == "A red ball." and q.answer_index is None
    assert "answer_letter" not in q.to_dict()


def test_load_questions_lists_all_problems(tmp_path):
    base = {"video": "v.mp4", "question": "Which?"}
    lines = [
        json.dumps({**base, "id": "a", "answer": "C", "answer_type": "mcq", "options": OPTIONS}),
        json.dumps({**base, "id": "b", "answer": "no", "answer_type": "yesno"}),
        json.dumps({**base, "id": "c", "answer": "Z", "answer_type": "mcq", "options": OPTIONS}),  # line 3
        "not json",  # line 4
        json.dumps({**base, "id": "a", "answer": "open answer", "answer_type": "open"}),  # line 5, dup
        json.dumps({**base, "id": "e", "answer": "sure", "answer_type": "yesno"}),  # line 6
    ]
    path = tmp_path / "questions.jsonl"
    write_lines(path, lines)
    with pytest.raises(RecordErrors) as info:
        load_questions(path)
    msg = str(info.value)
    assert len(info.value.problems) == 4
    for expected in (
        "line 3 (id 'c'), field 'answer'",
        "line 4: not valid JSON",
        "line 5 (id 'a'), field 'id': duplicate id",
        "line 6 (id 'e'), field 'answer'",
    ):
        assert expected in msg
    questions, problems = load_questions(path, errors="collect")
    assert [(q.id, q.answer) for q in questions] == [("a", "the dog barks"), ("b", "no")]


def test_questions_json_list_and_write_round_trip(tmp_path):
    qs = [
        {
            "id": "1",
            "video": "a.mp4",
            "question": "Which first?",
            "answer": "A",
            "answer_type": "mcq",
            "options": OPTIONS,
        },
        {"id": "2", "video": "b.mp4", "question": "Is it raining?", "answer": "YES", "answer_type": "yesno"},
    ]
    src = tmp_path / "qs.json"
    src.write_text(json.dumps(qs, indent=1))
    loaded = load_questions(src)
    assert [q.answer for q in loaded] == ["the dog jumps", "yes"]
    write_questions(tmp_path / "qs.jsonl", loaded)
    assert load_questions(tmp_path / "qs.jsonl") == loaded

    src.write_text(json.dumps([qs[0], {**qs[0], "answer": "Q"}]))
    with pytest.raises(RecordErrors, match=r"item 1 \(id '1'\), field 'answer'"):
        load_questions(src)


def test_pair_prompt_round_trips_and_defaults_to_the_question(tmp_path):
    rendered = "What does the man pour?\nAnswer with a short phrase."
    with_prompt = make_pair(prompt=rendered)
    without = make_pair(id="p2")
    path = tmp_path / "pairs.jsonl"
    write_pairs(path, [with_prompt, without])
    back = read_pairs(path)
    assert back[0] == with_prompt and back[0].model_prompt == rendered
    assert back[0].question == "What does the man pour?"
    assert back[1].prompt is None and back[1].model_prompt == back[1].question
    with pytest.raises(RecordError, match="prompt"):
        make_pair(prompt="  ").validate("pairs.jsonl line 1")
    with pytest.raises(RecordError, match="prompt"):
        make_pair(prompt=3).validate()
