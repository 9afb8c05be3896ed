"""Benchmark loaders and scorers: real fixture files where we have them, synthetic files in each
benchmark's official layout otherwise; expected numbers are worked out by hand in the comments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrpo.errors import RecordError, RRPOError
from rrpo.eval.benchmarks import BENCHMARKS, get_benchmark


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_registry_names():
    assert set(BENCHMARKS) == {
        "videohallucer",
        "tvbench",
        "mvbench",
        "videomme",
        "mlvu",
        "tempcompass",
        "longvideobench",
    }
    with pytest.raises(RRPOError, match="unknown benchmark 'nope'"):
        get_benchmark("nope")


# --- VideoHallucer ---------------------------------------------------------------------------


def _pair(b_ans="yes", h_ans="no"):
    return {
        "basic": {"video": "v.mp4", "question": "Is there a dog?", "answer": b_ans},
        "hallucination": {"video": "v.mp4", "question": "Is there a cat?", "answer": h_ans},
        "type": "object",
    }


def test_videohallucer_scores_pairs_and_category_mean(tmp_path):
    root = tmp_path / "vh"
    _write(root / "cat1" / "cat1.json", [_pair(), _pair()])
    _write(root / "cat2" / "cat2.json", [_pair()])
    bench = BENCHMARKS["videohallucer"]
    items = bench.load(root)
    assert [i.id for i in items] == [
        "cat1/0/basic",
        "cat1/0/hallucination",
        "cat1/1/basic",
        "cat1/1/hallucination",
        "cat2/0/basic",
        "cat2/0/hallucination",
    ]
    assert items[0].prompt == "Is there a dog?\nAnswer the question using 'yes' or 'no'."
    preds = {
        "cat1/0/basic": "Yes",  # right
        "cat1/0/hallucination": "no",  # right -> pair right
        "cat1/1/basic": "no",  # wrong
        "cat1/1/hallucination": "No.",  # right -> pair wrong
        "cat2/0/basic": "yes, a dog",  # right; its hallucination question has no prediction
    }
    r = bench.score(items, preds)
    # cat1: basic 1/2, hallucinated 2/2, pair 1/2; cat2: basic 1/1, hallucinated 0/1, pair 0/1.
    assert r["groups"]["overall"]["cat1"] == {"correct": 1, "total": 2, "accuracy": 50.0}
    assert r["summary"] == {"overall": (50 + 0) / 2, "basic": (50 + 100) / 2, "hallucinated": (100 + 0) / 2}
    assert r["missing"] == ["cat2/0/hallucination"] and r["counts"]["missing"] == 1
    assert bench.score(items, preds, scoring="paper")["summary"] == r["summary"]  # same rule in the paper


def test_videohallucer_real_files(shared_fixtures):
    folder = shared_fixtures / "benchmarks" / "videohallucer"
    bench = BENCHMARKS["videohallucer"]
    items = bench.load(folder)
    raw = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    assert len(items) == 2 * sum(len(v) for v in raw.values())
    by_id = {i.id: i for i in items}
    for cat, pairs in raw.items():
        for k, pair in enumerate(pairs):
            for side in ("basic", "hallucination"):
                item = by_id[f"{cat}/{k}/{side}"]
                assert item.answer == pair[side]["answer"] and item.video == pair[side]["video"]
                assert item.category == cat and item.kind == "yes_no"
    # Ids are stable: a single file gives the same ids as the directory, and reloading is identical.
    single = bench.load(folder / "temporal.json")
    assert [i.id for i in single] == [i.id for i in items if i.category == "temporal"]
    assert [i.id for i in bench.load(folder)] == [i.id for i in items]
    # Answering "yes" everywhere: every basic question right (all gold "yes"), every hallucinated wrong.
    r = bench.score(items, {i.id: "Yes" for i in items})
    assert r["summary"] == {"overall": 0.0, "basic": 100.0, "hallucinated": 0.0}


# --- MLVU ------------------------------------------------------------------------------------


def test_mlvu_real_files_official_vs_paper(shared_fixtures):
    folder = shared_fixtures / "benchmarks" / "mlvu"
    bench = BENCHMARKS["mlvu"]
    items = bench.load(folder)
    raw = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    assert len(items) == sum(len(v) for v in raw.values())
    by_id = {i.id: i for i in items}
    expected_b = {}
    for stem, recs in raw.items():
        for k, rec in enumerate(recs):
            item = by_id[f"{stem}/{k}"]
            assert item.answer == "ABCD"[rec["candidates"].index(rec["answer"])]
            assert item.task == rec["question_type"]
            assert f"(A) {rec['candidates'][0]}" in item.prompt
        # fraction of this task's questions whose answer is option B
        expected_b[recs[0]["question_type"]] = (
            100 * sum(r["candidates"].index(r["answer"]) == 1 for r in recs) / len(recs)
        )
    m_avg = sum(expected_b.values()) / len(expected_b)

    r = bench.score(items, {i.id: "(B) something" for i in items})
    assert r["summary"]["m_avg"] == pytest.approx(m_avg)
    assert {k: v["accuracy"] for k, v in r["groups"]["task"].items()} == pytest.approx(expected_b)
    # The documented difference: the paper's regex reads "The answer is (B)" as "T".
    answer_is = {i.id: "The answer is (B)" for i in items}
    assert bench.score(items, answer_is)["summary"]["m_avg"] == pytest.approx(m_avg)
    assert bench.score(items, answer_is, scoring="paper")["summary"]["m_avg"] == 0.0


# --- MVBench / TVBench ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mvbench", "tvbench"])
def test_mvbench_layout_official_and_paper(tmp_path, name):
    seq = [
        {
            "video": "s0.mp4",
            "question": "q0",
            "candidates": ["x", "y", "z"],
            "answer": "y",
            "start": 1.5,
            "end": 4.0,
        },
        {"video": "s1.mp4", "question": "q1", "candidates": ["x", "y", "z"], "answer": "x"},
        {"video": "s2.mp4", "question": "q2", "candidates": ["x", "y", "z"], "answer": "z"},
    ]
    count = [
        {"video": "c0.mp4", "question": "how many?", "candidates": ["2", "3"], "answer": "3"},
        {"video": "c1.mp4", "question": "how many?", "candidates": ["2", "3"], "answer": "2"},
    ]
    _write(tmp_path / "json" / "action_sequence.json", seq)
    _write(tmp_path / "json" / "action_count.json", count)
    bench = BENCHMARKS[name]
    items = bench.load(tmp_path / "json")
    by_id = {i.id: i for i in items}
    assert set(by_id) == {f"action_sequence/{k}" for k in range(3)} | {"action_count/0", "action_count/1"}
    s0 = by_id["action_sequence/0"]
    assert (s0.start, s0.end, s0.answer, s0.task) == (1.5, 4.0, "B", "action_sequence")
    assert s0.prompt == "Question: q0\nOptions:\n(A) x\n(B) y\n(C) z\nOnly give the best option."
    assert by_id["action_count/0"].start is None
    preds = {
        "action_sequence/0": "(B) y",  # official right, paper right
        "action_sequence/1": "A, because",  # official wrong (token "a,"), paper right (A)
        "action_sequence/2": "The answer is (C)",  # official wrong ("the"), paper wrong ("T")
        "action_count/0": "B",  # both right
        # action_count/1 missing: wrong in both
    }
    off = bench.score(items, preds)
    assert off["summary"]["accuracy"] == pytest.approx(100 * 2 / 5)
    assert off["groups"]["task"]["action_sequence"]["accuracy"] == pytest.approx(100 / 3)
    assert off["groups"]["task"]["action_count"]["accuracy"] == 50.0
    assert off["missing"] == ["action_count/1"]
    paper = bench.score(items, preds, scoring="paper")
    assert paper["summary"]["accuracy"] == pytest.approx(100 * 3 / 5)


def test_mvbench_bad_records_name_file_and_field(tmp_path):
    path = _write(
        tmp_path / "t.json", [{"video": "v", "question": "q", "candidates": ["a", "b"], "answer": "c"}]
    )
    with pytest.raises(RecordError, match=r"t\.json\[0\], field 'answer': 'c' is not one of the candidates"):
        BENCHMARKS["mvbench"].load(path)
    _write(path, [{"video": "v", "candidates": ["a", "b"], "answer": "a"}])
    with pytest.raises(RecordError, match=r"field 'question': missing"):
        BENCHMARKS["mvbench"].load(path)
    _write(
        path, [{"video": "v", "question": "q", "candidates": ["a", "b"], "answer": "a", "start": 5, "end": 2}]
    )
    with pytest.raises(RecordError, match="field 'end'"):
        BENCHMARKS["mvbench"].load(path)
    with pytest.raises(RRPOError, match="no such annotation"):
        BENCHMARKS["mvbench"].load(tmp_path / "absent")


def test_unknown_prediction_ids_are_an_error_when_nothing_matches(tmp_path):
    path = _write(
        tmp_path / "t.json", [{"video": "v", "question": "q", "candidates": ["a", "b"], "answer": "a"}]
    )
    items = BENCHMARKS["tvbench"].load(path)
    with pytest.raises(RRPOError, match="none of the 1 prediction ids"):
        BENCHMARKS["tvbench"].score(items, {"other/0": "A"})
    r = BENCHMARKS["tvbench"].score(items, {"t/0": "A", "other/0": "A"})
    assert r["counts"]["unknown_predictions"] == 1 and r["summary"]["accuracy"] == 100.0


# --- Video-MME --------------------------------------------------------------------------------

_VMME = [
    # (video_id, duration, question_id, answer, reply)
    ("001", "short", "001-1", "A", "A"),  # right in both
    ("001", "short", "001-2", "B", "Answer: B"),  # official reads "A" (wrong); paper drops "Answer:" (right)
    ("002", "medium", "002-1", "C", "I don't know"),  # no letter: left out of the denominator
    ("003", "long", "003-1", "D", "The best answer is D."),  # right in both
]


def _vmme_flat():
    return [
        {
            "video_id": vid,
            "duration": dur,
            "domain": "Knowledge",
            "sub_category": "Astronomy",
            "videoID": f"yt{vid}",
            "question_id": qid,
            "task_type": "Counting Problem",
            "question": f"question {qid}?",
            "options": ["A. one", "B. two", "C. three", "D. four"],
            "answer": ans,
        }
        for vid, dur, qid, ans, _ in _VMME
    ]


def _vmme_nested():
    videos: dict[str, dict] = {}
    for rec in _vmme_flat():
        v = videos.setdefault(
            rec["video_id"],
            {
                "video_id": rec["video_id"],
                "duration": rec["duration"],
                "domain": rec["domain"],
                "videoID": rec["videoID"],
                "questions": [],
            },
        )
        v["questions"].append(
            {k: rec[k] for k in ("question_id", "task_type", "question", "options", "answer")}
        )
    return list(videos.values())


@pytest.mark.parametrize("layout", [_vmme_flat, _vmme_nested])
def test_videomme_layouts_and_exclusion(tmp_path, layout):
    bench = BENCHMARKS["videomme"]
    items = bench.load(_write(tmp_path / "videomme.json", layout()))
    assert [i.id for i in items] == [q for _, _, q, _, _ in _VMME]
    first = items[0]
    assert first.video == "yt001.mp4" and first.duration == "short" and first.options[0] == "one"
    assert first.prompt.endswith("question 001-1?\nA. one\nB. two\nC. three\nD. four\nThe best answer is:")
    preds = {q: reply for _, _, q, _, reply in _VMME}
    off = bench.score(items, preds)
    # Counted: 001-1 (right), 001-2 (wrong), 003-1 (right); 002-1 excluded.
    assert off["summary"] == {"overall": pytest.approx(200 / 3), "short": 50.0, "long": 100.0}
    assert off["excluded"] == ["002-1"] and off["counts"]["excluded"] == 1
    assert any("left out of the denominator" in n for n in off["notes"])
    paper = bench.score(items, preds, scoring="paper")
    assert paper["summary"] == {"overall": 100.0, "short": 100.0, "long": 100.0}


def test_videomme_bad_duration(tmp_path):
    recs = _vmme_flat()
    recs[1]["duration"] = "huge"
    with pytest.raises(RecordError, match=r"\[1\] \(001-2\), field 'duration'"):
        BENCHMARKS["videomme"].load(_write(tmp_path / "v.json", recs))


# --- LongVideoBench ---------------------------------------------------------------------------


def test_longvideobench(tmp_path):
    cands5 = ["p", "q", "r", "s", "t"]
    recs = [
        {
            "id": "a",
            "video_path": "a.mp4",
            "question": "qa",
            "candidates": cands5,
            "correct_choice": 4,
            "duration_group": 15,
        },
        {
            "id": "b",
            "video_path": "b.mp4",
            "question": "qb",
            "candidates": cands5[:4],
            "correct_choice": 1,
            "duration_group": 15,
        },
        {
            "id": "c",
            "video_path": "c.mp4",
            "question": "qc",
            "candidates": cands5[:3],
            "correct_choice": 0,
            "duration_group": 600,
        },
    ]
    bench = BENCHMARKS["longvideobench"]
    items = bench.load(_write(tmp_path / "lvb_val.json", recs))
    assert [i.answer for i in items] == ["E", "B", "A"]
    assert (
        items[2].prompt
        == "Question: qc\nA. p\nB. q\nC. r\nAnswer with the option's letter from the given choices directly."
    )
    preds = {"a": "E", "b": "The answer is B", "c": "none"}
    off = bench.score(items, preds)
    # a right, b right (first capital among A-D is B), c unanswered -> 2/3; by group 15: 2/2, 600: 0/1.
    assert off["summary"]["accuracy"] == pytest.approx(200 / 3)
    assert off["groups"]["duration"] == {
        "15": {"correct": 2, "total": 2, "accuracy": 100.0},
        "600": {"correct": 0, "total": 1, "accuracy": 0.0},
    }
    assert off["unanswered"] == ["c"]
    # The paper's regex: "The answer is B" -> "T" (wrong), "none" -> "N" (wrong).
    assert bench.score(items, preds, scoring="paper")["summary"]["accuracy"] == pytest.approx(100 / 3)
    recs[0]["correct_choice"] = 5
    with pytest.raises(RecordError, match="field 'correct_choice'"):
        bench.load(_write(tmp_path / "lvb_val.json", recs))


# --- TempCompass ------------------------------------------------------------------------------


def _tc_predictions(folder: Path) -> tuple[dict[str, str], dict[str, dict]]:
    """Predictions keyed by our ids, and the official verdicts, from the fixture's official files."""
    preds, verdicts = {}, {}
    for task in ("multi-choice", "yes_no"):
        p = json.loads((folder / f"video-llava_predictions_{task}.json").read_text())
        v = json.loads((folder / f"video-llava_auto_eval_{task}.json").read_text())
        for vid, dims in p.items():
            for dim, lst in dims.items():
                for k, rec in enumerate(lst):
                    preds[f"{task}/{vid}/{dim}/{k}"] = rec["prediction"]
                    verdicts[f"{task}/{vid}/{dim}/{k}"] = v[vid][dim][k]
    return preds, verdicts


