"""The `longvu` family: the LongVU port (rrpo/models/families/longvu/modeling.py) behind the adapter interface.

What differs from the transformers families:
- the prompt is the official ChatML conversation (`conv_qwen`: system "You are a helpful assistant.",
  `<image>` before the question), tokenized piecewise around the video as `tokenizer_image_token` does;
- in the packed pair pass the video is N placeholder ids (`IMAGE_TOKEN_INDEX`) in the prefix, N computed
  from the frame geometry (12 rows x (w + 1) per frame), and the `inner` hook replaces their embeddings
  with the visual tokens, computed once per pair and reused by the reference pass. Training therefore
  needs frames that fit the context at 144 tokens each (the official rules would compress otherwise,
  differently for the chosen and the rejected response): such a pair is skipped with the reason;
- generation uses the official path (the video spliced in by the model, frame selection and the token
  budget rules included), one item at a time.
- LoRA goes on the Qwen2 decoder's linear layers only (`model.layers.N.self_attn/mlp.*`), never on the
  connector (whose attention also has q/k/v projections).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from rrpo.models.base import SkipPair, SplicedInner, VideoLMAdapter, as_clip, eval_mode
from rrpo.models.families.longvu.modeling import IMAGE_TOKEN_INDEX
from rrpo.models.families.longvu.vision import unpad_grid
from rrpo.video.clip import Clip

LONGVU_LORA_REGEX = r"(?:.*\.)?model\.layers\.\d+\.(?:self_attn\.(?:q_proj|k_proj|v_proj|o_proj)|mlp\.(?:gate_proj|up_proj|down_proj))"
SYSTEM_PROMPT = "You are a helpful assistant."


class LongVUProcessor:
    """The tokenizer and the two towers' image processors (what `load_processor` returns)."""

    def __init__(self, tokenizer: Any, siglip: Any, dino: Any):
        self.tokenizer, self.siglip, self.dino = tokenizer, siglip, dino


def tokenize_with_video(tokenizer: Any, text: str, count: int) -> list[int]:
    """Ids of `text` with its one `<image>` replaced by `count` `IMAGE_TOKEN_INDEX` ids; the pieces
    around it are tokenized separately (the official `tokenizer_image_token`)."""
    before, sep, after = text.partition("<image>")
    if not sep:
        raise ValueError("LongVU prompt without an <image> placeholder")
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    return encode(before) + [IMAGE_TOKEN_INDEX] * count + encode(after)


def tokens_per_frame(size: tuple[int, int], side: int = 12) -> int:
    """Visual tokens of one frame of `size` (h, w) at 144 queries: unpadded rows x (columns + newline)."""
    grid = unpad_grid(torch.empty(1, side, side, 1), size)
    return grid.shape[1] * (grid.shape[2] + 1)


