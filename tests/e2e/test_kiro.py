"""Kiro through the gateway: the openai and anthropic SDKs as clients, the strict Kiro double
(binary AWS event streams, social and IdC refresh) as upstream."""

import json
import subprocess
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY, reset_cooldowns
from tests.harness import BIN, Gateway, Upstream

HELLO = [{"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


@pytest.fixture(scope="module")
def kiro():
    u = Upstream("kiro_api")
    yield u
    u.stop()


def seed(kiro, path, auth: str, expired: bool = False) -> dict:
    creds = httpx.post(f"{kiro.base}/__seed", json={"auth": auth, "expired": expired}).json()
    client = creds.pop("_client", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(creds))
    if client:
        (path.parent / f"{creds['clientIdHash']}.json").write_text(json.dumps(client))
    return creds


def state(kiro) -> dict:
    return httpx.get(f"{kiro.base}/__state").json()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tmp_path_factory.mktemp("kiro")


@pytest.fixture(scope="module")
def gateway(kiro, files, tmp_path_factory):
    cfg = {"server": {"api_keys": [CLIENT_KEY]},
           "providers": [
               {"id": "kiro", "type": "kiro", "base_url": kiro.base, "token_url": kiro.base + "/refreshToken",
                "credentials": str(files / "social" / "kiro-auth-token.json")},
               {"id": "kiro-idc", "type": "kiro", "base_url": kiro.base, "token_url": kiro.base + "/token",
                "credentials": str(files / "idc" / "kiro-auth-token.json"), "models": ["idc-sonnet"]}],
           "routing": {"aliases": {"idc-sonnet": "kiro-idc/claude-sonnet-4-5"}}}
    g = Gateway(cfg, tmp_path_factory.mktemp("kiro-gw") / "proxy.yaml")
    yield g
    g.stop()


@pytest.fixture
def oai(gateway):
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def test_social_login_refreshed_then_chat(oai, kiro, files):
    before = seed(kiro, files / "social" / "kiro-auth-token.json", "social", expired=True)
    r = oai.chat.completions.create(model="claude-sonnet-4-5", messages=HELLO)
    assert r.choices[0].message.content == "Echo: hello there" and r.model == "claude-sonnet-4-5"
    assert r.usage.completion_tokens > 0
    on_disk = json.loads((files / "social" / "kiro-auth-token.json").read_text())
    assert on_disk["refreshToken"] != before["refreshToken"]  # rotated, and kept
    assert on_disk["expiresAt"].endswith("Z") and on_disk["authMethod"] == before["authMethod"]
    stream = oai.chat.completions.create(model="claude-sonnet-4-5", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: hello there"
    sent = [q for q in httpx.get(f"{kiro.base}/__requests").json() if q["path"] == "/generateAssistantResponse"][-1]
    assert sent["body"]["conversationState"]["currentMessage"]["userInputMessage"]["modelId"] == "claude-sonnet-4.5"
    assert sent["body"]["profileArn"] == on_disk["profileArn"]


def test_tool_use_streamed_and_reassembled_exactly_once(oai, kiro, files):
    seed(kiro, files / "social" / "kiro-auth-token.json", "social")
    stream = oai.chat.completions.create(model="claude-sonnet-4-5", messages=HELLO, tools=TOOLS, stream=True)
    args: dict[int, str] = {}
    for chunk in stream:
        for tc in (chunk.choices[0].delta.tool_calls or ()) if chunk.choices else ():
            args[tc.index] = args.get(tc.index, "") + (tc.function.arguments or "")
    assert [json.loads(a) for a in args.values()] == [{"tool": "get_weather", "n": 0}]  # the double repeats a fragment


def test_anthropic_client_with_tool_loop(gateway, kiro, files):
    seed(kiro, files / "social" / "kiro-auth-token.json", "social")
    c = anthropic.Anthropic(base_url=gateway.base, api_key=CLIENT_KEY, max_retries=0)
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": TOOLS[0]["function"]["parameters"]}]
    with c.messages.stream(model="claude-opus-4-5", max_tokens=200, messages=HELLO, tools=tools) as s:
        msg = s.get_final_message()
    (use,) = [b for b in msg.content if b.type == "tool_use"]
    assert use.input == {"tool": "get_weather", "n": 0} and msg.stop_reason == "tool_use"
    follow = [*HELLO, {"role": "assistant", "content": msg.content},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}]
    r = c.messages.create(model="claude-opus-4-5", max_tokens=200, messages=follow, tools=tools)
    assert r.content[0].text.startswith("Tool results: ")


def test_idc_login_refreshed_with_its_client_registration(oai, kiro, files):
    seed(kiro, files / "idc" / "kiro-auth-token.json", "idc", expired=True)
    calls = state(kiro)["idc_refresh_calls"]
    r = oai.chat.completions.create(model="idc-sonnet", messages=HELLO)
    assert r.choices[0].message.content == "Echo: hello there"
    assert state(kiro)["idc_refresh_calls"] == calls + 1


def test_a_stale_token_gets_403_then_refresh_and_retry(oai, kiro, files):
    seed(kiro, files / "social" / "kiro-auth-token.json", "social")
    httpx.post(f"{kiro.base}/__expire_access")
    r = oai.chat.completions.create(model="claude-sonnet-4-5", messages=HELLO)
    assert r.choices[0].message.content == "Echo: hello there"


@pytest.mark.parametrize("mode, code", [("throttling", "rate_limited"), ("quota", "quota_exhausted")])
def test_throttling_and_quota_are_named(oai, gateway, kiro, files, mode, code):
    seed(kiro, files / "social" / "kiro-auth-token.json", "social")
    reset_cooldowns(gateway.base, "kiro")
    httpx.post(f"{kiro.base}/__scenario", json={"mode": mode, "times": 1})
    with pytest.raises(openai.RateLimitError) as e:
        oai.chat.completions.create(model="claude-sonnet-4-5", messages=HELLO)
    assert e.value.body["code"] == code
    reset_cooldowns(gateway.base, "kiro")


def test_throttling_mid_stream_is_an_error_event(oai, gateway, kiro, files):
    seed(kiro, files / "social" / "kiro-auth-token.json", "social")
    reset_cooldowns(gateway.base, "kiro")
    httpx.post(f"{kiro.base}/__scenario", json={"mode": "throttling_stream", "times": 1})
    stream = oai.chat.completions.create(model="claude-sonnet-4-5", messages=HELLO, stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_models_come_from_list_available_models(kiro, tmp_path):
    """With a login on disk at start, the list is Kiro's own (both spellings of each id)."""
    creds = tmp_path / "kiro-auth-token.json"
    seed(kiro, creds, "social")
    cfg = {"providers": [{"id": "kiro", "type": "kiro", "base_url": kiro.base, "credentials": str(creds),
                          "token_url": kiro.base + "/refreshToken"}]}
    g = Gateway(cfg, tmp_path / "proxy.yaml")
    try:
        ids = {m.id for m in openai.OpenAI(base_url=g.base + "/v1", api_key="any").models.list()}
    finally:
        g.stop()
    assert {"claude-sonnet-4.5", "claude-sonnet-4-5", "claude-haiku-4.5"} <= ids
    listed = [q for q in httpx.get(f"{kiro.base}/__requests").json() if q["path"] == "/ListAvailableModels"]
    assert listed and "profileArn=" in listed[-1]["query"]


@pytest.mark.parametrize("mode", ["split", "corrupt"])
def test_byte_split_and_corrupt_streams(oai, gateway, kiro, files, mode):
    seed(kiro, files / "social" / "kiro-auth-token.json", "social")
    reset_cooldowns(gateway.base, "kiro")
    httpx.post(f"{kiro.base}/__scenario", json={"mode": mode, "times": 1})
    stream = oai.chat.completions.create(model="claude-sonnet-4-5", messages=HELLO, stream=True)
    if mode == "split":  # one byte per write: the same answer
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: hello there"
    else:  # a frame whose CRC is wrong: an error, never garbage
        with pytest.raises(openai.APIError):
            for _ in stream:
                pass



def llmgate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "llmgate"), *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_an_idc_login_imported_into_the_shared_store_refreshes_on_a_host_without_kiros_folder(kiro, redis, tmp_path):
    """IdC tokens refresh with the client registration Kiro keeps beside its token file. A host that
    reads the login from the shared store (server.state) has no such file: the registration travels
    into the store with the tokens (`llmgate credentials import`), and `credentials export` leaves it
    out of the IDE's file again."""
    def host(name: str) -> tuple[dict, Path]:
        folder = tmp_path / name
        cfg = {"server": {"api_keys": [CLIENT_KEY], "state": redis.url},
               "providers": [{"id": "kiro-idc", "type": "kiro", "base_url": kiro.base, "token_url": kiro.base + "/token",
                              "credentials": str(folder / "sso" / "kiro-auth-token.json"),
                              "models": ["claude-sonnet-4-5"]}]}
        folder.mkdir()
        (folder / "proxy.yaml").write_text(json.dumps(cfg))
        return cfg, folder

    _, ide = host("ide")  # the machine the Kiro IDE logged in on
    login = seed(kiro, ide / "sso" / "kiro-auth-token.json", "idc", expired=True)
    imported = llmgate("credentials", "import", "kiro-idc", "--config", str(ide / "proxy.yaml"))
    assert imported.returncode == 0, imported.stderr
    assert login["refreshToken"] not in imported.stdout + imported.stderr
    cfg, other = host("other")
    g = Gateway(cfg, other / "proxy.yaml")
    try:
        calls = state(kiro)["idc_refresh_calls"]
        c = openai.OpenAI(base_url=g.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)
        assert c.chat.completions.create(model="claude-sonnet-4-5", messages=HELLO).choices[0].message.content
        assert state(kiro)["idc_refresh_calls"] == calls + 1
        assert not (other / "sso").exists()  # nothing of Kiro's was on this host
    finally:
        g.stop()
    out = tmp_path / "exported.json"
    exported = llmgate("credentials", "export", "kiro-idc", "--file", str(out), "--config", str(other / "proxy.yaml"))
    assert exported.returncode == 0, exported.stderr
    written = json.loads(out.read_text())
    assert written["refreshToken"] != login["refreshToken"] and "clientRegistration" not in written
