"""Parts every tiny random-weight model builder shares: a byte-level BPE tokenizer trained offline on a few
sentences, chat templates in each family's style, small-config helpers and the `rrpo_family.json` hint.

A leaf module (it imports nothing of rrpo's), so every family module and the toy world can build on it.
Sizes that have to agree (seen in /work/shared/notes/offline-video-llms.md): the Qwen mrope sections sum
to head_dim / 2, the vision merger's output equals the text hidden size, and the config's image / video /
vision-start / vision-end ids come from the tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# A tiny model's hint file: family, the frame size and count `load_model` decodes at.
FAMILY_FILE = "rrpo_family.json"


def write_family_meta(out: Path, family: str, image_size: int, num_frames: int) -> None:
    """Write `rrpo_family.json` (the tiny model's family and the frame size / count to decode at)."""
    meta = {"family": family, "frame_size": [image_size, image_size], "num_frames": num_frames, "tiny": True}
    (Path(out) / FAMILY_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def save_tiny(
    model: Any, processor: Any, tokenizer: Any, out: Path, family: str, image_size: int, num_frames: int
) -> Path:
    """Save a tiny transformers model with greedy generation settings, its processor, tokenizer and hint."""
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.do_sample = False
    model.save_pretrained(out)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_family_meta(out, family, image_size, num_frames)
    return Path(out)


# A few sentences for the BPE trainer: enough for common English words, digits and punctuation.
CORPUS = [
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

QWEN_SPECIALS = [
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
QWEN_TEMPLATE = (
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
ONEVISION_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# LLaVA-NeXT-Video (Vicuna/Llama text model): "USER: <video>\n... ASSISTANT:"; turns close with </s>.
NEXT_VIDEO_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% else %} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def qwen_template(*, wrap_video: bool = True) -> str:
    """The Qwen-style template; `wrap_video=False` writes the bare video pad (Qwen3-VL, see above)."""
    pad = "<|vision_start|><|video_pad|><|vision_end|>" if wrap_video else "<|video_pad|>"
    return QWEN_TEMPLATE.replace("VIDEO_PLACEHOLDER", pad)


def train_tokenizer(
    specials: list[str],
    *,
    eos: str,
    pad: str,
    bos: str | None,
    unk: str | None,
    template: str,
    named: dict[str, str] | None = None,
) -> Any:
    """A byte-level BPE fast tokenizer (vocab ~400) with `specials` as added special tokens; `named` gives
    some of them a name the family's processor reads (`tokenizer.video_token`, InternVL's
    `start_image_token` ...), as a real checkpoint's `extra_special_tokens` does."""
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
    tok.train_from_iterator(CORPUS, trainer=trainer)
    extra = {"bos_token": bos} if bos else {}
    if unk:
        extra["unk_token"] = unk
    if named:
        extra["extra_special_tokens"] = dict(named)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eos, pad_token=pad, chat_template=template, **extra
    )
    fast.add_special_tokens(
        {"additional_special_tokens": [s for s in specials if s not in (eos, pad, bos, unk)]}
    )
    return fast


def text_kwargs(tokenizer, hidden_size: int, num_layers: int, heads: int, kv_heads: int) -> dict:
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


def mrope_section(head_dim: int) -> list[int]:
    """Three mrope sections (t, h, w) summing to head_dim / 2; like Qwen's [16, 24, 24] for head_dim 128,
    the spatial axes get the remainder (head_dim 16 -> [2, 3, 3])."""
    half = head_dim // 2
    base, extra = divmod(half, 3)
    return [base, base + (extra > 0), base + (extra > 1)]


def qwen_ids(tokenizer) -> dict:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def qwen_tokenizer(template: str, extra: tuple[str, ...] = (), named: dict[str, str] | None = None) -> Any:
    """The tiny Qwen-style tokenizer (ChatML specials and `extra`, EOS <|im_end|>, pad <|endoftext|>)."""
    return train_tokenizer(
        [*QWEN_SPECIALS, *extra],
        eos="<|im_end|>",
        pad="<|endoftext|>",
        bos=None,
        unk=None,
        template=template,
        named=named,
    )


def llama_tokenizer(template: str, extra: tuple[str, ...] = ("<image>", "<video>")) -> Any:
    """The tiny Llama-style tokenizer (<s> ... </s>, <unk>, <pad>) with `extra` special tokens."""
    return train_tokenizer(
        ["<unk>", "<s>", "</s>", "<pad>", *extra],
        eos="</s>",
        pad="<pad>",
        bos="<s>",
        unk="<unk>",
        template=template,
    )
