"""GitHub Copilot through the gateway: the openai, anthropic and google-genai SDKs as clients,
the strict Copilot double (GitHub device flow, token trade, Copilot API) as upstream, and
`llmgate login copilot` as users run it."""

import asyncio
import json
import time

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types

from tests.e2e.conftest import CLIENT_KEY
from tests.e2e.signin_doubles import VendorDouble, control, gateway_config, seed, start_afresh, state
from tests.harness import BIN, Gateway, Proc

MODEL = "gpt-4.1"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def copilot():
    u = VendorDouble("copilot_api", "/__copilot")
    yield u
    u.stop()


def chat_calls(copilot) -> list[dict]:
    return [r for r in copilot.received() if r["path"] == "/chat/completions"]


@pytest.fixture(scope="module")
def accounts(tmp_path_factory):
    return tmp_path_factory.mktemp("copilot-accounts")


@pytest.fixture(scope="module")
def gateway(copilot, accounts, tmp_path_factory):
    # no base_url: the chat host is the one the token trade names (endpoints.api)
    common = {"type": "copilot", "token_url": copilot.base + "/copilot_internal/v2/token"}
    cfg = gateway_config(common, [
        {"id": "copilot", "credentials": str(accounts / "main.json")},  # models: discovered
        {"id": "cp-a", "credentials": str(accounts / "a.json"), "models": ["duo-model"]},
        {"id": "cp-b", "credentials": str(accounts / "b.json"), "models": ["duo-model"]},
    ], {"duo-model": [f"cp-a/{MODEL}", f"cp-b/{MODEL}"]})
    g = Gateway(cfg, tmp_path_factory.mktemp("copilot-gw") / "proxy.yaml")
    yield g
    g.stop()


@pytest.fixture
def creds(copilot, accounts, gateway):
    start_afresh(copilot, gateway.base, ["copilot", "cp-a", "cp-b"])
    return accounts / "main.json"


def test_every_client_api_reaches_copilot_with_the_editor_headers(gateway, client, copilot, creds):
    github = seed(copilot, creds, login="octo")["oauth_token"]
    r = client.chat.completions.create(model=MODEL, messages=HELLO)
    assert r.choices[0].message.content == "Echo: hello there" and r.model == MODEL
    chunks = client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello there"
    assert client.responses.create(model=MODEL, input="hi copilot").output_text == "Echo: hi copilot"
    msg = anthropic.Anthropic(base_url=gateway.base, api_key=CLIENT_KEY, max_retries=0, timeout=30).messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "from claude"}])
    assert msg.content[-1].text == "Echo: from claude"
    g = genai.Client(api_key=CLIENT_KEY, http_options=types.HttpOptions(base_url=gateway.base, timeout=30_000))
    assert g.models.generate_content(model=MODEL, contents="from gemini").text == "Echo: from gemini"
    assert state(copilot)["trades"] == 1  # one Copilot token serves them all
    on_disk = json.loads(creds.read_text())
    assert on_disk["oauth_token"] == github and on_disk["api_url"] == copilot.base
    assert on_disk["copilot_token"] in state(copilot)["valid_copilot_tokens"]
    for call in chat_calls(copilot):
        h = call["headers"]
        assert h["authorization"] == "Bearer " + on_disk["copilot_token"]
        assert h["editor-version"].startswith("vscode/") and h["copilot-integration-id"] == "vscode-chat"
        assert h["editor-plugin-version"].startswith("copilot-chat/") and h["x-initiator"] == "user"
        assert github not in json.dumps(call)  # the GitHub token never goes to the Copilot API


def test_models_come_from_the_models_endpoint(gateway, copilot, creds):
    seed(copilot, creds)
    r = httpx.get(gateway.base + "/v1/models", headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=30)
    ids = {m["id"] for m in r.json()["data"]}
    # the double lists these only to a request with a live Copilot token and the editor headers
    assert {"gpt-4.1", "gpt-5-mini", "claude-sonnet-4.5"} <= ids and "text-embedding-3-small" not in ids


