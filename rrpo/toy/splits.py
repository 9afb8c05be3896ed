"""Write a toy-world dataset directory: mp4 clips, the training pool, pretraining examples and held-out
benchmarks in the formats the evaluation code reads.

Layout of `out_dir` (every video path in every file is relative to `out_dir`, so evaluate with
`--video-root out_dir`):

    world.json                      all generation parameters, the seed, and counts per split and file
    scenes.jsonl                    {"id", "split", "video", "scene"} per clip (the ground truth behind
                                    every question; `Scene.from_dict` reads "scene")
    videos/<split>_<index>.mp4      16 x 64 x 64 H.264 clips (by default)
    pretrain.jsonl                  supervised pretraining, one example per clip:
                                    {"id", "video", "turns": [{"kind", "question", "answer",
                                    "answer_type", "options"}, ...], "metadata"}; the first turn is the
                                    dense caption (`world.CAPTION_PROMPT`), then every question of the
                                    clip. With `curriculum` > 0 the single-object clips come first
                                    (metadata "curriculum_stage" 0, the rest 1).
    train.jsonl                     the self-alignment pool: VideoQuestion records {"id", "video",
                                    "question", "answer", "answer_type" ('mcq' / 'yesno' / 'open'),
                                    "options" (list for mcq, else null), "metadata" {"kind", "caption",
                                    "clip", ...}}, on clips separate from pretrain.jsonl's
    benchmarks/temporal/{order,direction,count}.json
                                    MVBench / TVBench format: a list of {"video", "question",
                                    "candidates", "answer"} (answer is the candidate's text)
    benchmarks/hallucination/<category>/<category>.json, category in object_existence, temporal, motion
                                    VideoHallucer format: a list of {"basic": {"video", "question",
                                    "answer": "yes"}, "hallucination": {... "answer": "no"}, "type"}
    benchmarks/open/open.jsonl      VideoQuestion records, answer_type 'open' ("Describe the video.")
    benchmarks/prior_break/{prior_against,control}.json
                                    MVBench format. prior_against: the prior colour moving against its
                                    training direction; control: another colour in the same clips.

pretrain and train clips follow the training prior (`prior_strength`, 0.75 by default); the held-out
test clips use `heldout_prior_strength` (0.5: the prior is broken half of the time), and the
prior-break clips always break it.

Every clip is sampled from its own generator seeded by (seed, split, index), so a clip does not depend
on how many others are generated, splits never share a generator, and the same seed gives
byte-identical JSON files and identical decoded frames.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rrpo.errors import RecordError, RRPOError
from rrpo.toy.questions import (
    QA,
    HallucinationPair,
    caption,
    caption_question,
    clip_questions,
    count_question,
    describe_question,
    direction_question,
    existence_pair,
    motion_pair,
    order_question,
    temporal_pairs,
)
from rrpo.toy.world import Scene, WorldConfig, render_clip, sample_scene

FORMAT = "rrpo-toy-world"
# 2: videos encoded losslessly (version 1's lossy encoder decoded a few clips differently per run).
FORMAT_VERSION = 2
# Distinct generator streams per split: held-out clips never reuse a training clip's seed.
SPLIT_CODES = {"pretrain": 0, "train": 1, "test": 2, "prior_break": 3}
SCENE_STREAM, QUESTION_STREAM = 0, 1
HALLUCINATION_CATEGORIES = ("object_existence", "temporal", "motion")
TEMPORAL_TASKS = ("order", "direction", "count")
PRIOR_TASKS = ("prior_against", "control")


@dataclass(frozen=True)
class Clip:
    """A sampled clip: `id` like 'train_000012', `video` relative to the dataset dir."""

    id: str
    split: str
    index: int
    video: str
    scene: Scene
    curriculum_stage: int = 1


def clip_rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    """The generator of one clip's scene (stream 0) or questions (stream 1)."""
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index), int(stream)])


