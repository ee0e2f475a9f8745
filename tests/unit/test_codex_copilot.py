"""Pure parts of the codex and copilot kinds: the Codex backend's stream collected into an answer,
its usage-limit answers, what it is sent, auth.json expiry; Copilot's token trade fields and
X-Initiator; nested Codex tokens among the secrets the gateway redacts."""

import base64
import json
import time
from types import SimpleNamespace

import pytest

from llmgate.addons.redaction import secrets_of
from llmgate.errors import GatewayError
from llmgate.providers import codex, copilot
from llmgate.settings import GatewaySettings


def sse(*events: dict) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + json.dumps(e).encode() + b"\n\n" for e in events)


def jwt(claims: dict) -> str:
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"e30.{part}.sig"


MESSAGE = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}


def test_collect_takes_the_final_response_and_fills_output_from_item_events():
    body = sse({"type": "response.created", "response": {"id": "r1"}},
               {"type": "response.output_item.done", "output_index": 0, "item": MESSAGE},
               {"type": "response.completed", "response": {"id": "r1", "status": "completed", "output": []}})
    assert json.loads(codex.collect(body)) == {"id": "r1", "status": "completed", "output": [MESSAGE]}
    whole = sse({"type": "response.completed", "response": {"id": "r2", "output": [MESSAGE, MESSAGE]}})
    assert json.loads(codex.collect(whole))["output"] == [MESSAGE, MESSAGE]


@pytest.mark.parametrize("body, words", [
    (sse({"type": "response.created", "response": {"id": "r1"}}), "ended before response.completed"),
    (sse({"type": "response.failed", "response": {"error": {"message": "boom"}}}), "boom"),
    (b"data: not json\n\n", "ended before"),
])
def test_collect_refuses_a_stream_without_a_complete_answer(body, words):
    with pytest.raises(GatewayError) as e:
        codex.collect(body)
    assert e.value.status == 502 and words in e.value.message


def test_a_stream_failed_for_a_usage_limit_is_the_named_429():
    failed = {"type": "response.failed", "response": {"error": {"code": "usage_limit_reached", "message": "limit",
                                                                "resets_in_seconds": 30}}}
    with pytest.raises(GatewayError) as e:
        codex.collect(sse({"type": "response.created", "response": {}}, failed))
    assert (e.value.status, e.value.code, e.value.headers) == (429, "quota_exhausted", {"Retry-After": "30"})


def test_usage_limit_is_a_quota_429_with_the_reset_as_retry_after():
    body = json.dumps({"error": {"type": "usage_limit_reached", "message": "limit", "plan_type": "pro",
                                 "resets_in_seconds": 3599.6}}).encode()
    e = codex.usage_error("c", "a.json", 429, {}, body)
    assert (e.status, e.code, e.headers) == (429, "quota_exhausted", {"Retry-After": "3600"})
    assert "plan pro" in e.message
    at = json.dumps({"error": {"type": "usage_limit_reached", "resets_at": time.time() + 60}}).encode()
    assert 58 <= int(codex.usage_error("c", "a", 429, {}, at).headers["Retry-After"]) <= 60
    other = codex.usage_error("c", "a", 429, {"Retry-After": "7"}, b'{"error": {"message": "slow down"}}')
    assert (other.code, other.headers) == ("rate_limited", {"Retry-After": "7"})
    plan = codex.usage_error("c", "a", 403, {}, b'{"error": {"type": "usage_not_included"}}')
    assert (plan.status, plan.code) == (403, "account_not_allowed")
    assert codex.usage_error("c", "a", 400, {}, b'{"error": {"message": "bad"}}') is None
    assert codex.usage_error("c", "a", 500, {}, b"<html>") is None


def test_codex_body_streams_never_stores_and_drops_what_the_backend_refuses():
    out = json.loads(codex.codex_body(json.dumps({"model": "m", "input": [], "stream": False, "store": True,
                                                  "max_output_tokens": 9, "temperature": 0.1}).encode()))
    assert out == {"model": "m", "input": [], "stream": True, "store": False, "instructions": ""}
    assert json.loads(codex.codex_body(b'{"instructions": "be brief"}'))["instructions"] == "be brief"
    assert codex.codex_body(b"[1]") == b"[1]"


def test_auth_json_expires_at_the_access_tokens_exp_or_after_eight_days(tmp_path):
    path = tmp_path / "auth.json"
    creds = codex.CodexCredentials(path, "login")
    soon = time.time() + 600
    creds.data = {"tokens": {"access_token": jwt({"exp": soon})}, "last_refresh": codex.now_rfc3339()}
    assert creds.expires_at() == soon and creds.fresh()
    creds.data["last_refresh"] = "2026-01-01T00:00:00.123456789Z"  # Codex CLI's nanoseconds
    assert creds.expires_at() == pytest.approx(1767225600.123456 + 8 * 86400) and not creds.fresh()
    creds.data = {"tokens": {"access_token": "opaque"}, "last_refresh": "2026-01-01T00:00:00Z"}
    assert creds.expires_at() == 1767225600 + 8 * 86400
    creds.data = {"OPENAI_API_KEY": "sk-x", "tokens": None}
    assert not creds.fresh()  # an API-key login: no ChatGPT tokens to use


def test_account_id_comes_from_the_file_or_the_id_token():
    claims = {codex.AUTH_CLAIMS: {"chatgpt_account_id": "acct-9"}}
    assert codex.account_id({"id_token": jwt(claims)}) == "acct-9"
    assert codex.account_id({"account_id": "acct-1", "id_token": jwt(claims)}) == "acct-1"
    assert codex.account_id({"id_token": "not-a-jwt"}) is None


def test_copilot_trades_again_before_the_token_expires():
    now = time.time()
    new = copilot.trade_fields({"token": "t", "expires_at": now + 1800, "refresh_in": 1500,
                                "endpoints": {"api": "https://api.individual.githubcopilot.com"}})
    assert new["copilot_token"] == "t" and new["api_url"] == "https://api.individual.githubcopilot.com"
    assert (now + 1499) * 1000 <= new["expiry_date"] <= (now + 1501) * 1000
    bare = copilot.trade_fields({"token": "t", "expires_at": now + 1800})
    assert bare["expiry_date"] <= (now + 1741) * 1000 and "api_url" not in bare


@pytest.mark.parametrize("messages, who", [
    ([{"role": "user", "content": "hi"}], "user"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}, {"role": "tool", "content": "1"}],
     "agent"),
    ([], "user"),
])
def test_copilot_initiator(messages, who):
    assert copilot.initiator(json.dumps({"messages": messages}).encode()) == who


def test_models_list_keeps_chat_models_only():
    body = {"data": [{"id": "gpt-4.1", "capabilities": {"type": "chat"}}, {"id": "emb", "capabilities":
                                                                          {"type": "embeddings"}}, {"id": "x"}]}
    assert copilot._model_ids(body) == ["gpt-4.1", "x"]


def test_codex_tokens_nested_in_auth_json_are_secrets():
    tokens = {"id_token": "id-token-abcdefgh", "access_token": "access-abcdefgh", "refresh_token": "rt_abcdefgh",
              "account_id": "acct-public-1"}
    accounts = SimpleNamespace(accounts=[SimpleNamespace(creds=SimpleNamespace(data={"tokens": tokens}))])
    rt = SimpleNamespace(settings=GatewaySettings.model_validate({"providers": []}), _accounts={"c": (None, accounts)})
    found = set(secrets_of(rt))
    assert {"id-token-abcdefgh", "access-abcdefgh", "rt_abcdefgh"} <= found and "acct-public-1" not in found
