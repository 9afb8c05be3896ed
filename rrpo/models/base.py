"""The adapter base class: what differs between video-LLM families, behind one small interface.

An adapter instance *is* the loaded video LM (`VideoLM = VideoLMAdapter`): it holds the HF model (peft-
wrapped when a LoRA adapter is loaded), processor and tokenizer, and knows the family's quirks:
which processor arguments a video needs, how positions are computed (1-D for LLaVA, 3-axis mrope for
Qwen), which modules LoRA may target, and how to reach the language model and LM head.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch

from rrpo.errors import RRPOError
from rrpo.video.clip import Clip

# The language model's linear layers, by module path. A bare `q_proj` would also hit SigLIP / CLIP
# vision towers, so the path must go through `language_model`.
LM_LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_TARGET_REGEX = r"(?:.*\.)?language_model\.(?:.*\.)?(?:" + "|".join(LM_LINEAR_NAMES) + r")"


class SkipPair(RRPOError):
    """A preference pair that cannot be encoded within `max_length` (the reason says why)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class EncodedPair:
    """One tokenised preference pair sharing a prefix (chat template + video + prompt + generation prompt).

    `prefix_ids` [P], `chosen_ids` [C], `rejected_ids` [R] are 1-D long tensors; the response ids include
    the end-of-turn token(s). `*_span_ids` ([C], [R]) give each response token's span id (0 outside the
    differing concepts). `mm` holds the processor's video tensors for this one video (e.g.
    `pixel_values_videos`, `video_grid_thw`, `second_per_grid_ts`) and, for Qwen, the prefix's
    `mm_token_type_ids` [P]. `truncated` is True when a response was cut to fit `max_length`.
    """

    prefix_ids: torch.Tensor
    chosen_ids: torch.Tensor
    rejected_ids: torch.Tensor
    chosen_span_ids: torch.Tensor
    rejected_span_ids: torch.Tensor
    mm: dict[str, torch.Tensor] = field(default_factory=dict)
    truncated: bool = False

    @property
    def prefix_length(self) -> int:
        return int(self.prefix_ids.numel())


