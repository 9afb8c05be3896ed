"""Self-alignment pipeline with a scripted generator: outcomes, pair format, resume after kill -9, shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rrpo.data.record import PreferencePair, VideoQuestion
from rrpo.selfalign.pipeline import GenerateConfig, generate_pairs, merge_shards, question_prompt
from rrpo.video import write_video


def _clip(path: Path, value: int) -> None:
    frames = np.full((8, 32, 32, 3), value, dtype=np.uint8)
    write_video(path, frames, fps=8)


def _questions(root: Path, n: int) -> list[VideoQuestion]:
    qs = []
    for i in range(n):
        _clip(root / f"v{i}.mp4", 60 + 10 * i)
        if i % 2 == 0:
            q = VideoQuestion(
                id=f"q{i}",
                video=f"v{i}.mp4",
                question=f"What is shown {i}?",
                answer="B",
                answer_type="mcq",
                options=["a cat", "a red dog", "a bird"],
            )
        else:
            q = VideoQuestion(
                id=f"q{i}", video=f"v{i}.mp4", question=f"Is it there {i}?", answer="yes", answer_type="yesno"
            )
        qs.append(q.validate())
    return qs


def masked_fooled_generator(items):
    """Wrong whenever a frame is black (masked); right otherwise. Prompts decide the format."""
    out = []
    for clip, prompt in items:
        # The pipeline hands over clips: perturbed frames in the source's real time slots.
        assert len(clip.timestamps) == len(clip.frames) and clip.source_fps > 0
        assert clip.timestamps == sorted(clip.timestamps)
        frames = clip.frames
        fooled = bool((frames.reshape(len(frames), -1).max(axis=1) == 0).any())
        if "Options:" in prompt:
            out.append("A" if fooled else "B")
        else:
            out.append("No" if fooled else "Yes")
    return out


def test_pairs_rejects_and_summary(tmp_path: Path) -> None:
    qs = _questions(tmp_path, 4)
    qs.append(
        VideoQuestion(
            id="missing", video="nope.mp4", question="Q?", answer="no", answer_type="yesno"
        ).validate()
    )
    out = tmp_path / "out" / "pairs.jsonl"
    summary = generate_pairs(
        qs,
        tmp_path,
        out,
        masked_fooled_generator,
        GenerateConfig(frames=8, num_perturbations=2),
        progress=False,
    )
    pairs = [PreferencePair.from_dict(json.loads(line)) for line in out.read_text().splitlines()]
    # Masking 25-50% of 8 frames always blacks out at least one: every real record becomes a pair.
    assert summary["pairs_made"] == 4 and len(pairs) == 4
    # A missing video is retryable (fixed by a rerun), never a final reject.
    assert summary["rejects_by_reason"] == {} and summary["retryable_by_reason"] == {"bad video": 1}
    assert not (out.parent / "pairs.rejects.jsonl").read_text()
    retry = [json.loads(line) for line in (out.parent / "pairs.retry.jsonl").read_text().splitlines()]
    assert retry[0]["id"] == "missing" and "not found" in retry[0]["reason"]
    by_id = {p.id: p for p in pairs}
    mcq = by_id["q0"]
    assert (mcq.chosen, mcq.rejected) == ("(B) a red dog", "(A) a cat")
    assert [mcq.chosen[s:e] for s, e in mcq.chosen_spans] and [
        mcq.rejected[s:e] for s, e in mcq.rejected_spans
    ]
    assert "B" in "".join(mcq.chosen[s:e] for s, e in mcq.chosen_spans)
    yn = by_id["q1"]
    assert (yn.chosen, yn.rejected) == ("Yes", "No")
    assert [yn.chosen[s:e] for s, e in yn.chosen_spans] == ["Yes"]
    assert yn.question == qs[1].question and yn.prompt == yn.model_prompt == question_prompt(qs[1])
    assert yn.metadata["perturbation"]["masked"]


def test_correct_everywhere_goes_to_correct_file(tmp_path: Path) -> None:
    qs = _questions(tmp_path, 2)
    out = tmp_path / "pairs.jsonl"
    summary = generate_pairs(
        qs,
        tmp_path,
        out,
        masked_fooled_generator,
        GenerateConfig(frames=8, perturb="local_shuffle"),
        progress=False,
    )
    assert summary["pairs_made"] == 0 and summary["correct_on_every_perturbation"] == 2
    assert len((tmp_path / "pairs.correct.jsonl").read_text().splitlines()) == 2
    # A rerun finds everything done and calls the generator for nothing.
    calls = []
    summary2 = generate_pairs(
        qs,
        tmp_path,
        out,
        lambda items: calls.append(items) or [],
        GenerateConfig(frames=8, perturb="local_shuffle"),
        progress=False,
    )
    assert calls == [] and summary2["resumed_done"] == 2 and summary2["totals"]["correct"] == 2


def test_shards_partition_and_merge(tmp_path: Path) -> None:
    qs = _questions(tmp_path, 6)
    out = tmp_path / "pairs.jsonl"
    for i in range(2):
        generate_pairs(
            qs, tmp_path, out, masked_fooled_generator, GenerateConfig(frames=8, shard=(i, 2)), progress=False
        )
    merged = merge_shards(out, 2)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(q.id for q in qs) and merged["totals"]["pairs"] == 6


SCRIPT = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_pipeline import _questions, masked_fooled_generator
from rrpo.selfalign.pipeline import GenerateConfig, generate_pairs
root = Path({root!r})
qs = _questions(root, {n})
def slow(items):
    time.sleep(0.15)
    return masked_fooled_generator(items)
generate_pairs(qs, root, root / "pairs.jsonl", slow, GenerateConfig(frames=8, batch_size=2, num_perturbations=1),
               progress=False)
"""


