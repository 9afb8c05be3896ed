"""Tiny random-weight video LLMs of the *real* transformers classes, built fully offline.

`build_tiny_model(family, out_dir)` writes a directory that `from_pretrained` loads without network
access: the model (random weights, text hidden 64 and 2 layers by default), a byte-level BPE tokenizer
trained with the `tokenizers` library on a few built-in sentences and carrying the family's special
tokens, a chat template in the family's style, and the family's own processor / video processor built
from constructor arguments. Tests, the toy world and CI use these in place of the 7B checkpoints; every
code path (processor, rope index, vision tower, generation) is the one the real model runs.

Sizes that have to agree (seen in /work/shared/notes/offline-video-llms.md): the Qwen mrope sections sum
to head_dim / 2, the vision merger's output equals the text hidden size, and the config's image / video /
vision-start / vision-end ids come from the tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rrpo.errors import RRPOError

FAMILY_FILE = "rrpo_family.json"

# A few sentences for the BPE trainer: enough for common English words, digits and punctuation.
_CORPUS = [
    "A person walks into the kitchen and picks up a red cup from the table.",
    "The video shows a dog running across a green field while a child throws a ball.",
    "Question: What color is the car? Answer: The car is blue.",
    "Two people are talking near a window; one of them holds a black phone.",
    "How many birds are on the wire? There are three birds on the wire.",
    "The man opens the door, turns left, and sits on the brown sofa.",
    "Options: (A) yes (B) no (C) maybe (D) none. The correct option is (B).",
    "0 1 2 3 4 5 6 7 8 9 10 first second third before after then finally.",
    "She is cutting vegetables with a knife and then puts them in a pot.",
    "A white cat jumps onto the shelf and knocks over a small vase.",
]

_QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2-VL style template (system prompt, <|im_start|>role ... <|im_end|>). Qwen2/2.5-VL write a video as
# <|vision_start|><|video_pad|><|vision_end|> and the processor repeats the pad token; transformers 5.x's
# Qwen3-VL processor replaces the pad token by per-frame "<t seconds><|vision_start|>...<|vision_end|>"
# groups itself, so its template writes the bare pad token (wrapping it would nest vision_start tokens).
_QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}VIDEO_PLACEHOLDER"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# LLaVA-OneVision (Qwen2 text model): ChatML with <video> placeholders first.
_ONEVISION_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# LLaVA-NeXT-Video (Vicuna/Llama text model): "USER: <video>\n... ASSISTANT:"; turns close with </s>.
_NEXT_VIDEO_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% else %} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _qwen_template(family: str) -> str:
    pad = "<|video_pad|>" if family == "qwen3-vl" else "<|vision_start|><|video_pad|><|vision_end|>"
    return _QWEN_TEMPLATE.replace("VIDEO_PLACEHOLDER", pad)


def _train_tokenizer(
    specials: list[str], *, eos: str, pad: str, bos: str | None, unk: str | None, template: str
):
    """A byte-level BPE fast tokenizer (vocab ~400) with `specials` as added special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    extra = {"bos_token": bos} if bos else {}
    if unk:
        extra["unk_token"] = unk
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eos, pad_token=pad, chat_template=template, **extra
    )
    fast.add_special_tokens(
        {"additional_special_tokens": [s for s in specials if s not in (eos, pad, bos, unk)]}
    )
    return fast


def _text_kwargs(tokenizer, hidden_size: int, num_layers: int, heads: int, kv_heads: int) -> dict:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 4096,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }


def _mrope_section(head_dim: int) -> list[int]:
    """Three mrope sections (t, h, w) summing to head_dim / 2; like Qwen's [16, 24, 24] for head_dim 128,
    the spatial axes get the remainder (head_dim 16 -> [2, 3, 3])."""
    half = head_dim // 2
    base, extra = divmod(half, 3)
    return [base, base + (extra > 0), base + (extra > 1)]


