"""Operating the gateway: the request log, /metrics and the management API, through a real
mitmdump with OpenAI-compatible doubles upstream."""

import asyncio
import json
import sqlite3
import time

import httpx
import openai
import pytest

from tests.harness import Gateway, Upstream

KEYS = [{"name": "alice", "key": "sk-alice-0001"}, {"name": "bob", "key": "sk-bob-0002"}]
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def upstream():
    u = Upstream("openai_compat", "--models", "gpt-4o-mini")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory):
    d = tmp_path_factory.mktemp("operating")
    cfg = {"server": {"api_keys": KEYS},
           "providers": [{"id": "up", "type": "openai", "base_url": upstream.base + "/v1", "models": ["gpt-4o-mini"]}]}
    g = Gateway(cfg, d / "proxy.yaml")
    g.db = d / "llmgate-requests.sqlite"
    yield g
    g.stop()


def client(gateway, who: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=KEYS[who]["key"], max_retries=0, timeout=30)


def rows(db, where: str = "", wait_for: int = 0, timeout: float = 10.0) -> list[dict]:
    """The request log's rows, waiting until at least `wait_for` are written (writes are batched)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with sqlite3.connect(db) as c:
                c.row_factory = sqlite3.Row
                found = [dict(r) for r in c.execute(f"SELECT * FROM requests {where} ORDER BY id")]
        except sqlite3.OperationalError:
            found = []
        if len(found) >= wait_for or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_every_request_is_logged_with_usage_and_key_names(gateway):
    before = len(rows(gateway.db))
    client(gateway, 0).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    stream = client(gateway, 1).chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True,
                                                        stream_options={"include_usage": True})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: hello there"
    with pytest.raises(openai.NotFoundError):
        client(gateway).chat.completions.create(model="no-such-model", messages=HELLO)
    got = rows(gateway.db, wait_for=before + 3)[before:]
    plain, streamed, missing = got
    assert (plain["key_id"], plain["inbound"], plain["endpoint"], plain["provider"], plain["status"]) == (
        "alice", "openai-chat", "chat", "up", 200)
    assert plain["upstream_model"] == "gpt-4o-mini" and plain["attempts"] == 1 and plain["error"] is None
    assert plain["prompt_tokens"] > 0 and plain["completion_tokens"] > 0 and plain["latency_ms"] > 0
    assert streamed["key_id"] == "bob" and streamed["stream"] == 1 and streamed["completion_tokens"] > 0
    assert 0 < streamed["ttft_ms"] <= streamed["latency_ms"]
    assert (missing["status"], missing["error"], missing["provider"]) == (404, "model_not_found", None)
    assert missing["request_body"] is None  # bodies are not captured by default
    dump = json.dumps(got)
    assert "sk-alice" not in dump and "sk-bob" not in dump


def test_200_concurrent_requests_lose_no_rows(gateway):
    before = len(rows(gateway.db))

    async def run():
        async with openai.AsyncOpenAI(base_url=gateway.base + "/v1", api_key=KEYS[0]["key"], max_retries=0,
                                      timeout=60) as c:
            return await asyncio.gather(*(c.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"n{i}"}]) for i in range(200)))

    answers = asyncio.run(run())
    assert len(answers) == 200
    assert len(rows(gateway.db, wait_for=before + 200)) - before == 200


def test_a_locked_log_never_fails_a_request(gateway):
    """Another process holds the database's write lock: requests are still answered at once,
    and their rows are written once the lock goes."""
    before = len(rows(gateway.db))
    blocker = sqlite3.connect(gateway.db, timeout=0, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        start = time.monotonic()
        for _ in range(3):
            client(gateway).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        assert time.monotonic() - start < 3  # not stuck behind the lock
        time.sleep(1.0)  # the writer is waiting on the lock by now
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert len(rows(gateway.db, wait_for=before + 3)) == before + 3


def test_an_unwritable_log_never_fails_a_request(upstream, tmp_path):
    cfg = {"providers": [{"id": "up", "type": "openai", "base_url": upstream.base + "/v1", "models": ["gpt-4o-mini"]}],
           "log": {"file": str(tmp_path)}}  # a directory: SQLite cannot open it
    g = Gateway(cfg, tmp_path / "proxy.yaml")
    try:
        c = openai.OpenAI(base_url=g.base + "/v1", api_key="any", max_retries=0)
        for _ in range(3):
            assert c.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices[0].message.content
        deadline = time.monotonic() + 10
        while not any("request log write failed" in line for line in g.lines) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sum("request log write failed" in line for line in g.lines) == 1  # warned, once a minute at most
    finally:
        g.stop()


def test_metrics(gateway):
    client(gateway).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    text = httpx.get(gateway.base + "/metrics").text
    assert 'llmgate_requests_total{account="",inbound="openai-chat",model="gpt-4o-mini",provider="up",status="200"}' \
        in text
    assert 'llmgate_tokens_total{account="",kind="prompt",model="gpt-4o-mini",provider="up"}' in text
    assert "llmgate_request_seconds_bucket" in text and "llmgate_time_to_first_token_seconds" in text


def test_admin_api_reads(gateway):
    client(gateway).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    status = httpx.get(gateway.base + "/admin/status").json()
    assert status["providers"] == 1 and status["requests_logged"] >= 1
    (p,) = httpx.get(gateway.base + "/admin/providers").json()["providers"]
    assert (p["id"], p["type"], p["enabled"], p["state"], p["api_key"]) == ("up", "openai", True, "ok", None)
    history = httpx.get(gateway.base + "/admin/requests", params={"key": "alice", "limit": 5}).json()["requests"]
    assert 1 <= len(history) <= 5 and all(r["key_id"] == "alice" for r in history)
    assert history == sorted(history, key=lambda r: r["ts"], reverse=True)
    by_key = {r["key"]: r for r in httpx.get(gateway.base + "/admin/stats", params={"by": "key"}).json()["rows"]}
    assert by_key["alice"]["requests"] >= 1 and by_key["alice"]["prompt_tokens"] > 0
    keys = {k["name"]: k for k in httpx.get(gateway.base + "/admin/keys").json()["keys"]}
    assert set(keys) == {"alice", "bob"} and keys["alice"]["requests"] >= 1
    bad = httpx.get(gateway.base + "/admin/stats", params={"by": "colour"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "by"
    assert httpx.get(gateway.base + "/admin/nothing").status_code == 404


def test_admin_key_required_when_configured(upstream, tmp_path):
    cfg = {"server": {"admin_keys": ["adm-secret-1"]},
           "providers": [{"id": "up", "type": "openai", "base_url": upstream.base + "/v1", "models": ["m"]}]}
    g = Gateway(cfg, tmp_path / "proxy.yaml")
    try:
        assert httpx.get(g.base + "/admin/status").status_code == 401
        assert httpx.get(g.base + "/metrics").status_code == 401
        ok = httpx.get(g.base + "/admin/status", headers={"Authorization": "Bearer adm-secret-1"})
        assert ok.status_code == 200
    finally:
        g.stop()
