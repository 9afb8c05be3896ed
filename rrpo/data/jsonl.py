"""Resumable, append-only JSON Lines files for long jobs.

A long job (generating answers, judging, scoring) appends one record per line as it goes and can be
killed at any moment. `JsonlAppender` makes restarting safe:

- every `append` writes one whole line, flushes and fsyncs, so a finished record survives a crash;
- on open it reads what is there and exposes `done`, the keys already written, so the job skips them;
- a kill in the middle of a write leaves a last line without its newline. That line is cut off
  (the file is truncated back to the last complete line) and its bytes are kept in `<path>.partial`;
  `repaired` is then True and a `JsonlRepairWarning` is issued. The record is simply redone.
- a bad line anywhere *before* the end cannot come from an interrupted append, so it is an error
  naming the line, never dropped silently.
- an exclusive advisory lock (POSIX `flock`) stops two processes appending to the same file.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from rrpo.data.record import RecordErrors
from rrpo.data.record import write_jsonl_atomic as write_jsonl
from rrpo.errors import RecordError, RRPOError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking
    fcntl = None


__all__ = ["JsonlAppender", "JsonlRepairWarning", "read_jsonl", "write_jsonl"]


class JsonlRepairWarning(UserWarning):
    """A truncated last line was removed from a JSONL file on open."""


def _parse_line(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(where, None, f"not valid JSON: {err}") from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read every JSON object of a JSON Lines file (blank lines are skipped).

    Raises RRPOError if the file is missing, and one RecordErrors listing every line that is not a
    JSON object (a truncated last line says so: open the file with `JsonlAppender` to repair it).
    """
    path = Path(path)
    if not path.is_file():
        raise RRPOError(f"{path}: no such file")
    data = path.read_bytes()
    lines = data.split(b"\n")
    records: list[dict] = []
    problems: list[RecordError] = []
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path} line {n}"
        try:
            obj = _parse_line(raw, where)
        except RecordError as err:
            if n == len(lines):  # no newline after it: an interrupted append
                err = RecordError(
                    where,
                    None,
                    f"{err.reason}; the last line is truncated (an interrupted write?): "
                    "opening the file with rrpo.data.jsonl.JsonlAppender repairs it",
                )
            problems.append(err)
            continue
        if not isinstance(obj, dict):
            problems.append(RecordError(where, None, f"expected a JSON object, got {type(obj).__name__}"))
            continue
        records.append(obj)
    if problems:
        raise RecordErrors(path, problems)
    return records


class JsonlAppender:
    """Append-only JSON Lines writer keyed by `record[key]`, safe to kill and restart.

    Attributes after opening: `done` (set of keys in the file), `count` (number of records),
    `repaired` (True when a truncated last line was cut off), `partial_path` (where its bytes went,
    else None), `removed_bytes` (how many bytes were cut off).

    Use as a context manager::

        with JsonlAppender(out) as sink:
            for q in questions:
                if q.id not in sink.done:
                    sink.append({"id": q.id, ...})
    """

    def __init__(self, path: str | os.PathLike, key: str = "id"):
        self.path = Path(path)
        self.key = key
        self.done: set[Hashable] = set()
        self.count = 0
        self.repaired = False
        self.partial_path: Path | None = None
        self.removed_bytes = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        # Binary append mode: every write lands at the end; truncate() still works for the repair.
        self._file = open(self.path, "a+b")  # closed by close()
        try:
            self._lock()
            if created:
                _fsync_dir(self.path.parent)
            self._load()
        except BaseException:
            self._file.close()
            raise

    # -- opening

    def _lock(self) -> None:
        if fcntl is None:
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RRPOError(f"{self.path}: another process is appending to this file") from None

    def _load(self) -> None:
        """Read existing records into `done`; repair a truncated last line."""
        self._file.seek(0)
        data = self._file.read()
        pieces = data.split(b"\n")
        complete, tail = pieces[:-1], pieces[-1]  # tail: bytes after the last newline
        first_line: dict[Hashable, int] = {}
        for n, raw in enumerate(complete, start=1):
            if raw.strip():
                self._register(_parse_line(raw, f"{self.path} line {n}"), n, first_line)
        if not tail:
            return
        n = len(pieces)
        try:
            obj = _parse_line(tail, f"{self.path} line {n}")
            self._register(obj, n, first_line)
        except RecordError:
            self._cut_tail(len(data) - len(tail), tail, n)
        else:
            # A whole record that only lost its newline (or a file written by another tool).
            self._write(b"\n")

    def _register(self, obj: Any, n: int, first_line: dict[Hashable, int]) -> None:
        where = f"{self.path} line {n}"
        if not isinstance(obj, dict):
            raise RecordError(where, None, f"expected a JSON object, got {type(obj).__name__}")
        if self.key not in obj:
            raise RecordError(where, self.key, "missing the key field")
        k = obj[self.key]
        if not isinstance(k, Hashable) or isinstance(k, (dict, list)):
            raise RecordError(where, self.key, f"key must be a string or number, got {type(k).__name__}")
        if k in self.done:
            raise RecordError(where, self.key, f"duplicate key {k!r}, first written on line {first_line[k]}")
        first_line[k] = n
        self.done.add(k)
        self.count += 1

    def _cut_tail(self, keep: int, tail: bytes, line_no: int) -> None:
        """Truncate the file to `keep` bytes, saving the cut bytes to `<path>.partial`."""
        self.partial_path = self.path.with_name(self.path.name + ".partial")
        with open(self.partial_path, "ab") as f:  # append: keep what earlier repairs saved
            f.write(tail + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self._file.truncate(keep)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.repaired = True
        self.removed_bytes = len(tail)
        warnings.warn(
            f"{self.path}: removed a truncated last line ({len(tail)} bytes, line {line_no}; an interrupted "
            f"write); its bytes are saved in {self.partial_path}",
            JsonlRepairWarning,
            stacklevel=4,
        )

    # -- writing

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    def append(self, record: dict) -> None:
        """Write `record` as one line, flushed and fsynced. Raises RecordError if its key is missing
        or already written (the job should have skipped it: see `done`)."""
        if self._file.closed:
            raise RRPOError(f"{self.path}: appender is closed")
        if not isinstance(record, dict):
            raise TypeError(f"record must be a dict, got {type(record).__name__}")
        if self.key not in record:
            raise RecordError(f"new record for {self.path}", self.key, "missing the key field")
        k = record[self.key]
        if k in self.done:
            raise RecordError(k, self.key, f"already written to {self.path}")
        # json.dumps escapes newlines inside strings, so the record is exactly one line.
        line = json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
        self._write(line)
        self.done.add(k)
        self.count += 1

    def close(self) -> None:
        """Release the lock and close the file (idempotent)."""
        if not self._file.closed:
            self._file.close()  # closing the descriptor releases the flock

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.count

    def __contains__(self, key: Hashable) -> bool:
        return key in self.done


def _fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable (best effort; not all platforms allow it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
