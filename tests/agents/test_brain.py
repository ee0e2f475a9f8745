"""The brain's hook in the strict doubles, without the CLIs: it picks the offered write tool
and its argument names, and the doubles still refuse what the real service refuses."""

import json

import httpx
import pytest

from tests.agents.brain import Brain, prompt
from tests.upstreams import anthropic_api, gemini_api, openai_compat, responses_api
from tests.upstreams.serving import ServerThread

KEY = "k"
SCHEMA = {"type": "object", "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
          "required": ["file_path", "content"]}
TASK = prompt("/work/x")


def first_turn(wire: str) -> tuple[object, str, dict, dict]:
    """(module, path, headers, body) of an agent's first request offering write_file."""
    if wire == "openai":
        return openai_compat, "/v1/chat/completions", {"Authorization": f"Bearer {KEY}"}, {
            "model": "gpt-4o", "messages": [{"role": "user", "content": TASK}],
            "tools": [{"type": "function", "function": {"name": "write_file", "parameters": SCHEMA}}]}
    if wire == "anthropic":
        return anthropic_api, "/v1/messages", {"x-api-key": KEY, "anthropic-version": "2023-06-01"}, {
            "model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": TASK}],
            "tools": [{"name": "write_file", "input_schema": SCHEMA}]}
    if wire == "gemini":
        return gemini_api, "/v1beta/models/gemini-2.5-flash:generateContent", {"x-goog-api-key": KEY}, {
            "contents": [{"role": "user", "parts": [{"text": TASK}]}],
            "tools": [{"functionDeclarations": [{"name": "write_file", "parametersJsonSchema": SCHEMA}]}]}
    return responses_api, "/v1/responses", {"Authorization": f"Bearer {KEY}"}, {
        "model": "gpt-5", "input": TASK,
        "tools": [{"type": "function", "name": "write_file", "parameters": SCHEMA, "strict": False}]}


def calls_in(wire: str, answer: dict) -> list[tuple[str, object]]:
    if wire == "openai":
        return [(c["function"]["name"], c["function"]["arguments"])
                for c in answer["choices"][0]["message"]["tool_calls"]]
    if wire == "anthropic":
        return [(b["name"], b["input"]) for b in answer["content"] if b["type"] == "tool_use"]
    if wire == "gemini":
        return [(p["functionCall"]["name"], p["functionCall"]["args"])
                for p in answer["candidates"][0]["content"]["parts"] if "functionCall" in p]
    return [(i["name"], i["arguments"]) for i in answer["output"] if i["type"] == "function_call"]


@pytest.mark.parametrize("wire", ["openai", "anthropic", "gemini", "responses"])
def test_the_brain_answers_with_the_offered_write_tool_and_the_double_still_validates(wire):
    module, path, headers, body = first_turn(wire)
    with ServerThread(module.make_app(KEY, list(module.DEFAULT_MODELS) + ["gpt-4o"], brain=Brain())) as base:
        answer = httpx.post(base + path, headers=headers, json=body)
        assert answer.status_code == 200, answer.text
        ((name, args),) = calls_in(wire, answer.json())
        expected = {"file_path": "/work/x/A.txt", "content": "alpha"}
        assert name == "write_file" and (json.loads(args) if isinstance(args, str) else args) == expected
        refused = httpx.post(base + path, headers=headers, json={**body, "no_such_field": 1})
        assert refused.status_code == 400
