"""A small OpenAI-compatible chat client with an on-disk response cache and counted retries.

Used by the judges (`rrpo.llm.judge`, `rrpo.selfalign.judge`) and the concept differ
(`rrpo.selfalign.differ`) to talk to any OpenAI-compatible endpoint: the OpenAI API, or a local vLLM / Ollama / llama.cpp server.

Design points:

* Built on the official `openai` client, which does the transport retries itself (`max_retries`:
  timeouts, connection errors, HTTP 408/409/429/5xx, exponential backoff with jitter, `Retry-After`
  up to two minutes). We only count: an httpx event hook sees every HTTP request the client sends,
  so `calls` and `retries` are exact, and an error says how many attempts were made. A 200 reply
  that is not a usable chat completion (no choices, empty content, an HTML page from a proxy) is
  something openai does not retry; we ask again, up to the same `max_retries`.
* The API key is read from an environment variable only (default `OPENAI_API_KEY`). It is never
  logged, written to disk, part of the cache key, or part of an error message (server error texts
  are scrubbed of it, and auth errors carry no server text at all). Local servers need no key: a
  dummy is sent.
* Replies are cached on disk, one JSON file per request, keyed by the SHA-256 of the full request
  (base_url, model, messages, temperature and any extra parameters) and written atomically
  (temporary file + rename), so a rerun of a long job makes no HTTP requests for work already done.
  A corrupt or mismatching cache file is ignored (logged) and rewritten.
* After the retries are spent `chat` raises `LLMError`, an `RRPOError` that callers report per
  record; errors a retry cannot fix (HTTP 400/401/403/404) raise at once.
* A circuit breaker: after `max_consecutive_failures` failed `chat` calls in a row the endpoint is
  not called again by this client (every later `chat` raises `LLMError` at once, `circuit_open` is
  True), so a hanging server costs a few timeouts, not one per record.
* Reply texts are scrubbed of the configured key before they are cached or returned: a server that
  echoes the key back cannot get it into any file rrpo writes.
"""

from __future__ import annotations

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
# Bump when the cache file layout changes; part of every cache key.
CACHE_VERSION = 1
_sleep = time.sleep  # module-level so tests can record the waits between re-asks of malformed replies


class LLMError(RRPOError):
    """An LLM request that failed after its retries (or cannot succeed: bad status, bad key).

    `reason` is a short, key-free description ("HTTP 500 after 5 attempts: ...").
    """

    def __init__(self, reason: str):
        super().__init__(f"LLM request failed: {reason}")
        self.reason = reason


