"""Supervised pretraining of the tiny base video LLM the toy demo starts from (`rrpo toy pretrain`,
`make toy-checkpoint`). Not part of the installed library: the demo only needs the committed result
(rrpo/toy/checkpoint); this is how it was made, kept runnable.

The demo needs a *base* model that already reads the toy videos reasonably well but not perfectly, so
that RRPO self-alignment (Sarkar et al., arXiv 2504.12083: perturb the video, catch the model's own
mistakes, train on preference pairs) has mistakes to learn from:

- `model.py`: `build_toy_model`, a tiny Qwen2-VL of the real transformers classes with a tokenizer
  trained on the toy world's own words (one token per word, so sequences stay short) and 8-px patches
  on 64x64 frames; saved so that `rrpo.models.load_model(dir)` loads it.
- `tasks.py`: every turn of `pretrain.jsonl` becomes one single-turn example with exactly the prompt
  and answer format the evaluation and the self-alignment pipeline use (`rrpo.data.prompts`,
  `rrpo.data.answers`), plus the auxiliary tasks (`AUX_TASKS`, a table of functions).
- `encode.py`: model inputs from the real processor (its outputs cached per prompt), the answer loss,
  and `quick_eval`: teacher-forced accuracy from the one token that decides an answer (the option
  letter after "(", or "Yes" / "No"), on clean and perturbed frames.
- `train.py`: full fine-tuning (AdamW, float32, loss on answer tokens only) on transformers'
  schedules, and the vision-tower stage.
- `run.py`: `run_pretrain` (a whole stage), `benchmark_eval`, `write_provenance`.

Shapes: frames uint8 [T, H, W, 3]; a batch's `pixel_values_videos` [B * T/2 * (H/p) * (W/p),
3 * 2 * p * p]; `video_grid_thw` [B, 3]; `input_ids` / `labels` / `mm_token_type_ids` [B, L].
"""

# ruff: noqa: F401  (the package re-exports its modules' names)
from .encode import (
    Encoder,
    answer_loss,
    decisions,
    decisive_labels,
    eval_examples_from_benchmarks,
    forward_logits,
    load_frames,
    perturbed_frames,
    quick_eval,
)
from .model import DEFAULT_DATA, EVAL_KINDS, FAMILY, IGNORE, ModelSpec, build_tokenizer, build_toy_model
from .run import (
    benchmark_eval,
    benchmark_videos,
    expected_pairs,
    pool_examples,
    run_pretrain,
    write_provenance,
)
from .tasks import (
    AUX_PROMPTS,
    AUX_TASKS,
    Example,
    aux_examples,
    pretrain_examples,
    question_from_turn,
    read_pretrain,
    turn_example,
)
from .train import (
    DEFAULT_TRAIN,
    TrainConfig,
    direction_targets,
    example_order,
    format_table,
    initial_loss,
    kind_counts,
    lr_at,
    train,
    video_features,
    vision_pretrain,
    visual_tower,
)

__all__ = [name for name in dir() if not name.startswith("_")]