def _qwen_ids(tokenizer) -> dict:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def _build_qwen(family: str, tok, text: dict, image_size: int, num_frames: int):
    """Config, model class and processor of one Qwen-VL generation."""
    import transformers as tf

    head_dim = text["hidden_size"] // text["num_attention_heads"]
    rope = {"rope_type": "default", "mrope_section": _mrope_section(head_dim), "rope_theta": 10000.0}
    vision_hidden = 32
    if family == "qwen3-vl":
        patch = 16
        cfg = tf.Qwen3VLConfig(
            text_config={
                **text,
                "head_dim": head_dim,
                "rope_parameters": {**rope, "mrope_interleaved": True},
            },
            vision_config={
                "depth": 2,
                "hidden_size": vision_hidden,
                "intermediate_size": vision_hidden * 2,
                "num_heads": 2,
                "patch_size": patch,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "out_hidden_size": text["hidden_size"],
                "num_position_embeddings": 64,
                "deepstack_visual_indexes": [0],
            },
            **_qwen_ids(tok),
        )
        model_cls, proc_cls, vproc_cls, iproc_cls = (
            tf.Qwen3VLForConditionalGeneration,
            tf.Qwen3VLProcessor,
            tf.Qwen3VLVideoProcessor,
            tf.Qwen2VLImageProcessor,
        )
    else:
        patch = 14
        vision = {
            "depth": 2,
            "hidden_size": vision_hidden,
            "num_heads": 2,
            "patch_size": patch,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        }
        if family == "qwen2-vl":
            # Qwen2-VL's vision `hidden_size` is the merger's output width (= text hidden size).
            vision.update(embed_dim=vision_hidden, hidden_size=text["hidden_size"], mlp_ratio=2)
            cfg_cls, model_cls, proc_cls = (
                tf.Qwen2VLConfig,
                tf.Qwen2VLForConditionalGeneration,
                tf.Qwen2VLProcessor,
            )
        else:
            vision.update(
                intermediate_size=vision_hidden * 2,
                out_hidden_size=text["hidden_size"],
                window_size=2 * patch * 2,
                fullatt_block_indexes=[1],
                tokens_per_second=2,
            )
            cfg_cls, model_cls, proc_cls = (
                tf.Qwen2_5_VLConfig,
                tf.Qwen2_5_VLForConditionalGeneration,
                tf.Qwen2_5_VLProcessor,
            )
        cfg = cfg_cls(text_config={**text, "rope_parameters": rope}, vision_config=vision, **_qwen_ids(tok))
        vproc_cls, iproc_cls = tf.Qwen2VLVideoProcessor, tf.Qwen2VLImageProcessor
    factor = patch * 2
    # Pixel limits per frame that keep `image_size` frames as they are (the processor rounds to `factor`).
    side = max(factor, round(image_size / factor) * factor)
    pixels = {"min_pixels": factor * factor, "max_pixels": side * side}
    vkw = dict(patch_size=patch, temporal_patch_size=2, merge_size=2, cap_pixels_per_frame=False, **pixels)
    if family == "qwen3-vl":
        # Qwen3-VL's limit covers all frames together; never let it shrink the frames we pass.
        vkw = dict(
            patch_size=patch,
            temporal_patch_size=2,
            merge_size=2,
            size={"shortest_edge": factor * factor, "longest_edge": side * side * max(num_frames, 2) * 4},
            do_sample_frames=False,
            cap_pixels_per_frame=False,
        )
    video_proc = vproc_cls(**vkw)
    image_proc = iproc_cls(patch_size=patch, temporal_patch_size=2, merge_size=2, **pixels)
    proc = proc_cls(
        image_processor=image_proc,
        tokenizer=tok,
        video_processor=video_proc,
        chat_template=_qwen_template(family),
    )
    return cfg, model_cls, proc


