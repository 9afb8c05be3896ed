"""The toy model: its architecture (`ModelSpec`), a tokenizer trained on the world's own words, and
`build_toy_model`, a random-weight tiny Qwen2-VL of the real transformers classes.

Why not `rrpo.models.build_tiny_model`: the toy model needs a tokenizer of the toy world's words (one
token per word), 8-px patches merged 4x4 on 64x64 frames and tied embeddings, and the committed
checkpoint's stage-1 init is this exact config built in this order; the helpers it shares with
`build_tiny_model` (special tokens, chat template, mrope sections, vision token ids) are reused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rrpo.errors import RRPOError

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
    from rrpo.toy.questions import (
        caption,
        clip_questions,
        describe,
        existence_pair,
        motion_pair,
        temporal_pairs,
    )
    from rrpo.toy.world import CAPTION_PROMPT, DESCRIBE_PROMPT, PALETTE, SHAPES, WorldConfig, sample_scene

    from .tasks import question_from_turn

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
    template (shared with rrpo.models.tiny_parts, so the adapter's prompt and turn-end logic apply)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from rrpo.models.tiny_parts import QWEN_SPECIALS, qwen_template

    tok = Tokenizer(models.BPE(unk_token=None))
    # The GPT-2 split keeps "(", the letter and ")" apart, so an option's letter is one token.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=qwen_template(),
    )
    fast.add_special_tokens(
        {"additional_special_tokens": [s for s in QWEN_SPECIALS if s not in ("<|im_end|>", "<|endoftext|>")]}
    )
    return fast


def build_toy_model(out_dir: str | Path, spec: ModelSpec | None = None, *, seed: int = 0) -> Path:
    """Build and save a random-weight tiny Qwen2-VL for the toy world (loadable with
    `rrpo.models.load_model(out_dir)`); returns `out_dir`."""
    import transformers as tf

    from rrpo.models.tiny_parts import FAMILY_FILE, mrope_section, qwen_ids, qwen_template

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
            "mrope_section": mrope_section(head_dim),
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
    cfg = tf.Qwen2VLConfig(text_config=text, vision_config=vision, **qwen_ids(tok))
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
        chat_template=qwen_template(),
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
