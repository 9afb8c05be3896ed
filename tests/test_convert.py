"""`rrpo convert --from paper` / `--to paper` on the paper-format fixture and hand-made records."""

from __future__ import annotations

import json
import shutil

import pytest

from rrpo import cli
from rrpo.data.paper_format import align_spans, export_paper, import_paper, strip_placeholder
from rrpo.data.record import PreferencePair, read_pairs, write_pairs
from rrpo.data.spans import parse_masked


@pytest.fixture(autouse=True)
def only_convert(monkeypatch):
    """Run the real `rrpo` entry point with only this stage registered: the other stages' imports
    (torch, ...) cost seconds and are not under test here."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["rrpo.data.commands"])


def main(argv):
    return cli.main(argv)


@pytest.fixture
def paper_json(shared_fixtures, tmp_path):
    src = shared_fixtures / "paper_format" / "pairs_masked.json"
    dst = tmp_path / "paper.json"
    shutil.copy(src, dst)
    return dst


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def span(text, word):
    return (text.index(word), text.index(word) + len(word))


def test_convert_fixture(paper_json, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    assert main(["convert", "--from", "paper", str(paper_json), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "read 5 records" in printed
    assert "wrote 3 pairs" in printed
    assert "rejected 2 records" in printed
    assert "masked_mismatch: 1" in printed and "no_span: 1" in printed

    originals = json.loads(paper_json.read_text())
    pairs = read_pairs(out)
    assert [p.id for p in pairs] == ["0", "1", "2"]
    for pair, rec in zip(pairs, originals):
        assert pair.chosen == rec["answer"] and pair.rejected == rec["pred"]
        assert pair.video == rec["video"] and pair.source == rec["src"]
        assert not pair.question.startswith("<") and rec["question"].endswith(pair.question)
        # the span texts are what the tags enclose
        for text, spans, masked in (
            (pair.chosen, pair.chosen_spans, rec["answer_masked"]),
            (pair.rejected, pair.rejected_spans, rec["pred_masked"]),
        ):
            enclosed = [c.split("</MASK>")[0].strip() for c in masked.split("<MASK>")[1:]]
            assert [text[a:b] for a, b in spans] == enclosed
    milk = pairs[0]
    assert [milk.chosen[a:b] for a, b in milk.chosen_spans] == ["a bottle of milk", "pours it into a glass"]
    assert [milk.rejected[a:b] for a, b in milk.rejected_spans] == ["an apple", "puts it on the table"]

    rejects = read_jsonl(tmp_path / "pairs.rejects.jsonl")  # default place: next to --out
    assert [(r["id"], r["reason"]) for r in rejects] == [("3", "no_span"), ("4", "masked_mismatch")]
    assert [r["record"] for r in rejects] == originals[3:]  # the original record, untouched
    assert "kitchen" in rejects[1]["detail"] and "pred_masked" in rejects[1]["detail"]


def test_convert_with_video_root_and_custom_rejects(paper_json, shared_fixtures, tmp_path, capsys):
    records = json.loads(paper_json.read_text())
    # a good record whose video does not exist
    lost = dict(records[1], sample_id=10, video="missing_video.mp4")
    paper_json.write_text(json.dumps(records + [lost]))
    out, rejects = tmp_path / "p.jsonl", tmp_path / "r" / "bad.jsonl"
    args = ["convert", "--from", "paper", str(paper_json), "--out", str(out), "--rejects", str(rejects)]
    assert main(args + ["--video-root", str(shared_fixtures)]) == 0
    assert "missing_video: 1" in capsys.readouterr().out
    assert [p.id for p in read_pairs(out)] == ["0", "1", "2"]
    reasons = {r["id"]: r["reason"] for r in read_jsonl(rejects)}
    assert reasons == {"3": "no_span", "4": "masked_mismatch", "10": "missing_video"}

    # without --video-root the video is not checked
    assert main(args) == 0
    assert [p.id for p in read_pairs(out)] == ["0", "1", "2", "10"]

    assert main(args + ["--video-root", str(tmp_path / "nope")]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_round_trip_to_paper_and_back(paper_json, tmp_path, capsys):
    pairs_path = tmp_path / "pairs.jsonl"
    main(["convert", "--from", "paper", str(paper_json), "--out", str(pairs_path)])
    # add a pair made here: string id, options, metadata, non-ASCII, several spans
    chosen, rejected = "Le café est à gauche, puis 猫 saute.", "Le thé est à droite, puis 犬 saute."
    ours = PreferencePair(
        id="toy-7/q2",
        video="toy/clip 7.mp4",
        question="Où est le café ?",
        chosen=chosen,
        rejected=rejected,
        chosen_spans=[span(chosen, w) for w in ("café", "à gauche", "猫")],
        rejected_spans=[span(rejected, w) for w in ("thé", "à droite", "犬")],
        options=["à gauche", "à droite"],
        answer_type="mcq",
        source="toy",
        metadata={"perturbation": "temporal_shuffle", "seed": 3},
    )
    pairs = read_pairs(pairs_path) + [ours]
    write_pairs(pairs_path, pairs)

    paper_out = tmp_path / "export.json"
    assert main(["convert", "--to", "paper", str(pairs_path), "--out", str(paper_out)]) == 0
    assert "wrote 4 records" in capsys.readouterr().out
    exported = json.loads(paper_out.read_text(encoding="utf-8"))
    for rec, pair in zip(exported, pairs):
        assert rec["question"] == "<image>\n" + pair.question
        assert parse_masked(rec["answer_masked"]) == (pair.chosen, pair.chosen_spans)
        assert parse_masked(rec["pred_masked"]) == (pair.rejected, pair.rejected_spans)
        assert rec["answer"] == pair.chosen and rec["pred"] == pair.rejected and rec["video"] == pair.video
    assert exported[0]["sample_id"] == 0  # the paper's integer sample_id survives
    assert exported[0]["answer_masked"] == (
        "He takes out <MASK> a bottle of milk </MASK> and <MASK> pours it into a glass </MASK>."
    )

    back = tmp_path / "back.jsonl"
    assert main(["convert", "--from", "paper", str(paper_out), "--out", str(back)]) == 0
    assert read_pairs(back) == pairs
    assert read_jsonl(tmp_path / "back.rejects.jsonl") == []


def test_colliding_sample_ids_get_the_source_prefix():
    base = {
        "question": "<video>\nWhat colour?",
        "answer": "It is red.",
        "pred": "It is blue.",
        "answer_masked": "It is <MASK> red </MASK>.",
        "pred_masked": "It is <MASK> blue </MASK>.",
        "video": "a.mp4",
    }
    records = [
        {**base, "src": "setA", "sample_id": 1},
        {**base, "src": "setB", "sample_id": 1},
        {**base, "src": "setB", "sample_id": 2},
        {**base, "src": "setB", "sample_id": 1},  # same src and sample_id: a real duplicate
    ]
    result = import_paper(records)
    assert [p.id for p in result.pairs] == ["setA-1", "setB-1", "2"]
    assert [p.metadata.get("paper_sample_id") for p in result.pairs] == [1, 1, 2]
    assert [(r["index"], r["reason"]) for r in result.rejects] == [(3, "duplicate_id")]
    assert result.pairs[0].question == "What colour?"
    # ids survive export -> import even though the duplicate that caused the prefix is gone
    assert import_paper(export_paper(result.pairs)).pairs == result.pairs


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"answer_masked": "It is <MASK> red."}, "bad_markup"),
        ({"pred_masked": "It is <MASK> blue </MASK> </MASK>."}, "bad_markup"),
        ({"pred_masked": "It is blue."}, "no_span"),
        ({"pred": "It is red.", "pred_masked": "It is <MASK> red </MASK>."}, "identical"),
        ({"answer": None}, "malformed"),
        ({"question": "<image>\n  "}, "malformed"),
        ({"sample_id": None}, "malformed"),
        ({"video": 3}, "malformed"),
    ],
)
def test_reject_reasons(change, reason):
    rec = {
        "question": "<image>\nWhat colour?",
        "answer": "It is red.",
        "pred": "It is blue.",
        "answer_masked": "It is <MASK> red </MASK>.",
        "pred_masked": "It is <MASK> blue </MASK>.",
        "src": "s",
        "sample_id": 5,
        "video": "a.mp4",
        **change,
    }
    result = import_paper([rec, "not an object"])
    assert result.pairs == []
    assert [r["reason"] for r in result.rejects] == [reason, "malformed"]
    assert result.rejects[0]["record"] == rec


def test_whitespace_only_differences_are_aligned():
    rec = {
        "question": "Q?",
        "answer": "He drinks milks.",
        "pred": "He eats bread.",
        "answer_masked": "He drinks milk <MASK> s </MASK>.",  # the space before the tag is not in the text
        "pred_masked": "He <MASK> eats bread </MASK>.",
        "sample_id": "x",
        "media_path": "v.mp4",
    }
    result = import_paper([rec])
    (pair,) = result.pairs
    assert result.aligned == 1
    assert [pair.chosen[a:b] for a, b in pair.chosen_spans] == ["s"]
    assert pair.chosen_spans == [(pair.chosen.index("s."), pair.chosen.index("s.") + 1)]
    assert pair.video == "v.mp4" and pair.id == "x" and pair.metadata == {}
    assert align_spans("a b", [(2, 3)], "ab") == [(1, 2)]
    assert align_spans("a c", [(2, 3)], "ab") is None


def test_strip_placeholder():
    assert strip_placeholder("<image>\nWhat?") == "What?"
    assert strip_placeholder("<video>\nWhat? <image>") == "What? <image>"
    assert strip_placeholder("What <image>?") == "What <image>?"


def test_convert_cli_errors(tmp_path, capsys):
    assert (
        main(["convert", "--from", "paper", str(tmp_path / "none.json"), "--out", str(tmp_path / "o")]) == 1
    )
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    assert main(["convert", "--to", "paper", str(bad), "--out", str(tmp_path / "o.json")]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl line 1" in err and "missing required field" in err
    assert main(["convert", "--to", "paper", str(bad), "--out", "o.json", "--video-root", "."]) == 1
    assert "only apply to --from" in capsys.readouterr().err


def test_records_without_markup_get_token_diff_spans_when_asked(tmp_path, capsys):
    """`--token-diff-spans TOKENIZER`: a record with no <MASK> markup is marked by the token-level
    alignment (the paper's VideoChat2 convention) instead of being rejected; marked records keep theirs."""
    from rrpo.cli import main
    from rrpo.models import build_tiny_model

    tokenizer = build_tiny_model("qwen2-vl", tmp_path / "m")
    records = [
        {"sample_id": "plain", "question": "<video>\\nWhat?", "answer": "the man pours milk into a glass",
         "pred": "the man pours juice into a glass", "answer_masked": "the man pours milk into a glass",
         "pred_masked": "the man pours juice into a glass", "video": "v.mp4"},
        {"sample_id": "marked", "question": "What?", "answer": "a red ball", "pred": "a blue ball",
         "answer_masked": "a <MASK> red </MASK> ball", "pred_masked": "a <MASK> blue </MASK> ball", "video": "v.mp4"},
    ]  # fmt: skip
    src = tmp_path / "paper.json"
    src.write_text(json.dumps(records))
    out = tmp_path / "pairs.jsonl"
    assert main(["convert", "--from", "paper", str(src), "--out", str(out)]) == 0
    assert [p["id"] for p in read_jsonl(out)] == ["marked"]  # without the option: rejected (no_span)
    args = ["convert", "--from", "paper", str(src), "--out", str(out), "--token-diff-spans", str(tokenizer)]
    assert main(args) == 0  # --min-match-size 3 (the default): a shared letter does not split a word
    pairs = {p["id"]: p for p in read_jsonl(out)}
    plain = pairs["plain"]
    assert plain["metadata"]["spans_from"] == "token-diff"
    assert "milk" in "".join(plain["chosen"][a:b] for a, b in plain["chosen_spans"])
    assert "juice" in "".join(plain["rejected"][a:b] for a, b in plain["rejected_spans"])
    assert pairs["marked"]["chosen_spans"] == [[2, 5]] and "spans_from" not in pairs["marked"]["metadata"]
