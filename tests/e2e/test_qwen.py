"""Qwen Code OAuth accounts through the gateway: the openai SDK as client, the strict Qwen
double (OAuth + portal) as upstream, credentials files as Qwen Code writes them."""

import asyncio
import json
import os
import threading
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY, reset_cooldowns
from tests.harness import Gateway

HELLO = [{"role": "user", "content": "hello there"}]


def control(qwen, path: str, **kw) -> dict:
    r = httpx.request("POST" if path != "" else "GET", f"{qwen.base}/__oauth{path}", **kw)
    r.raise_for_status()
    return r.json()


def state(qwen) -> dict:
    return httpx.get(f"{qwen.base}/__oauth").json()


def seed(qwen, path, expired: bool = False, **extra) -> dict:
    creds = control(qwen, "/seed", json={"expired": expired})
    creds.update(extra)
    path.write_text(json.dumps(creds))
    path.chmod(0o600)
    return creds


@pytest.fixture(scope="module")
def accounts(tmp_path_factory):
    return tmp_path_factory.mktemp("qwen-accounts")


@pytest.fixture(scope="module")
def gateway(qwen, accounts, tmp_path_factory):
    cfg = {
        "server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 10}},
        "providers": [
            {"id": "qwen", "type": "qwen", "base_url": qwen.base + "/v1",
             "token_url": qwen.base + "/api/v1/oauth2/token",
             "credentials": str(accounts / "main" / "oauth_creds.json")},
            {"id": "pool", "type": "qwen", "base_url": qwen.base + "/v1",
             "token_url": qwen.base + "/api/v1/oauth2/token",
             "credentials": str(accounts / "pool" / "*.json"), "models": ["pool-model"]},
        ],
        "routing": {"aliases": {"pool-model": "pool/coder-model"}},
    }
    (accounts / "main").mkdir()
    (accounts / "pool").mkdir()
    g = Gateway(cfg, tmp_path_factory.mktemp("qwen-gw") / "proxy.yaml")
    yield g
    g.stop()


@pytest.fixture
def creds(qwen, accounts, gateway):
    control(qwen, "/reset")
    for provider in ("qwen", "pool"):  # an earlier test's quota answers are still cooling
        reset_cooldowns(gateway.base, provider)
    path = accounts / "main" / "oauth_creds.json"
    yield path
    control(qwen, "/quota", params={"mode": "ok"})


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def test_expired_token_is_refreshed_and_the_rotated_one_kept(client, qwen, creds):
    seed(qwen, creds, expired=True, id_token="keep-me", custom_field={"a": 1})
    r = client.chat.completions.create(model="coder-model", messages=HELLO)
    assert r.choices[0].message.content == "Echo: hello there"
    on_disk = json.loads(creds.read_text())
    st = state(qwen)
    assert st["refresh_calls"] == 1
    # the rotated refresh token was on disk when the response arrived
    assert on_disk["refresh_token"] == st["current_refresh_token"]
    assert on_disk["access_token"] in st["valid_access_tokens"]
    assert on_disk["expiry_date"] > time.time() * 1000 + 600_000  # epoch milliseconds, as Qwen Code writes
    assert on_disk["id_token"] == "keep-me" and on_disk["custom_field"] == {"a": 1}  # unknown fields survive
    assert oct(creds.stat().st_mode & 0o777) == "0o600"
    assert not creds.with_suffix(".lock").exists()


