"""ChatGPT sign-ins (Codex) through the gateway: the openai, anthropic and google-genai SDKs as
clients, the strict Codex double (auth server + backend) as upstream, auth.json files as Codex
CLI writes them, and `llmgate login codex` as users run it."""

import asyncio
import json
import socket

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types

from tests.e2e.conftest import CLIENT_KEY
from tests.e2e.signin_doubles import VendorDouble, control, gateway_config, seed, start_afresh, state
from tests.harness import BIN, Gateway, Proc

MODEL = "gpt-5.1-codex"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def codex():
    u = VendorDouble("codex_backend", "/__codex")
    yield u
    u.stop()


def backend_calls(codex) -> list[dict]:
    return [r for r in codex.received() if r["path"] == "/backend-api/codex/responses"]


@pytest.fixture(scope="module")
def accounts(tmp_path_factory):
    return tmp_path_factory.mktemp("codex-home")


@pytest.fixture(scope="module")
def gateway(codex, accounts, tmp_path_factory):
    common = {"type": "codex", "base_url": codex.base + "/backend-api/codex", "token_url": codex.base + "/oauth/token"}
    cfg = gateway_config(common, [
        {"id": "codex", "credentials": str(accounts / "main" / "auth.json")},
        {"id": "pool", "credentials": str(accounts / "pool" / "*.json"), "models": ["pool-model"]},
        {"id": "codex-a", "credentials": str(accounts / "pool" / "a.json"), "models": ["duo-model"]},
        {"id": "codex-b", "credentials": str(accounts / "pool" / "b.json"), "models": ["duo-model"]},
    ], {"pool-model": f"pool/{MODEL}", "duo-model": [f"codex-a/{MODEL}", f"codex-b/{MODEL}"]})
    g = Gateway(cfg, tmp_path_factory.mktemp("codex-gw") / "proxy.yaml")
    yield g
    g.stop()


@pytest.fixture
def creds(codex, accounts, gateway):
    start_afresh(codex, gateway.base, ["codex", "pool", "codex-a", "codex-b"])
    return accounts / "main" / "auth.json"


def test_requests_go_as_codex_cli_sends_them_from_every_client_api(gateway, client, codex, creds):
    seed(codex, creds, account_id="acct-main")
    r = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=50, temperature=0.2)
    assert r.choices[0].message.content == "Echo: hello there" and r.model == MODEL  # collected from the stream
    chunks = client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello there"
    resp = client.responses.create(model=MODEL, input="hi codex", store=True)  # passthrough, store forced off
    assert resp.output_text == "Echo: hi codex"
    msg = anthropic.Anthropic(base_url=gateway.base, api_key=CLIENT_KEY, max_retries=0, timeout=30).messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "from claude"}])
    assert msg.content[-1].text == "Echo: from claude"
    g = genai.Client(api_key=CLIENT_KEY, http_options=types.HttpOptions(base_url=gateway.base, timeout=30_000))
    assert g.models.generate_content(model=MODEL, contents="from gemini").text == "Echo: from gemini"
    calls = backend_calls(codex)
    assert len(calls) == 5
    token = json.loads(creds.read_text())["tokens"]["access_token"]
    for call in calls:
        h, body = call["headers"], call["body"]
        assert h["authorization"] == f"Bearer {token}" and h["chatgpt-account-id"] == "acct-main"
        assert h["originator"] == "codex_cli_rs" and h["session_id"] and h["user-agent"].startswith("codex_cli_rs/")
        assert body["store"] is False and body["stream"] is True and isinstance(body["instructions"], str)
        assert not {"max_output_tokens", "temperature", "top_p"} & set(body)