def sample_clips(
    split: str,
    n: int,
    *,
    seed: int,
    config: WorldConfig,
    prior_strength: float | None = None,
    curriculum: float = 0.0,
) -> list[Clip]:
    """Sample `n` clips of a split. The first round(curriculum * n) clips have one object (stage 0).
    The 'prior_break' split always has the prior colour moving against the prior plus 1+ other object."""
    if split not in SPLIT_CODES:
        raise RRPOError(f"unknown split {split!r}; known: {list(SPLIT_CODES)}")
    if n < 0:
        raise RRPOError(f"number of {split} clips must be >= 0, got {n}")
    if not 0.0 <= curriculum <= 1.0:
        raise RRPOError(f"curriculum must be a fraction in [0, 1], got {curriculum}")
    if split == "prior_break" and config.max_objects < 2:
        raise RRPOError(
            "the prior_break split needs max_objects >= 2 (a control object beside the prior colour)"
        )
    n_single = round(curriculum * n)
    clips = []
    for i in range(n):
        rng = clip_rng(seed, split, i, SCENE_STREAM)
        if split == "prior_break":
            k = int(rng.integers(max(2, config.min_objects), config.max_objects + 1))
            scene = sample_scene(rng, config, n_objects=k, against_prior=True)
        else:
            scene = sample_scene(
                rng, config, n_objects=1 if i < n_single else None, prior_strength=prior_strength
            )
        cid = f"{split}_{i:06d}"
        clips.append(Clip(cid, split, i, f"videos/{cid}.mp4", scene, 0 if i < n_single else 1))
    return clips


# ---------------------------------------------------------------------------------------------------
# Records in the formats of the consumers


def video_question(rid: str, clip: Clip, qa: QA) -> dict[str, Any]:
    """A VideoQuestion record (see rrpo.data.record) for one question on one clip."""
    metadata = {
        "kind": qa.kind,
        "caption": caption(clip.scene),
        "clip": clip.id,
        "split": clip.split,
        **qa.info,
    }
    return {
        "id": rid,
        "video": clip.video,
        "question": qa.question,
        "answer": qa.answer,
        "answer_type": qa.answer_type,
        "options": list(qa.options) if qa.options is not None else None,
        "metadata": metadata,
    }


def question_records(clip: Clip, qas: Sequence[QA]) -> list[dict[str, Any]]:
    """VideoQuestion records with ids '<clip>-<kind>-<k>' (k counts questions of that kind)."""
    seen: dict[str, int] = {}
    out = []
    for qa in qas:
        k = seen.get(qa.kind, 0)
        seen[qa.kind] = k + 1
        out.append(video_question(f"{clip.id}-{qa.kind}-{k}", clip, qa))
    return out


def pretrain_record(clip: Clip, qas: Sequence[QA]) -> dict[str, Any]:
    """One pretraining example: the dense-caption turn first, then the clip's questions."""
    turns = [caption_question(clip.scene), *qas]
    return {
        "id": clip.id,
        "video": clip.video,
        "turns": [
            {
                "kind": qa.kind,
                "question": qa.question,
                "answer": qa.answer,
                "answer_type": qa.answer_type,
                "options": list(qa.options) if qa.options is not None else None,
            }
            for qa in turns
        ],
        "metadata": {
            "curriculum_stage": clip.curriculum_stage,
            "n_objects": len(clip.scene.objects),
            "caption": caption(clip.scene),
        },
    }


def mvbench_entry(clip: Clip, qa: QA) -> dict[str, Any]:
    """MVBench / TVBench task entry: {video, question, candidates, answer (text)}."""
    if qa.answer_type != "mcq" or not qa.options or qa.answer not in qa.options:
        raise ValueError(f"{clip.id}: an MVBench entry needs a multiple-choice question, got {qa}")
    return {"video": clip.video, "question": qa.question, "candidates": list(qa.options), "answer": qa.answer}


def videohallucer_entry(clip: Clip, pair: HallucinationPair) -> dict[str, Any]:
    """VideoHallucer pair: {basic: {video, question, answer}, hallucination: {...}, type}."""

    def side(qa: QA) -> dict[str, str]:
        return {"video": clip.video, "question": qa.question, "answer": qa.answer}

    return {"basic": side(pair.basic), "hallucination": side(pair.hallucinated), "type": pair.type}


