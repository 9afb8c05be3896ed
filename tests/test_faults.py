"""The fault matrix (issue 15, docs/RELIABILITY.md): each case driven through the CLI on a tiny model and
synthetic videos. Nothing lost, nothing mixed, nothing permanent by accident."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rrpo.cli import main
from rrpo.data.record import VideoQuestion
from rrpo.video import write_video

EXIT_RETRYABLE = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A tiny qwen2-vl (4 frames), four clips under videos/, and a questions file (mcq + yes/no)."""
    from rrpo.models import build_tiny_model

    root = tmp_path_factory.mktemp("faults")
    model = build_tiny_model("qwen2-vl", root / "model", num_frames=4, seed=0)
    other = build_tiny_model("qwen2-vl", root / "other-model", num_frames=4, seed=1)
    videos = root / "videos"
    videos.mkdir()
    rng = np.random.default_rng(0)
    records = []
    for i in range(4):
        write_video(videos / f"v{i}.mp4", rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8), fps=8)
        if i % 2:
            q = VideoQuestion(f"q{i}", f"v{i}.mp4", f"Is it there {i}?", "yes", "yesno")
        else:
            q = VideoQuestion(
                f"q{i}", f"v{i}.mp4", f"What is it {i}?", "B", "mcq", ["a cat", "a dog", "a bird"]
            )
        records.append(q.validate().to_dict())
    data = root / "questions.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"root": root, "model": model, "other": other, "videos": videos, "data": data}


def generate(world, out: Path, *extra: str, video_root: Path | None = None, data: Path | None = None) -> int:
    args = ["generate", "--model", str(world["model"]), "--data", str(data or world["data"])]
    args += ["--video-root", str(video_root or world["videos"]), "--out", str(out), "--frames", "4"]
    return main([*args, "--max-new-tokens", "4", "--num-perturbations", "2", *extra])


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- 1. a mistake never becomes a permanent reject ------------------------------------------------------
def test_wrong_video_root_is_retryable_and_the_fixed_rerun_equals_a_clean_run(world, tmp_path, capsys):
    clean = tmp_path / "clean" / "pairs.jsonl"
    assert generate(world, clean) == 0
    out = tmp_path / "fixed" / "pairs.jsonl"
    assert generate(world, out, video_root=tmp_path / "not-the-videos") == EXIT_RETRYABLE
    err = capsys.readouterr().err
    assert "4 record(s) failed for reasons a rerun can fix (bad video: 4)" in err
    summary = json.loads(out.with_name("pairs.summary.json").read_text())
    assert summary["retryable_by_reason"] == {"bad video": 4} and summary["rejects"] == 0
    assert (
        lines(out.with_name("pairs.rejects.jsonl")) == []
        and len(lines(out.with_name("pairs.retry.jsonl"))) == 4
    )
    assert generate(world, out) == 0  # the corrected rerun processes every record
    summary = json.loads(out.with_name("pairs.summary.json").read_text())
    assert summary["resumed_done"] == 0 and summary["processed"] == 4 and summary["retryable"] == {}
    assert lines(out) == lines(clean)
    for side in ("rejects", "correct"):
        assert lines(out.with_name(f"pairs.{side}.jsonl")) == lines(clean.with_name(f"pairs.{side}.jsonl"))
    assert lines(out.with_name("pairs.retry.jsonl")) == []


def test_open_questions_without_a_judge_are_retried_by_a_run_with_one(world, tmp_path):
    data = tmp_path / "open.jsonl"
    q = VideoQuestion("open1", "v0.mp4", "What happens?", "A cat sits.", "open").validate()
    data.write_text(json.dumps(q.to_dict()) + "\n")
    out = tmp_path / "pairs.jsonl"
    assert generate(world, out, data=data) == EXIT_RETRYABLE
    summary = json.loads(out.with_name("pairs.summary.json").read_text())
    assert list(summary["retryable"]) == ["open1"] and "LLM judge" in summary["retryable"]["open1"]
    assert lines(out.with_name("pairs.rejects.jsonl")) == []


def test_older_rrpo_retryable_rejects_are_tried_again(world, tmp_path):
    """A rejects file of an rrpo that recorded bad videos as final: those records run again."""
    out = tmp_path / "pairs.jsonl"
    out.write_text("")
    out.with_name("pairs.rejects.jsonl").write_text(
        json.dumps({"id": "q0", "reason": "bad video: not found", "video": "v0.mp4"}) + "\n"
    )
    assert generate(world, out) == 0
    summary = json.loads(out.with_name("pairs.summary.json").read_text())
    assert summary["resumed_done"] == 0 and summary["processed"] == 4