def test_kill_9_and_resume(tmp_path: Path) -> None:
    n = 16
    script = SCRIPT.format(tests=str(Path(__file__).parent), root=str(tmp_path), n=n)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    pairs = tmp_path / "pairs.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if pairs.exists() and len(pairs.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(pairs.read_text().splitlines())
    assert 0 < before < n, "the run should have been killed part-way"
    # Simulate the worst case too: a half-written last line.
    with pairs.open("a") as f:
        f.write('{"id": "q99", "vid')
    qs = _questions(tmp_path, n)
    with pytest.warns(UserWarning):
        generate_pairs(
            qs,
            tmp_path,
            pairs,
            masked_fooled_generator,
            GenerateConfig(frames=8, batch_size=2, num_perturbations=1),
            progress=False,
        )
    ids = [json.loads(line)["id"] for line in pairs.read_text().splitlines()]
    assert sorted(ids) == sorted(q.id for q in qs), "no lost and no duplicated records"


def _open_questions(root: Path) -> list[VideoQuestion]:
    _clip(root / "o.mp4", 90)
    return [
        VideoQuestion(
            id="open1",
            video="o.mp4",
            question="What happens?",
            answer="A red circle slowly moves to the left side of the frame.",
            answer_type="open",
        ).validate()
    ]


def _scripted_llm(request):
    """Judge says wrong; the differ marks the colour/shape phrase on both sides."""
    from fake_openai_server import Reply

    messages = request.body["messages"]
    if messages[0]["role"] == "system":  # the answer judge
        return Reply('{"pred": "no", "score": 1}')
    if len(messages) == 1:  # differ, first turn
        return Reply("Sentence 1 has a red circle, Sentence 2 a blue square.")
    return Reply(
        "Sentence 1: A <MASK> red circle </MASK> slowly moves to the left side of the frame.\n"
        "Sentence 2: A <MASK> blue square </MASK> slowly moves to the left side of the frame."
    )


