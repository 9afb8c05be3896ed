"""A small OpenAI-compatible chat client with an on-disk response cache and counted retries.

Used by the judges (`rrpo.llm.judge`, `rrpo.selfalign.judge`) and the concept differ
(`rrpo.selfalign.differ`) to talk to any OpenAI-compatible endpoint: the OpenAI API, or a local vLLM / Ollama / llama.cpp server.

Design points:

* Built on the official `openai` client with its own retries switched off (`max_retries=0`): we
  retry here so every attempt is counted (`calls`, `retries`, `failures`) and the policy is ours:
  exponential backoff with jitter, honouring `Retry-After` when the server sends it.
* The API key is read from an environment variable only (default `OPENAI_API_KEY`). It is never
  logged, written to disk, part of the cache key, or part of an error message (server error texts
  are scrubbed of it, and auth errors carry no server text at all). Local servers need no key: a
  dummy is sent.
* Replies are cached on disk, one JSON file per request, keyed by the SHA-256 of the full request
  (base_url, model, messages, temperature and any extra parameters) and written atomically
  (temporary file + rename), so a rerun of a long job makes no HTTP requests for work already done.
  A corrupt or mismatching cache file is ignored (logged) and rewritten.
* Timeouts, HTTP 429 / 5xx, connection errors and malformed replies (no choices, empty content, a
  body that is not a chat completion) are retried; after `max_retries` retries `chat` raises
  `LLMError`, an `RRPOError` that callers report per record.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rrpo.errors import RRPOError

logger = logging.getLogger(__name__)

# Sent when the environment has no key: vLLM / Ollama accept anything (or nothing) there.
DUMMY_API_KEY = "EMPTY"
# Upper bound on one wait, so a server asking for `Retry-After: 3600` cannot stall a job silently.
MAX_WAIT_S = 120.0
# Bump when the cache file layout changes; part of every cache key.
CACHE_VERSION = 1
_RETRY_STATUS = {408, 409, 429}  # plus every 5xx
_sleep = time.sleep  # module-level so tests can record the waits without touching time.sleep


class LLMError(RRPOError):
    """An LLM request that failed after its retries (or cannot succeed: bad status, bad key).

    `reason` is a short, key-free description ("HTTP 500 after 5 attempts: ...").
    """

    def __init__(self, reason: str):
        super().__init__(f"LLM request failed: {reason}")
        self.reason = reason


class _Retryable(Exception):
    """Internal: one attempt failed in a way worth retrying. `wait` is a server-requested delay."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