def test_qwen_headers_and_body_quirks(client, qwen, creds):
    seed(qwen, creds)
    httpx.delete(f"{qwen.base}/__requests")
    messages = [{"role": "user", "content": "hi"}, {"role": "system", "content": "be brief"}]
    stream = client.chat.completions.create(model="coder-model", messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: hi"
    (seen,) = [r for r in httpx.get(f"{qwen.base}/__requests").json() if r["path"] == "/v1/chat/completions"]
    assert seen["headers"]["user-agent"].startswith("QwenCode/")
    assert seen["headers"]["x-dashscope-authtype"] == "qwen-oauth"
    assert seen["headers"]["authorization"] == "Bearer " + json.loads(creds.read_text())["access_token"]
    body = seen["body"]
    assert body["messages"][0] == {"role": "system", "content": [
        {"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]}
    assert body["stream_options"] == {"include_usage": True}


def test_fifty_concurrent_requests_on_an_expired_token_refresh_once(gateway, qwen, creds):
    seed(qwen, creds, expired=True)
    control(qwen, "/config", json={"refresh_delay": 0.5})  # all 50 arrive while the refresh runs

    async def run():
        async with openai.AsyncOpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0,
                                      timeout=30) as c:
            return await asyncio.gather(*(c.chat.completions.create(model="coder-model", messages=HELLO)
                                          for _ in range(50)))

    try:
        answers = asyncio.run(run())
    finally:
        control(qwen, "/config", json={"refresh_delay": 0})
    assert all(a.choices[0].message.content == "Echo: hello there" for a in answers)
    assert state(qwen)["refresh_calls"] == 1


def test_a_revoked_access_token_is_refreshed_on_401_and_retried(client, qwen, creds):
    seed(qwen, creds)
    control(qwen, "/expire_access")
    r = client.chat.completions.create(model="coder-model", messages=HELLO)
    assert r.choices[0].message.content == "Echo: hello there"
    assert state(qwen)["refresh_calls"] == 1


def test_a_new_login_on_disk_is_picked_up(client, qwen, creds):
    seed(qwen, creds)
    client.chat.completions.create(model="coder-model", messages=HELLO)
    control(qwen, "/expire_access")  # the old login's token is dead...
    seed(qwen, creds)  # ...and the user logged in again with Qwen Code
    client.chat.completions.create(model="coder-model", messages=HELLO)
    assert state(qwen)["refresh_calls"] == 0


def test_the_clis_lock_is_honoured(client, qwen, creds):
    """Qwen Code holds ~/.qwen/oauth_creds.lock while it refreshes: the gateway waits, then
    uses the token the CLI wrote instead of refreshing (and burning the rotated token) itself."""
    seed(qwen, creds, expired=True)
    lock = creds.with_suffix(".lock")
    lock.write_text("qwen-code")

    def cli_refresh():
        time.sleep(1.0)
        seed(qwen, creds)  # the CLI's fresh credentials
        lock.unlink()

    t = threading.Thread(target=cli_refresh)
    t.start()
    try:
        r = client.chat.completions.create(model="coder-model", messages=HELLO)
    finally:
        t.join()
    assert r.choices[0].message.content == "Echo: hello there"
    assert state(qwen)["refresh_calls"] == 0


def test_dead_refresh_token_needs_login_and_other_accounts_serve(client, qwen, accounts):
    control(qwen, "/reset")
    dead, alive = accounts / "pool" / "a.json", accounts / "pool" / "b.json"
    seed(qwen, dead, expired=True, refresh_token="revoked-long-ago")
    seed(qwen, alive, expired=True)
    for _ in range(3):  # both accounts get their turn; the dead one is skipped once known
        r = client.chat.completions.create(model="pool-model", messages=HELLO)
        assert r.choices[0].message.content == "Echo: hello there"
    dead.unlink()
    alive.write_text(json.dumps({**json.loads(alive.read_text()), "refresh_token": "gone", "expiry_date": 1}))
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="pool-model", messages=HELLO)
    assert e.value.status_code == 503
    message = e.value.body["message"]
    assert "needs a new login" in message and f"llmgate login qwen --credentials {alive}" in message


def test_quota_and_discontinued_are_named(client, gateway, qwen, creds):
    seed(qwen, creds)
    control(qwen, "/quota", params={"mode": "exhausted", "retry_after": 42})
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="coder-model", messages=HELLO)
    assert e.value.body["code"] == "quota_exhausted" and "quota exhausted" in e.value.body["message"]
    assert e.value.response.headers["retry-after"] == "42"
    # the account now cools down for the 42 s the upstream asked: nothing reaches it meanwhile
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="coder-model", messages=HELLO)
    assert e.value.body["code"] == "pool_exhausted" and "cooling down" in e.value.body["message"]
    assert 40 <= int(e.value.response.headers["retry-after"]) <= 42
    calls = len([q for q in httpx.get(f"{qwen.base}/__requests").json() if q["path"] == "/v1/chat/completions"])
    with pytest.raises(openai.RateLimitError):  # a spent quota is the account's: its other models wait too
        client.chat.completions.create(model="vision-model", messages=HELLO)
    assert calls == len([q for q in httpx.get(f"{qwen.base}/__requests").json()
                         if q["path"] == "/v1/chat/completions"])
    reset_cooldowns(gateway.base, "qwen")  # the operator's reset
    control(qwen, "/quota", params={"mode": "discontinued"})
    with pytest.raises(openai.PermissionDeniedError) as e:
        client.chat.completions.create(model="coder-model", messages=HELLO)
    assert e.value.body["code"] == "service_discontinued"


def test_credentials_file_is_never_seen_half_written(client, qwen, creds):
    """Many refreshes while another process reads the file as fast as it can."""
    seed(qwen, creds)
    seen, bad, stop = [0], [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                data = json.loads(creds.read_text())
                assert data["access_token"] and data["refresh_token"]
                seen[0] += 1
            except FileNotFoundError:
                bad.append("missing")
            except (ValueError, KeyError, AssertionError) as e:
                bad.append(repr(e))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(15):
            control(qwen, "/expire_access")
            client.chat.completions.create(model="coder-model", messages=HELLO)
    finally:
        stop.set()
        t.join()
    assert state(qwen)["refresh_calls"] == 15
    assert not bad and seen[0] > 100
    assert not [f for f in os.listdir(creds.parent) if f.endswith(".tmp")]