def test_fifty_concurrent_requests_on_an_expired_copilot_token_trade_once(gateway, copilot, creds):
    github = seed(copilot, creds)["oauth_token"]
    creds.write_text(json.dumps({"oauth_token": github, "copilot_token": "tid=stale;exp=1", "expiry_date": 1000}))
    control(copilot, "config", {"trade_delay": 0.5})  # all 50 arrive while the trade runs

    async def run():
        async with openai.AsyncOpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0,
                                      timeout=30) as c:
            return await asyncio.gather(*(c.chat.completions.create(model=MODEL, messages=HELLO)
                                          for _ in range(50)))

    try:
        answers = asyncio.run(run())
    finally:
        control(copilot, "config", {"trade_delay": 0})
    assert all(a.choices[0].message.content == "Echo: hello there" for a in answers)
    assert state(copilot)["trades"] == 1
    calls = chat_calls(copilot)
    assert len(calls) == 50 and not [c for c in calls if "stale" in c["headers"]["authorization"]]
    assert json.loads(creds.read_text())["expiry_date"] > (time.time() + 600) * 1000  # traded before it expires


def test_a_revoked_copilot_token_is_traded_again_on_401(client, copilot, creds):
    seed(copilot, creds)
    client.chat.completions.create(model=MODEL, messages=HELLO)
    control(copilot, "expire")
    assert client.chat.completions.create(model=MODEL, messages=HELLO).choices[0].message.content
    assert state(copilot)["trades"] == 2


def test_no_copilot_subscription_and_a_dead_github_token_need_a_login(client, copilot, creds):
    seed(copilot, creds, copilot=False)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert e.value.status_code == 503 and "no Copilot access" in e.value.body["message"]
    creds.write_text(json.dumps({"oauth_token": "gho_revoked0000000000000000"}))
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert e.value.status_code == 503 and "llmgate login copilot" in e.value.body["message"]
    assert "gho_revoked" not in json.dumps(e.value.body)


def test_rate_limit_and_quota_are_named_429s_that_cool_the_account(client, copilot, creds):
    seed(copilot, creds, login="busy")
    control(copilot, "limit", {"login": "busy", "mode": "quota", "retry_after": 90})
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert e.value.body["code"] == "quota_exhausted" and e.value.response.headers["retry-after"] == "90"
    calls = len(chat_calls(copilot))
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="gpt-5-mini", messages=HELLO)  # the whole account waits
    assert e.value.body["code"] == "pool_exhausted" and 85 <= int(e.value.response.headers["retry-after"]) <= 90
    assert len(chat_calls(copilot)) == calls


def test_failover_between_two_accounts(client, copilot, creds, accounts):
    seed(copilot, accounts / "a.json", login="alice")
    seed(copilot, accounts / "b.json", login="bob")
    control(copilot, "limit", {"login": "alice", "mode": "rate_limited", "retry_after": 120})
    for _ in range(3):
        assert client.chat.completions.create(model="duo-model", messages=HELLO).choices[0].message.content
    limited = [c for c in chat_calls(copilot) if c["headers"]["authorization"].endswith(
        json.loads((accounts / "a.json").read_text())["copilot_token"])]
    assert len(limited) <= 1 and len(chat_calls(copilot)) - len(limited) == 3


def test_login_copilot_device_flow_writes_a_token_the_gateway_uses(client, copilot, creds):
    control(copilot, "config", {"poll_interval": 0.3})
    creds.unlink(missing_ok=True)
    p = Proc([str(BIN / "llmgate"), "login", "copilot", "--credentials", str(creds), "--timeout", "30",
              "--device-url", f"{copilot.base}/login/device/code",
              "--token-url", f"{copilot.base}/login/oauth/access_token"])
    try:
        code = p.wait_for(r"enter the code (\S+)\.").group(1)
        assert "terms" in p.output
        time.sleep(0.8)  # a few pending polls first
        control(copilot, "approve", user_code=code, login="newbie")
        p.p.wait(30)
    finally:
        p.stop()
    assert p.p.returncode == 0, p.output
    data = json.loads(creds.read_text())
    assert data["oauth_token"].startswith("gho_") and oct(creds.stat().st_mode & 0o777) == "0o600"
    assert state(copilot)["device_polls"] >= 2
    assert client.chat.completions.create(model=MODEL, messages=HELLO).choices[0].message.content


