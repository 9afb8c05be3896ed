"""The resumable append-only JSONL store: writes survive kill -9, truncated tails are repaired."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from rrpo.data.jsonl import JsonlAppender, JsonlRepairWarning, read_jsonl, write_jsonl
from rrpo.data.record import RecordErrors
from rrpo.errors import RecordError, RRPOError

REPO_ROOT = Path(__file__).resolve().parents[1]


def rec(i: int, **extra) -> dict:
    return {"id": f"r{i}", "answer": f"answer {i} — ünïcode ✓\nwith a newline", **extra}


def test_append_reopen_and_resume(tmp_path):
    path = tmp_path / "deep" / "out.jsonl"
    with JsonlAppender(path) as sink:
        assert sink.done == set() and len(sink) == 0 and not sink.repaired
        for i in range(3):
            sink.append(rec(i))
    # one line per record even with a newline inside a string
    assert len(path.read_bytes().splitlines()) == 3
    with JsonlAppender(path) as sink:
        assert sink.done == {"r0", "r1", "r2"} and sink.count == 3 and "r1" in sink
        assert not sink.repaired and sink.partial_path is None
        sink.append(rec(3))
    assert read_jsonl(path) == [rec(i) for i in range(4)]


def test_custom_key_and_duplicate_refused(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlAppender(path, key="qid") as sink:
        sink.append({"qid": 7, "x": 1})
        with pytest.raises(RecordError, match="already written"):
            sink.append({"qid": 7, "x": 2})
        with pytest.raises(RecordError, match="missing the key field"):
            sink.append({"id": 8})
    assert read_jsonl(path) == [{"qid": 7, "x": 1}]
    with JsonlAppender(path, key="qid") as sink:
        assert sink.done == {7}


def test_half_written_last_line_is_repaired(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlAppender(path) as sink:
        for i in range(3):
            sink.append(rec(i))
    complete = path.read_bytes()
    line = (json.dumps(rec(3), ensure_ascii=False) + "\n").encode()
    half = line[: len(line) // 2]
    with path.open("ab") as f:  # what kill -9 in the middle of append() leaves behind
        f.write(half)

    with pytest.warns(JsonlRepairWarning, match="truncated last line"):
        sink = JsonlAppender(path)
    with sink:
        assert sink.repaired and sink.removed_bytes == len(half)
        assert sink.partial_path == tmp_path / "out.jsonl.partial"
        assert sink.partial_path.read_bytes() == half + b"\n"
        assert path.read_bytes() == complete  # truncated back to the last complete line
        assert sink.done == {"r0", "r1", "r2"}  # the half record is not counted as done
        sink.append(rec(3))  # ... so the job redoes it
    assert read_jsonl(path) == [rec(i) for i in range(4)]

    # a second crash: .partial keeps both fragments
    with path.open("ab") as f:
        f.write(b'{"id": "r4", "ans')
    with pytest.warns(JsonlRepairWarning):
        JsonlAppender(path).close()
    assert (tmp_path / "out.jsonl.partial").read_bytes() == half + b'\n{"id": "r4", "ans\n'


def test_last_line_missing_only_its_newline_is_kept(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(json.dumps(rec(0)) + "\n" + json.dumps(rec(1)))
    with JsonlAppender(path) as sink:
        assert not sink.repaired and sink.done == {"r0", "r1"}
        sink.append(rec(2))
    assert read_jsonl(path) == [rec(0), rec(1), rec(2)]


def test_corrupt_middle_line_is_an_error_not_a_drop(tmp_path):
    path = tmp_path / "out.jsonl"
    content = f"{json.dumps(rec(0))}\n{{garbage\n{json.dumps(rec(2))}\n"
    path.write_text(content)
    with pytest.raises(RecordError, match=r"out.jsonl line 2: not valid JSON") as info:
        JsonlAppender(path)
    assert info.value.record == f"{path} line 2"
    assert path.read_text() == content  # nothing truncated
    assert not (tmp_path / "out.jsonl.partial").exists()


@pytest.mark.parametrize(
    "lines, message",
    [
        (
            [json.dumps(rec(0)), json.dumps(rec(0))],
            "line 2, field 'id': duplicate key 'r0', first written on line 1",
        ),
        ([json.dumps(rec(0)), json.dumps({"no_id": 1})], "line 2, field 'id': missing the key field"),
        ([json.dumps([1, 2]), json.dumps(rec(1))], "line 1: expected a JSON object"),
    ],
)
def test_bad_existing_records(tmp_path, lines, message):
    path = tmp_path / "out.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=message):
        JsonlAppender(path)


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlAppender(path) as sink:
        sink.append(rec(0))
        with pytest.raises(RRPOError, match="another process is appending"):
            JsonlAppender(path)
    with JsonlAppender(path) as again:  # released on close
        assert again.done == {"r0"}
    with pytest.raises(RRPOError, match="closed"):
        again.append(rec(1))


def test_read_jsonl_reports_bad_lines_and_truncation(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(f'{json.dumps(rec(0))}\n[1]\n\n{json.dumps(rec(1))}\n{{"id": "r2", ')
    with pytest.raises(RecordErrors) as info:
        read_jsonl(path)
    msg = str(info.value)
    assert len(info.value.problems) == 2
    assert "line 2: expected a JSON object" in msg
    assert "line 5: not valid JSON" in msg and "truncated" in msg and "JsonlAppender" in msg
    with pytest.raises(RRPOError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_write_jsonl_then_read(tmp_path):
    write_jsonl(tmp_path / "w.jsonl", [rec(0), rec(1)])
    assert read_jsonl(tmp_path / "w.jsonl") == [rec(0), rec(1)]


CHILD = r"""
import sys, time
from rrpo.data.jsonl import JsonlAppender

