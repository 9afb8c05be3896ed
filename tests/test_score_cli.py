"""`rrpo score` and `rrpo compare` through rrpo.cli.main, and the predictions / results files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrpo.cli import main
from rrpo.errors import RecordError
from rrpo.eval.scoring import format_table, load_run, read_predictions, write_results

VH = [
    {
        "basic": {"video": "a.mp4", "question": "Is there a dog?", "answer": "yes"},
        "hallucination": {"video": "a.mp4", "question": "Is there a cat?", "answer": "no"},
        "type": "object",
    },
    {
        "basic": {"video": "b.mp4", "question": "Is it raining?", "answer": "yes"},
        "hallucination": {"video": "b.mp4", "question": "Is it snowing?", "answer": "no"},
        "type": "object",
    },
]


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def vh_file(tmp_path) -> Path:
    path = tmp_path / "object_relation.json"
    path.write_text(json.dumps(VH))
    return path


def test_template_fill_score_round_trip(tmp_path, vh_file, capsys):
    template = tmp_path / "preds.jsonl"
    assert (
        main(
            [
                "score",
                "--benchmark",
                "videohallucer",
                "--annotations",
                str(vh_file),
                "--write-template",
                str(template),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in template.read_text().splitlines()]
    assert [r["id"] for r in rows] == [
        "object_relation/0/basic",
        "object_relation/0/hallucination",
        "object_relation/1/basic",
        "object_relation/1/hallucination",
    ]
    assert all(r["prediction"] == "" for r in rows)
    assert rows[1]["question"] == "Is there a cat?" and rows[1]["prompt"].endswith("using 'yes' or 'no'.")

    # Fill: answer "yes" to everything, and drop the last question to see it reported missing.
    filled = [{**r, "prediction": "Yes."} for r in rows[:-1]]
    _jsonl(template, filled)
    out = tmp_path / "run"
    capsys.readouterr()
    assert (
        main(
            [
                "score",
                "--benchmark",
                "videohallucer",
                "--annotations",
                str(vh_file),
                "--predictions",
                str(template),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "videohallucer" in printed and "missing=1" in printed

    res = json.loads((out / "results.json").read_text())
    # basic: 2/2 right; hallucinated: pair 0 says yes (wrong), pair 1 missing (wrong) -> 0/2; pairs 0/2.
    assert res["summary"] == {"overall": 0.0, "basic": 100.0, "hallucinated": 0.0}
    assert res["missing"] == ["object_relation/1/hallucination"]
    assert res["scoring"] == "official" and res["meta"]["predictions"] == str(template)
    assert res["verdicts"]["object_relation/0/hallucination"] == {"extracted": "yes", "correct": False}


def test_score_reports_bad_predictions_line(tmp_path, vh_file, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "object_relation/0/basic", "prediction": "yes"}\n{"id": 3\n')
    code = main(
        ["score", "--benchmark", "videohallucer", "--annotations", str(vh_file), "--predictions", str(bad)]
    )
    assert code == 1
    assert "record bad.jsonl line 2: not valid JSON" in capsys.readouterr().err


def test_read_predictions_rules(tmp_path):
    p = _jsonl(
        tmp_path / "p.jsonl",
        [{"id": "a", "prediction": "x"}, {"id": 7, "prediction": None}, {"id": "a", "prediction": "x"}],
    )
    assert read_predictions(p) == {"a": "x", "7": ""}  # same repeat is fine; null reads as ""
    _jsonl(p, [{"id": "a", "prediction": "x"}, {"id": "a", "prediction": "y"}])
    with pytest.raises(
        RecordError, match=r"p\.jsonl line 2, field 'id': 'a' appears again with a different prediction"
    ):
        read_predictions(p)
    _jsonl(p, [{"id": "a"}])
    with pytest.raises(RecordError, match="line 1, field 'prediction': missing"):
        read_predictions(p)
    _jsonl(p, [{"id": "a", "prediction": 3}])
    with pytest.raises(RecordError, match="expected a string, got int"):
        read_predictions(p)
    _jsonl(p, [["a", "x"]])
    with pytest.raises(RecordError, match="expected a JSON object"):
        read_predictions(p)


def test_paper_scoring_flag_changes_the_score(tmp_path, capsys):
    ann = tmp_path / "count.json"
    ann.write_text(
        json.dumps(
            [
                {
                    "video": "v.mp4",
                    "question": "how many?",
                    "candidates": ["1", "2"],
                    "answer": "2",
                    "question_type": "count",
                }
            ]
        )
    )
    preds = _jsonl(tmp_path / "p.jsonl", [{"id": "count/0", "prediction": "The answer is (B)"}])
    for mode, expected in (("official", 100.0), ("paper", 0.0)):
        out = tmp_path / mode
        argv = [
            "score",
            "--benchmark",
            "mlvu",
            "--annotations",
            str(ann),
            "--predictions",
            str(preds),
            "--out",
            str(out),
        ]
        assert main([*argv, "--scoring", mode]) == 0
        assert json.loads((out / "results.json").read_text())["summary"]["m_avg"] == expected


def _fake_run(path: Path, vh: float, mme: float | None) -> Path:
    write_results(
        path / "videohallucer",
        {
            "benchmark": "videohallucer",
            "headline": "overall",
            "scoring": "official",
            "summary": {"overall": vh, "basic": 80.0},
        },
    )
    if mme is not None:
        write_results(
            path / "videomme",
            {
                "benchmark": "videomme",
                "headline": "overall",
                "scoring": "official",
                "summary": {"overall": mme},
            },
        )
    return path


def test_compare_two_runs(tmp_path, capsys):
    base = _fake_run(tmp_path / "base", 40.0, 60.0)
    rrpo = _fake_run(tmp_path / "rrpo-run", 55.5, None)
    out = tmp_path / "cmp"
    assert main(["compare", str(base), str(rrpo), "--names", "Base", "RRPO", "--out", str(out)]) == 0
    md = (out / "compare.md").read_text()
    assert md == capsys.readouterr().out.split("wrote")[0]
    lines = md.splitlines()
    assert lines[0] == "| benchmark | metric | Base | RRPO |"
    assert "| videohallucer | overall | 40.0 | **55.5** |" in lines
    assert "| videohallucer | basic | 80.0 | 80.0 |" not in lines  # ties are both best
    assert "| videohallucer | basic | **80.0** | **80.0** |" in lines
    assert "| videomme | overall | 60.0 | - |" in lines
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    # Default names come from the directories.
    assert main(["compare", str(base), str(rrpo)]) == 0
    assert "| base | rrpo-run |" in capsys.readouterr().out


def test_compare_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty")]) == 1
    assert "no results.json" in capsys.readouterr().err
    run = _fake_run(tmp_path / "r", 1.0, None)
    assert main(["compare", str(run), str(run)]) == 1
    assert "run names must differ" in capsys.readouterr().err
    assert set(load_run(run)) == {"videohallucer"}


def test_format_table_lists_groups_counts_and_notes():
    res = {
        "benchmark": "tvbench",
        "scoring": "paper",
        "headline": "accuracy",
        "summary": {"accuracy": 62.5},
        "groups": {"task": {"count": {"correct": 5, "total": 8, "accuracy": 62.5}}},
        "counts": {"questions": 8, "missing": 0},
        "notes": ["hello"],
    }
    text = format_table(res)
    assert "tvbench  (scoring: paper; headline: accuracy)" in text
    assert "count  5        8      62.5" in text
    assert "counts: questions=8, missing=0" in text and "note: hello" in text