def test_tempcompass_golden_official_verdicts(shared_fixtures):
    folder = shared_fixtures / "benchmarks" / "tempcompass"
    bench = BENCHMARKS["tempcompass"]
    items = bench.load(folder)
    preds, official = _tc_predictions(folder)
    assert {i.id for i in items} == set(official)
    r = bench.score(items, preds)
    decided = 0
    for item_id, v in official.items():
        assert v["video-llm-prediction"] == preds[item_id]
        mine = r["verdicts"][item_id]
        if v["match_success"]:
            decided += 1
            assert mine["correct"] == bool(v["rating"]), item_id
            assert mine.get("status") != "undecided"
        else:
            assert mine["status"] == "undecided", item_id
    assert decided > 3000
    # Task accuracy = sum of official ratings / questions (all were rule-decided in this fixture).
    for task in ("multi-choice", "yes_no"):
        ratings = [v["rating"] for k, v in official.items() if k.startswith(task + "/")]
        assert r["summary"][task] == pytest.approx(100 * sum(ratings) / len(ratings))
    item = next(i for i in items if i.id == "multi-choice/1034419625/action/0")
    assert item.prompt.endswith("C. passing a basketball\nPlease directly give the best option:")
    assert item.options == ["dunking a basketball", "dribbling a basketball", "passing a basketball"]


