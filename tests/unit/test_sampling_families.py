"""Sampling parameters a target model refuses are dropped and named (converters/thinking.py's
family table): Gemini CLI sends temperature 1 and topP 0.95 on every request."""

import pytest

from converters import anthropic, openai_chat, responses
from converters import canonical as cn
from converters.thinking import anthropic_one_sampler, openai_refuses_sampling


def request(model: str, **kw) -> cn.Request:
    return cn.Request(model=model, messages=[cn.Message("user", [cn.Text("hi")])], **kw)


@pytest.mark.parametrize("model, one", [
    ("claude-sonnet-4-5", True), ("claude-opus-4-1-20250805", True), ("claude-haiku-4-5", True),
    ("claude-sonnet-4-6", True), ("anthropic.claude-opus-4-5-20251101-v1:0", True),
    ("claude-sonnet-4-20250514", False), ("claude-opus-4-0", False), ("claude-3-7-sonnet-latest", False),
    ("claude-3-5-haiku-20241022", False), ("glm-4.6", False)])
def test_claude_families_that_refuse_temperature_with_top_p(model, one):
    assert anthropic_one_sampler(model) is one


def test_anthropic_keeps_temperature_and_drops_top_p_where_both_are_refused():
    req = request("claude-sonnet-4-5", temperature=1.0, top_p=0.95)
    body = anthropic.encode_request(req)
    assert (body["temperature"], "top_p" in body, req.dropped) == (1.0, False, ["top_p"])
    old = request("claude-sonnet-4-20250514", temperature=1.0, top_p=0.95)
    body = anthropic.encode_request(old)
    assert (body["temperature"], body["top_p"], old.dropped) == (1.0, 0.95, [])


def test_anthropic_top_p_alone_is_kept():
    req = request("claude-sonnet-4-5", top_p=0.9)
    assert anthropic.encode_request(req)["top_p"] == 0.9 and req.dropped == []


@pytest.mark.parametrize("model, effort, refused", [
    ("gpt-5", None, True), ("gpt-5-mini", "low", True), ("o4-mini", None, True), ("openai/o3", "high", True),
    ("gpt-5.1", None, False), ("gpt-5.1", "none", False), ("gpt-5.1", "low", True),
    ("gpt-5.1-codex", None, True), ("gpt-5-chat-latest", None, False), ("gpt-4.1", None, False),
    ("gpt-4o", None, False), ("qwen3-coder-plus", None, False)])
def test_openai_reasoning_families(model, effort, refused):
    assert openai_refuses_sampling(model, effort) is refused


def test_responses_upstream_drops_sampling_for_a_reasoning_model():
    req = request("gpt-5", temperature=1.0, top_p=0.95, max_tokens=100)
    body = responses.encode_request(req)
    assert not {"temperature", "top_p"} & set(body) and body["max_output_tokens"] == 100
    assert {"temperature", "top_p"} <= set(req.dropped)
    req = request("gpt-4.1", temperature=0.5, top_p=0.9)
    body = responses.encode_request(req)
    assert (body["temperature"], body["top_p"]) == (0.5, 0.9) and req.dropped == []


def test_openai_chat_upstream_drops_sampling_for_a_reasoning_model():
    req = request("o4-mini", temperature=0.2, top_p=0.9, presence_penalty=0.1, seed=7, max_tokens=50)
    body = openai_chat.encode_request(req)
    assert not {"temperature", "top_p", "presence_penalty", "max_tokens"} & set(body)
    assert (body["seed"], body["max_completion_tokens"]) == (7, 50)
    assert {"temperature", "top_p", "presence_penalty"} <= set(req.dropped)
    req = request("gpt-4o", temperature=0.2, max_tokens=50)
    body = openai_chat.encode_request(req)
    assert (body["temperature"], body["max_tokens"], req.dropped) == (0.2, 50, [])