def heldout_benchmarks(clips: Sequence[Clip], seed: int, config: WorldConfig) -> dict[str, Any]:
    """The held-out sets of the test clips: {'temporal': {task: [entries]}, 'hallucination':
    {category: [pairs]}, 'open': [records]}. One question per clip and task (a random object for
    direction); temporal order and relative-order pairs only on clips with 2+ objects."""
    temporal: dict[str, list] = {t: [] for t in TEMPORAL_TASKS}
    halluc: dict[str, list] = {c: [] for c in HALLUCINATION_CATEGORIES}
    open_records = []
    for clip in clips:
        rng = clip_rng(seed, clip.split, clip.index, QUESTION_STREAM)
        scene = clip.scene
        order = order_question(scene, rng, config)
        if order is not None:
            temporal["order"].append(mvbench_entry(clip, order))
        obj = scene.objects[int(rng.integers(len(scene.objects)))]
        temporal["direction"].append(mvbench_entry(clip, direction_question(scene, obj, config)))
        temporal["count"].append(mvbench_entry(clip, count_question(scene, config)))
        pairs = [
            existence_pair(scene, rng, config),
            *temporal_pairs(scene, rng),
            motion_pair(scene, rng, config),
        ]
        for pair in pairs:
            halluc[pair.category].append(videohallucer_entry(clip, pair))
        open_records.append(video_question(f"{clip.id}-describe-0", clip, describe_question(scene, config)))
    return {"temporal": temporal, "hallucination": halluc, "open": open_records}


def prior_break_benchmark(clips: Sequence[Clip], config: WorldConfig, seed: int) -> dict[str, list]:
    """{'prior_against': direction questions on the prior colour (always against the prior),
    'control': direction questions on another colour of the same clip}."""
    against, control = [], []
    for clip in clips:
        rng = clip_rng(seed, clip.split, clip.index, QUESTION_STREAM)
        prior_obj = clip.scene.by_colour(config.prior_colour)
        others = [o for o in clip.scene.objects if o.colour != config.prior_colour]
        if prior_obj is None or not others:
            raise RRPOError(f"{clip.id}: a prior-break clip needs the prior colour and another object")
        against.append(mvbench_entry(clip, direction_question(clip.scene, prior_obj, config)))
        other = others[int(rng.integers(len(others)))]
        control.append(mvbench_entry(clip, direction_question(clip.scene, other, config)))
    return {"prior_against": against, "control": control}


# ---------------------------------------------------------------------------------------------------
# Writing


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def _render_and_write(job: tuple[str, Scene, float]) -> None:
    """Worker: render one scene and write its mp4 (module-level so that processes can run it)."""
    from rrpo.video.io import write_video

    path, scene, fps = job
    write_video(path, render_clip(scene), fps, lossless=True)  # decoded frames: a function of the seed


def write_videos(
    out_dir: Path, clips: Sequence[Clip], *, fps: float, workers: int = 1, progress: bool = True
) -> None:
    """Render and write every clip's mp4 (about 12 ms a clip on one core at 16 x 64 x 64)."""
    from tqdm import tqdm

    jobs = [(str(out_dir / c.video), c.scene, fps) for c in clips]
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(jobs), desc="toy videos", unit="clip", disable=not progress)
    if workers <= 1:
        for job in jobs:
            _render_and_write(job)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(_render_and_write, jobs, chunksize=32):
                bar.update()
    bar.close()


_OUTPUTS = ("world.json", "scenes.jsonl", "pretrain.jsonl", "train.jsonl", "videos", "benchmarks")


