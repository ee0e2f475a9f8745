"""Intercept mode's pure parts: which rule a call meets, which gateway route a vendor call is,
what allow_hosts becomes, and proxy.yaml's `intercept:` validation."""

from __future__ import annotations

import json
import re
import zlib

import pytest
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow

from llmgate.addons.client_auth import ClientAuth
from llmgate.addons.intercept import Intercept, allow_patterns, call_of, gateway_path, pick_rule
from llmgate.runtime import Runtime
from llmgate.settings import ConfigError, InterceptRule, Limits, parse_settings

RULES = [
    InterceptRule(host="api.anthropic.com", model="claude-*haiku*", route="local/small"),
    InterceptRule(host="generativelanguage.googleapis.com", provider="p"),
    InterceptRule(model="gpt-5*", route="gateway"),
]


@pytest.mark.parametrize("host, model, want", [
    ("api.anthropic.com", "claude-haiku-4-5", 0),
    ("api.anthropic.com", "claude-3-5-haiku-latest", 0),
    ("api.anthropic.com", "claude-sonnet-4-5", None),  # no rule: passed on
    ("api.anthropic.com", None, None),  # a glob never matches a call without a model
    ("generativelanguage.googleapis.com", None, 1),  # a host rule takes every call
    ("generativelanguage.googleapis.com", "gemini-2.5-pro", 1),
    ("chatgpt.com", "gpt-5-codex", 2),  # a rule without host: any intercepted host
    ("chatgpt.com", "GPT-5", None),  # globs are case-sensitive, like model names
])
def test_pick_rule(host, model, want):
    got = pick_rule(RULES, host, model)
    assert got is (RULES[want] if want is not None else None)


def test_first_matching_rule_wins():
    rules = [InterceptRule(model="claude-*", provider="a"), InterceptRule(model="claude-haiku*", provider="b")]
    assert pick_rule(rules, "api.anthropic.com", "claude-haiku-4-5") is rules[0]


@pytest.mark.parametrize("host, path, want", [
    ("chatgpt.com", "/backend-api/codex/responses", "/v1/responses"),
    ("dashscope.aliyuncs.com", "/compatible-mode/v1/chat/completions", "/v1/chat/completions"),
    ("api.anthropic.com", "/v1/messages", "/v1/messages"),
    ("chatgpt.com", "/backend-api/conversation", "/backend-api/conversation"),
])
def test_gateway_path(host, path, want):
    assert gateway_path(host, path) == want


def _req(host: str, path: str, body: dict | bytes, **headers: str):
    f = tflow.tflow()
    r = f.request
    r.host, r.port, r.scheme, r.path, r.method = host, 443, "https", path, "POST"
    r.headers.clear()
    r.headers.update(headers)
    r.raw_content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return r


def test_call_of_reads_model_and_stream_without_touching_the_bytes():
    raw = json.dumps({"model": "claude-haiku-4-5", "stream": True, "max_tokens": 5}).encode()
    packed = zlib.compress(raw)
    r = _req("api.anthropic.com", "/v1/messages?beta=true", packed, **{"content-encoding": "deflate"})
    call = call_of("api.anthropic.com", r, Limits())
    assert (call.inbound.endpoint, call.model, call.stream) == ("messages", "claude-haiku-4-5", True)
    assert r.raw_content == packed and r.headers["content-encoding"] == "deflate"  # passed on as sent


def test_call_of_gemini_and_codex():
    g = call_of("generativelanguage.googleapis.com",
                _req("x", "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", {"contents": []}), Limits())
    assert (g.inbound.endpoint, g.model, g.stream) == ("gemini", "gemini-2.5-pro", True)
    c = call_of("chatgpt.com", _req("chatgpt.com", "/backend-api/codex/responses", {"model": "gpt-5"}), Limits())
    assert (c.path, c.inbound.endpoint, c.model, c.stream) == ("/v1/responses", "responses", "gpt-5", False)


@pytest.mark.parametrize("path, body", [
    ("/api/oauth/profile", {"model": "x"}),  # not an LLM route: passed on, never routed
    ("/v1internal:streamGenerateContent", {"model": "gemini-2.5-pro"}),  # Code Assist: not a gateway route
])
def test_call_of_other_calls(path, body):
    assert call_of("api.anthropic.com", _req("api.anthropic.com", path, body), Limits()) is None


def test_call_of_unreadable_body_has_no_model():
    call = call_of("api.anthropic.com", _req("api.anthropic.com", "/v1/messages", b"{not json"), Limits())
    assert call is not None and call.model is None


def test_allow_patterns_keep_reverse_listeners_beside():
    modes = [ProxyMode.parse("regular@8080"), ProxyMode.parse("reverse:http://127.0.0.1:1@8143")]
    pats = allow_patterns(["api.anthropic.com"], modes)
    assert any(re.search(p, "api.anthropic.com:443") for p in pats)
    assert not any(re.search(p, "api.anthropic.com.evil.test:443") for p in pats)
    assert not any(re.search(p, "github.com:443") for p in pats)
    assert any(re.search(p, "127.0.0.1:1") for p in pats)