def test_a_denied_device_login_fails_cleanly(copilot, tmp_path):
    control(copilot, "config", {"poll_interval": 0.3})
    path = tmp_path / "copilot.json"
    p = Proc([str(BIN / "llmgate"), "login", "copilot", "--credentials", str(path), "--timeout", "30",
              "--device-url", f"{copilot.base}/login/device/code",
              "--token-url", f"{copilot.base}/login/oauth/access_token"])
    try:
        code = p.wait_for(r"enter the code (\S+)\.").group(1)
        control(copilot, "deny", user_code=code)
        p.p.wait(30)
    finally:
        p.stop()
    time.sleep(0.1)
    assert p.p.returncode == 1 and "Login failed: access_denied" in p.output
    assert "Traceback" not in p.output and not path.exists()


# --- the endpoint each model is served on (its supported_endpoints in Copilot's /models) -------

CHAT, RESPONSES, MESSAGES = "/chat/completions", "/responses", "/v1/messages"
CODEX, OPUS, SONNET = "gpt-5.1-codex", "claude-opus-4.5", "claude-sonnet-4.5"  # see the double's ENDPOINTS
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


@pytest.fixture(scope="module")
def signed_in(tmp_path_factory):
    """Its own double and gateway, the account signed in before the gateway starts, so that
    model discovery (which says where each model is served) succeeds at once."""
    up = VendorDouble("copilot_api", "/__copilot")
    creds = tmp_path_factory.mktemp("copilot-signed-in") / "account.json"
    seed(up, creds, login="octo")
    common = {"type": "copilot", "credentials": str(creds), "token_url": up.base + "/copilot_internal/v2/token"}
    g = Gateway(gateway_config(common, [{"id": "copilot"}, {"id": "cp-listed", "models": [CODEX]}]),
                creds.parent / "proxy.yaml")
    try:
        ids = {m["id"] for m in httpx.get(g.base + "/v1/models", headers=AUTH, timeout=30).json()["data"]}
        assert {CODEX, OPUS} <= ids  # discovered: they are in no built-in list
        yield up, g
    finally:
        g.stop()
        up.stop()


def ask(base: str, api: str, model: str, stream: bool, text: str) -> str:
    """One request from an official SDK; the answer's text."""
    if api in ("chat", "responses"):
        c = openai.OpenAI(base_url=base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)
        if api == "chat":
            r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], stream=stream)
            if not stream:
                assert r.model == model
                return r.choices[0].message.content
            return "".join(ch.choices[0].delta.content or "" for ch in r if ch.choices)
        if not stream:
            return c.responses.create(model=model, input=text).output_text
        events = list(c.responses.create(model=model, input=text, stream=True))
        assert events[-1].type == "response.completed" and events[-1].response.model == model
        return "".join(e.delta for e in events if e.type == "response.output_text.delta")
    if api == "anthropic":
        a = anthropic.Anthropic(base_url=base, api_key=CLIENT_KEY, max_retries=0, timeout=30)
        msgs = [{"role": "user", "content": text}]
        if not stream:
            return "".join(b.text for b in a.messages.create(model=model, max_tokens=200, messages=msgs).content
                           if b.type == "text")
        with a.messages.stream(model=model, max_tokens=200, messages=msgs) as s:
            return "".join(s.text_stream)
    g = genai.Client(api_key=CLIENT_KEY, http_options=types.HttpOptions(base_url=base, timeout=30_000))
    if not stream:
        return g.models.generate_content(model=model, contents=text).text
    return "".join(ch.text or "" for ch in g.models.generate_content_stream(model=model, contents=text))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("model, api, endpoint", [
    (CODEX, "chat", RESPONSES), (CODEX, "responses", RESPONSES), (CODEX, "anthropic", RESPONSES),
    (CODEX, "gemini", RESPONSES),  # served on /responses only
    (OPUS, "chat", MESSAGES), (OPUS, "responses", MESSAGES), (OPUS, "anthropic", MESSAGES),
    (OPUS, "gemini", MESSAGES),  # on /v1/messages only
    (SONNET, "anthropic", MESSAGES), (SONNET, "chat", CHAT), (SONNET, "gemini", CHAT),  # both: the client's own first
    ("gpt-5-mini", "responses", RESPONSES), ("gpt-5-mini", "anthropic", CHAT),
    ("gpt-4.1", "responses", CHAT), ("gpt-4.1", "anthropic", CHAT), ("gpt-4.1", "gemini", CHAT),  # chat only
])
def test_each_model_goes_to_the_endpoint_copilot_lists_for_it(signed_in, model, api, endpoint, stream):
    up, g = signed_in
    up.clear()
    text = f"{api} to {model}"
    assert ask(g.base, api, model, stream, text) == f"Echo: {text}"
    calls = [c for c in up.received() if c["method"] == "POST"]
    assert [c["path"] for c in calls] == [endpoint]
    h = calls[0]["headers"]
    assert h["authorization"].startswith("Bearer tid=") and h["copilot-integration-id"] == "vscode-chat"
    assert h["editor-version"].startswith("vscode/") and h["x-initiator"] == "user"
    sent = calls[0]["body"]
    assert sent["model"] == model and bool(sent.get("stream")) == stream


