"""Model inputs (the real processor's outputs, cached per prompt), the answer loss, and the quick
teacher-forced evaluation of the one token that decides an answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rrpo.errors import RRPOError

from .model import IGNORE, ModelSpec
from .tasks import Example


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
    """Turns examples into model inputs with the model's own processor: the prompt side is one
    processor call per distinct prompt (cached: the toy's video always expands to the same number of
    tokens), the pixel side the video processor on the batch's frames (`check_against_processor`
    compares a whole batch with one full processor call)."""

    def __init__(self, processor, spec: ModelSpec):
        self.processor = processor
        self.tok = processor.tokenizer
        self.spec = spec
        self.video_id = self.tok.convert_tokens_to_ids("<|video_pad|>")
        self.pad_id = self.tok.pad_token_id
        self.turn_end = "<|im_end|>"
        self._blank = np.zeros((spec.num_frames, spec.frame_size, spec.frame_size, 3), dtype=np.uint8)
        self._prefix_cache: dict[str, list[int]] = {}

    def prefix_ids(self, prompt: str) -> list[int]:
        """Token ids of the chat-templated user turn (video + prompt) and the generation prompt."""
        if prompt not in self._prefix_cache:
            messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
            text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            out = self.processor(
                text=[text], videos=[self._blank], return_tensors="pt", do_sample_frames=False
            )
            self._prefix_cache[prompt] = out["input_ids"][0].tolist()
        return self._prefix_cache[prompt]

    def answer_ids(self, answer: str) -> list[int]:
        """Answer tokens followed by the turn-end token (what generation must produce and stop at)."""
        return self.tok(answer + self.turn_end, add_special_tokens=False)["input_ids"]

    def video_inputs(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        """uint8 [B, T, H, W, 3] -> the video processor's `pixel_values_videos` [B * patches,
        3 * tp * p * p] (float32) and `video_grid_thw` [B, 3]."""
        out = self.processor.video_processor(videos=list(frames), return_tensors="pt", do_sample_frames=False)
        return {"pixel_values_videos": out["pixel_values_videos"], "video_grid_thw": out["video_grid_thw"]}

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
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "mm_token_type_ids": types,
            **self.video_inputs(frames[[ex.clip for ex in examples]]),
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