# -- 2. output of a different run is never reused silently ----------------------------------------------
def test_a_rerun_with_other_settings_is_refused_naming_the_fields(world, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    assert generate(world, out) == 0
    before = out.read_text()
    capsys.readouterr()
    assert generate(world, out, "--seed", "1", "--perturb", "mask") == 1
    err = capsys.readouterr().err
    assert "different run (differs in: perturb, seed" in err and "--overwrite" in err
    assert out.read_text() == before
    args = ["--model", str(world["other"])]
    assert main(["generate", *args, "--data", str(world["data"]), "--video-root", str(world["videos"]),
                 "--out", str(out), "--frames", "4", "--max-new-tokens", "4"]) == 1  # fmt: skip
    assert "differs in: model" in capsys.readouterr().err
    assert generate(world, out, "--seed", "1", "--overwrite") == 0  # start clean
    run = json.loads(out.with_name("pairs.run.json").read_text())
    assert run["fingerprint"]["seed"] == 1
    assert all(p["metadata"]["run"] == run["id"] for p in lines(out))  # pairs record their run


def test_outputs_in_one_directory_have_their_own_sidecars(world, tmp_path):
    a, b = tmp_path / "pairs_seed0.jsonl", tmp_path / "pairs_seed1.jsonl"
    assert generate(world, a) == 0
    assert generate(world, b, "--seed", "1") == 0
    for out in (a, b):
        summary = json.loads(out.with_name(f"{out.stem}.summary.json").read_text())
        assert summary["resumed_done"] == 0 and summary["records_in_shard"] == 4
    assert not (tmp_path / "rejects.jsonl").exists() and not (tmp_path / "summary.json").exists()


def test_out_as_a_directory_and_sidecar_names_refused(world, tmp_path, capsys):
    d = tmp_path / "gen"
    d.mkdir()
    assert generate(world, d) == 0
    assert (d / "pairs.jsonl").is_file() and (d / "pairs.summary.json").is_file()
    assert generate(world, d / "pairs.rejects.jsonl") == 1
    assert "sidecar" in capsys.readouterr().err


def test_legacy_shared_sidecars_are_refused_not_guessed(world, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    out.write_text("")
    (tmp_path / "rejects.jsonl").write_text(json.dumps({"id": "q0", "reason": "differ: x"}) + "\n")
    assert generate(world, out) == 1
    err = capsys.readouterr().err
    assert "earlier rrpo version" in err and "pairs.rejects.jsonl" in err


def test_merge_shards_refuses_shards_of_different_runs(world, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    assert generate(world, out, "--shard", "0/2") in (0, EXIT_RETRYABLE)
    assert generate(world, out, "--shard", "1/2", "--seed", "5") in (0, EXIT_RETRYABLE)
    capsys.readouterr()
    assert main(["merge-shards", "--out", str(out), "--num-shards", "2"]) == 1
    assert "different run than shard 0 (differs in: seed)" in capsys.readouterr().err
    assert not out.exists()  # nothing half-merged


def test_eval_refuses_predictions_of_another_model(world, tmp_path, capsys):
    from rrpo.toy.splits import generate_dataset

    toy = tmp_path / "toy"
    generate_dataset(toy, seed=1, n_pretrain=1, n_train=1, n_test=2, n_prior_break=1, progress=False)
    ev = tmp_path / "ev"
    base = ["eval", "--benchmark", "mvbench", "--annotations", str(toy / "benchmarks" / "temporal")]
    base += ["--video-root", str(toy), "--out", str(ev), "--frames", "4", "--max-new-tokens", "4"]
    assert main([*base, "--model", str(world["model"])]) == 0
    predictions = (ev / "predictions.jsonl").read_text()
    capsys.readouterr()
    assert main([*base, "--model", str(world["other"])]) == 1
    assert "differs in: model" in capsys.readouterr().err
    assert (ev / "predictions.jsonl").read_text() == predictions
    assert main([*base, "--model", str(world["other"]), "--overwrite"]) == 0
    results = json.loads((ev / "results.json").read_text())
    assert results["meta"]["model"] == str(world["other"])


def test_eval_retries_a_video_fixed_since_the_last_run(world, tmp_path):
    from rrpo.toy.splits import generate_dataset

    toy = tmp_path / "toy"
    generate_dataset(toy, seed=1, n_pretrain=1, n_train=1, n_test=2, n_prior_break=1, progress=False)
    items = json.loads(next((toy / "benchmarks" / "temporal").rglob("*.json")).read_text())
    victim = toy / items[0]["video"]
    good = victim.read_bytes()
    victim.write_bytes(b"not a video")
    ev = tmp_path / "ev"
    args = ["eval", "--benchmark", "mvbench", "--annotations", str(toy / "benchmarks" / "temporal")]
    args += ["--video-root", str(toy), "--out", str(ev), "--frames", "4", "--model", str(world["model"])]
    assert main(args) == 0
    assert json.loads((ev / "results.json").read_text())["excluded_videos_count"] >= 1
    victim.write_bytes(good)
    assert main(args) == 0
    assert json.loads((ev / "results.json").read_text())["excluded_videos_count"] == 0
    shutil.rmtree(toy)


# -- 4. crashes become one-line errors -------------------------------------------------------------------
def test_non_utf8_bytes_in_questions_and_pairs_are_named_by_line(world, tmp_path, capsys):
    data = tmp_path / "questions.jsonl"
    good = world["data"].read_bytes().splitlines(keepends=True)
    data.write_bytes(good[0] + b'{"id": "q9", "video": "v0.mp4", "question": "caf\xe9?", "answer": "yes"}\n')
    assert generate(world, tmp_path / "pairs.jsonl", data=data) == 1
    err = capsys.readouterr().err
    assert "line 2" in err and "not UTF-8 text (byte 0xe9" in err and "Traceback" not in err
    pairs = tmp_path / "pairs_in.jsonl"
    pairs.write_bytes(b'{"id": "p\xff"}\n')
    args = ["train", "--model", str(world["model"]), "--data", str(pairs), "--out", str(tmp_path / "run")]
    assert main(args) == 1
    assert "pairs_in.jsonl line 1" in capsys.readouterr().err


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs (needs mount rights: skipped with the reason where they are missing)."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip() or done.returncode}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_disk_full_says_so_and_the_rerun_completes(world, tiny_disk, tmp_path, capsys):
    clean = tmp_path / "clean" / "pairs.jsonl"
    assert generate(world, clean) == 0
    filler = tiny_disk / "filler"
    with filler.open("wb", buffering=0) as f:  # leave almost nothing free
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    out = tiny_disk / "gen" / "pairs.jsonl"
    capsys.readouterr()
    assert generate(world, out) == 1
    err = capsys.readouterr().err
    assert "the disk is full" in err and "Traceback" not in err and "run the same command again" in err
    filler.unlink()
    assert generate(world, out) == 0
    assert lines(out) == lines(clean)


# -- 6. nothing accepted silently -----------------------------------------------------------------------
def test_video_paths_outside_the_root_are_refused_unless_allowed(world, tmp_path, capsys):
    outside = tmp_path / "elsewhere.mp4"
    shutil.copy(world["videos"] / "v0.mp4", outside)
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "link.mp4").symlink_to(outside)  # a symlink inside the root is fine
    records = [
        VideoQuestion("up", "sub/../../elsewhere.mp4", "Is it?", "yes", "yesno"),
        VideoQuestion("abs", str(outside), "Is it?", "yes", "yesno"),
        VideoQuestion("link", "sub/link.mp4", "Is it?", "yes", "yesno"),
    ]
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(r.validate().to_dict()) + "\n" for r in records))
    out = tmp_path / "gen" / "pairs.jsonl"
    assert generate(world, out, data=data, video_root=root) == EXIT_RETRYABLE
    retry = {r["id"]: r["reason"] for r in lines(out.with_name("pairs.retry.jsonl"))}
    assert set(retry) == {"up", "abs"} and all("outside --video-root" in r for r in retry.values())
    assert generate(world, out, "--allow-outside-root", data=data, video_root=root) == 0
    assert lines(out.with_name("pairs.retry.jsonl")) == []


