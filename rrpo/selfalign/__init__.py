"""Self-alignment data: judge a model's answers and mark the concepts a wrong answer gets wrong.

`llm` (OpenAI-compatible client with disk cache and counted retries), `judge` (rule-based for
multiple-choice and yes/no questions, LLM-judged for open ones) and `differ` (paired character spans
of the key differing concepts, the input of the RRPO loss). Importing this package is cheap: the
`openai` client is imported only when an `LLMClient` is made.
"""

from rrpo.llm.client import LLMClient, LLMError
from rrpo.selfalign.differ import Diff, DiffReject, diff_answers, llm_diff, rule_diff
from rrpo.selfalign.judge import Verdict, judge_answer

__all__ = [
    "Diff",
    "DiffReject",
    "LLMClient",
    "LLMError",
    "Verdict",
    "diff_answers",
    "judge_answer",
    "llm_diff",
    "rule_diff",
]
