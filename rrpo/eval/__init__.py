"""Evaluation: benchmark loaders with their official prompts, answer extraction and scoring.

* `rrpo.eval.extract`: `mcq_letter`, `yes_no` (shared with the self-alignment judge) and each
  benchmark's official answer rule.
* `rrpo.eval.benchmarks`: `BENCHMARKS[name].load(path) -> list[EvalItem]`, `.score(items, preds)`.
* `rrpo.eval.scoring`: `read_predictions`, `format_table`, `write_results`, run comparison.
* `rrpo.eval.commands`: `rrpo score`, `rrpo compare`.
"""
