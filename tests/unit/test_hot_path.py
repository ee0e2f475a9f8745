"""The per-request shortcuts (issue 14) keep what they shortcut: bytes, limits, counts, reloads."""

import json

import pytest
from mitmproxy import http
from mitmproxy.test import tflow
from prometheus_client import generate_latest

from converters import openai_chat as oc
from converters.pipeline import relabel_body
from llmgate.addons.client_auth import ClientAuth
from llmgate.addons.cors import Cors
from llmgate.operations.metrics import Metrics
from llmgate.runtime import Runtime
from llmgate.settings import parse_settings


def runtime_with(text: str) -> Runtime:
    rt = Runtime()
    rt.settings = parse_settings(text)[0]
    return rt


def test_renamed_answer_keeps_every_other_byte():
    body = b'{ "id" : "x",\n  "model": "gpt-4o-2024-08-06", "choices": [{"text": "caf\\u00e9 \\"q\\""}] }'
    out = relabel_body(body, "gpt-4o")
    assert out == body.replace(b'"gpt-4o-2024-08-06"', b'"gpt-4o"')


def test_renamed_answer_naming_the_model_twice_is_still_renamed_at_the_top():
    body = b'{"model": "up", "choices": [{"message": {"model": "up"}}]}'
    out = json.loads(relabel_body(body, "client"))
    assert out["model"] == "client" and out["choices"][0]["message"]["model"] == "up"


@pytest.mark.parametrize("depth, ok", [(8, True), (9, False)])
def test_small_bodies_still_meet_the_depth_limit(depth, ok):
    body = b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    if ok:
        assert oc.parse_json_object(body, max_depth=8)
    else:
        with pytest.raises(oc.RequestError, match="levels deep"):
            oc.parse_json_object(body, max_depth=8)


@pytest.mark.parametrize("values, ok", [(3, True), (2, False)])
def test_small_bodies_still_meet_the_values_limit(values, ok):
    body = b'{"a":1}'  # the object, its key and its value: 3
    if ok:
        assert oc.parse_json_object(body, max_values=values) == {"a": 1}
    else:
        with pytest.raises(oc.RequestError, match="JSON values"):
            oc.parse_json_object(body, max_values=values)


def test_metrics_count_each_series_with_remembered_label_children():
    m = Metrics(Runtime())
    row = {"provider": "p", "upstream_model": "m", "inbound": "openai", "status": 200, "latency_ms": 5,
           "prompt_tokens": 3}
    m.observe(row)
    m.observe(row)
    m.observe({**row, "status": 429, "error": "rate_limited"})
    text = generate_latest(m.registry).decode()
    assert 'llmgate_requests_total{account="",inbound="openai",model="m",provider="p",status="200"} 2.0' in text
    assert 'llmgate_requests_total{account="",inbound="openai",model="m",provider="p",status="429"} 1.0' in text
    assert 'llmgate_tokens_total{account="",kind="prompt",model="m",provider="p"} 9.0' in text


def keyed(key: str) -> http.HTTPFlow:
    f = tflow.tflow()
    f.request.path = "/v1/chat/completions"
    f.request.headers["authorization"] = f"Bearer {key}"
    return f


def test_client_keys_follow_a_reload():
    rt = runtime_with("server: {api_keys: [{name: alice, key: sk-alice-1}]}")
    auth = ClientAuth(rt)
    f = keyed("sk-alice-1")
    auth.request(f)
    assert f.response is None and f.metadata["llmgate_key"] == "alice"
    rt.settings = parse_settings("server: {api_keys: [{name: bob, key: sk-bob-22}]}")[0]
    f = keyed("sk-alice-1")
    auth.request(f)
    assert f.response.status_code == 401
    f = keyed("sk-bob-22")
    auth.request(f)
    assert f.response is None and f.metadata["llmgate_key"] == "bob"


@pytest.mark.parametrize("cors", ["", "server: {cors: {origins: ['https://app.example']}}"])
def test_upstream_access_control_headers_never_reach_the_client(cors):
    f = tflow.tflow(resp=True)
    f.response.headers["Access-Control-Allow-Origin"] = "*"
    f.response.headers["access-control-allow-credentials"] = "true"
    Cors(runtime_with(cors or "{}")).response(f)
    assert not [k for k in f.response.headers if k.lower().startswith("access-control-")]