class VideoLMAdapter:
    """Base adapter. Subclasses set the class attributes and override the hooks their family needs.

    Class attributes:
        family: the CLI name ("qwen2-vl", ...).
        model_types: `config.model_type` values that map to this family.
        model_class: name of the transformers class (`transformers.<name>`), loaded with `from_pretrained`.
        trust_remote_code: load model and processor with the checkpoint's own code (LongVU, VideoChat2);
            such a family overrides the three structure hooks `inner`, `language_model` and `lm_head` for its
            custom class (the packed pair forward reaches the model only through them).
        default_frame_size: a fixed (h, w) frames are resized to when neither the caller nor
            `rrpo_family.json` says otherwise; None (every real family) keeps the native aspect ratio and
            lets the checkpoint's processor size the frames, as its authors' pipeline does.
        mrope: True for the Qwen families (3-axis positions from the model's rope index).
    """

    family: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    model_class: ClassVar[str] = ""
    trust_remote_code: ClassVar[bool] = False
    default_frame_size: ClassVar[tuple[int, int] | None] = None
    mrope: ClassVar[bool] = False
    # Which of the model's encoder outputs carries the video (`mm_encoder_outputs[...]`, `<name>_outputs`):
    # "image" where frames enter as images (InternVL).
    encoder_modality: ClassVar[str] = "video"
    lora_target_modules: ClassVar[str] = LORA_TARGET_REGEX
    # A port on transformers components (no transformers class of its own, e.g. LongVU): loaded by the
    # family's own code, not by transformers' Auto classes.
    ported: ClassVar[bool] = False
    # Tests and tiny models: the folders of shared/fixtures/real_checkpoints this family stands for, how
    # `rrpo.models.tiny.shrink_checkpoint` shrinks their vision tower (config fields), and the square
    # frame side of `rrpo tiny-model` by default.
    real_checkpoints: ClassVar[tuple[str, ...]] = ()
    shrink_vision: ClassVar[dict[str, Any]] = {}
    default_image_size: ClassVar[int] = 32

    def __init__(
        self,
        model,
        processor,
        *,
        num_frames: int = 16,
        frame_size: tuple[int, int] | None = None,
        fps: float | None = None,
        max_frames: int = 768,
        max_pixels: int | None = None,
    ):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.num_frames = int(num_frames)
        self.frame_size = tuple(frame_size) if frame_size else self.default_frame_size
        self.fps = fps
        self.max_frames = int(max_frames)
        self.max_pixels = max_pixels
        self.source: str | None = None  # where the model was loaded from (`load_model` sets it)
        self.packed_attention = "mask"  # the packed pair pass's attention ("shared-prefix": load_model)
        self._turn_end: str | None = None
        self.check_template()

    # ----- model structure -------------------------------------------------------------------------
    @property
    def hf_model(self):
        """The transformers model (LoRA layers injected in place when wrapped by peft)."""
        return unwrap_peft(self.model)

    # The three structure hooks a remote-code or ported family overrides. `pair_forward` calls `inner`
    # with input_ids, the family's video tensors, a 4D float attention_mask, position_ids and
    # use_cache=False, and reads `.last_hidden_state`; it scores with `lm_head.weight`; LoRA and the
    # frozen-vision check go by `language_model`'s parameter names.
    @property
    def inner(self):
        """The multimodal base model (`*Model`) below the LM head: vision tower + projector + LM."""
        return self.hf_model.model

    @property
    def language_model(self) -> torch.nn.Module:
        return self.inner.language_model

    @property
    def lm_head(self) -> torch.nn.Linear:
        return self.hf_model.lm_head

    @property
    def is_peft(self) -> bool:
        return is_peft_model(self.model)

    # ----- text ------------------------------------------------------------------------------------
    def prompt_text(self, prompt: str) -> str:
        """The chat-templated prefix text: user turn with one video and `prompt`, then the generation prompt."""
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @property
    def turn_end(self) -> str:
        """Text the chat template closes an assistant turn with, up to and including the EOS token.

        Derived from the template itself (render an assistant turn and take what follows its content),
        so e.g. Qwen gives "<|im_end|>"; falls back to the tokenizer's EOS token.
        """
        if self._turn_end is None:
            eos = self.tokenizer.eos_token or ""
            probe = self._template_probe()
            suffix = probe[1][probe[1].rindex(_SENTINEL) + len(_SENTINEL) :] if probe else ""
            if eos and eos in suffix:
                self._turn_end = suffix[: suffix.index(eos) + len(eos)]
            else:
                self._turn_end = eos
        return self._turn_end

    def check_template(self) -> None:
        """Refuse a chat template whose assistant turn rrpo would encode wrongly (reasoning checkpoints).

        rrpo's targets are the response followed by `turn_end`, right after the generation prompt. A
        "Thinking" template opens a `<think>` block in the generation prompt and renders a finished
        assistant turn as `<think>\n\n</think>\n\n` + content; training on such a model would need
        that block in every target and every judged answer, so it is refused instead of silently
        producing malformed targets.
        """
        probe = self._template_probe()
        if probe is None:
            return  # no usable template: the tokenizer's EOS fallback applies (tiny test models)
        gen, full = probe
        between = full[len(gen) : full.find(_SENTINEL)] if full.startswith(gen) else None
        if "<think>" in gen or (between is not None and between.strip()):
            raise RRPOError(
                f"{self.family}: this checkpoint's chat template is a reasoning ('Thinking') template: its "
                f"generation prompt ends {gen[-20:]!r} and an assistant turn starts {between!r}. rrpo trains "
                "and judges plain answers; use the Instruct checkpoint (e.g. Qwen/Qwen3-VL-8B-Instruct)"
            )

    def _template_probe(self) -> tuple[str, str] | None:
        """The template's text for a one-question user turn with the generation prompt, and for the
        same turn answered by `_SENTINEL`; None when the template cannot render them."""
        user = {"role": "user", "content": [{"type": "text", "text": "q"}]}
        answer = {"role": "assistant", "content": [{"type": "text", "text": _SENTINEL}]}
        try:
            gen = self.processor.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
            full = self.processor.apply_chat_template([user, answer], tokenize=False)
        except (ValueError, TypeError, AttributeError):
            return None
        return (gen, full) if _SENTINEL in full else None

    # ----- video -----------------------------------------------------------------------------------
    def read_clip(self, path, *, start_sec: float | None = None, end_sec: float | None = None) -> Clip:
        """Decode `path` the way this model is fed: `num_frames` uniform frames (or `fps` up to
        `max_frames`), native aspect ratio unless `frame_size` is set, with their real timestamps."""
        from rrpo.video.io import decode_clip

        return decode_clip(
            path,
            self.num_frames,
            fps=self.fps,
            max_frames=self.max_frames,
            size=self.frame_size,
            max_pixels=DECODE_MAX_PIXELS,
            start_sec=start_sec,
            end_sec=end_sec,
        )

    def read_frames(
        self, path, *, start_sec: float | None = None, end_sec: float | None = None
    ) -> np.ndarray:
        """The frames of `read_clip` only: uint8 [T, h, w, 3]."""
        return self.read_clip(path, start_sec=start_sec, end_sec=end_sec).frames

    def processor_video_kwargs(self, clips: list[Clip]) -> dict[str, Any]:
        """Extra keyword arguments for `processor(text=..., videos=frames, ...)` (family quirks, timing)."""
        return {}

    def video_inputs(self, texts: list[str], clips: list[Clip], **kwargs: Any) -> dict[str, Any]:
        """The processor's outputs for prompt texts and their clips (one video per text). The video
        tensors of the last clips seen are reused (`rrpo.models.video_reuse`): questions asked about one
        clip in a row pay for its video processing once."""
        from rrpo.models.video_reuse import ReusingVideoProcessor, reusing_video_tensors

        if getattr(self, "_video_reuser", None) is None and hasattr(self.processor, "video_processor"):
            # Two clips: a 7B model's 64-frame clip is hundreds of MB of pixels.
            self._video_reuser = ReusingVideoProcessor(self.processor.video_processor, keep=2)
        with reusing_video_tensors(self.processor, getattr(self, "_video_reuser", None)):
            return self.processor(
                text=texts,
                videos=[c.frames for c in clips],
                return_tensors="pt",
                **self.processor_video_kwargs(clips),
                **kwargs,
            )

    @property
    def video_feature_token(self) -> str:
        """The prompt token that stands for one video feature (`rrpo inspect` counts and summarises it)."""
        return getattr(self.processor, "video_token", None) or "<video>"

    def mm_keys(self) -> tuple[str, ...]:
        """Processor outputs that belong to the video (kept in `EncodedPair.mm`)."""
        return ("pixel_values_videos",)

    def collate_mm(self, mms: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Concatenate per-pair video tensors along dim 0 (the layout every supported family expects)."""
        out: dict[str, torch.Tensor] = {}
        for key in self.mm_keys():
            if key in mms[0]:
                out[key] = torch.cat([m[key] for m in mms], dim=0)
        return out

    # ----- positions -------------------------------------------------------------------------------
    def rope_positions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, mm: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Position ids [A, B, L] (A = 1, or 3 for mrope) of right-padded rows: `input_ids` [B, L],
        `attention_mask` [B, L] (1 on real tokens), `mm` the batch's video tensors (and
        `mm_token_type_ids` [B, L] where the family has them), all on one device; padding gets 0.
        Default: 0, 1, 2, ... per row. An mrope family overrides this with the model's rope index."""
        mask = attention_mask.long()
        return ((mask.cumsum(-1) - 1).clamp(min=0) * mask).unsqueeze(0)

    def prefix_positions(
        self, prefix_ids: torch.Tensor, mm: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, int]:
        """Position ids of one prefix, shape [A, P], and the position of the next text token (where
        both responses start), from `rope_positions` of the prefix plus one text token: that asks the
        model's own rule where text after the video continues (transformers' rule, not max + 1)."""
        ids = torch.cat([prefix_ids, prefix_ids.new_zeros(1)]).unsqueeze(0)
        row_mm = dict(mm)
        if "mm_token_type_ids" in mm:
            types = mm["mm_token_type_ids"].to(prefix_ids.device)
            row_mm["mm_token_type_ids"] = torch.cat([types, types.new_zeros(1)]).unsqueeze(0)
        pos = self.rope_positions(ids, torch.ones_like(ids), row_mm)[:, 0]  # [A, P + 1]
        start = pos[:, -1]
        if not bool((start == start[0]).all()):  # text positions are equal on all axes
            raise RuntimeError(f"unexpected rope index for text after the video: {start.tolist()}")
        return pos[:, :-1], int(start[0])

    def model_mm_kwargs(self, batch_mm: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Keyword arguments of the multimodal base model's forward for a batch's video tensors."""
        return dict(batch_mm)

    # ----- loading ---------------------------------------------------------------------------------
    @classmethod
    def load_hf_model(cls, model_dir, *, dtype, attn_implementation: str):
        import transformers

        klass = getattr(transformers, cls.model_class)
        return klass.from_pretrained(
            model_dir,
            dtype=dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=cls.trust_remote_code,
        )

    @classmethod
    def load_processor(cls, model_dir):
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(model_dir, trust_remote_code=cls.trust_remote_code)

    @classmethod
    def recognises_directory(cls, path: Path) -> bool:
        """Whether a directory without config.json is this family's checkpoint (a release layout of its
        own, e.g. VideoChat2's stage-3 file)."""
        return False

    @classmethod
    def shrink_config(cls, config: Any) -> None:
        """Anything else `rrpo.models.tiny.shrink_checkpoint` must change in a real config (in place) after
        the text model and `shrink_vision`, so that the shrunk sizes agree."""

    # ----- tiny test model (`rrpo tiny-model`; rrpo.models.tiny) -------------------------------------
    @classmethod
    def build_tiny(
        cls,
        out: Path,
        *,
        seed: int,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        num_kv_heads: int,
        image_size: int,
        num_frames: int,
    ) -> Path:
        """Write a tiny random-weight model of this family's real class to `out`, loadable offline: a
        tokenizer trained here (`tiny_tokenizer`), `tiny_config` and `tiny_processor`. A port overrides
        this whole method (its own layout)."""
        import transformers

        from rrpo.models.tiny_parts import save_tiny, text_kwargs

        torch.manual_seed(seed)
        tok = cls.tiny_tokenizer()
        text = text_kwargs(tok, hidden_size, num_layers, num_heads, num_kv_heads)
        config = cls.tiny_config(tok, text, image_size, num_frames)
        model = getattr(transformers, cls.model_class)(config).eval()
        processor = cls.tiny_processor(tok, image_size, num_frames)
        return save_tiny(model, processor, tok, out, cls.family, image_size, num_frames)

    @classmethod
    def tiny_tokenizer(cls) -> Any:
        """The tiny model's tokenizer, with the family's special tokens and chat template."""
        raise NotImplementedError(f"{cls.family}: no tiny model")

    @classmethod
    def tiny_config(cls, tokenizer: Any, text: dict[str, Any], image_size: int, num_frames: int) -> Any:
        """The tiny model's config; `text` holds the text model's sizes and special ids."""
        raise NotImplementedError(f"{cls.family}: no tiny model")

    @classmethod
    def tiny_processor(cls, tokenizer: Any, image_size: int, num_frames: int) -> Any:
        """The tiny model's processor, keeping `image_size` x `image_size` frames."""
        raise NotImplementedError(f"{cls.family}: no tiny model")

    # ----- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, items: list[tuple[Clip | np.ndarray, str]], *, max_new_tokens: int = 32, batch_size: int = 4
    ) -> list[str]:
        """Greedy responses for (clip, user prompt) items, batched with left padding.

        A clip is a `rrpo.video.Clip` (frames with their timing) or bare frames uint8 [T, H, W, 3]
        (then taken as `DEFAULT_SAMPLED_FPS` samples). Generation stops at every stop id of the checkpoint
        (`stop_token_ids`). Returns the decoded new text of each item without special tokens, in order.
        """
        out: list[str] = []
        tok = self.tokenizer
        old_side = tok.padding_side
        tok.padding_side = "left"
        try:
            with eval_mode(self.model):
                for start in range(0, len(items), batch_size):
                    chunk = items[start : start + batch_size]
                    clips = [as_clip(f, where=f"item {start + i}") for i, (f, _) in enumerate(chunk)]
                    texts = [self.prompt_text(p) for _, p in chunk]
                    inputs = self.video_inputs(texts, clips, padding=True)
                    inputs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
                    for key in [k for k in inputs if k.startswith("pixel_values")]:
                        inputs[key] = inputs[key].to(
                            self.dtype
                        )  # every family's pixels, in the weights' dtype
                    gen = self.model.generate(
                        **inputs,
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        num_beams=1,
                        pad_token_id=self.pad_token_id,
                        eos_token_id=self.stop_token_ids,
                    )
                    new = gen[:, inputs["input_ids"].shape[1] :]
                    out.extend(s.strip() for s in tok.batch_decode(new, skip_special_tokens=True))
        finally:
            tok.padding_side = old_side
        return out

    @property
    def stop_token_ids(self) -> list[int]:
        """Ids that end a generated turn: every eos id of the checkpoint's `generation_config.json`, then
        the tokenizer's EOS and the template's end-of-turn token (e.g. Qwen [151645, 151643])."""
        ids: list[int] = []
        gen_eos = getattr(getattr(self.hf_model, "generation_config", None), "eos_token_id", None)
        for i in [*(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
        for i in self.tokenizer.convert_tokens_to_ids(self.turn_end_token_ids_str()):
            if i is not None and i not in ids:
                ids.append(int(i))
        return ids

    @property
    def pad_token_id(self) -> int:
        """The checkpoint's pad id (`generation_config.json`, else the tokenizer's, else the first stop id)."""
        pad = getattr(getattr(self.hf_model, "generation_config", None), "pad_token_id", None)
        if pad is None:
            pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else self.stop_token_ids[0]

    def turn_end_token_ids_str(self) -> list[str]:
        """Tokens that end a generated turn: the EOS token (and the template's closing token if special)."""
        toks = [self.tokenizer.eos_token]
        for t in self.tokenizer.tokenize(self.turn_end):
            if t in self.tokenizer.all_special_tokens and t not in toks:
                toks.append(t)
        return [t for t in toks if t]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype


VideoLM = VideoLMAdapter

# Stands for an answer when the chat template is rendered to find where an assistant turn starts and ends.
_SENTINEL = "RRPOSENTINEL"

# Bare frame arrays carry no timing; they are taken as samples 1/2 s apart (Qwen's own pipeline,
# qwen-vl-utils, samples at 2 fps). Every rrpo path passes a `Clip` with the real timing instead.
DEFAULT_SAMPLED_FPS = 2.0

# Decoding downscales (aspect ratio kept) frames larger than this, for speed only: every family's
# processor then resizes to far fewer pixels itself (Qwen2.5-VL at most 768 x 28 x 28 per frame).
DECODE_MAX_PIXELS = 1920 * 1080


def as_clip(frames: Clip | np.ndarray, *, where: str = "frames") -> Clip:
    """A `Clip` as it is, or validated bare frames as a clip `DEFAULT_SAMPLED_FPS` samples apart."""
    if isinstance(frames, Clip):
        check_frames(frames.frames, where=where)
        return frames
    return Clip.uniform(check_frames(frames, where=where), DEFAULT_SAMPLED_FPS)


def check_frames(frames: np.ndarray, *, where: str = "frames") -> np.ndarray:
    """Validate uint8 [T, H, W, 3] frames (as `rrpo.video.read_frames` returns them)."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise RRPOError(f"{where}: frames must be uint8 [T, H, W, 3], got {arr.dtype} {tuple(arr.shape)}")
    return arr


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """`model` in eval mode for the duration, then every submodule back in the mode it had: a blanket
    `train(was_training)` would switch on the dropout of frozen parts (a vision tower, a Q-Former) that were
    in eval mode under a model in training mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def is_peft_model(model) -> bool:
    """A peft model (accelerate's check: also sees through DDP / DeepSpeed / compile wrappers)."""
    from accelerate.utils import is_peft_model as _accelerate_is_peft_model

    return _accelerate_is_peft_model(model)


def unwrap_peft(model):
    """The transformers model under a peft wrapper (LoRA layers stay injected in it)."""
    return model.get_base_model() if is_peft_model(model) else model


class SplicedInner:
    """`pair_forward`'s `inner` for a ported family whose video enters the prompt as placeholder ids:
    `embed(input_ids, video_tokens=None, **video)` returns (inputs_embeds, video_tokens) with the visual
    tokens scattered in, `decoder` is the language model run on embeddings. The reference pass hands
    back the policy's tokens (`mm_encoder_outputs`), so a video is encoded once per pair."""

    def __init__(self, embed: Any, decoder: Any):
        self.embed, self.decoder = embed, decoder

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        use_cache: bool = False,
        mm_encoder_outputs: dict | None = None,
        **video: torch.Tensor,
    ) -> Any:
        reuse = mm_encoder_outputs["video"] if mm_encoder_outputs is not None else None
        embeds, visual = self.embed(input_ids, video_tokens=reuse, **video)
        out = self.decoder(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
        )
        return SimpleNamespace(last_hidden_state=out.last_hidden_state, video_outputs=visual)


def rebuild_meta_buffers(model: Any) -> None:
    """Non-persistent buffers (not in any checkpoint) of a model built on the meta device: rotary
    frequencies are rebuilt from the module's config, position ids are arange."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if any(b.is_meta for b in child.buffers(recurse=False)) and hasattr(child, "inv_freq"):
                setattr(parent, child_name, type(child)(child.config))
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf.is_meta:
                if name != "position_ids":
                    raise RRPOError(
                        f"port: buffer {name} of {type(module).__name__} left uninitialised (not in the checkpoint)"
                    )
                module.register_buffer(
                    name, torch.arange(buf.shape[-1]).expand(buf.shape).clone(), persistent=False
                )


def is_language_param(name: str) -> bool:
    """Whether a parameter name belongs to the language model or LM head (not vision tower / projector)."""
    return "language_model" in name or "lm_head" in name


def lora_targets_ok(model, pattern: str = LORA_TARGET_REGEX) -> list[str]:
    """Module names the LoRA regex matches (for checks: all must be language-model linear layers)."""
    rx = re.compile(pattern)
    return [n for n, _ in unwrap_peft(model).named_modules() if rx.fullmatch(n)]
