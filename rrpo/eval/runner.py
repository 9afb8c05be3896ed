"""`rrpo eval`: run a model on a benchmark (batched, resumable, data-parallel), then score it.

Predictions are appended per question to `<out>/predictions.jsonl` ({"id", "prediction"}, the same format
`rrpo score` reads), so a rerun reuses them and only asks the model what is missing. Under
`accelerate launch` each process answers every world_size-th question into its own
`predictions.rank<r>.jsonl`; the main process merges them and scores. Questions whose video is missing
are excluded, counted and listed in results.json, never silently dropped; an undecodable video is tried
again by the next run. `<out>/run.json` holds the run's fingerprint (model, adapter, frames, pixels,
benchmark, rrpo version): predictions of a different run are never reused unless `overwrite=True`
(`--overwrite`), which starts clean.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rrpo.data.jsonl import JsonlAppender, read_jsonl
from rrpo.data.runs import claim_output
from rrpo.errors import RRPOError, VideoError
from rrpo.video.clip import video_path


def run_eval(
    model_dir: str,
    benchmark: str,
    annotations: str | Path,
    video_root: str | Path,
    out_dir: str | Path,
    *,
    adapter_dir: str | None = None,
    frames: int = 64,
    frame_size: tuple[int, int] | None = None,
    batch_size: int = 4,
    max_new_tokens: int = 32,
    scoring: str = "official",
    limit: int | None = None,
    judge: Any = None,
    vlm: Any = None,
    progress: bool = True,
    quiet: bool = False,
    load_options: dict[str, Any] | None = None,
    fingerprint: dict[str, Any] | None = None,
    overwrite: bool = False,
    allow_outside_root: bool = False,
) -> dict[str, Any]:
    """Answer every question of `benchmark` with the model and score the answers; returns the results.

    `load_options`: further `load_model` keywords (revision, dtype, attn_implementation, fps,
    max_frames, max_pixels). `fingerprint`: the run's settings, checked against `out_dir/run.json`
    (`rrpo.data.runs`); `overwrite` deletes the earlier run's files first."""
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from rrpo.eval.benchmarks import BENCHMARKS
    from rrpo.eval.scoring import format_table, write_results

    if benchmark not in BENCHMARKS:
        raise RRPOError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(sorted(BENCHMARKS))}")
    bench = BENCHMARKS[benchmark]
    items = bench.load(Path(annotations))
    if limit:
        items = items[:limit]
    video_root, out_dir = Path(video_root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    import torch

    # Without a GPU, accelerate sets up data parallelism only when told to run on the CPU (gloo).
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.is_main_process:
        if overwrite:
            for pattern in ("predictions*.jsonl", "undecodable.rank*.json", "results.json", "run.json"):
                for old in out_dir.glob(pattern):
                    old.unlink()
        if fingerprint is not None:
            claim_output(out_dir / "run.json", fingerprint, what=f"--out {out_dir}")
    state.wait_for_everyone()
    # This rank's undecodable list is rebuilt by this run: a video fixed since the last run counts again.
    (out_dir / f"undecodable.rank{state.process_index}.json").unlink(missing_ok=True)

    present, missing, outside = [], [], []
    for item in items:
        try:
            video = video_path(video_root, item.video, allow_outside=allow_outside_root)
        except VideoError:
            outside.append(item)
            continue
        (present if video.is_file() else missing).append(item)

    merged_path = out_dir / "predictions.jsonl"
    shard_path = (
        merged_path if state.num_processes == 1 else out_dir / f"predictions.rank{state.process_index}.jsonl"
    )
    already = {r["id"] for r in read_jsonl(merged_path)} if merged_path.exists() else set()
    mine = [it for i, it in enumerate(present) if i % state.num_processes == state.process_index]
    undecodable: list[dict[str, str]] = []
    with JsonlAppender(shard_path) as sink:
        todo = [it for it in mine if it.id not in sink.done and it.id not in already]
        if todo and vlm is None:
            from rrpo.models import load_model

            vlm = load_model(
                model_dir,
                adapter_dir=adapter_dir,
                num_frames=frames,
                frame_size=frame_size,
                device=state.device,
                **(load_options or {}),
            )
            from rrpo.models.loading import describe_placement

            print(describe_placement(vlm), file=sys.stderr)
        bar = tqdm(
            total=len(todo),
            desc=f"eval {benchmark}",
            unit="q",
            disable=not (progress and state.is_main_process),
        )
        # Questions on the same video (segment) run together, so each clip is decoded once for all of
        # them (benchmarks ask several questions per video; decoding costs more than a tiny model's answer).
        todo.sort(key=lambda it: (it.video, it.start or 0.0, it.end or 0.0))
        clips = _ClipCache(vlm, video_root)
        for start in range(0, len(todo), batch_size):
            batch, inputs = [], []
            for item in todo[start : start + batch_size]:
                try:
                    clip = clips.get(item)
                except VideoError as err:
                    undecodable.append({"id": item.id, "video": item.video, "reason": err.reason})
                    continue
                batch.append(item)
                inputs.append((clip, item.prompt))
            answers = (
                vlm.generate(inputs, max_new_tokens=max_new_tokens, batch_size=batch_size) if inputs else []
            )
            for item, answer in zip(batch, answers):
                sink.append({"id": item.id, "prediction": answer})
            bar.update(len(todo[start : start + batch_size]))
        bar.close()
    if undecodable:
        with (out_dir / f"undecodable.rank{state.process_index}.json").open("w") as f:
            json.dump(undecodable, f)

    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    if state.num_processes > 1:
        _merge_rank_files(out_dir, merged_path, state.num_processes)
    predictions = {r["id"]: r["prediction"] for r in read_jsonl(merged_path)}
    bad = []
    for path in sorted(out_dir.glob("undecodable.rank*.json")):
        bad.extend(json.loads(path.read_text()))
    bad_ids = {b["id"] for b in bad}
    scored_items = [it for it in present if it.id not in bad_ids]
    results = bench.score(scored_items, predictions, scoring=scoring, judge=judge)
    excluded = [{"id": it.id, "video": it.video, "reason": "missing video"} for it in missing] + bad
    excluded += [{"id": it.id, "video": it.video, "reason": "video outside --video-root"} for it in outside]
    # Questions without a usable video are left out of every metric; say which and how many.
    results = {**results, "excluded_videos": excluded, "excluded_videos_count": len(excluded)}
    write_results(
        out_dir,
        results,
        model=str(model_dir),
        adapter=adapter_dir,
        frames=frames,
        benchmark=benchmark,
        annotations=str(annotations),
        scoring=scoring,
        questions=len(items),
    )
    if excluded and not quiet:
        print(
            f"excluded {len(excluded)} of {len(items)} questions (missing or undecodable video); "
            f"listed in {out_dir / 'results.json'}"
        )
    if not quiet:
        print(format_table(results))
    return results


def _merge_rank_files(out_dir: Path, merged_path: Path, world_size: int) -> None:
    with JsonlAppender(merged_path) as merged:
        for rank in range(world_size):
            path = out_dir / f"predictions.rank{rank}.jsonl"
            for record in read_jsonl(path) if path.exists() else []:
                if record["id"] not in merged.done:
                    merged.append(record)


class _ClipCache:
    """The last decoded clip, keyed by (video, segment): consecutive questions on one video share it.
    A failure is remembered too, so a bad video is tried once per run, not once per question."""

    def __init__(self, vlm: Any, video_root: Path):
        self.vlm, self.video_root = vlm, video_root
        self.key: tuple | None = None
        self.value: Any = None
        self.decodes = 0

    def get(self, item: Any) -> Any:
        key = (item.video, item.start, item.end)
        if key != self.key:
            self.key, self.decodes = key, self.decodes + 1
            try:
                # The model's own sampling (its frame count or rate, native aspect ratio) with timing.
                self.value = self.vlm.read_clip(
                    self.video_root / item.video, start_sec=item.start, end_sec=item.end
                )
            except VideoError as err:
                self.value = err
        if isinstance(self.value, VideoError):
            raise self.value
        return self.value
