"""Copilot's choice of endpoint per model: supported_endpoints from its models list, kept by the
catalog, and the kind each request is planned with (wire.serving_kind)."""

import asyncio
import json

import pytest

from llmgate.providers import PROVIDER_TYPES, copilot
from llmgate.request_path.catalog import ModelCatalog
from llmgate.request_path.client_apis import OPENAI_CHAT
from llmgate.request_path.wire import ReasoningMemory, plan, serving_kind
from llmgate.settings import ProviderSettings

MODELS = {"object": "list", "data": [
    {"id": "gpt-4.1", "capabilities": {"type": "chat"}, "supported_endpoints": ["/chat/completions"]},
    {"id": "gpt-5-mini", "capabilities": {"type": "chat"}, "supported_endpoints": ["/chat/completions", "/responses"]},
    {"id": "gpt-5.1-codex", "capabilities": {"type": "completion"}, "supported_endpoints": ["ws:/responses",
                                                                                           "/responses"]},
    {"id": "claude-sonnet-4.5", "capabilities": {"type": "chat"},
     "supported_endpoints": ["/v1/messages", "/chat/completions"]},
    {"id": "claude-opus-4.5", "capabilities": {"type": "chat"}, "supported_endpoints": ["/v1/messages"]},
    {"id": "old-model", "capabilities": {"type": "chat"}},  # no endpoint list
    {"id": "text-embedding-3-small", "capabilities": {"type": "embeddings"}, "supported_endpoints": ["/embeddings"]},
    {"id": "odd", "supported_endpoints": "/responses"}, "not an entry", {"id": 7},
]}
P = ProviderSettings(id="cp", type="copilot", base_url="https://copilot.invalid")


def test_the_models_list_says_which_wire_formats_each_model_is_served_in():
    assert copilot.model_wires(MODELS) == {
        "gpt-4.1": ("openai_chat",), "gpt-5-mini": ("openai_chat", "responses"), "gpt-5.1-codex": ("responses",),
        "claude-sonnet-4.5": ("openai_chat", "anthropic"), "claude-opus-4.5": ("anthropic",)}
    assert copilot.model_wires({"data": "nope"}) == copilot.model_wires([]) == {}


def test_a_responses_only_model_is_listed_whatever_its_type_and_embeddings_are_not():
    ids = copilot._model_ids(MODELS)
    assert "gpt-5.1-codex" in ids and "old-model" in ids and "odd" in ids
    assert "text-embedding-3-small" not in ids


@pytest.mark.parametrize("model, client, wire, url", [
    ("gpt-5.1-codex", "openai_chat", "responses", "/responses"),  # its only endpoint
    ("gpt-5.1-codex", "anthropic", "responses", "/responses"),
    ("claude-opus-4.5", "gemini", "anthropic", "/v1/messages"),
    ("claude-sonnet-4.5", "anthropic", "anthropic", "/v1/messages"),  # the client's own: passed through
    ("claude-sonnet-4.5", "responses", "openai_chat", "/chat/completions"),  # else chat first
    ("gpt-5-mini", "responses", "responses", "/responses"),
    ("gpt-5-mini", "gemini", "openai_chat", "/chat/completions"),
    ("old-model", "responses", "openai_chat", "/chat/completions"),  # nothing listed: chat, as before
    ("not-discovered", "anthropic", "openai_chat", "/chat/completions"),
])
def test_the_kind_a_model_is_served_with(model, client, wire, url):
    wires = copilot.model_wires(MODELS)
    kind = serving_kind(copilot.KIND, lambda p, m: wires.get(m), P, model, client)
    assert kind.wire == wire and kind.chat_url(P.base_url, model, False) == P.base_url + url
    assert kind.accounts is copilot.KIND.accounts and kind.secret_header_names() == {"authorization"}
    assert ("anthropic-version" in kind.headers(None)) == (wire == "anthropic")


def test_kinds_with_one_wire_format_look_nothing_up():
    def info(p, model):
        raise AssertionError("looked up")

    for kind in PROVIDER_TYPES.values():
        if kind.for_model is None:
            assert serving_kind(kind, info, P, "m", "openai_chat") is kind


def test_a_chat_client_to_a_responses_only_model_is_converted_to_a_responses_request():
    kind = copilot.BY_WIRE["responses"]
    data = {"model": "codex", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    pl = plan(OPENAI_CHAT, kind, P, "gpt-5.1-codex", "codex", data, json.dumps(data).encode(), True,
              ReasoningMemory())
    body = json.loads(pl.body)
    assert pl.url == P.base_url + "/responses" and body["model"] == "gpt-5.1-codex" and body["stream"] is True
    assert "messages" not in body and body["input"][0]["role"] == "user" and body["max_output_tokens"] == 50


class _Call:
    """The models endpoint's answer, as a provider call would read it."""

    async def send(self):
        return "resp"

    async def read(self, resp, limit):
        return json.dumps(MODELS).encode()

    def release(self):
        pass


def test_the_catalog_keeps_what_the_models_list_says_of_each_model():
    catalog = ModelCatalog()
    catalog.call = lambda p, kind, req: _Call()
    assert catalog.info(P, "gpt-5.1-codex") is None  # not discovered yet
    asyncio.run(catalog.refresh(P))
    assert catalog.info(P, "gpt-5.1-codex") == ("responses",) and catalog.info(P, "gpt-4.1") == ("openai_chat",)
    assert catalog.info(P, "unknown") is None and "gpt-5.1-codex" in (catalog.models(P) or [])
    other = ProviderSettings(id="oa", type="openai", base_url="https://oa.invalid/v1")
    asyncio.run(catalog.refresh(other))
    assert catalog.info(other, "gpt-4.1") is None  # kinds without model_info keep nothing


@pytest.mark.parametrize("body, who", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "user"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42"}]}, "agent"),
    ({"input": "hi"}, "user"),
    ({"input": [{"role": "user", "content": "hi"}]}, "user"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "42"}]}, "agent"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "42"}]}]},
     "agent"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, "user"),
    ({"messages": ["odd"]}, "user"),
])
def test_x_initiator_in_each_wire_format(body, who):
    assert copilot.initiator(json.dumps(body).encode()) == who