def test_tempcompass_undecided_and_judge(tmp_path):
    q = {
        "v1": {
            "speed": [
                {"question": "How fast?\nA. slow\nB. fast", "answer": "B. fast"},
                {"question": "Which?\nA. slow\nB. fast", "answer": "A. slow"},
            ]
        }
    }
    yn = {"v1": {"speed": [{"question": "Is it slow?", "answer": "no"}]}}
    _write(tmp_path / "questions" / "multi-choice.json", q)
    _write(tmp_path / "questions" / "yes_no.json", yn)
    bench = BENCHMARKS["tempcompass"]
    items = bench.load(tmp_path)
    preds = {
        "multi-choice/v1/speed/0": "B",  # rule: right
        "multi-choice/v1/speed/1": "I think it is slow",  # no rule decides
        "yes_no/v1/speed/0": "It is fast",  # no rule decides
    }
    r = bench.score(items, preds)
    assert r["undecided"] == ["multi-choice/v1/speed/1", "yes_no/v1/speed/0"]
    # Undecided count as wrong: multi-choice 1/2, yes/no 0/1, avg of tasks 25.
    assert r["summary"] == {"avg": 25.0, "multi-choice": 50.0, "yes_no": 0.0}

    calls = []

    def judge(question, answer, prediction):
        calls.append((question, answer, prediction))
        return "slow" in prediction  # right for the first, wrong for the second

    rj = bench.score(items, preds, judge=judge)
    assert calls == [
        ("Which?\nA. slow\nB. fast", "A. slow", "I think it is slow"),
        ("Is it slow?", "no", "It is fast"),
    ]
    assert rj["summary"] == {"avg": 50.0, "multi-choice": 100.0, "yes_no": 0.0}
    assert rj["counts"]["judged"] == 2 and rj["undecided"] == []
    # Paper mode strips the reply first: " B" is decided there, undecided officially.
    spaced = {**preds, "multi-choice/v1/speed/0": " B"}
    assert "multi-choice/v1/speed/0" in bench.score(items, spaced)["undecided"]
    assert (
        bench.score(items, spaced, scoring="paper")["verdicts"]["multi-choice/v1/speed/0"]["correct"] is True
    )


def test_tempcompass_bad_answer(tmp_path):
    _write(
        tmp_path / "multi-choice.json", {"v": {"speed": [{"question": "Q?\nA. x\nB. y", "answer": "C. z"}]}}
    )
    with pytest.raises(RecordError, match=r"multi-choice/v/speed/0, field 'answer'"):
        BENCHMARKS["tempcompass"].load(tmp_path / "multi-choice.json")


def test_scoring_mode_is_checked(tmp_path):
    with pytest.raises(RRPOError, match="unknown scoring mode 'loose'"):
        BENCHMARKS["videomme"].score([], {}, scoring="loose")
