"""Talking to an OpenAI-compatible LLM: the client with its disk cache (`client.py`) and the open-answer
judge that self-alignment and evaluation share (`judge.py`). Below the stages: imports only
`rrpo.errors` and `rrpo.data`."""

from rrpo.llm.client import LLMClient, LLMError

__all__ = ["LLMClient", "LLMError"]
