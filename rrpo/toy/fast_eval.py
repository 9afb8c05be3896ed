"""Fast, faithful scoring for the toy demo: every clip decoded and put through the processor once, every
answer read from one teacher-forced pass.

`rrpo eval` answers each question by greedy generation (the benchmark's own protocol, used by
`rrpo demo --official`). For a 1M-parameter model that is dominated by work that does not depend on
the model being scored: decoding the clip (about 25 ms) and the processor (about 15 ms) per question.
`ToyScorer` does that once per clip (`ClipCache`: the processor's own video tensors) and once per
prompt (its token ids), for every model the demo scores, and reads

- multiple choice and yes/no: the deciding token (the option letter after "(", or "Yes"/"No") as the
  argmax of one teacher-forced pass: the token greedy generation picks there once it has written the
  same tokens before it. The reply ("(B)", "Yes") is scored by the benchmark's official rule;
- descriptions: greedy generation from the cached tensors (the same call `VideoLMAdapter.generate` makes);
- deviation: per-token KL(base || aligned) of a response, teacher-forced, the adapter switched off for
  the base (`token_logps_and_kl`, float32), as `rrpo.eval.deviation` does one example at a time.

tests/test_toy_fast_eval.py checks each against the slow path on the same items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

IGNORE = -100


@dataclass(frozen=True)
class Query:
    """One model input: a clip (video path under the root), the user prompt, and for teacher forcing
    the response (`answer`: "(B) up", "Yes", a description). `kind` is the EvalItem's ('mcq',
    'yes_no') or 'open'."""

    id: str
    video: str
    prompt: str
    answer: str = ""
    kind: str = "open"


def item_queries(items: Sequence[Any]) -> list[Query]:
    """Queries of benchmark items (`rrpo.eval.benchmarks.EvalItem`), answered in the format the toy is
    trained on: "(B) <option>" for multiple choice, "Yes" / "No" for yes/no."""
    out = []
    for it in items:
        if it.kind == "mcq":
            answer = f"({it.answer}) {it.options[ord(it.answer) - 65]}"
        else:
            answer = it.answer.capitalize()
        out.append(Query(it.id, it.video, it.prompt, answer, it.kind))
    return out


class ClipCache:
    """The processor's video tensors of each clip and the token ids of each prompt, each computed once.

    A clip's tensors are what `vlm.video_inputs` returns for it (its `mm_keys`); a prompt's ids (and
    `mm_token_type_ids`) come from the processor call on the first clip it is asked with, keyed by that
    clip's video grid, since the number of video tokens depends on the grid and nothing else."""

    def __init__(self, vlm: Any, video_root: str | Path):
        self.vlm = vlm
        self.root = Path(video_root)
        self._clips: dict[str, Any] = {}
        self._video: dict[str, dict[str, torch.Tensor]] = {}
        self._prefix: dict[tuple[str, tuple], tuple[list[int], list[int]]] = {}
        self._features: dict[str, torch.Tensor] = {}
        self.decoded = 0  # clips decoded (each once)

    def video(self, video: str) -> dict[str, torch.Tensor]:
        """The clip's video tensors (`pixel_values_videos`, `video_grid_thw`, ...)."""
        if video not in self._video:
            self._clips[video] = clip = self.vlm.read_clip(self.root / video)
            self.decoded += 1
            out = self.vlm.video_inputs([self.vlm.prompt_text("")], [clip])
            self._video[video] = {k: out[k] for k in self.vlm.mm_keys() if k in out}
        return self._video[video]

    @torch.no_grad()
    def features(self, video: str) -> torch.Tensor:
        """The base vision tower's output for the clip's video tokens [n, hidden] (computed once; every
        model whose adapter leaves the vision tower alone shares it)."""
        if video not in self._features:
            mm = self.video(video)
            dev = self.vlm.device
            out = self.vlm.inner.get_video_features(
                mm["pixel_values_videos"].to(dev, self.vlm.dtype),
                mm["video_grid_thw"].to(dev),
                return_dict=True,
            )
            self._features[video] = out.pooler_output[0]
        return self._features[video]

    def prefix(self, video: str, prompt: str) -> tuple[list[int], list[int]]:
        """(input ids, mm token types) of the templated user turn with the video and the generation prompt."""
        grid = self.video(video).get("video_grid_thw")
        key = (prompt, tuple(grid.flatten().tolist()) if grid is not None else ())
        if key not in self._prefix:
            out = self.vlm.video_inputs([self.vlm.prompt_text(prompt)], [self._clips[video]])
            self._prefix[key] = _ids_and_types(out)
        return self._prefix[key]