def test_open_answers_with_llm_judge_and_differ_and_retry_after_outage(tmp_path: Path, monkeypatch) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from fake_openai_server import Fail, FakeOpenAIServer

    from rrpo.llm.client import LLMClient

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-never-written")
    qs = _open_questions(tmp_path)
    out = tmp_path / "pairs.jsonl"
    cfg = GenerateConfig(frames=8, num_perturbations=1, judge="llm")
    generator = lambda items: ["A blue square slowly moves to the left side of the frame."] * len(items)  # noqa: E731
    with FakeOpenAIServer(default=Fail(500)) as server:
        llm = LLMClient(server.base_url, "fake", cache_dir=tmp_path / "cache", max_retries=1, backoff=0.001)
        summary = generate_pairs(qs, tmp_path, out, generator, cfg, llm=llm, progress=False)
    # The outage is reported, and nothing is written, so the next run retries the record.
    assert list(summary["llm_failures"]) == ["open1"] and summary["pairs_made"] == 0
    assert not out.read_text() and not (out.with_name(out.stem + ".rejects.jsonl")).read_text()
    with FakeOpenAIServer(default=_scripted_llm) as server:
        llm = LLMClient(server.base_url, "fake", cache_dir=tmp_path / "cache", max_retries=1, backoff=0.001)
        summary = generate_pairs(qs, tmp_path, out, generator, cfg, llm=llm, progress=False)
        assert summary["judge_calls"] == server.request_count == 3  # judge + two differ turns
    pair = PreferencePair.from_dict(json.loads(out.read_text()))
    assert [pair.chosen[s:e] for s, e in pair.chosen_spans] == ["red circle"]
    assert [pair.rejected[s:e] for s, e in pair.rejected_spans] == ["blue square"]
    assert "sk-test-never-written" not in "".join(p.read_text() for p in (tmp_path / "cache").rglob("*.json"))


def test_generate_cli_with_tiny_model(tmp_path: Path) -> None:
    """The real command: load a tiny model, generate on perturbed clips, judge, write every outcome."""
    from rrpo.cli import main
    from rrpo.models import build_tiny_model

    model = build_tiny_model("qwen2-vl", tmp_path / "model", num_frames=4)
    qs = _questions(tmp_path, 3)
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps(q.to_dict()) + "\n" for q in qs))
    out = tmp_path / "gen" / "pairs.jsonl"
    args = [
        "generate",
        "--model",
        str(model),
        "--data",
        str(data),
        "--video-root",
        str(tmp_path),
        "--out",
        str(out),
        "--frames",
        "4",
        "--max-new-tokens",
        "4",
        "--num-perturbations",
        "2",
    ]
    assert main(args) == 0
    summary = json.loads((out.parent / "pairs.summary.json").read_text())
    outcomes = sum(
        len((out.parent / f).read_text().splitlines())
        for f in ("pairs.jsonl", "pairs.rejects.jsonl", "pairs.correct.jsonl")
    )
    assert summary["records_seen"] == 3 and outcomes == 3, "every record ends in exactly one file"
    assert summary["pairs_made"] + summary["correct_on_every_perturbation"] + summary["rejects"] == 3
    # Rerun: nothing left to do.
    assert main(args) == 0
    assert json.loads((out.parent / "pairs.summary.json").read_text())["resumed_done"] == 3