def generate_dataset(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_pretrain: int = 2000,
    n_train: int = 500,
    n_test: int = 200,
    n_prior_break: int = 100,
    frames: int = 16,
    size: int = 64,
    shape_size: int = 18,
    prior_strength: float = 0.75,
    heldout_prior_strength: float = 0.5,
    max_objects: int = 3,
    background: str = "black",
    trail: int = 0,
    order_question: str = "pair",
    description: str = "full",
    curriculum: float = 0.25,
    fps: float = 8.0,
    config: WorldConfig | None = None,
    write_mp4: bool = True,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate a toy-world dataset in `out_dir` (layout in this module's docstring) and return the
    contents of its world.json.

    `config` gives every world parameter at once; otherwise `frames`, `size`, `shape_size`,
    `prior_strength`, `max_objects`, `background`, `trail`, `order_question` and `description` override
    WorldConfig's defaults. `write_mp4=False` writes only the JSON files (fast; for inspecting
    questions). An existing dataset (world.json present) is replaced only with `overwrite=True`,
    which deletes its videos and benchmarks first.
    """
    out = Path(out_dir)
    cfg = config or WorldConfig(
        frames=frames,
        size=size,
        shape_size=shape_size,
        prior_strength=prior_strength,
        max_objects=max_objects,
        background=background,
        trail=trail,
        order_question=order_question,
        description=description,
    )
    cfg.validate()
    if not 0.0 <= heldout_prior_strength <= 1.0:
        raise RRPOError(f"heldout_prior_strength must be in [0, 1], got {heldout_prior_strength}")
    if workers < 1:
        raise RRPOError(f"workers must be >= 1, got {workers}")
    if out.exists() and not out.is_dir():
        raise RRPOError(f"{out}: exists and is not a directory")
    present = [name for name in _OUTPUTS if (out / name).exists()]
    if present:
        if not overwrite:
            raise RRPOError(
                f"{out}: already holds toy dataset files ({', '.join(present)}); pass overwrite to replace them"
            )
        # Only the paths this function writes: a stale video of a bigger earlier run must not linger.
        for name in present:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)

    pretrain = sample_clips("pretrain", n_pretrain, seed=seed, config=cfg, curriculum=curriculum)
    train = sample_clips("train", n_train, seed=seed, config=cfg)
    test = sample_clips("test", n_test, seed=seed, config=cfg, prior_strength=heldout_prior_strength)
    prior = sample_clips("prior_break", n_prior_break, seed=seed, config=cfg)
    all_clips = [*pretrain, *train, *test, *prior]

    files: dict[str, int] = {}
    files["scenes.jsonl"] = _write_jsonl(
        out / "scenes.jsonl",
        ({"id": c.id, "split": c.split, "video": c.video, "scene": c.scene.to_dict()} for c in all_clips),
    )
    files["pretrain.jsonl"] = _write_jsonl(
        out / "pretrain.jsonl",
        (
            pretrain_record(
                c, clip_questions(c.scene, clip_rng(seed, c.split, c.index, QUESTION_STREAM), cfg)
            )
            for c in pretrain
        ),
    )
    files["train.jsonl"] = _write_jsonl(
        out / "train.jsonl",
        (
            r
            for c in train
            for r in question_records(
                c, clip_questions(c.scene, clip_rng(seed, c.split, c.index, QUESTION_STREAM), cfg)
            )
        ),
    )
    bench = heldout_benchmarks(test, seed, cfg)
    for task, entries in bench["temporal"].items():
        _write_json(out / "benchmarks" / "temporal" / f"{task}.json", entries)
        files[f"benchmarks/temporal/{task}.json"] = len(entries)
    for category, pairs in bench["hallucination"].items():
        _write_json(out / "benchmarks" / "hallucination" / category / f"{category}.json", pairs)
        files[f"benchmarks/hallucination/{category}/{category}.json"] = len(pairs)
    files["benchmarks/open/open.jsonl"] = _write_jsonl(
        out / "benchmarks" / "open" / "open.jsonl", bench["open"]
    )
    for task, entries in prior_break_benchmark(prior, cfg, seed).items():
        _write_json(out / "benchmarks" / "prior_break" / f"{task}.json", entries)
        files[f"benchmarks/prior_break/{task}.json"] = len(entries)

    world = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "seed": seed,
        "config": cfg.to_dict(),
        "heldout_prior_strength": heldout_prior_strength,
        "curriculum": curriculum,
        "fps": fps,
        "videos_written": write_mp4,
        "video_root": ".",
        "splits": {"pretrain": n_pretrain, "train": n_train, "test": n_test, "prior_break": n_prior_break},
        "files": files,
    }
    if write_mp4:
        write_videos(out, all_clips, fps=fps, workers=workers, progress=progress)
    # Written last: its presence marks a complete dataset.
    _write_json(out / "world.json", world)
    return world


def load_world(out_dir: str | Path) -> dict[str, Any]:
    """Read a dataset's world.json (RRPOError if missing or not a toy dataset)."""
    path = Path(out_dir) / "world.json"
    if not path.is_file():
        raise RRPOError(f"{path}: not found; generate the dataset with `rrpo toy generate --out {out_dir}`")
    try:
        world = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RRPOError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(world, dict) or world.get("format") != FORMAT:
        raise RRPOError(f"{path}: not a {FORMAT} file")
    return world


def load_scenes(out_dir: str | Path) -> dict[str, Scene]:
    """Clip id -> Scene from a dataset's scenes.jsonl."""
    path = Path(out_dir) / "scenes.jsonl"
    if not path.is_file():
        raise RRPOError(f"{path}: not found")
    scenes = {}
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                record = json.loads(line)
                scenes[record["id"]] = Scene.from_dict(record["scene"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise RecordError(f"{path}:{line_no}", "scene", f"unreadable scene ({err})") from err
    return scenes
