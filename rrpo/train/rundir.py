"""The training output directory: one writer at a time, resume only from a complete checkpoint, never
silently on top of another run, a summary even when a run fails, a skip ledger shared by every
dataloader worker and rank.

Files rrpo owns there (what `--overwrite` deletes; nothing else in the directory is touched):
`checkpoint-*/`, the adapter (`adapter_model.safetensors`, `adapter_config.json`, `README.md`),
`training_args.bin`, `metrics.jsonl`, `train_summary.json`, `rrpo_train_config.yaml`, `skipped.jsonl`,
`run.json` (the run's fingerprint: what a `--resume` must share with the run it continues).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from rrpo.data.runs import atomic_write, write_json_atomic
from rrpo.errors import RRPOError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


SUMMARY_FILE = "train_summary.json"
METRICS_FILE = "metrics.jsonl"
SKIPS_FILE = "skipped.jsonl"
LOCK_FILE = ".rrpo-train.lock"
_OWNED_FILES = (
    "adapter_model.safetensors",
    "adapter_config.json",
    "README.md",
    "training_args.bin",
    METRICS_FILE,
    SUMMARY_FILE,
    "rrpo_train_config.yaml",
    SKIPS_FILE,
    "run.json",
)
# The settings a resumed run must share with the run it continues (not logging, saving, workers ...).
FINGERPRINT_FIELDS = (
    "data", "loss_type", "beta", "alpha", "fine_grained", "token_kl", "ddpo_gamma", "tdpo_version",
    "lora_r", "lora_alpha", "lora_dropout", "frames", "frame_size", "fps", "max_frames", "max_pixels",
    "max_length", "learning_rate", "lr_scheduler_type", "warmup_ratio", "weight_decay", "num_train_epochs",
    "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "optim",
)  # fmt: skip
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# A checkpoint is complete when the Trainer got as far as its state file and the adapter is there.
_CHECKPOINT_NEEDS = ("trainer_state.json", "adapter_model.safetensors")


def is_main_process() -> bool:
    """Rank 0 of a `torchrun` / `accelerate launch` job (or a single process), before torch.distributed
    is set up."""
    return int(os.environ.get("RANK", "0")) == 0


class RunDirLock:
    """An exclusive lock on the output directory for the whole run: a second `rrpo train` into the same
    `--out` is refused at once instead of interleaving metrics and overwriting checkpoints."""

    def __init__(self, output_dir: Path):
        self.path = Path(output_dir) / LOCK_FILE
        self._file = None

    def __enter__(self) -> RunDirLock:
        if fcntl is None:
            return self
        self._file = open(self.path, "a")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise RRPOError(f"{self.path.parent}: another rrpo train is writing to this --out") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


def checkpoints(output_dir: Path) -> list[Path]:
    """checkpoint-N directories, newest (highest N) first."""
    found = [
        (int(m.group(1)), p)
        for p in Path(output_dir).iterdir()
        if (m := _CHECKPOINT.match(p.name)) and p.is_dir()
    ]
    return [p for _, p in sorted(found, reverse=True)]


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint holding its trainer state and adapter; newer incomplete ones (a kill or a
    full disk while saving) are reported and passed over."""
    for path in checkpoints(output_dir):
        missing = [name for name in _CHECKPOINT_NEEDS if not (path / name).is_file()]
        if not missing:
            return path
        print(f"note: {path} is incomplete (no {', '.join(missing)}); passing over it")
    return None