BASE = "providers:\n  - {id: up, type: openai, base_url: 'http://127.0.0.1:1/v1', api_key: k}\n"


def test_intercept_defaults_to_the_known_vendor_hosts():
    s, _ = parse_settings(BASE + "intercept: {}\n")
    assert "api.anthropic.com" in s.intercept.hosts and "chatgpt.com" in s.intercept.hosts
    assert s.intercept.rules == []
    assert parse_settings(BASE)[0].intercept is None


def test_valid_rules():
    s, _ = parse_settings(BASE + "intercept:\n  hosts: [API.Anthropic.com]\n  rules:\n"
                          "    - {host: api.anthropic.com, model: 'claude-*', route: up/gpt-4o-mini}\n"
                          "    - {provider: up}\n    - {route: gateway}\n")
    assert s.intercept.hosts == ["api.anthropic.com"]
    assert [r.route or r.provider for r in s.intercept.rules] == ["up/gpt-4o-mini", "up", "gateway"]


@pytest.mark.parametrize("yaml_text, message", [
    ("intercept: {hosts: ['https://api.anthropic.com']}", "write the bare host name"),
    ("intercept: {hosts: ['api.anthropic.com:443']}", "write the bare host name"),
    ("intercept: {hosts: ['bad host']}", "is not a host name"),
    ("intercept: {hosts: []}", "no hosts"),
    ("intercept: {hosts: [api.anthropic.com], rules: [{host: chatgpt.com, route: gateway}]}",
     "rules[0].host: 'chatgpt.com' is not in intercept.hosts"),
    ("intercept: {rules: [{model: 'claude-*'}]}", "give one of 'route'"),
    ("intercept: {rules: [{route: gateway, provider: up}]}", "give one of 'route'"),
    ("intercept: {rules: [{route: gateway, extra: 1}]}", "intercept.rules[0].extra: unknown field"),
    ("intercept:\n  rules:\n    - {provider: nope}", "proxy.yaml:5: intercept.rules.0.provider: unknown provider 'nope'"),
    ("intercept:\n  rules:\n    - {route: nope/x}", "intercept.rules.0.route: target 'nope/x' names provider 'nope'"),
])
def test_invalid_intercept_settings(yaml_text, message):
    with pytest.raises(ConfigError) as e:
        parse_settings(BASE + yaml_text)
    assert message in str(e.value)


def _vendor_flow(model: str):
    f = tflow.tflow(resp=True)
    r = f.request
    r.host, r.port, r.scheme, r.path, r.method = "api.anthropic.com", 443, "https", "/v1/messages", "POST"
    r.headers.clear()
    r.headers.update({"x-api-key": "sk-ant-the-clis-own-key", "anthropic-version": "2023-06-01"})
    r.content = json.dumps({"model": model, "max_tokens": 5, "messages": []}).encode()
    f.response = None
    return f


def _hooks(rt, f):
    """The request hooks in gateway.py's order: Intercept before ClientAuth and the front door."""
    ic, auth = Intercept(rt), ClientAuth(rt)
    ic.requestheaders(f)
    auth.requestheaders(f)
    ic.request(f)
    auth.request(f)
    return ic


@pytest.mark.parametrize("server", ["server: {api_keys: [sk-gateway-key]}\n", ""])
def test_client_keys_and_web_guard_are_not_asked_of_vendor_calls(server):
    """A passed-on call leaves with the CLI's own key (masked once sent); a routed one never
    carries it. Neither is refused for lacking a gateway key, or for its vendor Host."""
    rt = Runtime()
    rt.settings = parse_settings(BASE + server + "intercept:\n  rules:\n    - {model: 'claude-haiku*', provider: up}\n")[0]
    passed = _vendor_flow("claude-sonnet-4-5")
    ic = _hooks(rt, passed)
    assert passed.response is None and passed.request.headers["x-api-key"] == "sk-ant-the-clis-own-key"
    passed.response = tflow.tresp()
    ic.responseheaders(passed)
    assert passed.request.headers["x-api-key"] == "[redacted]"
    routed = _vendor_flow("claude-haiku-4-5")
    _hooks(rt, routed)
    assert routed.response is None and routed.request.headers["x-api-key"] == "[redacted]"
    assert routed.metadata["llmgate.intercept"] == {"host": "api.anthropic.com", "action": "route",
                                                    "path": "/v1/messages", "provider": "up"}


def test_a_passed_on_compressed_body_is_recorded_decoded_once_sent():
    rt = Runtime()
    rt.settings = parse_settings(BASE + "intercept: {}\n")[0]
    f = _vendor_flow("claude-sonnet-4-5")
    plain = f.request.content
    f.request.raw_content = zlib.compress(plain)
    f.request.headers["content-encoding"] = "deflate"
    ic = _hooks(rt, f)
    assert f.request.headers["content-encoding"] == "deflate"  # as sent
    f.response = tflow.tresp()
    ic.responseheaders(f)
    assert f.request.raw_content == plain and "content-encoding" not in f.request.headers
