"""The files of one `rrpo generate` output (`--out` and its sidecars) and the merge of `--shard` outputs.

`OutputFiles.for_out(out)` names them: `pairs.jsonl` and, named after it, `pairs.rejects.jsonl`,
`pairs.correct.jsonl`, `pairs.retry.jsonl`, `pairs.summary.json`, `pairs.run.json` (docs/RELIABILITY.md).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rrpo.data.jsonl import read_jsonl
from rrpo.data.record import write_jsonl_atomic
from rrpo.data.runs import differing_fields, fingerprint_id, write_json_atomic
from rrpo.errors import RRPOError

SIDECARS = ("rejects", "correct", "summary", "retry", "run")
# Reject reasons a rerun can fix (files of rrpo versions that recorded them as rejects).
RETRYABLE_PREFIXES = ("bad video", "judge error", "out of memory")


@dataclass
class OutputFiles:
    pairs: Path
    rejects: Path
    correct: Path
    summary: Path
    retry: Path
    run: Path

    @classmethod
    def for_out(cls, out: str | Path, shard: tuple[int, int] | None = None) -> OutputFiles:
        """The files of `--out` (a pairs JSONL path, or a directory: DIR/pairs.jsonl). Sidecars are named
        after the pairs file (`pairs.jsonl` -> `pairs.rejects.jsonl`, ...), so two outputs in one
        directory never share one. An `--out` that is itself a sidecar name is refused."""
        text = str(out)
        out = Path(out)
        if out.is_dir() or text.endswith(("/", "\\")):
            out = out / "pairs.jsonl"
        for name in SIDECARS:
            if out.name.endswith(f".{name}.jsonl") or out.name.endswith(f".{name}.json"):
                raise RRPOError(
                    f"--out {text}: that is the name of a sidecar file of another output; choose another"
                )
        suffix = f".shard{shard[0]:02d}-of-{shard[1]:02d}" if shard else ""
        stem = out.stem + suffix
        return cls(
            pairs=out.with_name(f"{stem}{out.suffix or '.jsonl'}"),
            rejects=out.with_name(f"{stem}.rejects.jsonl"),
            correct=out.with_name(f"{stem}.correct.jsonl"),
            summary=out.with_name(f"{stem}.summary.json"),
            retry=out.with_name(f"{stem}.retry.jsonl"),
            run=out.with_name(f"{stem}.run.json"),
        )

    def all(self) -> list[Path]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    def remove(self) -> None:
        """Start clean (`--overwrite`): delete every file of this output."""
        for path in self.all():
            path.unlink(missing_ok=True)

    def check_no_legacy_sidecars(self) -> None:
        """Outputs of rrpo versions that shared `rejects.jsonl` / `correct.jsonl` between every `--out`
        of a directory: refuse rather than guess which run they belong to."""
        legacy = [self.pairs.with_name(n) for n in ("rejects.jsonl", "correct.jsonl")]
        found = [p for p in legacy if p.is_file() and p.stat().st_size]
        if found and self.pairs.is_file() and not self.rejects.exists() and not self.correct.exists():
            raise RRPOError(
                f"{self.pairs.parent} holds {', '.join(p.name for p in found)} of an earlier rrpo version (shared by "
                f"every output there); to continue that run rename them to {self.rejects.name} and "
                f"{self.correct.name}, or pass --overwrite to start clean"
            )


def reason_key(reason: str) -> str:
    """The kind of a reason: the text before its first colon (\"bad video: not found\" -> \"bad video\")."""
    return reason.split(":")[0].strip()


def drop_retryable_rejects(path: Path) -> None:
    """Remove reject lines whose reason a rerun can fix (bad video, judge errors), as older rrpo versions
    wrote them, so that those records are tried again. Atomic; a no-op when there are none."""
    if not path.is_file():
        return
    rows = read_jsonl(path)
    keep = [r for r in rows if reason_key(str(r.get("reason", ""))) not in RETRYABLE_PREFIXES]
    if len(keep) != len(rows):
        write_jsonl_atomic(path, keep)


def merge_shards(out: str | Path, num_shards: int) -> dict[str, Any]:
    """Join the `--shard i/n` outputs of `out` (pairs, rejects, correct, retry) into the unsharded files,
    checking that every shard is present, that all were made by one run (their fingerprints differ only
    in the shard) and that no id appears twice. All-or-nothing: every check runs before any file is
    written, and each merged file is written atomically."""
    target = OutputFiles.for_out(out)
    shards = [OutputFiles.for_out(out, (i, num_shards)) for i in range(num_shards)]
    missing = [str(s.pairs) for s in shards if not s.pairs.exists()]
    if missing:
        raise RRPOError(f"missing shard output(s): {', '.join(missing)}")
    runs = [json.loads(s.run.read_text(encoding="utf-8"))["fingerprint"] for s in shards if s.run.is_file()]
    merged_run = {**runs[0], "shard": None} if runs else None
    for s, run in zip(shards, runs):
        diff = differing_fields({**run, "shard": None}, merged_run)
        if diff:
            raise RRPOError(
                f"{s.run}: shard made by a different run than shard 0 (differs in: {', '.join(diff)})"
            )
    merged: dict[str, list[dict]] = {}
    for kind in ("pairs", "rejects", "correct", "retry"):
        dest = getattr(target, kind)
        if kind != "retry" and dest.exists() and dest.stat().st_size:
            raise RRPOError(f"{dest} already exists and is not empty; remove it to merge again")
        seen: set[str] = set()
        rows = []
        for s in shards:
            path = getattr(s, kind)
            for rec in read_jsonl(path) if path.exists() else []:
                if rec["id"] in seen:
                    raise RRPOError(f"id {rec['id']!r} appears in more than one shard ({path})")
                seen.add(rec["id"])
                rows.append(rec)
        merged[kind] = rows
    for kind, rows in merged.items():
        write_jsonl_atomic(getattr(target, kind), rows)
    if merged_run is not None:
        write_json_atomic(target.run, {"fingerprint": merged_run, "id": fingerprint_id(merged_run)})
    totals = {kind: len(rows) for kind, rows in merged.items()}
    merged_summary: dict[str, Any] = {"shards": num_shards, "totals": totals, "rejects_by_reason": Counter()}
    for s in shards:
        if s.summary.exists():
            part = json.loads(s.summary.read_text())
            merged_summary["rejects_by_reason"].update(part.get("rejects_by_reason", {}))
    merged_summary["rejects_by_reason"] = dict(merged_summary["rejects_by_reason"])
    write_json_atomic(target.summary, merged_summary)
    return merged_summary