class LongVUAdapter(VideoLMAdapter):
    """LongVU (Vision-CAIR/LongVU_Qwen2_7B) through the port (module doc)."""

    family = "longvu"
    model_types = ("cambrian_qwen",)
    model_class = "LongVUForCausalLM"
    lora_target_modules = LONGVU_LORA_REGEX
    ported = True
    default_image_size = 32

    @classmethod
    def build_tiny(cls, out: Path, **sizes: int) -> Path:
        from rrpo.models.families.longvu.loading import build_tiny_longvu

        return build_tiny_longvu(out, **sizes)

    @property
    def inner(self) -> SplicedInner:
        return SplicedInner(self.hf_model.embed_with_video, self.hf_model.model)

    @property
    def language_model(self) -> torch.nn.Module:
        return self.hf_model.model

    def prompt_text(self, prompt: str) -> str:
        return (
            f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n<image>\n{prompt}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )

    @property
    def turn_end(self) -> str:
        return "<|im_end|>"

    def check_template(self) -> None:
        return None  # the prompt is the official conversation template, not the tokenizer's

    def mm_keys(self) -> tuple[str, ...]:
        return ("pixel_values_siglip", "pixel_values_dino", "video_frames", "video_sizes")

    def _pixels(self, frames: np.ndarray) -> list[torch.Tensor]:
        from rrpo.models.families.longvu.vision import longvu_pixels

        return longvu_pixels(frames, self.processor.siglip, self.processor.dino)

    def video_inputs(self, texts: list[str], clips: list[Clip], **kwargs: Any) -> dict[str, Any]:
        if len(texts) != 1:
            raise ValueError("LongVU encodes one (prompt, clip) at a time")
        clip = clips[0]
        size = tuple(clip.frames.shape[1:3])
        frames = len(clip.frames)
        count = frames * tokens_per_frame(size)
        ids = tokenize_with_video(self.tokenizer, texts[0], count)
        cfg = self.hf_model.config
        text_len = len(ids) - count + 1  # the official budgets count the placeholder
        budget = cfg.tokenizer_model_max_length - text_len - cfg.inference_max_length
        if frames >= max(1, budget // cfg.lowres_token**2) or frames >= max(1, budget // cfg.image_token_len):
            raise SkipPair(
                f"LongVU compresses {frames} frames at this prompt length (context {cfg.tokenizer_model_max_length}); "
                "train with fewer frames (the paper: 16)"
            )
        siglip, dino = self._pixels(clip.frames)
        return {
            "input_ids": torch.tensor([ids]),
            "pixel_values_siglip": siglip[0],
            "pixel_values_dino": dino[0],
            "video_frames": torch.tensor([frames]),
            "video_sizes": torch.tensor([list(size)]),
        }

    @classmethod
    def load_hf_model(cls, model_dir, *, dtype, attn_implementation: str, vision_towers=None):  # noqa: ANN001, ANN206
        from rrpo.models.families.longvu.loading import load_longvu

        return load_longvu(
            model_dir,
            vision_towers=default_towers(model_dir, vision_towers),
            dtype=dtype,
            attn_implementation=attn_implementation,
        )

    @classmethod
    def load_processor(cls, model_dir, *, vision_towers=None):  # noqa: ANN001, ANN206
        from transformers import AutoTokenizer

        from rrpo.models.families.longvu.loading import tower_dirs
        from rrpo.models.families.longvu.vision import load_tower_processors

        siglip_dir, dino_dir = tower_dirs(default_towers(model_dir, vision_towers))
        return LongVUProcessor(
            AutoTokenizer.from_pretrained(model_dir), *load_tower_processors(siglip_dir, dino_dir)
        )

    @torch.no_grad()
    def generate(
        self, items: list[tuple[Clip | np.ndarray, str]], *, max_new_tokens: int = 32, batch_size: int = 4
    ) -> list[str]:
        """Greedy answers through the official inference path, one item at a time (`batch_size` unused:
        each video has its own token budget)."""
        out = []
        with eval_mode(self.model):
            for i, (frames, prompt) in enumerate(items):
                clip = as_clip(frames, where=f"item {i}")
                ids = torch.tensor(
                    [tokenize_with_video(self.tokenizer, self.prompt_text(prompt), 1)], device=self.device
                )
                images = [p.to(self.device, self.dtype) for p in self._pixels(clip.frames)]
                new = self.model.generate(
                    input_ids=ids,
                    images=images,
                    image_sizes=[tuple(clip.frames.shape[1:3])],
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=self.pad_token_id,
                    eos_token_id=self.stop_token_ids,
                )
                out.append(self.tokenizer.decode(new[0], skip_special_tokens=True).strip())
        return out


def default_towers(model_dir: str | Path, vision_towers: str | Path | None) -> str | Path | None:
    """`vision_towers` if given; else the model directory itself when it holds `siglip/` and `dinov2/`
    (tiny models, or a full local copy); else None: the towers' Hub ids."""
    if vision_towers is not None:
        return vision_towers
    root = Path(model_dir)
    return root if (root / "siglip").is_dir() and (root / "dinov2").is_dir() else None