class LLMClient:
    """Chat completions against an OpenAI-compatible endpoint, with disk cache and counted retries.

    Args:
        base_url: the endpoint, e.g. "https://api.openai.com/v1" or "http://localhost:8000/v1".
        model: the model name the endpoint serves.
        api_key_env: the environment variable holding the key; absent or empty -> a dummy key.
        cache_dir: directory for cached replies (created on demand); None disables caching.
        timeout: seconds per HTTP request.
        max_retries: retries after the first attempt (so at most `max_retries + 1` requests per chat).
        backoff: base delay in seconds; retry k (0-based) waits about `backoff * 2**k` (jittered to
            50-100% of that), or the server's `Retry-After` when that is longer; capped at MAX_WAIT_S.
        temperature: sampling temperature (0.0: deterministic judges, and cacheable replies).

    Counters (ints, thread-safe): `calls` HTTP requests made, `cache_hits`, `retries`, and `failures`
    (`chat` calls that raised LLMError).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        cache_dir: str | os.PathLike | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        temperature: float = 0.0,
    ):
        if not base_url:
            raise RRPOError("LLM base_url is empty (e.g. http://localhost:8000/v1)")
        if not model:
            raise RRPOError("LLM model name is empty")
        if max_retries < 0 or timeout <= 0 or backoff < 0:
            raise RRPOError(
                f"bad LLM client settings: max_retries={max_retries} (>= 0), timeout={timeout} (> 0), "
                f"backoff={backoff} (>= 0)"
            )
        import openai  # imported here so `rrpo --help` does not pay for it

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.temperature = float(temperature)
        self.calls = 0
        self.cache_hits = 0
        self.retries = 0
        self.failures = 0
        self._lock = threading.Lock()
        key = os.environ.get(api_key_env) or ""
        if not key:
            logger.info("$%s is not set; sending a dummy API key (fine for local servers)", api_key_env)
        # Kept only to scrub it out of server error texts; never logged or stored elsewhere.
        self._secret = key
        self._openai = openai
        self._client = openai.OpenAI(
            api_key=key or DUMMY_API_KEY, base_url=self.base_url, timeout=self.timeout, max_retries=0
        )

    def __repr__(self) -> str:  # no key here, on purpose
        return f"LLMClient(base_url={self.base_url!r}, model={self.model!r}, cache_dir={self.cache_dir!r})"

    # -- public API --------------------------------------------------------------------------------
    def chat(self, messages: list[dict], **params: Any) -> str:
        """The assistant's reply text to `messages` (a list of {"role": ..., "content": str}).

        Extra keyword `params` (e.g. `max_tokens=64`) are passed to the endpoint and are part of the
        cache key. Returns the reply's first choice content (non-empty). Raises LLMError after the
        retries are spent, or at once for errors a retry cannot fix (HTTP 400/401/403/404).
        """
        _check_messages(messages)
        request = {
            "base_url": self.base_url,
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "params": params,
        }
        key = cache_key(request)
        cached = self._cache_get(key)
        if cached is not None:
            with self._lock:
                self.cache_hits += 1
            return cached
        try:
            text = self._request_with_retries(messages, params)
        except LLMError:
            with self._lock:
                self.failures += 1
            raise
        self._cache_put(key, request, text)
        return text

    def stats(self) -> dict[str, int]:
        """The counters as a dict (for progress bars and run summaries)."""
        with self._lock:
            return {
                "calls": self.calls,
                "cache_hits": self.cache_hits,
                "retries": self.retries,
                "failures": self.failures,
            }

    # -- HTTP with retries -------------------------------------------------------------------------
    def _request_with_retries(self, messages: list[dict], params: dict[str, Any]) -> str:
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(attempts):
            if attempt:
                with self._lock:
                    self.retries += 1
            try:
                return self._request_once(messages, params)
            except _Retryable as err:
                last = err.reason
                if attempt + 1 == attempts:
                    break
                delay = self._delay(attempt, err.wait)
                logger.warning(
                    "LLM request failed (%s); retry %d/%d in %.2fs",
                    err.reason,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                _sleep(delay)
        raise LLMError(f"{last} (gave up after {attempts} attempt{'s' if attempts > 1 else ''})")

    def _delay(self, attempt: int, server_wait: float | None) -> float:
        """Exponential backoff with jitter (50-100% of backoff * 2**attempt); a longer Retry-After wins."""
        base = self.backoff * (2**attempt)
        delay = base * (0.5 + 0.5 * random.random())
        if server_wait is not None:
            delay = max(delay, server_wait)
        return min(delay, MAX_WAIT_S)

    def _request_once(self, messages: list[dict], params: dict[str, Any]) -> str:
        """One HTTP request. Returns the reply text, raises _Retryable or LLMError."""
        with self._lock:
            self.calls += 1
        failure: Exception | None = None
        try:
            completion = self._client.chat.completions.create(
                model=self.model, messages=messages, temperature=self.temperature, **params
            )
        except Exception as err:
            failure = self._classify(err)
            if failure is None:
                raise
        if failure is not None:
            # Raised outside the `except` so the openai exception (whose text may quote the key) is
            # not even attached as __context__.
            raise failure
        return _reply_text(completion)

    def _classify(self, err: Exception) -> Exception | None:
        """Map an openai exception to _Retryable / LLMError (key-free texts); None: not ours, re-raise."""
        openai = self._openai
        if isinstance(err, openai.APITimeoutError):
            return _Retryable(f"timeout after {self.timeout:g}s")
        if isinstance(err, openai.APIConnectionError):
            return _Retryable(f"connection error: {type(err).__name__}")
        if isinstance(err, openai.APIStatusError):
            status = err.status_code
            if status in (401, 403):
                # Auth error texts can quote (part of) the key: report the status only.
                return LLMError(f"HTTP {status}: authentication failed (check ${self.api_key_env})")
            message = _short(
                self._scrub(str(getattr(err, "message", "") or ""))
            )  # scrub first: no cut-off key
            if status in _RETRY_STATUS or status >= 500:
                return _Retryable(f"HTTP {status}: {message}", _retry_after(err.response))
            return LLMError(f"HTTP {status}: {message}")
        if isinstance(
            err, (ValueError, openai.APIResponseValidationError)
        ):  # JSONDecodeError is a ValueError
            # A body that is not JSON / not a chat completion (proxies returning HTML, truncated JSON).
            return _Retryable(f"malformed reply: {type(err).__name__}")
        return None

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    # -- cache -------------------------------------------------------------------------------------
    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    def _cache_get(self, key: str) -> str | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry.get("key") != key or not isinstance(entry.get("response"), str) or not entry["response"]:
                raise ValueError("missing or mismatching fields")
        except (OSError, ValueError, AttributeError) as err:
            logger.warning("ignoring corrupt LLM cache file %s (%s); it will be rewritten", path, err)
            return None
        return entry["response"]

    def _cache_put(self, key: str, request: dict, text: str) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"version": CACHE_VERSION, "key": key, "request": request, "response": text}
        # Atomic: a crash mid-write leaves a stray temp file, never a half-written cache entry.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def cache_key(request: dict) -> str:
    """SHA-256 hex digest of a request (canonical JSON: sorted keys, no whitespace) plus CACHE_VERSION."""
    canonical = json.dumps(
        {"v": CACHE_VERSION, **request}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise RRPOError(f"LLM messages must be a non-empty list of dicts, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise RRPOError(
                f"LLM messages[{i}] must be a dict with string 'role' and 'content', got {m!r:.80}"
            )


def _reply_text(completion: Any) -> str:
    """The first choice's content, or _Retryable when the reply has none."""
    if isinstance(completion, str):  # the client hands back non-JSON bodies (an HTML error page) as text
        raise _Retryable("malformed reply: not a chat completion (a non-JSON body)")
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list):
        raise _Retryable("malformed reply: no 'choices' field")
    if not choices:
        raise _Retryable("malformed reply: no choices")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if not isinstance(content, str) or not content.strip():
        raise _Retryable("malformed reply: empty content")
    return content


def _retry_after(response: Any) -> float | None:
    """Seconds from `retry-after-ms` / `Retry-After` (seconds or an HTTP date), or None."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(float(ms) / 1000.0, 0.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(when.timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, OverflowError):
        return None


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
