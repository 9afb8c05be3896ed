"""The benchmark prompt templates, shared by self-alignment and evaluation.

Pairs made by `rrpo generate` train the model on the prompts it is measured with, so both stages read
the wording from here: MVBench / TVBench / MLVU's multiple-choice template and instruction, and
VideoHallucer's yes/no instruction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rrpo.data.answers import LETTERS

# MVBench's (and TVBench's) instruction after the options.
MCQ_INSTRUCTION = "\nOnly give the best option."
# VideoHallucer's instruction after a yes/no question.
YESNO_INSTRUCTION = "\nAnswer the question using 'yes' or 'no'."


def mcq_prompt_parenthesised(question: str, options: Sequence[str], instruction: str) -> str:
    """MVBench/TVBench/MLVU `qa_template`: "Question: q\\nOptions:\\n(A) a\\n(B) b" + instruction."""
    lines = [f"Question: {question}", "Options:"]
    lines += [f"({LETTERS[i]}) {c}" for i, c in enumerate(options)]
    return "\n".join(lines) + instruction


def question_prompt(q: Any) -> str:
    """The text the model is asked for a question record (`answer_type`, `question`, `options`): the
    wording the evaluation uses (MVBench/TVBench's "Question/Options/(A)..." template for multiple
    choice, VideoHallucer's instruction for yes/no), the question itself for open answers."""
    if q.answer_type == "mcq":
        return mcq_prompt_parenthesised(q.question, q.options or [], MCQ_INSTRUCTION)
    if q.answer_type == "yesno":
        return q.question + YESNO_INSTRUCTION
    return q.question
