"""User-facing errors. The CLI prints these without a traceback; everything else is a bug."""

from __future__ import annotations


class RRPOError(Exception):
    """An error the user can fix (bad input, missing file, bad flag)."""


class VideoError(RRPOError):
    """A video that is missing or cannot be decoded."""

    def __init__(self, path: object, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class RecordError(RRPOError):
    """A malformed data record. Names the record (id or line) and the field."""

    def __init__(self, record: object, field: str | None, reason: str):
        where = f"record {record}" + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {reason}")
        self.record = record
        self.field = field
        self.reason = reason
