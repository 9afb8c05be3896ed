"""Self-alignment data generation: perturb videos, catch the model's mistakes, judge, mark the differences.

For each question: decode N frames, make `num_perturbations` perturbed versions (deterministic for the
seed and the record id), let the model answer each greedily, judge every answer, and if one is wrong
make a preference pair (ground truth preferred, the wrong answer not) whose differing concepts the
differ marks as paired character spans.

Every question ends in exactly one of three append-only files, one line each, keyed by its id:
`pairs.jsonl` (a pair was made), `pairs.correct.jsonl` (answered correctly under every perturbation) or
`pairs.rejects.jsonl` (a verdict about the record itself: unparseable answer, unalignable spans). The
sidecars are named after `--out` (or `--out DIR` writes DIR/pairs.jsonl and its sidecars). A rerun skips
ids already in any of them, so `kill -9` loses at most the records in flight and duplicates none.

Failures that a rerun can fix are never recorded as done: a missing or undecodable video, no judge
for an open question, a judge or network error, running out of memory on one item. They are counted
in `pairs.summary.json` (`retryable`), listed in `pairs.retry.jsonl`, and tried again by the next run.
`pairs.run.json` holds the run's fingerprint (model, frames, perturbation, seed, judge, rrpo version); a rerun with another
one refuses to mix unless `overwrite=True` (`--overwrite`) starts clean. `--shard i/n` takes the
records whose id hashes to i (stable across machines); `merge_shards` joins the shard files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rrpo.data.answers import Verdict, canonical_wrong_answer, pair_texts, reference_answer
from rrpo.data.jsonl import JsonlAppender, read_jsonl
from rrpo.data.prompts import question_prompt
from rrpo.data.record import PreferencePair, VideoQuestion, write_jsonl_atomic
from rrpo.data.runs import claim_output, fingerprint_id, write_json_atomic
from rrpo.data.spans import token_diff_spans
from rrpo.errors import RRPOError, VideoError
from rrpo.llm.client import LLMError
from rrpo.selfalign.differ import Diff, DiffReject, diff_answers
from rrpo.selfalign.judge import judge_answer
from rrpo.selfalign.outputs import (
    RETRYABLE_PREFIXES,
    OutputFiles,
    drop_retryable_rejects,
    reason_key,
)
from rrpo.selfalign.outputs import merge_shards as merge_shards  # re-exported: `rrpo merge-shards`'s home

# A generator answers a batch of (frames [T,H,W,3] uint8, prompt) greedily.
Generator = Callable[[list[tuple[np.ndarray, str]]], list[str]]


def shard_of(record_id: str, num_shards: int) -> int:
    """Stable shard of a record id (sha1, not Python's salted hash)."""
    return int(hashlib.sha1(record_id.encode()).hexdigest(), 16) % num_shards


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise RRPOError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise RRPOError(f"--shard {text}: need 0 <= i < n")
    return i, n


@dataclass
class GenerateConfig:
    """Settings of `rrpo generate`; each field is the flag of the same name (`--num-perturbations` ->
    `num_perturbations`). Checked on construction: a bad value is a one-line RRPOError naming its flag."""

    perturb: str = "mask+local_shuffle"
    num_perturbations: int = 2
    frames: int = 16
    frame_size: tuple[int, int] | None = None  # None: native aspect ratio, the model's processor sizes frames
    fps: float | None = None  # sample at this rate (up to max_frames) instead of `frames` uniform frames
    max_frames: int = 768
    seed: int = 0
    batch_size: int = 8
    max_new_tokens: int = 32
    mask_fraction: tuple[float, float] | float = (0.25, 0.5)
    window: int = 4
    judge: str = "rule"  # rule | llm (llm also runs the LLM differ on open answers)
    shard: tuple[int, int] | None = None
    allow_outside_root: bool = False  # read video paths that lead outside the video root
    max_prompt_tokens: int | None = None  # None: the generator's context length, when it has one
    spans: str = "differ"  # differ | token-diff (the paper's VideoChat2 convention, the model's tokenizer)

    def __post_init__(self) -> None:
        from rrpo.video.perturb import PERTURBATIONS

        if self.perturb not in PERTURBATIONS:
            raise RRPOError(f"--perturb {self.perturb!r}: choose one of {', '.join(PERTURBATIONS)}")
        for flag, value in (
            ("--num-perturbations", self.num_perturbations),
            ("--frames", self.frames),
            ("--max-frames", self.max_frames),
            ("--batch-size", self.batch_size),
            ("--max-new-tokens", self.max_new_tokens),
            *(
                [("--max-prompt-tokens", self.max_prompt_tokens)]
                if self.max_prompt_tokens is not None
                else []
            ),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RRPOError(f"{flag} must be a whole number >= 1, got {value!r}")
        if "local_shuffle" in self.perturb and (not isinstance(self.window, int) or self.window < 2):
            raise RRPOError(f"--window must be a whole number >= 2 for a local shuffle, got {self.window!r}")
        if self.frame_size is not None:
            self.frame_size = tuple(self.frame_size)
            if len(self.frame_size) != 2 or any(not isinstance(x, int) or x < 1 for x in self.frame_size):
                raise RRPOError(f"--frame-size must be two whole numbers >= 1 (H W), got {self.frame_size!r}")
        if self.fps is not None and not self.fps > 0:
            raise RRPOError(f"--fps must be > 0, got {self.fps!r}")
        if "mask" in self.perturb:
            lo, hi = (
                self.mask_fraction if isinstance(self.mask_fraction, tuple) else (self.mask_fraction,) * 2
            )
            if not (0 < lo <= hi < 1):
                raise RRPOError(
                    f"--mask-fraction must lie strictly between 0 and 1 (a range low-high), got {self.mask_fraction!r}"
                )
        if self.judge not in ("rule", "llm"):
            raise RRPOError(f"--judge {self.judge!r}: choose rule or llm")
        if self.spans not in ("differ", "token-diff"):
            raise RRPOError(f"--spans {self.spans!r}: choose differ or token-diff")

    @classmethod
    def from_args(cls, args: Any) -> GenerateConfig:
        """The config of parsed `rrpo generate` flags: every field read from the flag of its name."""
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        values["shard"] = parse_shard(values.get("shard"))
        return cls(**values)


@dataclass
class Summary:
    records_seen: int = 0
    records_in_shard: int = 0
    resumed_done: int = 0
    processed: int = 0
    correct_on_every_perturbation: int = 0
    pairs_made: int = 0
    rejects_by_reason: Counter = field(default_factory=Counter)
    llm_failures: dict[str, str] = field(default_factory=dict)  # id -> reason; retried on the next run
    retryable: dict[str, str] = field(default_factory=dict)  # id -> reason (llm failures included)
    judge_calls: int = 0
    judge_cache_hits: int = 0
    judge_given_up: bool = False  # the LLM endpoint failed too often in a row and was not called again
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["rejects_by_reason"] = dict(sorted(self.rejects_by_reason.items()))
        d["rejects"] = sum(self.rejects_by_reason.values())
        d["retryable_by_reason"] = dict(sorted(Counter(map(reason_key, self.retryable.values())).items()))
        return d


def generate_pairs(
    questions: Sequence[VideoQuestion],
    video_root: str | Path,
    out: str | Path,
    generator: Generator,
    cfg: GenerateConfig,
    *,
    llm: Any = None,
    progress: bool = True,
    fingerprint: dict[str, Any] | None = None,
    overwrite: bool = False,
    open_judge: Callable[[VideoQuestion, str], Verdict] | None = None,
) -> dict[str, Any]:
    """Run the pipeline over `questions` and append results to the output files; returns the summary.

    `open_judge(question, prediction)` judges open answers in place of the LLM judge (the toy world's
    rule fact-checker, `rrpo.toy.factcheck`); its verdict's `extracted`, when set, is the part of the
    prediction it read, which becomes the non-preferred response.

    `fingerprint` (the run's settings, `rrpo.data.runs`) is checked against the output's: a different
    run refuses to mix unless `overwrite`, which deletes the output first."""
    from tqdm.auto import tqdm

    from rrpo.models.base import DECODE_MAX_PIXELS
    from rrpo.video.io import decode_clip, video_path
    from rrpo.video.perturb import perturb_frames

    files = OutputFiles.for_out(out, cfg.shard)
    if overwrite:
        files.remove()
    files.check_no_legacy_sidecars()
    drop_retryable_rejects(files.rejects)  # written as final by older rrpo versions: try them again
    if fingerprint is not None:
        claim_output(files.run, fingerprint, what=f"--out {files.pairs}")
    span_tokenizer = getattr(generator, "tokenizer", None)
    if cfg.spans == "token-diff" and span_tokenizer is None:
        raise RRPOError("--spans token-diff needs the model's tokenizer (the transformers backend)")
    # Each pair records the run that made it (its settings are in pairs.run.json) and the model.
    run_tag = {"run": fingerprint_id(fingerprint), "model": fingerprint.get("model")} if fingerprint else {}
    video_root = Path(video_root)
    summary = Summary(records_seen=len(questions))
    started = time.time()
    calls0 = (getattr(llm, "calls", 0), getattr(llm, "cache_hits", 0))

    with (
        JsonlAppender(files.pairs) as pairs_out,
        JsonlAppender(files.rejects) as rejects_out,
        JsonlAppender(files.correct) as correct_out,
    ):
        done = pairs_out.done | rejects_out.done | correct_out.done
        todo = [q for q in questions if cfg.shard is None or shard_of(q.id, cfg.shard[1]) == cfg.shard[0]]
        summary.records_in_shard = len(todo)
        summary.resumed_done = sum(q.id in done for q in todo)
        todo = [q for q in todo if q.id not in done]

        def reject(q: VideoQuestion, reason: str, **extra: Any) -> None:
            if reason_key(reason) in RETRYABLE_PREFIXES:
                summary.retryable[q.id] = reason  # not done: the next run tries it again
                return
            rejects_out.append({"id": q.id, "reason": reason, "video": q.video, **extra})
            summary.rejects_by_reason[reason_key(reason)] += 1

        bar = tqdm(total=len(todo), desc="generate", unit="rec", disable=not progress)
        # One batch of records at a time; each record contributes num_perturbations model inputs.
        per_batch = max(1, cfg.batch_size // max(1, cfg.num_perturbations))
        for start in range(0, len(todo), per_batch):
            batch = todo[start : start + per_batch]
            inputs, owners, infos = [], [], []
            for q in batch:
                try:
                    clip = decode_clip(
                        video_path(video_root, q.video, allow_outside=cfg.allow_outside_root),
                        cfg.frames,
                        fps=cfg.fps,
                        max_frames=cfg.max_frames,
                        size=cfg.frame_size,
                        max_pixels=DECODE_MAX_PIXELS,
                    )
                except VideoError as err:
                    reject(q, f"bad video: {err.reason}")
                    continue
                prompt = question_prompt(q)
                too_long = _prompt_too_long(prompt, generator, cfg.max_prompt_tokens)
                if too_long:
                    reject(q, f"prompt too long: {too_long}")
                    continue
                for v in range(cfg.num_perturbations):
                    perturbed, info = perturb_frames(
                        clip.frames,
                        cfg.perturb,
                        seed=cfg.seed,
                        key=q.id,
                        variant=v,
                        mask_fraction=cfg.mask_fraction,
                        window=cfg.window,
                    )
                    # Same time slots, perturbed content (docs/ARCHITECTURE.md, "Frame timing").
                    inputs.append((clip.with_frames(perturbed), prompt))
                    owners.append(q)
                    infos.append(info)
            predictions = _generate_isolated(generator, inputs, owners, reject)
            by_record: dict[str, list[tuple[str, Any]]] = {}
            for q, pred, info in zip(owners, predictions, infos):
                if pred is not None:
                    by_record.setdefault(q.id, []).append((pred, info))
            for q in batch:
                if q.id not in by_record:
                    continue  # rejected above
                _finish_record(
                    q,
                    by_record[q.id],
                    cfg,
                    llm,
                    pairs_out,
                    correct_out,
                    reject,
                    summary,
                    run_tag,
                    span_tokenizer,
                    open_judge,
                )
                summary.processed += 1
            bar.update(len(batch))
        bar.close()

    summary.judge_given_up = bool(getattr(llm, "circuit_open", False))
    summary.judge_calls = getattr(llm, "calls", 0) - calls0[0]
    summary.judge_cache_hits = getattr(llm, "cache_hits", 0) - calls0[1]
    summary.seconds = round(time.time() - started, 2)
    result = summary.to_dict()
    result["files"] = {k: str(v) for k, v in files.__dict__.items()}
    # Totals over everything in the files (this run and earlier, interrupted ones).
    result["totals"] = {
        "pairs": len(read_jsonl(files.pairs)),
        "rejects": len(read_jsonl(files.rejects)),
        "correct": len(read_jsonl(files.correct)),
        "retryable": len(summary.retryable),
    }
    write_jsonl_atomic(files.retry, [{"id": k, "reason": v} for k, v in sorted(summary.retryable.items())])
    write_json_atomic(files.summary, result)
    return result


def _prompt_too_long(prompt: str, generator: Any, limit: int | None) -> str | None:
    """Why `prompt` is over the limit (`limit`, else the generator's `context_length`), or None. A prompt
    of more characters than 16 per allowed token is refused without tokenizing it."""
    limit = limit or getattr(generator, "context_length", None)
    if not limit:
        return None
    if len(prompt) > 16 * limit:
        return f"{len(prompt)} characters, far over the limit of {limit} tokens"
    count = getattr(generator, "count_tokens", None)
    if count is not None and (n := count(prompt)) > limit:
        return f"{n} tokens > the limit of {limit}"
    return None


def _generate_isolated(
    generator: Generator, inputs: list, owners: list, reject: Callable
) -> list[str | None]:
    """The generator's replies for a batch; if the batch fails, each record's inputs run alone, so one
    bad item cannot take the others down. A record that fails alone gets None replies and is reported:
    out of memory is retryable (a smaller batch or another machine may do), anything else a reject
    with the error."""
    if not inputs:
        return []
    try:
        return list(generator(inputs))
    except Exception:  # noqa: BLE001 - isolated below, item by item
        pass
    out: list[str | None] = [None] * len(inputs)
    by_record: dict[str, list[int]] = {}
    for i, q in enumerate(owners):
        by_record.setdefault(q.id, []).append(i)
    for rows in by_record.values():
        q = owners[rows[0]]
        try:
            replies = generator([inputs[i] for i in rows])
        except Exception as err:  # noqa: BLE001 - reported per record
            oom = isinstance(err, MemoryError) or "out of memory" in str(err).lower()
            reason = f"{type(err).__name__}: {str(err)[:300]}"
            reject(q, f"out of memory: {reason}" if oom else f"model error: {reason}")
            continue
        for i, reply in zip(rows, replies):
            out[i] = reply
    return out


def _finish_record(
    q,
    answers,
    cfg,
    llm,
    pairs_out,
    correct_out,
    reject,
    summary,
    run_tag,
    span_tokenizer=None,
    open_judge=None,
) -> None:  # noqa: ANN001
    """Judge one record's answers and write exactly one outcome line (or none, when the LLM endpoint
    failed, so that a rerun retries it)."""
    verdicts = []
    for pred, info in answers:
        try:
            if open_judge is not None and q.answer_type == "open":
                verdict = open_judge(q, pred)
            else:
                verdict = judge_answer(q, pred, llm=llm if cfg.judge == "llm" else None)
        except RRPOError as err:
            reject(q, f"judge error: {err}", predictions=[p for p, _ in answers])
            return
        if verdict.correct is None and verdict.reason.startswith("llm judge failed"):
            # The endpoint failed after its retries: nothing is written, so a rerun tries this record again.
            summary.llm_failures[q.id] = summary.retryable[q.id] = verdict.reason
            return
        verdicts.append((pred, info, verdict))
    wrong = [(p, i, v) for p, i, v in verdicts if v.correct is False]
    undecided = [(p, v) for p, _, v in verdicts if v.correct is None]
    if not wrong:
        if undecided:
            reject(q, f"unjudged: {undecided[0][1].reason}", predictions=[p for p, _ in undecided])
            return
        correct_out.append({"id": q.id, "predictions": [p for p, _, _ in verdicts]})
        summary.correct_on_every_perturbation += 1
        return
    pred, info, verdict = wrong[0]
    try:
        texts = pair_texts(q, verdict.extracted, pred)
        chosen, rejected = texts.chosen, texts.rejected
        if cfg.spans == "token-diff":  # every pair, by the model's tokens (the paper's VideoChat2 pairs)
            token_spans = token_diff_spans(span_tokenizer, chosen, rejected)
            if not token_spans[0]:
                raise DiffReject("no differing tokens to pair")
            diff = Diff(*token_spans, "token-diff")
        elif texts.chosen_spans is not None:  # the rendering knows its spans: nothing to parse back
            diff = Diff(texts.chosen_spans, texts.rejected_spans, texts.method)
        else:
            diff = diff_answers(
                chosen,
                rejected,
                answer_type=q.answer_type,
                options=q.options,
                llm=llm if cfg.judge == "llm" else None,
            )
    except DiffReject as err:
        reject(
            q,
            f"differ: {err}",
            chosen=reference_answer(q),
            rejected=canonical_wrong_answer(q, verdict.extracted, pred),
        )
        return
    except LLMError as err:
        summary.llm_failures[q.id] = summary.retryable[q.id] = f"llm differ failed: {err.reason}"
        return
    pair = PreferencePair(
        id=q.id,
        video=q.video,
        question=q.question,
        prompt=question_prompt(q),
        chosen=chosen,
        rejected=rejected,
        chosen_spans=[tuple(s) for s in diff.chosen_spans],
        rejected_spans=[tuple(s) for s in diff.rejected_spans],
        options=q.options,
        answer_type=q.answer_type,
        source="rrpo-generate",
        metadata={
            **run_tag,
            "prediction": pred,
            "perturbation": info.to_dict(),
            "differ": diff.method,
            "wrong_on": len(wrong),
            "num_perturbations": len(verdicts),
            **({"question_metadata": q.metadata} if q.metadata else {}),
        },
    )
    pair.validate()
    pairs_out.append(pair.to_dict())
    summary.pairs_made += 1