def test_the_double_refuses_a_model_on_an_endpoint_it_is_not_listed_on(copilot, creds):
    github = seed(copilot, creds)["oauth_token"]
    token = httpx.get(copilot.base + "/copilot_internal/v2/token", headers={"Authorization": f"token {github}"}).json()
    headers = {"Authorization": f"Bearer {token['token']}", "Editor-Version": "vscode/1.104.1",
               "Copilot-Integration-Id": "vscode-chat", "anthropic-version": "2023-06-01"}
    hi = [{"role": "user", "content": "hi"}]
    for path, body in ((CHAT, {"model": CODEX, "messages": hi}), (RESPONSES, {"model": "gpt-4.1", "input": "hi"}),
                       (MESSAGES, {"model": CODEX, "max_tokens": 5, "messages": hi})):
        r = httpx.post(copilot.base + path, json=body, headers=headers)
        model = body["model"]
        assert r.status_code == 400 and r.json() == {"error": {
            "message": f'model "{model}" is not accessible via the {path} endpoint',
            "code": "unsupported_api_for_model"}}


def test_the_admin_provider_test_uses_the_models_own_endpoint(signed_in):
    up, g = signed_in
    for model, endpoint in ((CODEX, RESPONSES), (OPUS, MESSAGES), ("gpt-4.1", CHAT)):
        up.clear()
        tested = httpx.post(g.base + "/admin/providers/copilot/test", json={"model": model}, timeout=30).json()
        assert tested["ok"] and tested["status"] == 200, json.dumps(tested)
        assert [c["path"] for c in up.received() if c["method"] == "POST"] == [endpoint]


def test_a_models_list_in_the_config_still_learns_where_each_model_is_served(signed_in):
    up, g = signed_in
    up.clear()
    c = openai.OpenAI(base_url=g.base + "/cp-listed/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)
    r = c.chat.completions.create(model=CODEX, messages=HELLO)
    assert r.choices[0].message.content == "Echo: hello there"
    assert [c["path"] for c in up.received() if c["method"] == "POST"] == [RESPONSES]


def test_a_request_made_while_the_models_list_is_on_its_way_waits_for_it(tmp_path):
    """The gateway asks /models as it starts; a request for a /responses-only model made before that
    answer came was sent to chat completions (and refused, unsupported_api_for_model)."""
    up = VendorDouble("copilot_api", "/__copilot")
    try:
        creds = tmp_path / "account.json"
        seed(up, creds, login="octo")
        control(up, "config", {"models_delay": 3})  # the gateway waits at most 5 s for it
        common = {"type": "copilot", "credentials": str(creds), "token_url": up.base + "/copilot_internal/v2/token"}
        g = Gateway(gateway_config(common, [{"id": "cp-listed", "models": [CODEX]}]), tmp_path / "proxy.yaml")
        try:
            assert ask(g.base, "chat", CODEX, False, "early") == "Echo: early"
            assert [c["path"] for c in up.received() if c["path"] in (CHAT, RESPONSES, MESSAGES)] == [RESPONSES]
        finally:
            g.stop()
    finally:
        up.stop()