def test_a_truncated_mp4_is_reported_not_decoded_as_a_shorter_clip(world, tmp_path):
    import av

    path = tmp_path / "videos" / "cut.mp4"
    path.parent.mkdir()
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:  # index at the front
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        rng = np.random.default_rng(1)
        for _ in range(80):  # 10 s
            frame = av.VideoFrame.from_ndarray(
                rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), format="rgb24"
            )
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a download cut in half
    q = tmp_path / "q.jsonl"
    q.write_text(
        json.dumps(VideoQuestion("cut", "cut.mp4", "Is it?", "yes", "yesno").validate().to_dict()) + "\n"
    )
    out = tmp_path / "pairs.jsonl"
    assert generate(world, out, data=q, video_root=path.parent) == EXIT_RETRYABLE
    reason = lines(out.with_name("pairs.retry.jsonl"))[0]["reason"]
    assert "truncated: the file holds" in reason and "of its stated 10.0 s" in reason


# -- 8. the judge ----------------------------------------------------------------------------------------
def _open_data(tmp_path: Path, n: int = 4) -> Path:
    data = tmp_path / "open.jsonl"
    qs = [
        VideoQuestion(f"o{i}", f"v{i}.mp4", "What happens?", "A red ball rolls left.", "open")
        for i in range(n)
    ]
    data.write_text("".join(json.dumps(q.validate().to_dict()) + "\n" for q in qs))
    return data