def _build_llava(family: str, tok, text: dict, image_size: int):
    import transformers as tf

    patch = 8 if image_size % 8 == 0 else 4
    if image_size % patch:
        raise RRPOError(f"--image-size {image_size} must be a multiple of {patch} for {family}")
    ids = tok.convert_tokens_to_ids
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch,
    }
    if family == "llava-onevision":
        cfg = tf.LlavaOnevisionConfig(
            vision_config={**vision, "model_type": "siglip_vision_model"},
            text_config={**text, "model_type": "qwen2"},
            image_token_index=ids("<image>"),
            video_token_index=ids("<video>"),
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            image_grid_pinpoints=[[image_size, image_size]],
        )
        num_image_tokens = (image_size // patch) ** 2
        video_proc = tf.LlavaOnevisionVideoProcessor(size={"height": image_size, "width": image_size})
        image_proc = tf.LlavaOnevisionImageProcessor(
            size={"height": image_size, "width": image_size}, image_grid_pinpoints=[[image_size, image_size]]
        )
        proc = tf.LlavaOnevisionProcessor(
            image_processor=image_proc,
            tokenizer=tok,
            video_processor=video_proc,
            num_image_tokens=num_image_tokens,
            vision_feature_select_strategy="full",
            chat_template=_ONEVISION_TEMPLATE,
        )
        return cfg, tf.LlavaOnevisionForConditionalGeneration, proc
    cfg = tf.LlavaNextVideoConfig(
        vision_config={**vision, "model_type": "clip_vision_model", "projection_dim": 32},
        text_config={**text, "model_type": "llama"},
        image_token_index=ids("<image>"),
        video_token_index=ids("<video>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        spatial_pool_stride=2,
        image_grid_pinpoints=[[image_size, image_size]],
    )
    video_proc = tf.LlavaNextVideoVideoProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    image_proc = tf.LlavaNextImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=[[image_size, image_size]],
    )
    proc = tf.LlavaNextVideoProcessor(
        video_processor=video_proc,
        image_processor=image_proc,
        tokenizer=tok,
        chat_template=_NEXT_VIDEO_TEMPLATE,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return cfg, tf.LlavaNextVideoForConditionalGeneration, proc


DEFAULT_IMAGE_SIZE = {
    "qwen2-vl": 56,
    "qwen2.5-vl": 56,
    "qwen3-vl": 64,
    "llava-onevision": 32,
    "llava-next-video": 32,
    "longvu": 32,
    "videochat2": 32,
}


def build_tiny_model(
    family: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    image_size: int | None = None,
    num_frames: int = 16,
) -> Path:
    """Build and save a tiny random-weight model of `family`; returns `out_dir`.

    `image_size` is the square frame side the saved processor keeps (default: the smallest size that gives
    a 2x2 merged grid for Qwen, 32 for LLaVA); it and `num_frames` are recorded in `rrpo_family.json` as
    the frame size / count `load_model` decodes at. Qwen2-VL with 16 frames of 56x56 gives 32 video tokens.
    """
    from rrpo.models import FAMILIES

    if family not in FAMILIES:
        raise RRPOError(f"unknown model family '{family}'; choose one of {', '.join(FAMILIES)}")
    if hidden_size % num_heads or (hidden_size // num_heads) % 2:
        raise RRPOError(f"--hidden-size {hidden_size} must split into {num_heads} heads of even size")
    image_size = image_size or DEFAULT_IMAGE_SIZE[family]
    if family == "longvu":  # a port: its own layout (checkpoint + towers), rrpo/models/longvu_loading.py
        from rrpo.models.longvu_loading import build_tiny_longvu

        return build_tiny_longvu(
            out_dir, seed=seed, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
            num_kv_heads=num_kv_heads, num_frames=num_frames, image_size=image_size,
        )  # fmt: skip
    if family == "videochat2":  # a port: the stage-3 layout + base LLM, rrpo/models/videochat2_loading.py
        from rrpo.models.videochat2_loading import build_tiny_videochat2

        return build_tiny_videochat2(
            out_dir, seed=seed, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
            num_kv_heads=num_kv_heads, num_frames=num_frames, image_size=image_size,
        )  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if family.startswith("qwen") or family == "llava-onevision":
        specials = _QWEN_SPECIALS + (["<image>", "<video>"] if family == "llava-onevision" else [])
        tok = _train_tokenizer(
            specials,
            eos="<|im_end|>",
            pad="<|endoftext|>",
            bos=None,
            unk=None,
            template=_ONEVISION_TEMPLATE if family == "llava-onevision" else _qwen_template(family),
        )
    else:
        tok = _train_tokenizer(
            ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>"],
            eos="</s>",
            pad="<pad>",
            bos="<s>",
            unk="<unk>",
            template=_NEXT_VIDEO_TEMPLATE,
        )
    text = _text_kwargs(tok, hidden_size, num_layers, num_heads, num_kv_heads)
    if family.startswith("qwen"):
        cfg, model_cls, proc = _build_qwen(family, tok, text, image_size, num_frames)
    else:
        cfg, model_cls, proc = _build_llava(family, tok, text, image_size)
    model = model_cls(cfg).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.do_sample = False
    model.save_pretrained(out)
    proc.save_pretrained(out)
    tok.save_pretrained(out)
    meta = {"family": family, "frame_size": [image_size, image_size], "num_frames": num_frames, "tiny": True}
    (out / FAMILY_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out
