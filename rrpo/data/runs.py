"""Output directories that never mix two runs: run fingerprints and atomic JSON writes.

A long job (`rrpo generate`, `rrpo eval`) resumes by skipping what its output files already hold. That
is only right when those files were made by the *same* run: same model, frames, perturbation, seed,
judge, rrpo version. So each output carries a fingerprint (`<out>.run.json`, or `run.json` in an
output directory), written when the run starts; a rerun compares its own and refuses to mix, naming
the fields that differ, unless the user asks to start clean (`--overwrite`).

A fingerprint is a flat JSON object of settings. A local model directory is identified by a hash of its
`config.json` and the names and sizes of its weight files (cheap: no weight is read), a Hub id by the id
and revision.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from rrpo.errors import RRPOError

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def model_identity(model: str | os.PathLike | None, revision: str | None = None) -> dict[str, Any] | None:
    """{"path" or "id", "revision", "hash"} of a model or adapter: a local directory by a hash of its
    config files and weight file names and sizes, a Hub id by id and revision; None for None."""
    if model is None:
        return None
    path = Path(model)
    if not path.is_dir():
        return {"id": str(model), "revision": revision}
    digest = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.name in ("config.json", "adapter_config.json", "rrpo_family.json"):
            digest.update(f.name.encode() + b"\0" + f.read_bytes())
        elif f.suffix in _WEIGHT_SUFFIXES and f.is_file():
            digest.update(f"{f.name}\0{f.stat().st_size}\0".encode())
    return {"path": str(path.resolve()), "hash": digest.hexdigest()[:16]}


def fingerprint_id(fingerprint: dict[str, Any]) -> str:
    """A short stable hash of a fingerprint (recorded on every pair a run makes)."""
    canonical = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def differing_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of the fields whose values differ (missing on one side counts), sorted."""
    canon = lambda v: json.loads(json.dumps(v, default=str))  # noqa: E731 - tuples vs lists, paths
    return sorted(k for k in set(old) | set(new) if canon(old.get(k)) != canon(new.get(k)))


def claim_output(path: Path, fingerprint: dict[str, Any], *, what: str) -> None:
    """Record `fingerprint` at `path`, or check it against the one there: a different one is an
    RRPOError naming the differing fields (the caller offers `--overwrite`). Outputs without a
    fingerprint (written before rrpo had them) are adopted: the fingerprint is written from now on."""
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise RRPOError(
                f"{path}: unreadable run fingerprint ({err}); pass --overwrite to start clean"
            ) from None
        diff = differing_fields(old.get("fingerprint", {}), fingerprint)
        if diff:
            raise RRPOError(
                f"{what} was made by a different run (differs in: {', '.join(diff)}; see {path}); "
                "pass --overwrite to start clean, or choose another --out"
            )
        return
    write_json_atomic(path, {"fingerprint": fingerprint, "id": fingerprint_id(fingerprint)})


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[TextIO]:
    """A text file to write `path` through: a temporary file beside it, fsynced and renamed over it at
    the end, so a crash (a full disk included: the CLI reports it in one line) leaves the old file or
    the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """`obj` as indented JSON at `path`, atomically (`atomic_write`)."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