def test_fifty_concurrent_requests_on_an_expired_token_refresh_once(gateway, codex, creds):
    seed(codex, creds, expired=True, account_id="acct-main")
    before = json.loads(creds.read_text())
    control(codex, "config", {"refresh_delay": 0.5})  # all 50 arrive while the refresh runs

    async def run():
        async with openai.AsyncOpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0,
                                      timeout=30) as c:
            return await asyncio.gather(*(c.chat.completions.create(model=MODEL, messages=HELLO)
                                          for _ in range(50)))

    try:
        answers = asyncio.run(run())
    finally:
        control(codex, "config", {"refresh_delay": 0})
    assert all(a.choices[0].message.content == "Echo: hello there" for a in answers)
    st = state(codex)
    assert st["refresh_calls"] == 1 and st["refresh_failures"] == 0
    on_disk = json.loads(creds.read_text())
    assert on_disk["tokens"]["refresh_token"] == st["current_refresh_token"]["acct-main"]  # rotation kept
    assert on_disk["tokens"]["refresh_token"] != before["tokens"]["refresh_token"]
    assert on_disk["tokens"]["access_token"] in st["valid_access_tokens"]
    assert on_disk["tokens"]["account_id"] == "acct-main" and on_disk["OPENAI_API_KEY"] is None
    assert on_disk["last_refresh"] > before["last_refresh"]
    assert oct(creds.stat().st_mode & 0o777) == "0o600"


def test_a_revoked_token_is_refreshed_on_401_and_a_dead_refresh_token_needs_login(client, codex, creds):
    seed(codex, creds, account_id="acct-main")
    control(codex, "expire_access")
    assert client.chat.completions.create(model=MODEL, messages=HELLO).choices[0].message.content
    assert state(codex)["refresh_calls"] == 1
    data = json.loads(creds.read_text())
    data["tokens"]["refresh_token"] = "rt_used-long-ago"
    creds.write_text(json.dumps(data))
    control(codex, "expire_access")
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert e.value.status_code == 503 and e.value.body["code"] == "provider_login_required"
    assert "refresh_token_reused" in e.value.body["message"] and "llmgate login codex" in e.value.body["message"]
    assert "rt_used-long-ago" not in json.dumps(e.value.body)


def test_usage_limit_is_a_named_429_with_retry_after_and_cools_the_account(client, codex, creds):
    seed(codex, creds, account_id="acct-main", plan="plus")
    control(codex, "usage_limit", {"account_id": "acct-main", "resets_in_seconds": 120})
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert e.value.body["code"] == "quota_exhausted" and "usage limit" in e.value.body["message"]
    assert "plan plus" in e.value.body["message"]
    assert 118 <= int(e.value.response.headers["retry-after"]) <= 120
    calls = len(backend_calls(codex))
    with pytest.raises(openai.RateLimitError) as e:  # cooling: the backend is not asked again
        client.responses.create(model="gpt-5.1-codex-mini", input="again")
    assert e.value.body["code"] == "pool_exhausted" and "cooling down" in e.value.body["message"]
    assert 115 <= int(e.value.response.headers["retry-after"]) <= 120
    assert len(backend_calls(codex)) == calls


def test_a_usage_limit_failing_the_stream_is_named_for_a_client_that_did_not_stream(client, codex, creds):
    """The backend may answer 200 and fail the stream with the limit (Codex CLI reads both ways)."""
    seed(codex, creds, account_id="acct-main")
    control(codex, "usage_limit", {"account_id": "acct-main", "resets_in_seconds": 60, "in_stream": True})
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert e.value.body["code"] == "quota_exhausted" and 58 <= int(e.value.response.headers["retry-after"]) <= 60
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert e.value.body["code"] == "pool_exhausted"  # the account cools down as for an HTTP 429


def test_a_usage_limit_failing_the_stream_after_response_created_is_a_429_for_a_streaming_client(
        client, codex, creds):
    """response.created carries no content: the limit after it is still the stream's first event,
    so a streaming client gets the named 429 (nothing was sent yet) and the account cools."""
    seed(codex, creds, account_id="acct-main")
    control(codex, "usage_limit", {"account_id": "acct-main", "resets_in_seconds": 60, "in_stream": True})
    with pytest.raises(openai.RateLimitError) as e:
        for _ in client.chat.completions.create(model=MODEL, messages=HELLO, stream=True):
            pass
    assert e.value.body["code"] == "quota_exhausted" and 58 <= int(e.value.response.headers["retry-after"]) <= 60
    calls = len(backend_calls(codex))
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
    assert e.value.body["code"] == "pool_exhausted" and len(backend_calls(codex)) == calls