def test_bad_question_file_reports_every_problem(tmp_path: Path) -> None:
    from rrpo.cli import main

    data = tmp_path / "q.jsonl"
    data.write_text(
        json.dumps({"id": "a", "video": "v.mp4", "question": "Q?", "answer": "maybe", "answer_type": "yesno"})
        + "\n"
        + json.dumps(
            {
                "id": "b",
                "video": "v.mp4",
                "question": "Q?",
                "answer": "E",
                "answer_type": "mcq",
                "options": ["x", "y"],
            }
        )
        + "\n"
        + json.dumps({"id": "c", "video": "v.mp4", "question": "Q?", "answer": "x", "answer_type": "mcq"})
        + "\n"
    )
    with pytest.raises(Exception) as err:
        from rrpo.data.record import load_questions

        load_questions(data)
    text = str(err.value)
    assert (
        all(f"'{rid}'" in text or f"{rid}" in text for rid in "abc")
        and "answer" in text
        and "options" in text
    )
    assert (
        main(
            [
                "generate",
                "--model",
                "unused",
                "--data",
                str(data),
                "--video-root",
                str(tmp_path),
                "--out",
                str(tmp_path / "p.jsonl"),
            ]
        )
        == 1
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--frames", "0"], "--frames must be a whole number >= 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be a whole number >= 1, got 0"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be a whole number >= 1, got 0"),
        (["--num-perturbations", "0"], "--num-perturbations must be a whole number >= 1, got 0"),
        (["--window", "1"], "--window must be a whole number >= 2"),
        (["--mask-fraction", "0.5-1.2"], "--mask-fraction must lie strictly between 0 and 1"),
        (["--perturb", "blur"], "--perturb 'blur': choose one of mask,"),
        (["--frame-size", "0", "64"], "--frame-size must be two whole numbers >= 1"),
        (["--shard", "3/2"], "--shard 3/2: need 0 <= i < n"),
    ],
)
def test_generate_rejects_bad_settings_before_reading_anything(tmp_path, capsys, flags, message):
    """Each bad setting is one line naming its flag, before the model or any record is read; nothing
    is written (a run that would write no record is not silently 'done')."""
    from rrpo.cli import main

    out = tmp_path / "gen" / "pairs.jsonl"
    args = ["generate", "--model", str(tmp_path / "no-model"), "--data", str(tmp_path / "no-data.jsonl")]
    assert main([*args, "--video-root", str(tmp_path), "--out", str(out), *flags]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.parent.exists()


@pytest.mark.parametrize(
    "command, flags, message",
    [
        ("generate", ["--max-frames", "-3", "--fps", "1"], "argument --max-frames: must be >= 1, got -3"),
        ("generate", ["--fps", "0"], "argument --fps: must be > 0, got 0.0"),
        ("eval", ["--frames", "0"], "argument --frames: must be >= 1, got 0"),
        ("eval", ["--batch-size", "x"], "argument --batch-size: expected a whole number >= 1, got 'x'"),
        ("eval", ["--max-new-tokens", "0"], "argument --max-new-tokens: must be >= 1, got 0"),
        ("eval", ["--limit", "-1"], "argument --limit: must be >= 1, got -1"),
        ("eval", ["--max-pixels", "0"], "argument --max-pixels: must be >= 1, got 0"),
    ],
)
def test_numeric_flags_are_checked_by_the_parser(tmp_path, capsys, command, flags, message):
    from rrpo.cli import main

    common = ["--model", "m", "--video-root", str(tmp_path), "--out", str(tmp_path / "o")]
    common += (
        ["--data", "d.jsonl"] if command == "generate" else ["--benchmark", "mvbench", "--annotations", "a"]
    )
    with pytest.raises(SystemExit) as exit_info:
        main([command, *common, *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_token_diff_spans_mark_pairs_by_the_models_tokens(tmp_path: Path) -> None:
    """`--spans token-diff` (the paper's VideoChat2 convention): the pairs' spans come from a token-level
    alignment with the generator's tokenizer, equal to `token_diff_spans` on the pair's two texts; without
    a tokenizer the option is a clear error."""
    from transformers import AutoTokenizer

    from rrpo.data.spans import token_diff_spans
    from rrpo.errors import RRPOError
    from rrpo.models import build_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model("qwen2-vl", tmp_path / "m"))

    class Generator:
        def __init__(self):
            self.tokenizer = tokenizer

        def __call__(self, items):
            return masked_fooled_generator(items)

    qs = _questions(tmp_path, 4)
    out = tmp_path / "pairs.jsonl"
    summary = generate_pairs(
        qs, tmp_path, out, Generator(), GenerateConfig(frames=8, spans="token-diff"), progress=False
    )
    pairs = [PreferencePair.from_dict(json.loads(line)) for line in out.read_text().splitlines()]
    assert summary["pairs_made"] == len(pairs) == 4
    for p in pairs:
        want = token_diff_spans(tokenizer, p.chosen, p.rejected)
        assert (p.chosen_spans, p.rejected_spans) == (want[0], want[1]) and p.metadata[
            "differ"
        ] == "token-diff"
    with pytest.raises(RRPOError, match="needs the model's tokenizer"):
        generate_pairs(
            qs,
            tmp_path,
            tmp_path / "p2.jsonl",
            masked_fooled_generator,
            GenerateConfig(frames=8, spans="token-diff"),
            progress=False,
        )
    with pytest.raises(RRPOError, match="--spans 'words'"):
        GenerateConfig(spans="words")