path, total, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "halfway":
    # After 15 records, write half of the next line, tell the parent, and wait to be killed.
    write = JsonlAppender._write

    def halfway(self, data):
        if len(self.done) >= 15:
            write(self, data[: len(data) // 2])
            print("HALFWAY", flush=True)
            time.sleep(60)
        write(self, data)

    JsonlAppender._write = halfway
payload = "x" * 200_000
with JsonlAppender(path) as sink:
    for i in range(total):
        key = f"r{i}"
        if key in sink.done:
            continue
        sink.append({"id": key, "i": i, "payload": payload})
        print(key, flush=True)  # acknowledged: append() returned, so the line is on disk
"""


def run_and_kill(path: Path, mode: str) -> list[str]:
    """Start a writer, SIGKILL it after 15 acknowledged records (in "halfway" mode: in the middle of
    writing the 16th line); return the keys it acknowledged."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), "400", mode],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    acknowledged = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = child.stdout.readline().strip()
        if not line or line == "HALFWAY" or (mode == "normal" and len(acknowledged) >= 15):
            break
        acknowledged.append(line)
    child.send_signal(signal.SIGKILL)
    acknowledged += [line.strip() for line in child.stdout if line.strip() != "HALFWAY"]
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, "the writer ended before it was killed"
    assert len(acknowledged) >= 15
    return acknowledged


def finish(path: Path, total: int) -> None:
    """Restart the job to write records r0..r{total-1}, skipping those already done."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(total), "normal"],
        check=True,
        env=env,
        capture_output=True,
    )
    records = read_jsonl(path)
    assert [r["id"] for r in records] == [f"r{i}" for i in range(total)]
    assert all(len(r["payload"]) == 200_000 for r in records)


def test_sigkill_while_appending_loses_nothing_acknowledged(tmp_path):
    path = tmp_path / "out.jsonl"
    acknowledged = run_and_kill(path, "normal")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JsonlRepairWarning)  # the kill may or may not land mid-line
        with JsonlAppender(path) as sink:
            done = set(sink.done)
    assert set(acknowledged) <= done  # nothing acknowledged is lost
    assert done == {f"r{i}" for i in range(len(done))}  # written in order, no holes
    assert [r["id"] for r in read_jsonl(path)] == [f"r{i}" for i in range(len(done))]  # no duplicates
    finish(path, len(done) + 5)


def test_sigkill_in_the_middle_of_a_line_is_repaired(tmp_path):
    path = tmp_path / "out.jsonl"
    acknowledged = run_and_kill(path, "halfway")
    assert acknowledged == [f"r{i}" for i in range(15)]
    with pytest.raises(RecordErrors, match="line 16: not valid JSON.*truncated"):
        read_jsonl(path)
    with pytest.warns(JsonlRepairWarning):
        sink = JsonlAppender(path)
    with sink:
        assert sink.repaired and sink.done == set(acknowledged)
        cut = sink.partial_path.read_bytes()
    full_line = json.dumps({"id": "r15", "i": 15, "payload": "x" * 200_000}).encode() + b"\n"
    assert cut == full_line[: len(full_line) // 2] + b"\n"  # exactly the half that was written
    finish(path, 20)