def test_a_hanging_judge_is_given_up_on_and_its_records_stay_retryable(world, tmp_path, monkeypatch, capsys):
    from fake_openai_server import FakeOpenAIServer, Sleep

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-hang")
    out = tmp_path / "pairs.jsonl"
    judge = ["--judge", "llm", "--judge-timeout", "0.2", "--judge-retries", "0", "--judge-max-failures", "2"]
    with FakeOpenAIServer(default=Sleep(3.0)) as server:
        code = generate(world, out, *judge, "--judge-url", server.base_url, data=_open_data(tmp_path))
        assert server.request_count == 2  # then the endpoint is not called again
    assert code == EXIT_RETRYABLE
    assert "failed 2 times in a row and was not called again" in capsys.readouterr().err
    summary = json.loads(out.with_name("pairs.summary.json").read_text())
    assert summary["judge_given_up"] and sorted(summary["retryable"]) == ["o0", "o1", "o2", "o3"]
    assert lines(out.with_name("pairs.rejects.jsonl")) == [] and lines(out) == []


def test_a_key_echoed_by_the_judge_is_in_no_file(world, tmp_path, monkeypatch):
    from fake_openai_server import FakeOpenAIServer, Reply

    key = "sk-test-ECHOED-5e1f0c"
    monkeypatch.setenv("OPENAI_API_KEY", key)

    def echo(request):
        return Reply(f"your key is {request.headers['authorization'].removeprefix('Bearer ')}; no idea")

    out = tmp_path / "gen" / "pairs.jsonl"
    with FakeOpenAIServer(default=echo) as server:
        generate(world, out, "--judge", "llm", "--judge-url", server.base_url, data=_open_data(tmp_path, 2))
        assert server.request_count >= 2
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("judge_cache" in str(p) for p in written)
    assert all(key.encode() not in p.read_bytes() for p in written)
    assert any(b"your key is ***" in p.read_bytes() for p in written)  # the reply was kept, scrubbed


# -- 5. one record cannot take down the run --------------------------------------------------------------
def test_a_huge_question_is_rejected_before_the_processor(world, tmp_path):
    data = tmp_path / "q.jsonl"
    huge = VideoQuestion("huge", "v0.mp4", "Is it " + "very " * 2_000_000 + "red?", "yes", "yesno")
    data.write_text(world["data"].read_text() + json.dumps(huge.validate().to_dict()) + "\n")
    out = tmp_path / "pairs.jsonl"
    assert generate(world, out, data=data) == 0
    rejects = {r["id"]: r["reason"] for r in lines(out.with_name("pairs.rejects.jsonl"))}
    assert rejects["huge"].startswith("prompt too long: 10000") and "4096 tokens" in rejects["huge"]
    summary = json.loads(out.with_name("pairs.summary.json").read_text())
    assert summary["processed"] == 4  # every other record went through
    assert generate(world, tmp_path / "p2.jsonl", "--max-prompt-tokens", "5") == 0
    assert all("prompt too long" in r["reason"] for r in lines(tmp_path / "p2.rejects.jsonl"))


def test_a_model_error_on_one_item_spares_the_batch(world, tmp_path, monkeypatch):
    from rrpo.selfalign import commands

    original = commands.TransformersGenerator.__call__

    def flaky(self, items):
        prompts = " ".join(prompt for _, prompt in items)
        if "What is it 0?" in prompts:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if "Is it there 3?" in prompts:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, items)

    monkeypatch.setattr(commands.TransformersGenerator, "__call__", flaky)
    out = tmp_path / "pairs.jsonl"
    assert generate(world, out, "--batch-size", "8") == EXIT_RETRYABLE  # all four records in one batch
    rejects = {r["id"]: r["reason"] for r in lines(out.with_name("pairs.rejects.jsonl"))}
    retry = {r["id"]: r["reason"] for r in lines(out.with_name("pairs.retry.jsonl"))}
    assert rejects["q0"] == "model error: RuntimeError: CUDA error: an illegal memory access was encountered"
    assert not any(r.startswith("model error") for k, r in rejects.items() if k != "q0")
    assert list(retry) == ["q3"] and retry["q3"].startswith("out of memory: RuntimeError: CUDA out of memory")
    summary = json.loads(out.with_name("pairs.summary.json").read_text())
    assert summary["processed"] == 2  # q1 and q2 answered alone and judged
    assert summary["retryable_by_reason"] == {"out of memory": 1}
    monkeypatch.setattr(commands.TransformersGenerator, "__call__", original)
    assert generate(world, out, "--batch-size", "8") == 0  # the out-of-memory record is retried
    assert json.loads(out.with_name("pairs.summary.json").read_text())["processed"] == 1


def test_a_read_only_output_says_so(world, tmp_path, capsys):
    import subprocess

    mnt = tmp_path / "ro"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip() or done.returncode}")
    try:
        assert generate(world, mnt / "pairs.jsonl") == 1
        err = capsys.readouterr().err
        assert "the file system is read-only" in err and str(mnt) in err and "Traceback" not in err
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
