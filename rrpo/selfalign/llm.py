"""Moved to `rrpo.llm.client` (shared by self-alignment and evaluation); this name stays for imports."""

from rrpo.llm.client import *  # noqa: F401,F403
from rrpo.llm.client import LLMClient, LLMError, cache_key  # noqa: F401
