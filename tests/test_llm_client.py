"""LLMClient against a local fake OpenAI-compatible server: replies, retries, failures, cache, key hygiene."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from fake_openai_server import EmptyChoices, Fail, FakeOpenAIServer, Garbage, Reply, Sleep

import rrpo.llm.client as llm_module
from rrpo.errors import RRPOError
from rrpo.llm.client import LLMClient, LLMError

KEY = "sk-test-SENTINEL-7f3a9c2e5b1d"
MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "what colour is the ball?"},
]


@pytest.fixture
def server():
    with FakeOpenAIServer() as s:
        yield s


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("RRPO_TEST_KEY", KEY)


def make_client(server: FakeOpenAIServer, cache_dir: Path | None = None, **kw) -> LLMClient:
    settings = {"timeout": 5.0, "max_retries": 2, "backoff": 0.001}
    settings.update(kw)
    return LLMClient(
        server.base_url, "fake-model", api_key_env="RRPO_TEST_KEY", cache_dir=cache_dir, **settings
    )


def test_reply_and_request_sent(server):
    server.push(Reply("a red ball"))
    client = make_client(server)
    assert client.chat(MESSAGES) == "a red ball"
    assert server.request_count == 1
    req = server.requests[0]
    assert req.path == "/v1/chat/completions"
    assert req.body["model"] == "fake-model"
    assert req.body["messages"] == MESSAGES
    assert req.body["temperature"] == 0.0
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert client.stats() == {"calls": 1, "cache_hits": 0, "retries": 0, "failures": 0}


def test_extra_params_are_sent(server):
    server.push(Reply("x"))
    make_client(server).chat(MESSAGES, max_tokens=7)
    assert server.requests[0].body["max_tokens"] == 7


def test_429_then_success_counts_one_retry(server):
    server.push(Fail(429), Reply("ok"))
    client = make_client(server)
    assert client.chat(MESSAGES) == "ok"
    assert server.request_count == 2
    assert (client.calls, client.retries, client.failures) == (2, 1, 0)


def test_retry_after_is_honoured(server):
    server.push(Fail(429, retry_after=0.4), Reply("ok"))
    client = make_client(server, backoff=0.001)  # our own backoff alone would wait ~1 ms
    t0 = time.monotonic()
    assert client.chat(MESSAGES) == "ok"
    assert time.monotonic() - t0 >= 0.4


def test_transport_retries_are_the_openai_clients_own(server, monkeypatch):
    """The retries of a 503 are made by openai's own loop (its retry-count header), with its backoff
    (0.5 s doubling, less up to 25 % jitter): none of our re-asking waits are used."""
    server.default = Fail(503)
    waits: list[float] = []
    monkeypatch.setattr(llm_module, "_sleep", waits.append)
    client = make_client(server, max_retries=2)
    t0 = time.monotonic()
    with pytest.raises(LLMError, match="HTTP 503"):
        client.chat(MESSAGES)
    assert [r.headers.get("x-stainless-retry-count") for r in server.requests] == ["0", "1", "2"]
    assert waits == []
    assert time.monotonic() - t0 >= 0.75 * (0.5 + 1.0)


def test_malformed_replies_are_asked_again_with_backoff(server, monkeypatch):
    server.default = EmptyChoices()
    waits: list[float] = []
    monkeypatch.setattr(llm_module, "_sleep", waits.append)
    client = make_client(server, max_retries=3, backoff=0.1)
    with pytest.raises(LLMError, match="4 attempts"):
        client.chat(MESSAGES)
    assert len(waits) == 3  # one wait between each of the 4 requests
    for k, w in enumerate(waits):
        assert 0.5 * 0.1 * 2**k <= w <= 0.1 * 2**k, (k, w)


def test_500_forever_raises_after_max_retries(server):
    server.default = Fail(500)
    client = make_client(server, max_retries=2)
    with pytest.raises(LLMError) as info:
        client.chat(MESSAGES)
    assert "HTTP 500" in info.value.reason and "3 attempts" in info.value.reason
    assert isinstance(info.value, RRPOError)
    assert server.request_count == 3
    assert (client.calls, client.retries, client.failures) == (3, 2, 1)


def test_client_error_is_not_retried(server):
    server.default = Fail(400)
    client = make_client(server, max_retries=3)
    with pytest.raises(LLMError, match="HTTP 400"):
        client.chat(MESSAGES)
    assert server.request_count == 1 and client.retries == 0


def test_timeout_is_retried_then_reported(server):
    server.default = Sleep(1.5)
    client = make_client(server, timeout=0.25, max_retries=1)
    t0 = time.monotonic()
    with pytest.raises(LLMError, match="timeout") as info:
        client.chat(MESSAGES)
    assert time.monotonic() - t0 < 1.4  # gave up on each request, did not wait for the replies
    assert "0.25s" in info.value.reason
    assert server.request_count == 2 and client.retries == 1 and client.failures == 1


def test_slow_then_fast_succeeds(server):
    server.push(Sleep(1.0), Reply("fast"))
    assert make_client(server, timeout=0.25).chat(MESSAGES) == "fast"


@pytest.mark.parametrize(
    "action, expected",
    [
        (Garbage(b'{"choices": [{"message": '), "malformed reply"),  # truncated JSON
        (Garbage(b"<html>bad gateway</html>", content_type="text/html"), "malformed reply"),
        (Garbage(b'{"foo": 1}'), "no 'choices'"),
        (EmptyChoices(), "no choices"),
        (Reply(None), "empty content"),
        (Reply("   "), "empty content"),
    ],
)
def test_malformed_replies_are_retried_then_reported(server, action, expected):
    server.default = action
    client = make_client(server, max_retries=1)
    with pytest.raises(LLMError, match=expected):
        client.chat(MESSAGES)
    assert server.request_count == 2 and client.retries == 1


def test_malformed_then_good_reply(server):
    server.push(EmptyChoices(), Garbage(b"not json"), Reply("fine"))
    client = make_client(server)
    assert client.chat(MESSAGES) == "fine"
    assert client.retries == 2 and client.failures == 0


def test_cache_rerun_makes_no_http_requests(server, tmp_path):
    server.default = Reply("cached answer")
    first = make_client(server, tmp_path)
    assert first.chat(MESSAGES) == "cached answer"
    assert server.request_count == 1
    server.default = Reply("a different answer")  # a rerun must not see this
    second = make_client(server, tmp_path)
    assert second.chat(MESSAGES) == "cached answer"
    assert server.request_count == 1
    assert (second.calls, second.cache_hits) == (0, 1)
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["response"] == "cached answer"
    assert not list(tmp_path.rglob("*.tmp"))  # atomic write left no temporary file


@pytest.mark.parametrize(
    "change",
    [
        {"model": "other-model"},
        {"temperature": 0.7},
        {"messages": MESSAGES[:1] + [{"role": "user", "content": "what colour is the cube?"}]},
        {"params": {"max_tokens": 5}},
    ],
)
def test_cache_key_covers_the_request(server, tmp_path, change):
    server.default = Reply("r")
    make_client(server, tmp_path).chat(MESSAGES)
    kw = {"temperature": change["temperature"]} if "temperature" in change else {}
    client = LLMClient(
        server.base_url,
        change.get("model", "fake-model"),
        api_key_env="RRPO_TEST_KEY",
        cache_dir=tmp_path,
        backoff=0.001,
        **kw,
    )
    client.chat(change.get("messages", MESSAGES), **change.get("params", {}))
    assert server.request_count == 2 and client.cache_hits == 0
    assert len(list(tmp_path.rglob("*.json"))) == 2


def test_cache_key_does_not_depend_on_the_api_key(server, tmp_path, monkeypatch):
    server.default = Reply("r")
    make_client(server, tmp_path).chat(MESSAGES)
    monkeypatch.setenv("RRPO_TEST_KEY", "sk-another-key")
    again = make_client(server, tmp_path)
    again.chat(MESSAGES)
    assert server.request_count == 1 and again.cache_hits == 1


def test_corrupt_cache_file_is_ignored_and_rewritten(server, tmp_path, caplog):
    server.default = Reply("good")
    make_client(server, tmp_path).chat(MESSAGES)
    (path,) = tmp_path.rglob("*.json")
    path.write_text('{"response": "trunc')
    client = make_client(server, tmp_path)
    with caplog.at_level(logging.WARNING, logger="rrpo.llm.client"):
        assert client.chat(MESSAGES) == "good"
    assert "corrupt" in caplog.text and str(path) in caplog.text
    assert server.request_count == 2 and client.cache_hits == 0
    assert json.loads(path.read_text())["response"] == "good"
    assert make_client(server, tmp_path).chat(MESSAGES) == "good"
    assert server.request_count == 2


def test_failures_are_not_cached(server, tmp_path):
    server.default = Fail(500)
    with pytest.raises(LLMError):
        make_client(server, tmp_path, max_retries=0).chat(MESSAGES)
    assert not list(tmp_path.rglob("*.json"))
    server.default = Reply("recovered")
    assert make_client(server, tmp_path).chat(MESSAGES) == "recovered"


def test_api_key_never_in_errors_logs_or_cache(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, the openai / http client ones included
    client = make_client(server, tmp_path, max_retries=1)
    # Servers quote keys in their error texts; a 401 body must not reach us either.
    leaky = json.dumps({"error": {"message": f"bad request for key {KEY}"}}).encode()
    server.push(Fail(500, body=leaky), Fail(500, body=leaky))
    with pytest.raises(LLMError) as e500:
        client.chat(MESSAGES)
    server.push(Fail(401, body=leaky))
    with pytest.raises(LLMError) as e401:
        client.chat(MESSAGES)
    server.push(Reply("fine"))
    assert client.chat(MESSAGES) == "fine"
    # The key really was used (so the checks below are not vacuous) ...
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests)
    # ... and is nowhere else.
    for err in (e500.value, e401.value):
        assert KEY not in str(err) and KEY not in err.reason and KEY not in repr(err)
    assert "bad request for key ***" in e500.value.reason  # scrubbed, not dropped
    assert "authentication failed" in e401.value.reason and "RRPO_TEST_KEY" in e401.value.reason
    for err in (e500.value, e401.value):  # no chained exception carries the server's text either
        chained = err.__cause__ or err.__context__
        while chained is not None:
            assert KEY not in str(chained)
            chained = chained.__cause__ or chained.__context__
    assert KEY not in caplog.text
    assert KEY not in repr(client)
    files = list(tmp_path.rglob("*"))
    assert any(f.is_file() for f in files)
    for f in files:
        if f.is_file():
            assert KEY not in f.read_text()


def test_missing_key_sends_a_dummy(server, monkeypatch):
    monkeypatch.delenv("RRPO_TEST_KEY")
    server.push(Reply("local"))
    assert make_client(server).chat(MESSAGES) == "local"
    assert server.requests[0].headers["authorization"] == f"Bearer {llm_module.DUMMY_API_KEY}"


@pytest.mark.parametrize(
    "messages, where",
    [([], "non-empty list"), ([{"role": "user"}], r"messages\[0\]"), ("hello", "non-empty list")],
)
def test_bad_messages_are_rejected_before_any_request(server, messages, where):
    with pytest.raises(RRPOError, match=where):
        make_client(server).chat(messages)
    assert server.request_count == 0


def test_bad_settings_are_rejected():
    with pytest.raises(RRPOError, match="max_retries"):
        LLMClient("http://127.0.0.1:1/v1", "m", max_retries=-1)
    with pytest.raises(RRPOError, match="model"):
        LLMClient("http://127.0.0.1:1/v1", "")


def test_connection_refused_is_reported(tmp_path):
    with FakeOpenAIServer() as s:
        url = s.base_url
    client = LLMClient(url, "m", max_retries=1, backoff=0.001, timeout=2.0)
    with pytest.raises(LLMError, match="connection error"):
        client.chat(MESSAGES)
    assert client.calls == 2 and client.failures == 1