class _Malformed(Exception):
    """Internal: a 200 reply that is not a usable chat completion (openai does not retry these)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class LLMClient:
    """Chat completions against an OpenAI-compatible endpoint, with disk cache and counted retries.

    Args:
        base_url: the endpoint, e.g. "https://api.openai.com/v1" or "http://localhost:8000/v1".
        model: the model name the endpoint serves.
        api_key_env: the environment variable holding the key; absent or empty -> a dummy key.
        cache_dir: directory for cached replies (created on demand); None disables caching.
        timeout: seconds per HTTP request.
        max_retries: the openai client's retries after the first attempt (at most `max_retries + 1`
            requests per transport failure); also how often a malformed reply is asked again.
        backoff: base delay in seconds before re-asking after a malformed reply (retry k waits
            `backoff * 2**k`, jittered to 50-100%); transport retries wait as openai decides.
        temperature: sampling temperature (0.0: deterministic judges, and cacheable replies).
        max_consecutive_failures: failed `chat` calls in a row after which the endpoint is given up on
            for the rest of this client's life (0: never).

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
        max_consecutive_failures: int = 3,
    ):
        if not base_url:
            raise RRPOError("LLM base_url is empty (e.g. http://localhost:8000/v1)")
        if not model:
            raise RRPOError("LLM model name is empty")
        if max_retries < 0 or timeout <= 0 or backoff < 0 or max_consecutive_failures < 0:
            raise RRPOError(
                f"bad LLM client settings: max_retries={max_retries} (>= 0), timeout={timeout} (> 0), "
                f"backoff={backoff} (>= 0), max_consecutive_failures={max_consecutive_failures} (>= 0)"
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
        self.max_consecutive_failures = int(max_consecutive_failures)
        self.consecutive_failures = 0
        self._lock = threading.Lock()
        self._attempts = threading.local()  # HTTP requests of the current thread's `chat` call
        key = os.environ.get(api_key_env) or ""
        if not key:
            logger.info("$%s is not set; sending a dummy API key (fine for local servers)", api_key_env)
        # Kept only to scrub it out of server error texts; never logged or stored elsewhere.
        self._secret = key
        self._openai = openai
        # The hook runs in the calling thread for every request the client sends, retries included.
        http_client_class = getattr(openai, "DefaultHttpx2Client", None) or openai.DefaultHttpxClient
        http_client = http_client_class(event_hooks={"request": [self._count_request]})
        self._client = openai.OpenAI(
            api_key=key or DUMMY_API_KEY,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
            http_client=http_client,
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
        if self.circuit_open:
            raise LLMError(
                f"endpoint given up on after {self.consecutive_failures} failed requests in a row "
                "(not called again in this run)"
            )
        try:
            text = self._scrub(self._request_with_retries(messages, params))
        except LLMError:
            with self._lock:
                self.failures += 1
                self.consecutive_failures += 1
            raise
        with self._lock:
            self.consecutive_failures = 0
        self._cache_put(key, request, text)
        return text

    @property
    def circuit_open(self) -> bool:
        """Whether this client has given up on the endpoint (see `max_consecutive_failures`)."""
        limit = self.max_consecutive_failures
        return bool(limit) and self.consecutive_failures >= limit

    def stats(self) -> dict[str, int]:
        """The counters as a dict (for progress bars and run summaries)."""
        with self._lock:
            return {
                "calls": self.calls,
                "cache_hits": self.cache_hits,
                "retries": self.retries,
                "failures": self.failures,
            }

    # -- HTTP (openai retries transport failures; we re-ask after malformed replies) ---------------
    def _count_request(self, request: Any) -> None:
        self._attempts.count = getattr(self._attempts, "count", 0) + 1
        with self._lock:
            self.calls += 1
            if self._attempts.count > 1:
                self.retries += 1

    def _request_with_retries(self, messages: list[dict], params: dict[str, Any]) -> str:
        self._attempts.count = 0
        for asked in range(self.max_retries + 1):
            try:
                return self._request_once(messages, params)
            except _Malformed as err:
                if asked == self.max_retries:
                    raise LLMError(f"{err.reason} ({self._gave_up()})") from None
                delay = self.backoff * (2**asked) * (0.5 + 0.5 * random.random())
                logger.warning("LLM reply unusable (%s); asking again in %.2fs", err.reason, delay)
                _sleep(delay)
        raise AssertionError("unreachable")

    def _gave_up(self) -> str:
        attempts = getattr(self._attempts, "count", 1)
        return f"gave up after {attempts} attempt{'s' if attempts > 1 else ''}"

    def _request_once(self, messages: list[dict], params: dict[str, Any]) -> str:
        """One `create` call (the openai client retries inside it). Returns the reply text, raises
        _Malformed or LLMError."""
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
        """Map an openai exception (its retries spent) to LLMError or _Malformed, with key-free texts;
        None: not ours, re-raise."""
        openai = self._openai
        if isinstance(err, openai.APITimeoutError):
            return LLMError(f"timeout after {self.timeout:g}s ({self._gave_up()})")
        if isinstance(err, openai.APIConnectionError):
            return LLMError(f"connection error: {type(err).__name__} ({self._gave_up()})")
        if isinstance(err, openai.APIStatusError):
            status = err.status_code
            if status in (401, 403):
                # Auth error texts can quote (part of) the key: report the status only.
                return LLMError(f"HTTP {status}: authentication failed (check ${self.api_key_env})")
            message = _short(
                self._scrub(str(getattr(err, "message", "") or ""))
            )  # scrub first: no cut-off key
            return LLMError(f"HTTP {status}: {message} ({self._gave_up()})")
        if isinstance(
            err, (ValueError, openai.APIResponseValidationError)
        ):  # JSONDecodeError is a ValueError
            # A body that is not JSON / not a chat completion (proxies returning HTML, truncated JSON).
            return _Malformed(f"malformed reply: {type(err).__name__}")
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
        return self._scrub(entry["response"])

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
    """The first choice's content, or _Malformed when the reply has none."""
    if isinstance(completion, str):  # the client hands back non-JSON bodies (an HTML error page) as text
        raise _Malformed("malformed reply: not a chat completion (a non-JSON body)")
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list):
        raise _Malformed("malformed reply: no 'choices' field")
    if not choices:
        raise _Malformed("malformed reply: no choices")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if not isinstance(content, str) or not content.strip():
        raise _Malformed("malformed reply: empty content")
    return content


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
