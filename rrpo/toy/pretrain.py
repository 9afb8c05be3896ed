"""Supervised pretraining of a tiny base video LLM on the toy world (`rrpo toy pretrain`).

The demo needs a *base* model that already reads the toy videos reasonably well but not perfectly, so
that RRPO self-alignment (Sarkar et al., arXiv 2504.12083: perturb the video, catch the model's own
mistakes, train on preference pairs) has mistakes to learn from. This module builds that model:

- `build_toy_model`: a tiny Qwen2-VL of the real transformers classes with a tokenizer trained on the
  toy world's own words (one token per word, so sequences stay short) and 8-px patches on 64x64
  frames (18-px shapes under 14-px patches were not told apart in an earlier experiment). It is saved
  so that `rrpo.models.load_model(dir)` loads it (`rrpo_family.json` records family, frame size and
  frame count).
- `pretrain_examples`: every turn of `pretrain.jsonl` becomes one single-turn example with exactly the
  prompt and answer format the evaluation and the self-alignment pipeline use
  (`rrpo.data.prompts.question_prompt` / `rrpo.data.answers.reference_answer`): "(B) left" for multiple choice,
  "Yes" / "No" for yes/no, plus the dense caption turn (`world.CAPTION_PROMPT`), which is what makes
  a tiny model look at the video at all (QA-only training learned only the text prior).
- `pretrain`: plain-torch full fine-tuning (AdamW, float32, loss on answer tokens only) over
  pre-decoded frames; pixels are normalised and patchified with the model's own video processor
  methods once per batch (the whole processor call costs 0.54 s per 16 clips, most of it resizing we
  do not need: 64 is already a multiple of patch x merge).
- `quick_eval`: teacher-forced accuracy per question kind from the one token that decides the answer
  (the option letter after "(", or "Yes" / "No"), on clean and perturbed frames.

Shapes: frames uint8 [T, H, W, 3]; a batch's `pixel_values_videos` [B * T/2 * (H/p) * (W/p),
3 * 2 * p * p]; `video_grid_thw` [B, 3]; `input_ids` / `labels` / `mm_token_type_ids` [B, L].
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rrpo.errors import RecordError, RRPOError

FAMILY = "qwen2-vl"
IGNORE = -100
# Question kinds measured by `quick_eval` (the ones with a one-token decision).
EVAL_KINDS = ("order", "direction", "count", "existence")
# Default dataset parameters of the committed checkpoint (see rrpo/toy/checkpoint/PROVENANCE.md).
DEFAULT_DATA = {
    "seed": 0,
    "n_pretrain": 3000,
    "n_train": 200,
    "n_test": 200,
    "n_prior_break": 100,
    "curriculum": 0.25,
}


@dataclass
class ModelSpec:
    """Architecture of the toy model. Text: `hidden_size` wide, `num_layers` deep, `num_heads` heads;
    vision: `vision_depth` blocks of width `vision_dim`, `patch_size`-px patches merged `merge_size` x
    `merge_size` into one LM token, 2-frame
    temporal patches. 16 frames of 64x64 with 8-px patches and a 4x4 merge give 8 x 2 x 2 = 32 video
    tokens (a 2x2 merge gave 128 and cost 4-8x more per step on 2 cores)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_depth: int = 2
    vision_dim: int = 32
    vision_heads: int = 4
    patch_size: int = 8
    merge_size: int = 4
    temporal_patch_size: int = 2
    frame_size: int = 64
    num_frames: int = 16
    vocab_size: int = 512

    def video_tokens(self) -> int:
        """LM tokens one clip becomes: (T / tp) * (H / p / m) * (W / p / m)."""
        side = self.frame_size // (self.patch_size * self.merge_size)
        return (self.num_frames // self.temporal_patch_size) * side * side

    def validate(self) -> None:
        factor = self.patch_size * self.merge_size
        if self.frame_size % factor:
            raise RRPOError(f"frame_size {self.frame_size} must be a multiple of patch x merge = {factor}")
        if self.num_frames % self.temporal_patch_size:
            raise RRPOError(f"num_frames {self.num_frames} must be a multiple of {self.temporal_patch_size}")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise RRPOError(f"hidden_size {self.hidden_size} must split into {self.num_heads} even heads")


# ---------------------------------------------------------------------------------------------------
# Model


def _tokenizer_corpus() -> list[str]:
    """Every word the toy world and the evaluation prompts use, for the BPE trainer: question and
    answer templates of a few sampled scenes plus the fixed prompts."""
    from rrpo.data.answers import reference_answer
    from rrpo.data.prompts import question_prompt
    from rrpo.toy.world import (
        CAPTION_PROMPT,
        DESCRIBE_PROMPT,
        PALETTE,
        SHAPES,
        WorldConfig,
        caption,
        clip_questions,
        describe,
        existence_pair,
        motion_pair,
        sample_scene,
        temporal_pairs,
    )

    cfg = WorldConfig()
    rng = np.random.default_rng(12345)
    lines = [CAPTION_PROMPT, DESCRIBE_PROMPT, "You are a helpful assistant.", "Yes", "No", "yes", "no"]
    lines.append(" ".join(f"{c} {s}" for c in PALETTE for s in SHAPES))
    lines.append(" ".join(f"({chr(65 + i)})" for i in range(8)) + " 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16")
    for _ in range(60):
        scene = sample_scene(rng, cfg)
        lines += [caption(scene), describe(scene)]
        pairs = [existence_pair(scene, rng, cfg), motion_pair(scene, rng, cfg), *temporal_pairs(scene, rng)]
        qas = clip_questions(scene, rng, cfg) + [qa for p in pairs for qa in (p.basic, p.hallucinated)]
        for qa in qas:
            q = question_from_turn(
                {
                    "question": qa.question,
                    "answer": qa.answer,
                    "answer_type": qa.answer_type,
                    "options": list(qa.options) if qa.options else None,
                },
                "corpus",
            )
            lines += [question_prompt(q), reference_answer(q)]
    return lines


def build_tokenizer(vocab_size: int = 512):
    """Byte-level BPE fast tokenizer trained on the toy corpus, with Qwen's special tokens and chat
    template (shared with rrpo.models.tiny, so the adapter's prompt and turn-end logic apply)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from rrpo.models.tiny import _QWEN_SPECIALS, _qwen_template

    tok = Tokenizer(models.BPE(unk_token=None))
    # The GPT-2 split keeps "(", the letter and ")" apart, so an option's letter is one token.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_QWEN_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=_qwen_template(FAMILY),
    )
    fast.add_special_tokens(
        {"additional_special_tokens": [s for s in _QWEN_SPECIALS if s not in ("<|im_end|>", "<|endoftext|>")]}
    )
    return fast


def build_toy_model(out_dir: str | Path, spec: ModelSpec | None = None, *, seed: int = 0) -> Path:
    """Build and save a random-weight tiny Qwen2-VL for the toy world (loadable with
    `rrpo.models.load_model(out_dir)`); returns `out_dir`."""
    import transformers as tf

    from rrpo.models.tiny import FAMILY_FILE, _mrope_section, _qwen_ids, _qwen_template

    spec = spec or ModelSpec()
    spec.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = build_tokenizer(spec.vocab_size)
    head_dim = spec.hidden_size // spec.num_heads
    text = {
        "vocab_size": len(tok),
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.hidden_size * 2,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "max_position_embeddings": 2048,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": None,
        "tie_word_embeddings": True,
        "rope_parameters": {
            "rope_type": "default",
            "mrope_section": _mrope_section(head_dim),
            "rope_theta": 10000.0,
        },
    }
    vision = {
        "depth": spec.vision_depth,
        "embed_dim": spec.vision_dim,
        "hidden_size": spec.hidden_size,  # Qwen2-VL: the merger's output width
        "num_heads": spec.vision_heads,
        "mlp_ratio": 2,
        "patch_size": spec.patch_size,
        "spatial_merge_size": spec.merge_size,
        "temporal_patch_size": spec.temporal_patch_size,
    }
    cfg = tf.Qwen2VLConfig(text_config=text, vision_config=vision, **_qwen_ids(tok))
    model = tf.Qwen2VLForConditionalGeneration(cfg).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.do_sample = False
    side = spec.frame_size
    pixels = {"min_pixels": side * side, "max_pixels": side * side}
    common = dict(
        patch_size=spec.patch_size, temporal_patch_size=spec.temporal_patch_size, merge_size=spec.merge_size
    )
    video_proc = tf.Qwen2VLVideoProcessor(**common, cap_pixels_per_frame=False, **pixels)
    image_proc = tf.Qwen2VLImageProcessor(**common, **pixels)
    proc = tf.Qwen2VLProcessor(
        image_processor=image_proc,
        tokenizer=tok,
        video_processor=video_proc,
        chat_template=_qwen_template(FAMILY),
    )
    model.save_pretrained(out)
    proc.save_pretrained(out)
    tok.save_pretrained(out)
    meta = {
        "family": FAMILY,
        "frame_size": [side, side],
        "num_frames": spec.num_frames,
        "tiny": True,
        "toy_model_spec": asdict(spec),
    }
    (out / FAMILY_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


# ---------------------------------------------------------------------------------------------------
# Examples


@dataclass
class Example:
    """One single-turn training / evaluation example: clip `clip` (index into the frame array), the
    exact `prompt` and `answer` text, the question `kind`; for eval, `decisive` is the answer token
    index that decides correctness (1 = the letter after "(", 0 = "Yes"/"No"), None for open text."""

    clip: int
    prompt: str
    answer: str
    kind: str
    id: str = ""
    decisive: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


def question_from_turn(turn: dict[str, Any], where: str):
    """A validated `VideoQuestion` from a pretrain.jsonl turn (RecordError naming `where` otherwise)."""
    from rrpo.data.record import VideoQuestion

    for key in ("question", "answer", "answer_type"):
        if not isinstance(turn.get(key), str):
            raise RecordError(where, key, "missing or not a string")
    q = VideoQuestion(
        id=where,
        video=str(turn.get("video") or "toy.mp4"),
        question=turn["question"],
        answer=turn["answer"],
        answer_type=turn["answer_type"],
        options=turn.get("options"),
    )
    return q.validate(where)


def turn_example(clip: int, turn: dict[str, Any], where: str) -> Example:
    """The training example of one turn, in the evaluation's prompt / answer format."""
    from rrpo.data.answers import reference_answer
    from rrpo.data.prompts import question_prompt

    q = question_from_turn(turn, where)
    decisive = {"mcq": 1, "yesno": 0}.get(q.answer_type)
    return Example(
        clip, question_prompt(q), reference_answer(q), str(turn.get("kind", q.answer_type)), where, decisive
    )


def read_pretrain(data_dir: Path) -> list[dict[str, Any]]:
    """The records of `pretrain.jsonl` (RecordError on a malformed line)."""
    path = data_dir / "pretrain.jsonl"
    if not path.is_file():
        raise RRPOError(
            f"{path}: not found; generate the toy world with `rrpo toy generate --out {data_dir}`"
        )
    records = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(f"{path}:{line_no}", None, f"not JSON ({err})") from err
            for key in ("id", "video", "turns"):
                if key not in rec:
                    raise RecordError(f"{path}:{line_no}", key, "missing")
            if not isinstance(rec["turns"], list) or not rec["turns"]:
                raise RecordError(rec["id"], "turns", "expected a non-empty list")
            records.append(rec)
    return records


def pretrain_examples(records: Sequence[dict[str, Any]]) -> list[Example]:
    """Every turn of every record (caption, describe and QA turns), clip index = record position."""
    out = []
    for i, rec in enumerate(records):
        for k, turn in enumerate(rec["turns"]):
            out.append(turn_example(i, turn, f"{rec['id']}/turn{k}"))
    return out


# Auxiliary "pooling" tasks: the answer depends on the video alone, never on which words the question
# uses. The toy probes (docs/toy.md) found that these are learned from scratch within ~100 steps, while
# every benchmark question (existence, order, direction, yes/no) is an interaction between question
# and video: with balanced answers neither the question nor the video alone predicts them, so the
# gradient has no first-order signal and a tiny model from scratch sits on a plateau.
AUX_PROMPTS = {
    "colours": "Which colours appear in the video?",
    "first_colour": "What colour is the object that appears first?",
    "which_colour": "Which of these colours appears in the video: {} or {}?",
    "earlier_colour": "Which of these colours appears first: {} or {}?",
    "first_direction": "In which direction does the object that appears first move?",
    "directions": "In which directions do the objects move?",
    "which_direction": "Which of these directions does an object move: {} or {}?",
}
# Every auxiliary task: the prompted ones above, plus VideoHallucer-style yes/no pairs made by the
# world's own generators (both sides, the evaluation's prompt), the benchmark's motion and temporal
# kinds that pretrain.jsonl lacks.
# "order_mcq" adds the benchmark's own order question in all four variants for one pair per clip;
# "option_lookup" the step of every multiple-choice answer that reads no video: naming an option's letter;
# "colour_order_mcq" the order question with the palette as options (`--order-question colour` worlds).
AUX_TASKS = (
    *AUX_PROMPTS,
    "yesno_motion",
    "yesno_temporal",
    "order_mcq",
    "option_lookup",
    "colour_order_mcq",
)


def aux_examples(
    records: Sequence[dict[str, Any]],
    scenes: dict[str, Any],
    colours: Sequence[str],
    kinds: Sequence[str],
    world_config: Any = None,
) -> list[Example]:
    """Auxiliary examples of `kinds` (names in `AUX_TASKS`) for each pretraining record (clip index =
    record position), with `scenes` mapping record id -> `world.Scene` (`splits.load_scenes`):

    - "colours": the clip's colours in palette order, "colours: blue yellow";
    - "first_colour": the colour of the object that appears first, "the blue";
    - "which_colour": one present and one absent colour named (in either order), the present one
      answered, "the blue". Unlike "Is there a blue ...?", this is solved by adding two signals
      (named in the question + seen in the video) in the colour-word logits, so it is learned without
      the interaction plateau and gives the model the pieces existence questions need;
    - "earlier_colour": two of the clip's colours named (clips with 2+ objects), the one that appears
      first answered, "the blue" (named + early, added: the same idea for order questions);
    - "first_direction": the direction of the object that appears first, "it moves left" (motion
      read from the video alone);
    - "directions": every direction some object moves in, in left/right/up/down order, "they move
      left up" (pooling over all objects, as "colours" is for colour);
    - "which_direction": one direction some object moves in and one no object moves in, the present
      one answered, "the left" (the additive trick of "which_colour", for motion);
    - "yesno_motion" / "yesno_temporal": both sides of `world.motion_pair` / `world.temporal_pairs`
      ("Does the red circle move left?" -> "Yes"), the VideoHallucer questions' kinds, with the
      evaluation's yes/no prompt; `world_config` (`world.WorldConfig`, for the prior) is required.
      Their random choices come from a generator seeded by the record's position, so a run is
      reproducible;
    - "order_mcq": for clips with 2+ objects, one pair of objects (chosen by the record's position)
      asked "Which appears first / last, X or Y?" with the options in both orders: four questions on
      one video whose answer letter flips with the option order, so only reading the options and the
      video together answers them (the model answered "Does X appear before Y?" at 87 % while
      choosing the order question's letter at chance);
    - "option_lookup": "Which option is the blue circle?" with two options in the benchmark's format
      (one of the clip's objects and an absent object of another colour, in either order), answered
      with that option: the letter-finding half of the order question, learnable from the text alone;
    - "colour_order_mcq": "Which colour appears first?" with the palette as options, for every clip
      (`world.colour_order_qa`; the order question of worlds generated with `--order-question
      colour` asks it of clips with 2+ objects); `world_config` is required.

    Every answer puts a space before the colour, so it is the same token as in the questions
    (" blue"; the toy tokenizer splits a bare "blue" at the start of a reply into pieces)."""
    from rrpo.toy.world import DIRECTIONS, colour_order_qa, motion_pair, order_qa, temporal_pairs

    unknown = sorted(set(kinds) - set(AUX_TASKS))
    if unknown:
        raise RRPOError(f"unknown auxiliary tasks {unknown}; known: {sorted(AUX_TASKS)}")
    if world_config is None and {"yesno_motion", "yesno_temporal", "colour_order_mcq"} & set(kinds):
        raise RRPOError(
            "the yesno_motion, yesno_temporal and colour_order_mcq auxiliary tasks need the world's config"
        )
    out = []
    for i, rec in enumerate(records):
        scene = scenes.get(rec["id"])
        if scene is None:
            raise RecordError(rec["id"], "scene", "no scene in scenes.jsonl for this pretraining record")
        present = [o.colour for o in scene.objects]  # in order of appearance
        for kind in kinds:
            prompt = AUX_PROMPTS.get(kind, "")
            if kind == "colours":
                answer = "colours: " + " ".join(c for c in colours if c in present)
            elif kind == "first_colour":
                answer = f"the {present[0]}"
            elif kind == "earlier_colour":
                if len(present) < 2:
                    continue
                j = (i // 3) % (len(present) - 1)
                early, late = present[j], present[j + 1 + (i // 5) % (len(present) - 1 - j)]
                named = (early, late) if i % 2 else (late, early)
                prompt, answer = prompt.format(*named), f"the {early}"
            elif kind == "first_direction":
                answer = f"it moves {scene.objects[0].direction}"
            elif kind == "directions":
                moving = {o.direction for o in scene.objects}
                answer = "they move " + " ".join(d for d in DIRECTIONS if d in moving)
            elif kind == "which_direction":
                moving_in = [o.direction for o in scene.objects]
                still = [d for d in DIRECTIONS if d not in moving_in]
                if not still:
                    continue
                seen, unseen = moving_in[i % len(moving_in)], still[(i // 2) % len(still)]
                named = (seen, unseen) if i % 3 else (unseen, seen)
                prompt, answer = prompt.format(*named), f"the {seen}"
            elif kind == "order_mcq":
                objs = scene.objects
                if len(objs) < 2:
                    continue
                pairs = [(a, b) for a in range(len(objs)) for b in range(a + 1, len(objs))]
                a, b = pairs[i % len(pairs)]
                early, late = objs[a], objs[b]
                for which in ("first", "last"):
                    for named in ((early, late), (late, early)):
                        qa = order_qa(early, late, which, named)  # the benchmark's own wording
                        turn = {
                            "kind": kind,
                            "question": qa.question,
                            "answer": qa.answer,
                            "answer_type": "mcq",
                            "options": list(qa.options),
                        }
                        tag = f"{rec['id']}/{kind}/{which}-{named[0].colour}"
                        out.append(turn_example(i, turn, tag))
                continue
            elif kind == "option_lookup":
                absent = [c for c in colours if c not in present]
                if not absent:
                    continue
                obj = scene.objects[i % len(scene.objects)]
                other = f"the {absent[(i // 2) % len(absent)]} {scene.objects[(i // 3) % len(scene.objects)].shape}"
                options = [f"the {obj.name}", other] if (i // 5) % 2 else [other, f"the {obj.name}"]
                turn = {
                    "kind": kind,
                    "question": f"Which option is the {obj.name}?",
                    "answer": f"the {obj.name}",
                    "answer_type": "mcq",
                    "options": options,
                }
                out.append(turn_example(i, turn, f"{rec['id']}/{kind}"))
                continue
            elif kind == "colour_order_mcq":
                qa = colour_order_qa(scene, "first", world_config)
                turn = {"kind": kind, "question": qa.question, "answer": qa.answer, "answer_type": "mcq",
                        "options": list(qa.options)}  # fmt: skip
                out.append(turn_example(i, turn, f"{rec['id']}/{kind}"))
                continue
            elif kind in ("yesno_motion", "yesno_temporal"):
                rng = np.random.default_rng([7, i])
                pairs = (
                    [motion_pair(scene, rng, world_config)]
                    if kind == "yesno_motion"
                    else temporal_pairs(scene, rng)
                )
                for k, pair in enumerate(pairs):
                    for side, qa in (("basic", pair.basic), ("hallucinated", pair.hallucinated)):
                        turn = {"question": qa.question, "answer": qa.answer, "answer_type": qa.answer_type}
                        ex = turn_example(i, {**turn, "kind": kind}, f"{rec['id']}/{kind}{k}/{side}")
                        out.append(ex)
                continue
            else:
                absent = [c for c in colours if c not in present]
                if not absent:
                    continue  # every colour is in the clip: nothing to contrast with
                seen, unseen = present[i % len(present)], absent[(i // 2) % len(absent)]
                named = (seen, unseen) if i % 3 else (unseen, seen)
                prompt, answer = prompt.format(*named), f"the {seen}"
            out.append(Example(i, prompt, answer, kind, f"{rec['id']}/{kind}"))
    return out


def load_frames(
    data_dir: Path, videos: Sequence[str], spec: ModelSpec, *, progress: bool = False
) -> np.ndarray:
    """Decode every video as the evaluation does (`read_frames` at the model's frame count and size):
    uint8 [N, T, H, W, 3]."""
    from tqdm import tqdm

    from rrpo.video import read_frames

    size = (spec.frame_size, spec.frame_size)
    out = np.empty((len(videos), spec.num_frames, *size, 3), dtype=np.uint8)
    for i, v in enumerate(tqdm(videos, desc="decode", unit="clip", disable=not progress)):
        out[i] = read_frames(data_dir / v, spec.num_frames, size=size)
    return out


# ---------------------------------------------------------------------------------------------------
# Encoding


class Encoder:
    """Turns examples into model inputs without the full processor call: the text side is the chat
    template with the video placeholder expanded by hand, the pixel side the video processor's own
    `rescale_and_normalize` and `patchify` (checked equal to `processor(...)` by `check_against_processor`)."""

    def __init__(self, processor, spec: ModelSpec):
        self.processor = processor
        self.tok = processor.tokenizer
        self.spec = spec
        self.n_video = spec.video_tokens()
        self.video_id = self.tok.convert_tokens_to_ids("<|video_pad|>")
        self.pad_id = self.tok.pad_token_id
        self.turn_end = "<|im_end|>"
        self._prefix_cache: dict[str, list[int]] = {}

    def prefix_ids(self, prompt: str) -> list[int]:
        """Token ids of the chat-templated user turn (video + prompt) and the generation prompt."""
        if prompt not in self._prefix_cache:
            messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
            text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            text = text.replace("<|video_pad|>", "<|video_pad|>" * self.n_video)
            self._prefix_cache[prompt] = self.tok(text, add_special_tokens=False)["input_ids"]
        return self._prefix_cache[prompt]

    def answer_ids(self, answer: str) -> list[int]:
        """Answer tokens followed by the turn-end token (what generation must produce and stop at)."""
        return self.tok(answer + self.turn_end, add_special_tokens=False)["input_ids"]

    def pixels(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> pixel_values_videos [B * patches, 3 * tp * p * p] (float32)."""
        vp = self.processor.video_processor
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 1, 4, 2, 3).float()
        video = vp.rescale_and_normalize(video, True, vp.rescale_factor, True, vp.image_mean, vp.image_std)
        patches, *_ = vp.patchify(
            video,
            patch_size=self.spec.patch_size,
            merge_size=self.spec.merge_size,
            temporal_patch_size=self.spec.temporal_patch_size,
        )
        return patches.reshape(-1, patches.shape[-1])

    def grid(self, n: int) -> torch.Tensor:
        side = self.spec.frame_size // self.spec.patch_size
        return torch.tensor([[self.spec.num_frames // self.spec.temporal_patch_size, side, side]] * n)

    def batch(self, examples: Sequence[Example], frames: np.ndarray) -> dict[str, torch.Tensor]:
        """Right-padded model inputs for teacher forcing; `labels` [B, L] are the answer tokens
        (IGNORE elsewhere), `answer_start` [B] the index of each answer's first token."""
        seqs, labels, starts = [], [], []
        for ex in examples:
            p, a = self.prefix_ids(ex.prompt), self.answer_ids(ex.answer)
            seqs.append(p + a)
            labels.append([IGNORE] * len(p) + a)
            starts.append(len(p))
        length = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
        lab = torch.full((len(seqs), length), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, (s, lb) in enumerate(zip(seqs, labels)):
            ids[i, : len(s)] = torch.tensor(s)
            lab[i, : len(lb)] = torch.tensor(lb)
            mask[i, : len(s)] = 1
        # transformers 5.x: 2 marks video tokens (what the Qwen2-VL processor returns).
        types = (ids == self.video_id).long() * 2
        clip_frames = frames[[ex.clip for ex in examples]]
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "mm_token_type_ids": types,
            "pixel_values_videos": self.pixels(clip_frames),
            "video_grid_thw": self.grid(len(examples)),
            "labels": lab,
            "answer_start": torch.tensor(starts),
        }

    def check_against_processor(self, frames: np.ndarray, prompt: str) -> None:
        """Raise RRPOError unless this encoder gives exactly the processor's input ids, token types and
        pixels for one clip (frames uint8 [T, H, W, 3]): the model must see at training time what the
        adapter's `generate` feeds it."""
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ref = self.processor(text=[text], videos=[frames], return_tensors="pt", do_sample_frames=False)
        mine = self.batch([Example(0, prompt, "", "check")], frames[None])
        n = len(self.prefix_ids(prompt))
        problems = []
        if ref["input_ids"][0].tolist() != mine["input_ids"][0, :n].tolist():
            problems.append("input_ids")
        if (
            "mm_token_type_ids" in ref
            and ref["mm_token_type_ids"][0].tolist() != mine["mm_token_type_ids"][0, :n].tolist()
        ):
            problems.append("mm_token_type_ids")
        if ref["video_grid_thw"].tolist() != mine["video_grid_thw"].tolist():
            problems.append("video_grid_thw")
        elif not torch.allclose(ref["pixel_values_videos"], mine["pixel_values_videos"], atol=1e-5):
            problems.append("pixel_values_videos")
        if problems:
            raise RRPOError(f"toy encoder disagrees with the processor on: {', '.join(problems)}")


def forward_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits [B, L, V] of a batch from `Encoder.batch`."""
    keys = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw")
    return model(**{k: batch[k] for k in keys}, use_cache=False).logits


def decisive_labels(
    batch: dict[str, torch.Tensor], examples: Sequence[Example], *, keep_format: bool = False
) -> torch.Tensor:
    """Labels [B, L] keeping, for examples with a decisive token (multiple choice, yes/no), only that
    token (the option letter, "Yes"/"No"); open and auxiliary answers keep every token. The format
    tokens around a letter are free to predict and would otherwise dominate the loss."""
    labels = batch["labels"].clone()
    for i, ex in enumerate(examples):
        if ex.decisive is not None:
            pos = int(batch["answer_start"][i]) + int(ex.decisive)
            start = int(batch["answer_start"][i])
            end = int((batch["labels"][i] != IGNORE).nonzero().max()) + 1
            # keep_format: also the reply's frame, "(" B ")" ... <|im_end|>, not the option text.
            keep = list(range(start, min(pos + 2, end))) + [end - 1] if keep_format else [pos]
            kept = labels[i, keep].clone()
            labels[i] = IGNORE
            labels[i, keep] = kept
    return labels


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over answer tokens: logits[:, t] predicts labels[:, t + 1]."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE
    )


# ---------------------------------------------------------------------------------------------------
# Quick evaluation


@torch.no_grad()
def decisions(
    model, encoder: Encoder, examples: Sequence[Example], frames: np.ndarray, batch_size: int = 64
) -> list[tuple[bool, str]]:
    """(correct, predicted token) per example from one teacher-forced pass: the greedy choice at the
    answer's decisive token (the option letter after "(", or "Yes"/"No"). This is exactly the token
    greedy generation picks there once it has produced the same tokens before it."""
    model.eval()
    out = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        b = encoder.batch(chunk, frames)
        logits = forward_logits(model, b)
        for j, ex in enumerate(chunk):
            pos = int(b["answer_start"][j]) + int(ex.decisive)
            pred = int(logits[j, pos - 1].argmax())
            out.append((pred == int(b["input_ids"][j, pos]), encoder.tok.decode([pred]).strip()))
    return out


def eval_examples_from_benchmarks(data_dir: Path, video_index: dict[str, int]) -> dict[str, list[Example]]:
    """Held-out examples by group: MVBench-format temporal tasks, the existence and motion yes/no
    questions of the VideoHallucer files (both sides), and the prior-break tasks. Uses the same
    loaders as `rrpo eval`, so prompts are the evaluation's."""
    from rrpo.eval.benchmarks import BENCHMARKS

    groups: dict[str, list[Example]] = {}
    bench = data_dir / "benchmarks"
    for path in (bench / "temporal", bench / "prior_break"):
        for item in BENCHMARKS["mvbench"].load(path):
            letter = item.answer
            answer = f"({letter}) {item.options[ord(letter) - 65]}"
            groups.setdefault(item.task, []).append(
                Example(video_index[item.video], item.prompt, answer, item.task, item.id, 1)
            )
    for category in ("object_existence", "motion", "temporal"):
        path = bench / "hallucination" / category
        for item in BENCHMARKS["videohallucer"].load(path):
            groups.setdefault(f"yesno_{category}", []).append(
                Example(video_index[item.video], item.prompt, item.answer.capitalize(), category, item.id, 0)
            )
    return groups


def perturbed_frames(
    frames: np.ndarray, keys: Sequence[str], kind: str = "mask+local_shuffle", seed: int = 0, variant: int = 0
) -> np.ndarray:
    """Frames [N, T, H, W, 3] perturbed as the self-alignment pipeline does (`key` = record id)."""
    from rrpo.video.perturb import perturb_frames

    return np.stack(
        [perturb_frames(f, kind, seed=seed, key=k, variant=variant)[0] for f, k in zip(frames, keys)]
    )


def quick_eval(
    model, encoder: Encoder, groups: dict[str, list[Example]], frames: np.ndarray, *, perturb: bool = True
) -> dict[str, dict[str, float]]:
    """Accuracy (%) per group on clean frames and, with `perturb`, on perturbed ones (each
    example's clip perturbed with key = example id, as the pipeline keys by record id)."""
    result: dict[str, dict[str, float]] = {}
    for name, exs in groups.items():
        clean = decisions(model, encoder, exs, frames)
        row = {"n": len(exs), "clean": 100.0 * sum(c for c, _ in clean) / max(1, len(exs))}
        if perturb:
            pf = perturbed_frames(frames[[e.clip for e in exs]], [e.id for e in exs])
            local = [Example(i, e.prompt, e.answer, e.kind, e.id, e.decisive) for i, e in enumerate(exs)]
            pert = decisions(model, encoder, local, pf)
            row["perturbed"] = 100.0 * sum(c for c, _ in pert) / max(1, len(exs))
        result[name] = row
    return result


# ---------------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainConfig:
    """Optimisation settings. `steps` batches of `batch_size` examples; linear warm-up for `warmup`
    steps, then constant (`schedule` "constant") or cosine decay to `min_lr_ratio` x `lr`; `minutes` stops early (wall clock: the only
    source of run-to-run difference when it triggers)."""

    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    schedule: str = "constant"  # or "cosine"
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    minutes: float | None = None
    eval_every: int = 500
    threads: int | None = None
    kinds: tuple[str, ...] = ()  # train only these turn kinds (empty: all)
    focus_kinds: tuple[str, ...] = ("caption", "describe")
    focus_steps: int = 0  # first steps on focus_kinds only (see `example_order`)
    aux_kinds: tuple[str, ...] = ()  # auxiliary tasks added to every clip (`AUX_TASKS`)
    decisive_loss: bool = False  # mcq / yes-no examples: loss on the deciding token only
    format_loss: bool = False  # with decisive_loss: also the reply's format tokens (not the option text)
    vision_lr_scale: float = 1.0  # the vision tower and merger learn at vision_lr_scale x lr
    vision_steps: int = 0  # steps of `vision_pretrain` before the language-model training
    vision_lr: float = 3e-3


# The committed checkpoint's settings (`rrpo toy pretrain` defaults; see checkpoint/PROVENANCE.md).
DEFAULT_TRAIN = TrainConfig(
    steps=2615,
    batch_size=32,
    lr=2e-3,
    warmup=50,
    weight_decay=0.0,
    eval_every=250,
    threads=1,
    kinds=("order", "direction", "count", "existence"),
    aux_kinds=("colours", "first_colour", "which_colour"),
    focus_kinds=("colours", "first_colour", "which_colour"),
    focus_steps=350,
    decisive_loss=True,
)


def _passes(
    indices: list[int], stages: Sequence[int], clip_of: Sequence[int], rng: random.Random
) -> Iterable[int]:
    """Endless stream of `indices`: the first pass in curriculum order (stage 0, single-object
    clips, first; shuffled within each stage), later passes fully shuffled."""
    for stage in sorted({stages[clip_of[i]] for i in indices}):
        part = [i for i in indices if stages[clip_of[i]] == stage]
        rng.shuffle(part)
        yield from part
    while True:
        part = list(indices)
        rng.shuffle(part)
        yield from part


def example_order(
    examples: Sequence[Example],
    stages: Sequence[int],
    steps: int,
    batch_size: int,
    seed: int,
    *,
    focus_kinds: Sequence[str] = (),
    focus_steps: int = 0,
) -> Iterable[list[int]]:
    """Batches of example indices. The first `focus_steps` batches hold only examples of
    `focus_kinds` (the caption / describe turns: text the language prior cannot produce, so the model
    must read the video); then all examples. Each phase goes through curriculum stage 0 before
    stage 1 on its first pass, later passes are full shuffles. Deterministic for a seed, and a
    shorter run is a prefix of a longer one."""
    rng = random.Random(seed)
    clip_of = [ex.clip for ex in examples]
    focus = [i for i, ex in enumerate(examples) if ex.kind in set(focus_kinds)]
    if focus_steps and not focus:
        raise RRPOError(f"no examples of the focus kinds {list(focus_kinds)}")
    phases = [(_passes(focus, stages, clip_of, rng), min(focus_steps, steps))] if focus_steps else []
    phases.append(
        (_passes(list(range(len(examples))), stages, clip_of, rng), steps - min(focus_steps, steps))
    )
    for stream, n in phases:
        for _ in range(n):
            yield [next(stream) for _ in range(batch_size)]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of a step. The default "constant" schedule (warm-up, then flat) makes step N of a
    longer run identical to the end of an N-step run, so any intermediate checkpoint is reproducible."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (
        cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    )


def visual_tower(model):
    """The vision tower (with its merger) of a Qwen2-VL-class model."""
    inner = getattr(model, "model", model)
    return inner.visual if hasattr(inner, "visual") else model.visual


def video_features(model, encoder: Encoder, clips: np.ndarray) -> torch.Tensor:
    """Mean over each clip's video tokens of the vision tower's output: [N, hidden] for frames [N, T, H, W, 3]."""
    visual = visual_tower(model)
    out = visual(encoder.pixels(clips), grid_thw=encoder.grid(len(clips)))
    out = getattr(out, "pooler_output", out)
    return out.reshape(len(clips), -1, out.shape[-1]).float().mean(1)


def direction_targets(scenes: Sequence[Any], colours: Sequence[str]) -> torch.Tensor:
    """[N, len(colours)] class per clip and colour: 0 = the colour is not in the clip, 1 + k = its
    object moves in the k-th of left / right / up / down."""
    from rrpo.toy.world import DIRECTIONS

    names = list(DIRECTIONS)
    out = torch.zeros(len(scenes), len(colours), dtype=torch.long)
    for i, scene in enumerate(scenes):
        for o in scene.objects:
            out[i, list(colours).index(o.colour)] = 1 + names.index(o.direction)
    return out


def vision_pretrain(
    model,
    encoder: Encoder,
    frames: np.ndarray,
    targets: torch.Tensor,
    heldout: tuple[np.ndarray, torch.Tensor] | None,
    cfg: TrainConfig,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the vision tower (and merger) alone, as real video LLMs start from a pretrained vision
    encoder: a linear probe on the mean of a clip's video tokens predicts, for every colour, whether
    it is in the clip and which way its object moves (`direction_targets`). The probe is discarded.

    Why: the language-model loss alone never taught the tiny tower to see motion (docs/toy.md), while
    this direct signal does within a few hundred steps. `cfg.vision_steps` steps of `cfg.batch_size`
    clips at `cfg.vision_lr` (AdamW, no decay); `heldout` = (frames, targets) is scored every 100 steps
    and at the end: accuracy over (clip, colour) cells where the colour is present."""
    torch.manual_seed(cfg.seed)
    visual = visual_tower(model)
    with torch.no_grad():  # the tower's output width (the merger's, = the text hidden size)
        hidden = int(video_features(model, encoder, frames[:1]).shape[-1])
    n_colours = targets.shape[1]
    head = torch.nn.Sequential(torch.nn.LayerNorm(hidden), torch.nn.Linear(hidden, 5 * n_colours))
    opt = torch.optim.AdamW([*visual.parameters(), *head.parameters()], lr=cfg.vision_lr, weight_decay=0.0)
    rng = np.random.default_rng([cfg.seed, 11])

    def logits(clips: np.ndarray) -> torch.Tensor:
        return head(video_features(model, encoder, clips)).reshape(len(clips), n_colours, 5)

    def accuracy() -> float | None:
        if heldout is None:
            return None
        hf, ht = heldout
        with torch.no_grad():
            pred = torch.cat([logits(hf[i : i + 64]).argmax(-1) for i in range(0, len(hf), 64)])
        present = ht > 0
        return float((pred[present] == ht[present]).float().mean())

    visual.train()
    losses, accs = [], {}
    for step in range(cfg.vision_steps):
        idx = np.sort(rng.choice(len(frames), min(cfg.batch_size, len(frames)), replace=False))
        out = logits(frames[idx])
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, 5), targets[idx].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*visual.parameters(), *head.parameters()], cfg.grad_clip)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == cfg.vision_steps:
            accs[step + 1] = accuracy()
            acc = "" if accs[step + 1] is None else f", held-out direction {100 * accs[step + 1]:.0f} %"
            log(f"vision step {step + 1}: loss {np.mean(losses[-100:]):.3f}{acc}")
    model.eval()
    return {"losses": losses, "heldout_accuracy": accs}


def train(
    model,
    encoder: Encoder,
    examples: Sequence[Example],
    frames: np.ndarray,
    stages: Sequence[int],
    cfg: TrainConfig,
    *,
    on_eval: Callable[[int], dict] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Full fine-tuning of every weight; returns {"losses": [per step], "steps_done", "seconds",
    "examples_per_s", "evals": {step: on_eval(step)}}."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    model.train()
    groups = []
    for vision in (False, True):
        params = [(n, p) for n, p in model.named_parameters() if (".visual." in f".{n}") == vision]
        scale = cfg.vision_lr_scale if vision else 1.0
        for decays in (True, False):
            chosen = [p for n, p in params if (p.ndim >= 2) == decays]
            if chosen:
                wd = cfg.weight_decay if decays else 0.0
                groups.append({"params": chosen, "weight_decay": wd, "lr_scale": scale})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))
    losses: list[float] = []
    evals: dict[int, Any] = {}
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.steps, desc="pretrain", unit="step", disable=not progress)
    step = 0
    for step, idx in enumerate(
        example_order(
            examples,
            stages,
            cfg.steps,
            cfg.batch_size,
            cfg.seed,
            focus_kinds=cfg.focus_kinds,
            focus_steps=cfg.focus_steps,
        )
    ):
        if cfg.minutes is not None and time.perf_counter() - t0 > 60 * cfg.minutes:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg) * g["lr_scale"]
        chosen = [examples[i] for i in idx]
        b = encoder.batch(chosen, frames)
        labels = decisive_labels(b, chosen, keep_format=cfg.format_loss) if cfg.decisive_loss else b["labels"]
        loss = answer_loss(forward_logits(model, b), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(loss.item())
        bar.update()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        if on_eval is not None and cfg.eval_every and (step + 1) % cfg.eval_every == 0:
            evals[step + 1] = on_eval(step + 1)
            model.train()
    else:
        step += 1
    bar.close()
    seconds = time.perf_counter() - t0
    model.eval()
    done = len(losses)
    return {
        "losses": losses,
        "steps_done": done,
        "seconds": seconds,
        "examples_per_s": done * cfg.batch_size / max(seconds, 1e-9),
        "evals": evals,
    }


def initial_loss(model, encoder: Encoder, examples: Sequence[Example], frames: np.ndarray) -> float:
    """Answer-token loss of `examples` without training (for checks that training reduces it)."""
    model.eval()
    with torch.no_grad():
        b = encoder.batch(examples, frames)
        return float(answer_loss(forward_logits(model, b), b["labels"]))


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    """Markdown table of `quick_eval` / benchmark metrics."""
    lines = ["| group | n | clean % | perturbed % |", "|---|---|---|---|"]
    for name, row in metrics.items():
        pert = f"{row['perturbed']:.1f}" if "perturbed" in row else "-"
        lines.append(f"| {name} | {row['n']} | {row['clean']:.1f} | {pert} |")
    return "\n".join(lines)


def kind_counts(examples: Sequence[Example]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for ex in examples:
        counts[ex.kind] += 1
    return dict(counts)


# ---------------------------------------------------------------------------------------------------
# The whole run


def benchmark_videos(data_dir: Path) -> list[str]:
    """Every video the held-out benchmark files name (sorted, unique)."""
    videos: set[str] = set()
    for path in sorted((data_dir / "benchmarks").rglob("*.json")):
        for rec in json.loads(path.read_text(encoding="utf-8")):
            for side in (rec, rec.get("basic") or {}, rec.get("hallucination") or {}):
                if isinstance(side.get("video"), str):
                    videos.add(side["video"])
    return sorted(videos)


def pool_examples(data_dir: Path, video_index: dict[str, int]) -> list[Example]:
    """The mcq and yes/no questions of the self-alignment pool (train.jsonl) as examples keyed by
    their record id (the perturbation key the pipeline uses)."""
    from rrpo.data.answers import reference_answer
    from rrpo.data.prompts import question_prompt
    from rrpo.data.record import VideoQuestion

    out = []
    path = data_dir / "train.jsonl"
    with path.open(encoding="utf-8") as f:
        for line in f:
            q = VideoQuestion.from_dict(json.loads(line))
            if q.answer_type not in ("mcq", "yesno"):
                continue
            decisive = 1 if q.answer_type == "mcq" else 0
            kind = str(q.metadata.get("kind", q.answer_type))
            out.append(
                Example(video_index[q.video], question_prompt(q), reference_answer(q), kind, q.id, decisive)
            )
    return out


def expected_pairs(
    model, encoder: Encoder, examples: Sequence[Example], frames: np.ndarray, variants: int = 2
) -> dict[str, Any]:
    """How many pool questions the model gets wrong under at least one of `variants` perturbations
    (the pipeline makes a pair for exactly those, before judge / differ rejects), per kind."""
    wrong = np.zeros(len(examples), dtype=bool)
    clips = frames[[e.clip for e in examples]]
    local = [Example(i, e.prompt, e.answer, e.kind, e.id, e.decisive) for i, e in enumerate(examples)]
    for v in range(variants):
        pf = perturbed_frames(clips, [e.id for e in examples], variant=v)
        wrong |= ~np.array([c for c, _ in decisions(model, encoder, local, pf)])
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e, w in zip(examples, wrong):
        by_kind[e.kind][0] += int(w)
        by_kind[e.kind][1] += 1
    return {
        "questions": len(examples),
        "pairs": int(wrong.sum()),
        "by_kind": {k: {"pairs": a, "questions": b} for k, (a, b) in by_kind.items()},
    }


def run_pretrain(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    spec: ModelSpec | None = None,
    cfg: TrainConfig | None = None,
    eval_limit: int = 100,
    save_every: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    init: str | Path | None = None,
) -> dict[str, Any]:
    """Build a fresh toy model in `out_dir` (or start from the toy model in `init`: its weights, tokenizer
    and processor, with a fresh optimizer), pretrain it on `data_dir`'s pretrain.jsonl, save it there
    and return a summary (also written to `out_dir/pretrain_metrics.json`): the data and model
    parameters, losses, throughput, and the final quick-eval metrics (held-out clean vs perturbed per
    question kind, prior-break, and the expected number of pairs from the pool).

    Every `cfg.eval_every` steps a quick clean eval on `eval_limit` items per group is logged; with
    `save_every` the model is also saved to `out_dir/step_<N>` then."""
    from rrpo.models import load_model
    from rrpo.toy.splits import load_world

    data_dir, out = Path(data_dir), Path(out_dir)
    spec = spec or ModelSpec()
    cfg = cfg or TrainConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = load_world(data_dir)
    if init is not None:  # checked before the minute of decoding
        init = Path(init)
        if not (init / "config.json").is_file():
            raise RRPOError(f"--init {init}: no model there (config.json missing)")
        if init.resolve() == out.resolve():
            raise RRPOError("--init and --out must be different directories")
        family = json.loads((init / "rrpo_family.json").read_text())
        if family.get("toy_model_spec") != asdict(spec):
            raise RRPOError(f"--init {init}: its toy_model_spec differs from the spec of this run")
    if not world.get("videos_written", True):
        raise RRPOError(f"{data_dir}: generated without videos (--no-videos); cannot pretrain on it")
    records = read_pretrain(data_dir)
    examples = pretrain_examples(records)
    if cfg.kinds:
        examples = [e for e in examples if e.kind in cfg.kinds]
    if cfg.aux_kinds:
        from rrpo.toy.splits import load_scenes
        from rrpo.toy.world import WorldConfig

        examples += aux_examples(
            records,
            load_scenes(data_dir),
            world["config"]["colours"],
            cfg.aux_kinds,
            WorldConfig(**world["config"]),
        )
    stages = [int(r.get("metadata", {}).get("curriculum_stage", 1)) for r in records]
    held = benchmark_videos(data_dir) if (data_dir / "benchmarks").is_dir() else []
    pool_videos = []
    if (data_dir / "train.jsonl").is_file():
        with (data_dir / "train.jsonl").open(encoding="utf-8") as f:
            pool_videos = sorted({json.loads(line)["video"] for line in f})
    videos = [r["video"] for r in records] + held + pool_videos
    video_index = {v: i for i, v in enumerate(videos)}  # pretraining clips keep their record position
    t0 = time.perf_counter()
    frames = load_frames(data_dir, videos, spec, progress=progress)
    log(f"decoded {len(videos)} clips in {time.perf_counter() - t0:.0f} s")

    if init is None:
        build_toy_model(out, spec, seed=cfg.seed)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for f in init.iterdir():  # the model, not the init's own training record
            if f.is_file() and f.name not in ("PROVENANCE.md", "pretrain_metrics.json"):
                shutil.copy2(f, out / f.name)
    vlm = load_model(out, num_frames=spec.num_frames)
    model = vlm.model
    encoder = Encoder(vlm.processor, spec)
    encoder.check_against_processor(frames[0], examples[0].prompt)
    vision_summary = None
    if cfg.vision_steps:
        from rrpo.toy.splits import load_scenes

        scenes = load_scenes(data_dir)
        colours = world["config"]["colours"]
        targets = direction_targets([scenes[r["id"]] for r in records], colours)
        test_ids = sorted({Path(v).stem for v in held} & {k for k in scenes if k.startswith("test_")})
        heldout = None
        if test_ids:
            rows = [video_index[f"videos/{k}.mp4"] for k in test_ids]
            heldout = (frames[rows], direction_targets([scenes[k] for k in test_ids], colours))
        vision_summary = vision_pretrain(
            model, encoder, frames[: len(records)], targets, heldout, cfg, log=log
        )
    groups = eval_examples_from_benchmarks(data_dir, video_index) if held else {}
    small = {k: v[:eval_limit] for k, v in groups.items()}
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"model: {n_params} parameters; {len(examples)} examples from {len(records)} clips {kind_counts(examples)}"
    )

    def on_eval(step: int) -> dict:
        metrics = quick_eval(model, encoder, small, frames, perturb=False)
        log(f"step {step}: " + ", ".join(f"{k} {v['clean']:.0f}" for k, v in metrics.items()))
        if save_every and step % save_every == 0:
            # A whole model (tokenizer, processor, rrpo_family.json too): `load_model` and `--init` take it.
            model.save_pretrained(out / f"step_{step}")
            for f in out.iterdir():
                if f.is_file() and not (out / f"step_{step}" / f.name).exists():
                    shutil.copy2(f, out / f"step_{step}" / f.name)
        return metrics

    loss0 = initial_loss(
        model,
        encoder,
        [examples[i] for i in range(0, len(examples), max(1, len(examples) // 64))][:64],
        frames,
    )
    result = train(
        model, encoder, examples, frames, stages, cfg, on_eval=on_eval if groups else None, progress=progress
    )
    model.save_pretrained(out)
    summary: dict[str, Any] = {
        "data": {
            "dir": str(data_dir),
            "world": world,
            "pretrain_clips": len(records),
            "examples": len(examples),
            "examples_by_kind": kind_counts(examples),
        },
        "model": {"spec": asdict(spec), "parameters": n_params, "init": str(init) if init else None},
        "train": {
            **asdict(cfg),
            "initial_loss": loss0,
            "final_loss": float(np.mean(result["losses"][-50:])),
            "steps_done": result["steps_done"],
            "seconds": result["seconds"],
            "examples_per_s": result["examples_per_s"],
            "threads": torch.get_num_threads(),
        },
        "evals": result["evals"],
    }
    if groups:
        summary["heldout"] = quick_eval(model, encoder, groups, frames, perturb=True)
        log(format_table(summary["heldout"]))
    if pool_videos:
        summary["pool"] = expected_pairs(model, encoder, pool_examples(data_dir, video_index), frames)
        log(
            f"pool: {summary['pool']['pairs']} of {summary['pool']['questions']} questions wrong under a perturbation"
        )
    if vision_summary is not None:
        summary["vision_pretrain"] = vision_summary
    summary["losses"] = result["losses"]
    (out / "pretrain_metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def benchmark_eval(
    model_dir: str | Path,
    data_dir: str | Path,
    *,
    perturb: str | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 8,
) -> dict[str, dict[str, Any]]:
    """Score a model on a toy dataset's held-out files with the evaluation code: greedy replies from
    `vlm.generate`, scored by `BENCHMARKS["mvbench"]` (temporal/, prior_break/) and
    `BENCHMARKS["videohallucer"]` (hallucination/). With `perturb` (e.g. "mask+local_shuffle") every
    item's frames are perturbed with seed 0 and key = the item id first. Returns {set: score dict}."""
    from rrpo.eval.benchmarks import BENCHMARKS
    from rrpo.models import load_model
    from rrpo.video.perturb import perturb_frames

    data_dir = Path(data_dir)
    vlm = load_model(model_dir)
    sets = {
        "temporal": ("mvbench", data_dir / "benchmarks" / "temporal"),
        "prior_break": ("mvbench", data_dir / "benchmarks" / "prior_break"),
        "hallucination": ("videohallucer", data_dir / "benchmarks" / "hallucination"),
    }
    cache: dict[str, Any] = {}  # video -> Clip (frames with their timing)
    results = {}
    for name, (bench_name, path) in sets.items():
        bench = BENCHMARKS[bench_name]
        items = bench.load(path)
        inputs = []
        for item in items:
            if item.video not in cache:
                cache[item.video] = vlm.read_clip(data_dir / item.video)
            clip = cache[item.video]
            if perturb:
                clip = clip.with_frames(perturb_frames(clip.frames, perturb, seed=0, key=item.id)[0])
            inputs.append((clip, item.prompt))
        replies = vlm.generate(inputs, max_new_tokens=max_new_tokens, batch_size=batch_size)
        results[name] = bench.score(items, {i.id: r for i, r in zip(items, replies)})
    return results


def write_provenance(out_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write `out_dir/PROVENANCE.md`: the command, seeds, dataset parameters, model, optimisation,
    wall time, machine and the final quick-eval metrics of a `run_pretrain` summary."""
    out = Path(out_dir) / "PROVENANCE.md"
    tr, data, world = summary["train"], summary["data"], summary["data"]["world"]
    lines = [
        "# Toy base model: provenance",
        "",
        f"Command: `{summary.get('command', '?')}`",
        "",
        f"- dataset: seed {world['seed']}, splits {world['splits']}, curriculum {world.get('curriculum')}, "
        f"held-out prior strength {world.get('heldout_prior_strength')}, world config `{json.dumps(world['config'])}`",
        f"- examples: {data['examples']} single-turn examples from {data['pretrain_clips']} clips "
        f"{data['examples_by_kind']}",
        f"- model: tiny Qwen2-VL, {summary['model']['parameters']} parameters, spec "
        f"`{json.dumps(summary['model']['spec'])}`",
        f"- training: seed {tr['seed']}, {tr['steps_done']} of {tr['steps']} steps x batch {tr['batch_size']}, "
        f"AdamW lr {tr['lr']} ({tr['schedule']}, warm-up {tr['warmup']}), weight decay {tr['weight_decay']}, "
        f"first {tr['focus_steps']} steps on {tr['focus_kinds']} only, float32, {tr['threads']} torch thread(s)",
        f"- loss: {tr['initial_loss']:.3f} at step 0 -> {tr['final_loss']:.3f} (mean of the last 50 steps)",
        f"- time: {tr['seconds'] / 60:.1f} min training ({tr['examples_per_s']:.1f} examples/s), "
        f"{summary.get('wall_seconds', 0) / 60:.1f} min wall in all",
        f"- machine: `{json.dumps(summary.get('machine', {}))}`",
        "",
        "Held-out quick eval (teacher-forced decisive token = the greedy choice; perturbed: "
        "`mask+local_shuffle`, seed 0, key = item id):",
        "",
        format_table(summary.get("heldout", {})),
    ]
    if "pool" in summary:
        pool = summary["pool"]
        lines += [
            "",
            f"Self-alignment pool (train.jsonl, mcq + yes/no): {pool['pairs']} of {pool['questions']} questions "
            "answered wrong under at least one of 2 perturbation variants (= pairs before judge / differ "
            f"rejects); by kind {json.dumps(pool['by_kind'])}",
        ]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