def read_summary(output_dir: Path) -> dict[str, Any] | None:
    path = Path(output_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def holds_a_run(output_dir: Path) -> bool:
    out = Path(output_dir)
    return bool(checkpoints(out)) or any(
        (out / name).is_file() for name in _OWNED_FILES if name != "README.md"
    )


def clear_run(output_dir: Path) -> None:
    """`--overwrite`: delete the files of an earlier run (only the ones rrpo writes)."""
    out = Path(output_dir)
    for path in checkpoints(out):
        shutil.rmtree(path)
    for name in _OWNED_FILES:
        (out / name).unlink(missing_ok=True)


def train_fingerprint(cfg: Any) -> dict[str, Any]:
    """What makes a resumed run the same run (rrpo.data.runs): rrpo's version, the model, the pairs file
    (path and a hash of its bytes) and every setting that shapes the optimisation."""
    import hashlib

    from rrpo import __version__
    from rrpo.data.runs import model_identity

    data = Path(cfg.data)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()[:16] if data.is_file() else None
    values = {name: getattr(cfg, name, None) for name in FINGERPRINT_FIELDS}
    values["data"] = {"path": str(data.resolve()), "sha256": digest}
    values["dtype"] = str(getattr(cfg, "weights_dtype", None))
    return {"rrpo": __version__, "model": model_identity(cfg.model, getattr(cfg, "revision", None)), **values}


def write_summary(output_dir: Path, summary: dict[str, Any]) -> None:
    write_json_atomic(Path(output_dir) / SUMMARY_FILE, summary)


def trim_metrics(path: Path, upto_step: int) -> None:
    """Keep the metrics rows up to `upto_step` (a resumed run redoes the later ones; a fresh run keeps
    none). A row that is not JSON — the half-written last line of a killed run — is dropped, with a note."""
    if not path.exists():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= upto_step:
            kept.append(line)
    if dropped:
        print(f"note: {path}: dropped {dropped} unreadable line(s) (a run killed while writing)")
    with atomic_write(path) as f:
        f.write("".join(line + "\n" for line in kept))


class SkipLedger:
    """Every pair that was not trained on, with the reason, plus truncation counts.

    With a `path`, each skip is also appended to that file (one short line: atomic under O_APPEND), so
    skips seen in dataloader workers and on other ranks — each holding its own copy of this object —
    reach the summary and the skip limit: `skipped` merges the file."""

    def __init__(self, total: int = 0, path: Path | None = None):
        self.total = total
        self.path = path
        self.local: dict[str, str] = {}
        self.local_truncated: set[str] = set()

    def skip(self, pair_id: str, reason: str) -> None:
        if pair_id not in self.local:
            self.local[pair_id] = reason
            self._append({"id": pair_id, "reason": reason})

    def mark_truncated(self, pair_id: str) -> None:
        if pair_id not in self.local_truncated:
            self.local_truncated.add(pair_id)
            self._append({"id": pair_id, "truncated": True})

    def _append(self, row: dict[str, Any]) -> None:
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def _rows(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a kill
        return rows

    @property
    def skipped(self) -> dict[str, str]:
        merged = dict(self.local)
        for row in self._rows():
            if "reason" in row:
                merged.setdefault(row["id"], row["reason"])
        return merged

    @property
    def truncated(self) -> set[str]:
        return self.local_truncated | {row["id"] for row in self._rows() if row.get("truncated")}

    def by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for reason in self.skipped.values():
            counts[reason.split(":")[0]] += 1
        return dict(sorted(counts.items()))

    def fraction(self) -> float:
        return len(self.skipped) / self.total if self.total else 0.0

    def describe(self, limit: int = 3) -> str:
        """ "2 of 5 pairs skipped (bad video: 2); first: p1 (bad video: ...), ..." for error messages."""
        skipped = self.skipped
        reasons = ", ".join(f"{k}: {v}" for k, v in self.by_reason().items())
        first = "; ".join(f"{k} ({v})" for k, v in list(skipped.items())[:limit])
        return f"{len(skipped)} of {self.total} pairs skipped ({reasons}); first: {first}"

    def summary(self) -> dict[str, Any]:
        skipped = self.skipped
        return {
            "pairs_read": self.total,
            "pairs_used": self.total - len(skipped),
            "pairs_skipped": len(skipped),
            "skipped_by_reason": self.by_reason(),
            "skipped": [{"id": k, "reason": v} for k, v in sorted(skipped.items())],
            "pairs_truncated": len(self.truncated),
        }
