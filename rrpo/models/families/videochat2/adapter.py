"""The `videochat2` family: the VideoChat2 port (rrpo/models/families/videochat2/modeling.py) behind the adapter interface.

- Model directory: the stage-3 file (`videochat2_mistral_7b_stage3.pth` or `.safetensors`), and, for a
  self-contained copy (tiny models), the base LLM in `mistral/`, the Q-Former's BERT vocabulary in
  `bert/` and the attention heads in `videochat2_settings.json`; otherwise `base_llm`
  (`mistralai/Mistral-7B-Instruct-v0.2`) and `qformer_tokenizer` (`bert-base-uncased`) from the Hub.
- Training pairs use the official training layout: `INSTRUCTION [INST] <Video>` | 96 visual tokens |
  `</Video> [/INST] [INST] question [/INST]`, with position 0 a vector filled with the BOS id (the
  official training forward's quirk, reproduced) and the Q-Former fed the instruction; in the packed
  pass the video is 96 placeholder ids and the `inner` hook scatters the visual tokens, computed once per
  pair and reused by the reference pass.
- Generation uses the official inference layout (`get_model_output(system_llm=True)`): the system prompt,
  `[INST] <Video>` | visual | `</Video> [/INST] [INST] ` + system + question + ` [/INST]`, BOS only on the
  first segment, the Q-Former fed the system prompt.
- LoRA goes on Mistral's decoder linears only (`mistral_model.model.layers.N.*`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from rrpo.models.base import SplicedInner, VideoLMAdapter, as_clip, eval_mode
from rrpo.models.families.videochat2.configuration import (
    INSTRUCTION,
    STAGE3_FILE,
    SYSTEM,
    load_qformer_tokenizer,
    model_paths,
)
from rrpo.video.clip import Clip

VIDEO_TOKEN_INDEX = -200  # one per visual token in the packed prefix
BOS_FILL_INDEX = -201  # position 0 of a training prompt: a vector filled with the BOS id
VIDEOCHAT2_LORA_REGEX = (
    r"(?:.*\.)?mistral_model\.model\.layers\.\d+\."
    r"(?:self_attn\.(?:q_proj|k_proj|v_proj|o_proj)|mlp\.(?:gate_proj|up_proj|down_proj))"
)


class VideoChat2Processor:
    """The Mistral tokenizer and the Q-Former's BERT tokenizer (+ `[DEC]`), the latter loaded on first use
    (only when text must be tokenized for the Q-Former)."""

    def __init__(self, tokenizer: Any, qformer_tokenizer: Any):
        self.tokenizer = tokenizer
        self._qformer_source, self._qformer = qformer_tokenizer, None

    @property
    def qformer_tokenizer(self) -> Any:
        if self._qformer is None:
            self._qformer = load_qformer_tokenizer(self._qformer_source)
        return self._qformer


class VideoChat2Adapter(VideoLMAdapter):
    """VideoChat2 stage 3 (Mistral-7B) through the port (module doc)."""

    family = "videochat2"
    model_types = ("videochat2",)
    model_class = "VideoChat2"
    lora_target_modules = VIDEOCHAT2_LORA_REGEX
    ported = True
    default_image_size = 32

    @classmethod
    def recognises_directory(cls, path: Path) -> bool:
        """The stage-3 release has no config.json: its stage-3 file names the family."""
        return any((path / f"{STAGE3_FILE}{suffix}").is_file() for suffix in (".pth", ".safetensors"))

    @classmethod
    def build_tiny(cls, out: Path, **sizes: int) -> Path:
        from rrpo.models.families.videochat2.loading import build_tiny_videochat2

        return build_tiny_videochat2(out, **sizes)

    @property
    def inner(self) -> SplicedInner:
        return SplicedInner(self.hf_model.embed_packed, self.hf_model.mistral_model.model)

    @property
    def language_model(self) -> torch.nn.Module:
        return self.hf_model.mistral_model.model

    @property
    def lm_head(self) -> torch.nn.Linear:
        return self.hf_model.mistral_model.lm_head

    def prompt_text(self, prompt: str) -> str:
        return f"{INSTRUCTION} [INST] <Video></Video> [/INST] [INST] {prompt} [/INST]"

    @property
    def turn_end(self) -> str:
        return " " + self.tokenizer.eos_token  # the official answers end "... </s>": a "▁" before EOS

    def check_template(self) -> None:
        return None  # the official conversation layout, not the tokenizer's template

    def mm_keys(self) -> tuple[str, ...]:
        return ("pixel_values_videos", "video_frames", "qformer_input_ids", "qformer_attention_mask")

    def _qformer(self, text: str) -> Any:
        return self.processor.qformer_tokenizer(text, return_tensors="pt")

    def video_inputs(self, texts: list[str], clips: list[Clip], **kwargs: Any) -> dict[str, Any]:
        from rrpo.models.families.videochat2.modeling import videochat2_pixels

        if len(texts) != 1:
            raise ValueError("VideoChat2 encodes one (prompt, clip) at a time")
        before, sep, after = texts[0].partition("</Video>")
        if not sep:
            raise ValueError("VideoChat2 prompt without <Video></Video>")
        encode = lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        count = self.hf_model.num_visual_tokens
        ids = [BOS_FILL_INDEX, *encode(before), *[VIDEO_TOKEN_INDEX] * count, *encode(sep + after)]
        q = self._qformer(INSTRUCTION)
        frames = clips[0].frames
        return {
            "input_ids": torch.tensor([ids]),
            "pixel_values_videos": videochat2_pixels(frames),
            "video_frames": torch.tensor([len(frames)]),
            "qformer_input_ids": q["input_ids"],
            "qformer_attention_mask": q["attention_mask"],
        }

    @classmethod
    def load_hf_model(
        cls, model_dir, *, dtype, attn_implementation: str, base_llm=None, qformer_tokenizer=None
    ):  # noqa: ANN001, ANN206
        from rrpo.models.families.videochat2.loading import load_videochat2

        llm, _, settings = model_paths(model_dir, base_llm, qformer_tokenizer)
        model = load_videochat2(
            model_dir, llm, settings=settings, dtype=dtype, attn_implementation=attn_implementation
        )
        model.bos_token_id = int(model.mistral_model.config.bos_token_id or 1)
        return model

    @classmethod
    def load_processor(cls, model_dir, *, base_llm=None, qformer_tokenizer=None):  # noqa: ANN001, ANN206
        from transformers import AutoTokenizer

        llm, bert, _ = model_paths(model_dir, base_llm, qformer_tokenizer)
        return VideoChat2Processor(AutoTokenizer.from_pretrained(llm), bert)

    @torch.no_grad()
    def generate(
        self, items: list[tuple[Clip | np.ndarray, str]], *, max_new_tokens: int = 32, batch_size: int = 4
    ) -> list[str]:
        """Greedy answers through the official inference layout, one item at a time."""
        from rrpo.models.families.videochat2.modeling import videochat2_pixels

        out = []
        model = self.hf_model
        with eval_mode(self.model):
            for i, (frames, question) in enumerate(items):
                clip = as_clip(frames, where=f"item {i}")
                pixels = videochat2_pixels(clip.frames).unsqueeze(0).to(self.device, self.dtype)
                q = self._qformer(SYSTEM)
                visual = model.encode_video(
                    pixels, q["input_ids"].to(self.device), q["attention_mask"].to(self.device)
                )
                seg0 = f"{SYSTEM}[INST] <Video>"
                seg1 = f"</Video> [/INST] [INST] {SYSTEM}{question} [/INST]"
                ids0 = self.tokenizer(seg0, return_tensors="pt")["input_ids"].to(self.device)  # BOS here only
                ids1 = self.tokenizer(seg1, add_special_tokens=False, return_tensors="pt")["input_ids"].to(
                    self.device
                )
                embed = model.mistral_model.get_input_embeddings()
                embeds = torch.cat([embed(ids0), visual.to(embed.weight.dtype), embed(ids1)], dim=1)
                new = self.model_generate(embeds, max_new_tokens)
                out.append(self.tokenizer.decode(new[0], skip_special_tokens=True).strip())
        return out

    def model_generate(self, embeds: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Mistral's greedy `generate` from embeddings (through peft when an adapter is attached)."""
        lm = self.model.mistral_model if not self.is_peft else self.model.base_model.model.mistral_model
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return lm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.stop_token_ids,
        )