def test_failover_between_two_accounts(client, codex, creds, accounts):
    """Two accounts pooled under one model: the limited one fails over to the other within the
    request and cools down; an entry holding both (a glob) takes the other one from then on."""
    a, b = accounts / "pool" / "a.json", accounts / "pool" / "b.json"
    seed(codex, a, account_id="acct-a")
    seed(codex, b, account_id="acct-b")
    control(codex, "usage_limit", {"account_id": "acct-a", "resets_in_seconds": 300})
    for _ in range(4):
        r = client.chat.completions.create(model="duo-model", messages=HELLO)
        assert r.choices[0].message.content == "Echo: hello there"
    seen = [c["headers"]["chatgpt-account-id"] for c in backend_calls(codex)]
    assert seen.count("acct-a") <= 1 and seen.count("acct-b") == 4  # a: limited once at most, then cooling
    codex.clear()
    answers = []
    for _ in range(4):
        try:
            answers.append(client.chat.completions.create(model="pool-model", messages=HELLO).choices[0].message.content)
        except openai.RateLimitError as e:
            answers.append(e.body["code"])
    seen = [c["headers"]["chatgpt-account-id"] for c in backend_calls(codex)]
    assert answers.count("Echo: hello there") >= 3 and set(answers) <= {"Echo: hello there", "quota_exhausted"}
    assert seen.count("acct-a") == answers.count("quota_exhausted") <= 1


def test_login_codex_writes_what_codex_cli_reads_and_the_gateway_uses_it(client, codex, creds, tmp_path):
    p = Proc([str(BIN / "llmgate"), "login", "codex", "--credentials", str(creds), "--port", "0", "--no-browser",
              "--timeout", "30", "--auth-url", f"{codex.base}/oauth/authorize",
              "--token-url", f"{codex.base}/oauth/token"])
    try:
        url = p.wait_for(r"(http://127\.0\.0\.1:\d+/oauth/authorize\?\S+)").group(1)
        assert "terms" in p.output  # the warning comes first
        page = httpx.get(url)  # the browser: the issuer sends it to the loopback callback
        assert page.status_code == 302
        callback = page.headers["location"]
        assert callback.startswith("http://localhost:") and "/auth/callback?code=" in callback
        assert httpx.get(callback.replace("//localhost:", "//127.0.0.1:", 1)).status_code == 200
        p.p.wait(30)
    finally:
        p.stop()
    assert p.p.returncode == 0, p.output
    data = json.loads(creds.read_text())
    tokens = data["tokens"]
    assert set(tokens) == {"id_token", "access_token", "refresh_token", "account_id"}
    assert tokens["account_id"].startswith("acct-") and data["auth_mode"] == "chatgpt"
    assert tokens["refresh_token"] in state(codex)["valid_refresh_tokens"] and data["last_refresh"].endswith("Z")
    assert oct(creds.stat().st_mode & 0o777) == "0o600"
    assert client.chat.completions.create(model=MODEL, messages=HELLO).choices[0].message.content
    assert backend_calls(codex)[-1]["headers"]["chatgpt-account-id"] == tokens["account_id"]


def test_login_codex_takes_the_fallback_port_when_1455_is_taken(codex, tmp_path):
    """Codex CLI's callback ports are allow-listed: 1455, then 1457; never a random one."""
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", 1455))
        except OSError:
            pytest.skip("port 1455 is in use here")
        taken.listen()
        p = Proc([str(BIN / "llmgate"), "login", "codex", "--credentials", str(tmp_path / "auth.json"),
                  "--no-browser", "--timeout", "30", "--auth-url", f"{codex.base}/oauth/authorize",
                  "--token-url", f"{codex.base}/oauth/token"])
        try:
            url = p.wait_for(r"(http://127\.0\.0\.1:\d+/oauth/authorize\?\S+)").group(1)
            assert "redirect_uri=http%3A%2F%2Flocalhost%3A1457%2Fauth%2Fcallback" in url
            callback = httpx.get(url).headers["location"].replace("//localhost:", "//127.0.0.1:", 1)
            assert httpx.get(callback).status_code == 200
            p.p.wait(30)
        finally:
            p.stop()
    assert p.p.returncode == 0, p.output
    assert json.loads((tmp_path / "auth.json").read_text())["tokens"]["access_token"]