def _ids_and_types(out: Any) -> tuple[list[int], list[int]]:
    ids = out["input_ids"][0].tolist()
    types = out["mm_token_type_ids"][0].tolist() if "mm_token_type_ids" in out else [0] * len(ids)
    return ids, types


class ToyScorer:
    """Scores queries with one model (`vlm`, an rrpo adapter, LoRA or not) from a shared `ClipCache`."""

    def __init__(self, vlm: Any, cache: ClipCache, batch_size: int = 64):
        from rrpo.models.base import is_language_param

        self.vlm, self.cache, self.batch_size = vlm, cache, batch_size
        self.tok = vlm.tokenizer
        # The demo's adapters are LoRA on the language model: every model scored shares the base's video
        # features, computed once per clip. An adapter inside the vision tower would not.
        outside = [n for n, _ in vlm.hf_model.named_modules() if "lora_" in n and not is_language_param(n)]
        self.reuse_features = not outside

    def _batch(self, queries: Sequence[Query], *, with_answer: bool, left_pad: bool = False):
        rows, types, starts = [], [], []
        for q in queries:
            ids, tt = self.cache.prefix(q.video, q.prompt)
            answer = self.answer_ids(q.answer) if with_answer else []
            rows.append(ids + answer)
            types.append(tt + [0] * len(answer))
            starts.append(len(ids))
        length = max(map(len, rows))
        pad = self.vlm.pad_token_id
        ids = torch.full((len(rows), length), pad, dtype=torch.long)
        tts = torch.zeros((len(rows), length), dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        offsets = []
        for i, (r, t) in enumerate(zip(rows, types)):
            off = length - len(r) if left_pad else 0
            ids[i, off : off + len(r)] = torch.tensor(r)
            tts[i, off : off + len(t)] = torch.tensor(t)
            mask[i, off : off + len(r)] = 1
            offsets.append(off)
        mm = self.vlm.collate_mm([self.cache.video(q.video) for q in queries])
        inputs = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": tts, **mm}
        dev = self.vlm.device
        inputs = {k: v.to(dev) for k, v in inputs.items()}
        if "pixel_values_videos" in inputs:
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.vlm.dtype)
        return inputs, [s + o for s, o in zip(starts, offsets)]

    def answer_ids(self, answer: str) -> list[int]:
        """The response's tokens and the end of turn (what generation writes and stops at)."""
        return self.tok(answer + self.vlm.turn_end, add_special_tokens=False)["input_ids"]

    def _logits(
        self, inputs: dict[str, torch.Tensor], queries: Sequence[Query], positions: list[int] | None = None
    ) -> torch.Tensor:
        """Logits [B, L, V], or [B, V] at one position per row; the video tokens' embeddings from the
        feature cache when it may be used (transformers' `mm_encoder_outputs`: the model then skips its
        vision tower)."""
        if not self.reuse_features or "video_grid_thw" not in inputs:
            logits = self.vlm.model(**inputs, use_cache=False).logits
            return logits if positions is None else logits[torch.arange(len(positions)), positions]
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        video = BaseModelOutputWithPooling(pooler_output=tuple(self.cache.features(q.video) for q in queries))
        kwargs = {k: v for k, v in inputs.items() if not k.startswith("pixel_values")}
        hidden = self.vlm.inner(
            **kwargs, mm_encoder_outputs={"video": video}, use_cache=False
        ).last_hidden_state
        if positions is not None:  # the head on the deciding positions only
            hidden = hidden[torch.arange(len(positions)), positions]
        return self.vlm.lm_head(hidden)

    @torch.no_grad()
    def decide(self, queries: Sequence[Query]) -> dict[str, str]:
        """The reply each query's deciding token makes: "(X)" for a letter after "(", else the token."""
        self.vlm.model.eval()
        out: dict[str, str] = {}
        lead = len(self.tok("(", add_special_tokens=False)["input_ids"])  # the letter follows "("
        for i in range(0, len(queries), self.batch_size):
            chunk = queries[i : i + self.batch_size]
            inputs, starts = self._batch(chunk, with_answer=True)
            # logits at t predict token t + 1: the position before each deciding token.
            before = [s + (lead if q.kind == "mcq" else 0) - 1 for s, q in zip(starts, chunk)]
            logits = self._logits(inputs, chunk, before)
            for j, q in enumerate(chunk):
                token = self.tok.decode([int(logits[j].argmax())]).strip()
                out[q.id] = f"({token})" if q.kind == "mcq" else token
        return out

    @torch.no_grad()
    def generate(self, queries: Sequence[Query], max_new_tokens: int = 48) -> dict[str, str]:
        """Greedy replies from the cached tensors, left-padded as `VideoLMAdapter.generate` pads."""
        self.vlm.model.eval()
        out: dict[str, str] = {}
        for i in range(0, len(queries), self.batch_size):
            chunk = queries[i : i + self.batch_size]
            inputs, _ = self._batch(chunk, with_answer=False, left_pad=True)
            gen = self.vlm.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=self.vlm.pad_token_id,
                eos_token_id=self.vlm.stop_token_ids,
            )
            new = gen[:, inputs["input_ids"].shape[1] :]
            for q, text in zip(chunk, self.tok.batch_decode(new, skip_special_tokens=True)):
                out[q.id] = text.strip()
        return out

    @torch.no_grad()
    def token_kl(self, queries: Sequence[Query]) -> dict[str, dict[str, float]]:
        """Per query: sum over the response's tokens (end of turn included) of KL(base || aligned), and
        the number of tokens. The base is the same model with its LoRA adapter switched off."""
        from rrpo.losses.logps import token_logps_and_kl

        model = self.vlm.model
        model.eval()
        out: dict[str, dict[str, float]] = {}
        for i in range(0, len(queries), self.batch_size):
            chunk = queries[i : i + self.batch_size]
            inputs, starts = self._batch(chunk, with_answer=True)
            logits = self._logits(inputs, chunk)
            with model.disable_adapter():
                ref = self._logits(inputs, chunk)
            labels = torch.full(inputs["input_ids"].shape, IGNORE, dtype=torch.long, device=logits.device)
            lengths = inputs["attention_mask"].sum(-1).tolist()
            for j, s in enumerate(starts):
                labels[j, s : lengths[j]] = inputs["input_ids"][j, s : lengths[j]]
            # logits[:, t] predicts token t + 1.
            _, _, kl = token_logps_and_kl(logits[:, :-1], ref[:, :-1], labels[:, 1:])
            n = (labels[:, 1:] != IGNORE).sum(-1)
            for j, q in enumerate(chunk):
                out[q.id] = {"sum_kl": float(kl[j].double().sum()), "tokens": int(n[j])}
        return out


def mean_token_kl(per_query: dict[str, dict[str, float]]) -> float:
    """Every token weighs the same (`rrpo.eval.deviation`'s `mean_token_kl`)."""
    tokens = sum(v["tokens"] for v in per_query.values())
    return float(np.float64(sum(v["sum_kl"] for v in per_query.values())) / max(tokens, 1))
