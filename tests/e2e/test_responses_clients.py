"""OpenAI Responses clients (the openai SDK's client.responses, and httpx for exact bytes) through
the gateway, to strict OpenAI-compatible and Anthropic upstreams (converted) and a strict
Responses upstream (passed through)."""

import json

import httpx
import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY, TappedUpstream
from tests.harness import Gateway, Upstream

OPENAI_KEY = "sk-openai-upstream-0123456789"
ANTHROPIC_KEY = "sk-ant-test-key-0123456789"
RESPONSES_KEY = "sk-resp-test-key-0123456789"
TOOLS = [
    {"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": True,
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                    "additionalProperties": False}},
    {"type": "function", "name": "get_time", "description": "The current time", "strict": True,
     "parameters": {"type": "object", "properties": {}, "additionalProperties": False}},
]
EXPECTED_ARGS = [("get_weather", {"tool": "get_weather", "n": 0}), ("get_time", {"tool": "get_time", "n": 1})]
CONVERTED = ["oai/gpt-4o-mini", "claude/claude-sonnet-4-5"]
ALL = [*CONVERTED, "resp/gpt-4.1"]


@pytest.fixture(scope="module")
def openai_up():
    u = Upstream("openai_compat", "--api-key", OPENAI_KEY, "--models", "gpt-4o-mini,qwen3-coder-30b")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def anthropic_up():
    u = Upstream("anthropic_api", "--api-key", ANTHROPIC_KEY)
    yield u
    u.stop()


@pytest.fixture(scope="module")
def responses_up():
    u = TappedUpstream("responses_api", RESPONSES_KEY, ["gpt-5", "gpt-5-mini", "gpt-4.1", "o4-mini"])
    yield u
    u.stop()


@pytest.fixture(scope="module")
def gateway(openai_up, anthropic_up, responses_up, tmp_path_factory):
    cfg = {
        "server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 5}},
        "providers": [
            {"id": "oai", "type": "openai", "base_url": openai_up.base + "/v1", "api_key": OPENAI_KEY},
            {"id": "claude", "type": "anthropic", "base_url": anthropic_up.base, "api_key": ANTHROPIC_KEY},
            {"id": "resp", "type": "openai-responses", "base_url": responses_up.base + "/v1",
             "api_key": RESPONSES_KEY},
        ],
    }
    g = Gateway(cfg, tmp_path_factory.mktemp("respcli") / "proxy.yaml")
    yield g
    g.stop()


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def last_body(up, path: str) -> dict:
    return [r for r in up.received() if r["path"] == path][-1]["body"]


def calls_of(response) -> list:
    return [item for item in response.output if item.type == "function_call"]


def replayed(items) -> list[dict]:
    """Output items as a client sends them back in the next input (the SDK's stream helper adds
    parsed_arguments to function calls, which is no API field)."""
    return [{k: v for k, v in item.model_dump(exclude_none=True).items() if k != "parsed_arguments"}
            for item in items]


def final_of_stream(events) -> tuple[list, object]:
    """(event types, the Response in the closing event) of a raw Responses stream."""
    events = list(events)
    assert events, "empty stream"
    return [e.type for e in events], events[-1].response


# --- 1. converted: OpenAI-compatible and Anthropic upstreams (and the Responses one alike) ----


@pytest.mark.parametrize("model", ALL)
def test_text(client, model):
    r = client.responses.create(model=model, instructions="Be brief.", input="hello there")
    assert r.output_text == "Echo: hello there"
    assert r.model == model and r.status == "completed" and r.object == "response"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


@pytest.mark.parametrize("model", ALL)
def test_stream_events(client, model):
    events = list(client.responses.create(model=model, input="hello there", stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.count("response.completed") == 1 and "response.failed" not in types
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Echo: hello there"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.output_text == "Echo: hello there" and final.model == model and final.usage.total_tokens > 0


@pytest.mark.parametrize("model", ALL)
def test_stream_helper_final_response(client, model):
    with client.responses.stream(model=model, input="hello there") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Echo: hello there"
    assert final.output_text == "Echo: hello there" and final.model == model and final.status == "completed"


@pytest.mark.parametrize("model", ALL)
@pytest.mark.parametrize("stream", [False, True])
def test_function_tool_round_trip(client, model, stream):
    user = {"role": "user", "content": "weather and time?"}
    if stream:
        with client.responses.stream(model=model, input=[user], tools=TOOLS) as s:
            types = [e.type for e in s]
            r = s.get_final_response()
        assert "response.function_call_arguments.delta" in types and types[-1] == "response.completed"
    else:
        r = client.responses.create(model=model, input=[user], tools=TOOLS)
    calls = calls_of(r)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == EXPECTED_ARGS
    assert all(c.call_id for c in calls) and len({c.call_id for c in calls}) == 2
    outputs = [{"type": "function_call_output", "call_id": c.call_id, "output": f"{c.name} ok"} for c in calls]
    r2 = client.responses.create(model=model, input=[user, *replayed(r.output), *outputs], tools=TOOLS)
    assert not calls_of(r2)
    assert r2.output_text.startswith("Tool results: ")
    assert "get_weather ok" in r2.output_text and "get_time ok" in r2.output_text


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_reasoning_replayed_like_codex(client, anthropic_up, stream):
    """reasoning.effort -> Anthropic thinking; the reasoning item (with encrypted_content) comes
    back in the next turn, as Codex sends it, and the double checks the thinking signature."""
    model = "claude/claude-sonnet-4-5"
    kw = {"reasoning": {"effort": "medium"}, "include": ["reasoning.encrypted_content"], "store": False,
          "tools": TOOLS[:1]}
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather in Paris?"}]}
    if stream:
        with client.responses.stream(model=model, input=[user], **kw) as s:
            done = [e.item for e in s if e.type == "response.output_item.done"]
            r = s.get_final_response()
        assert [i.type for i in done] == ["reasoning", "function_call"]
    else:
        r = client.responses.create(model=model, input=[user], **kw)
    reasoning = [i for i in r.output if i.type == "reasoning"]
    assert len(reasoning) == 1 and r.output[0].type == "reasoning"
    assert reasoning[0].encrypted_content
    assert "".join(p.text for p in reasoning[0].summary) == "Thinking about: weather in Paris?"
    assert r.usage.output_tokens_details is not None
    calls = calls_of(r)
    assert [c.name for c in calls] == ["get_weather"]

    output = {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}
    r2 = client.responses.create(model=model, input=[user, *replayed(r.output), output], **kw)
    assert r2.output_text == "Tool results: sunny"
    sent = last_body(anthropic_up, "/v1/messages")
    assert sent["thinking"]["type"] == "enabled"
    assistant = sent["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"][0]["type"] == "thinking" and assistant["content"][0]["signature"]
    assert assistant["content"][0]["thinking"] == "Thinking about: weather in Paris?"
    assert assistant["content"][1]["type"] == "tool_use" and assistant["content"][1]["id"] == calls[0].call_id


def test_anthropic_rejects_a_tampered_reasoning_item(client):
    """The signature check above is real: change the replayed thinking and Anthropic refuses it."""
    model = "claude/claude-sonnet-4-5"
    kw = {"reasoning": {"effort": "medium"}, "include": ["reasoning.encrypted_content"], "store": False,
          "tools": TOOLS[:1]}
    user = {"role": "user", "content": "weather in Paris?"}
    r = client.responses.create(model=model, input=[user], **kw)
    items = replayed(r.output)
    items[0]["summary"] = [{"type": "summary_text", "text": "Thinking about: something else"}]
    output = {"type": "function_call_output", "call_id": calls_of(r)[0].call_id, "output": "sunny"}
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=model, input=[user, *items, output], **kw)
    assert "signature" in e.value.message


# --- 2. a Codex-shaped request to the OpenAI-compatible backend ---------------------------------

CODEX_INSTRUCTIONS = ("You are Codex, based on GPT-5. You are running as a coding agent in the Codex CLI "
                      "on a user's computer.\n\n## General\n\n" + "- Be precise, safe and helpful.\n" * 200)
SHELL = {"type": "function", "name": "shell", "strict": False,
         "description": "Runs a shell command and returns its output.",
         "parameters": {"type": "object", "properties": {
             "command": {"type": "array", "items": {"type": "string"}, "description": "The command to execute"},
             "workdir": {"type": "string", "description": "The working directory"},
             "timeout_ms": {"type": "number", "description": "The timeout for the command in milliseconds"}},
             "required": ["command"], "additionalProperties": False}}
UPDATE_PLAN = {"type": "function", "name": "update_plan", "strict": False, "description": "Updates the plan.",
               "parameters": {"type": "object", "properties": {
                   "explanation": {"type": "string"},
                   "plan": {"type": "array", "items": {"type": "object", "properties": {
                       "step": {"type": "string"}, "status": {"type": "string"}}, "required": ["step", "status"]}}},
                   "required": ["plan"]}}


def codex_request(input_items: list[dict]) -> dict:
    return {
        "model": "oai/qwen3-coder-30b", "instructions": CODEX_INSTRUCTIONS, "input": input_items,
        "tools": [SHELL, UPDATE_PLAN], "tool_choice": "auto", "parallel_tool_calls": True,
        "reasoning": {"effort": "medium", "summary": "auto"}, "store": False, "stream": True,
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    }


def test_codex_shaped_request_to_openai_compatible(client, openai_up):
    items = [
        {"type": "message", "role": "developer", "content": [
            {"type": "input_text", "text": "<permissions instructions>sandbox: workspace-write</permissions instructions>"}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "<environment_context><cwd>/repo</cwd></environment_context>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list the files"}]},
    ]
    types, r = final_of_stream(client.responses.create(**codex_request(items)))
    assert types[0] == "response.created" and types[-1] == "response.completed"
    calls = calls_of(r)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("shell", {"tool": "shell", "n": 0}), ("update_plan", {"tool": "update_plan", "n": 1})]
    sent = last_body(openai_up, "/v1/chat/completions")
    assert sent["model"] == "qwen3-coder-30b" and sent["stream"] is True
    assert sent["messages"][0]["role"] in ("system", "developer")
    first = sent["messages"][0]["content"]
    first = first if isinstance(first, str) else "".join(p["text"] for p in first)
    assert first.startswith(CODEX_INSTRUCTIONS)  # the developer message may be merged into it
    assert "sandbox: workspace-write" in json.dumps(sent["messages"][:2])
    assert sent["messages"][-1]["role"] == "user" and "list the files" in json.dumps(sent["messages"][-1])
    assert [t["function"]["name"] for t in sent["tools"]] == ["shell", "update_plan"]
    assert sent["tools"][0]["function"]["parameters"]["required"] == ["command"]
    assert CLIENT_KEY not in json.dumps(sent)

    outputs = [{"type": "function_call_output", "call_id": c.call_id, "output": f"{c.name} done"} for c in calls]
    types, r2 = final_of_stream(client.responses.create(**codex_request([*items, *replayed(r.output), *outputs])))
    assert types[-1] == "response.completed"
    assert r2.output_text.startswith("Tool results: ") and "shell done" in r2.output_text


# --- 3. passthrough to a Responses upstream ------------------------------------------------------

RAW_BODY = (b'{ "input" : [ {"role": "user", "content": "caf\\u00e9  hello"} ],\n'
            b'  "model": "gpt-4.1", "temperature": 0.50, "stream": false }\n')


@pytest.fixture
def http(gateway):
    with httpx.Client(base_url=gateway.base, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=20) as c:
        yield c


def test_passthrough_body_is_byte_identical(http, responses_up):
    responses_up.clear()
    r = http.post("/v1/responses", content=RAW_BODY, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["output"][-1]["content"][0]["text"] == "Echo: caf\u00e9  hello"
    assert responses_up.raw_bodies("/v1/responses") == [RAW_BODY]
    sent = responses_up.received()[-1]
    assert sent["headers"]["authorization"] == f"Bearer {RESPONSES_KEY}"


def test_passthrough_stream_body_is_byte_identical(http, responses_up):
    raw = RAW_BODY.replace(b'"stream": false', b'"stream": true')
    responses_up.clear()
    r = http.post("/v1/responses", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "response.completed"
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Echo: caf\u00e9  hello"
    assert responses_up.raw_bodies("/v1/responses") == [raw]


def test_passthrough_with_provider_prefix_changes_only_the_model(http, responses_up):
    raw = RAW_BODY.replace(b'"gpt-4.1"', b'"resp/gpt-4.1"')
    r = http.post("/v1/responses", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "resp/gpt-4.1"
    assert json.loads(responses_up.raw_bodies("/v1/responses")[-1]) == {**json.loads(raw), "model": "gpt-4.1"}


def test_previous_response_id_passes_through(client, responses_up):
    r1 = client.responses.create(model="resp/gpt-4.1", input="remember: the code is 42", store=True)
    assert r1.output_text == "Echo: remember: the code is 42"
    r2 = client.responses.create(model="resp/gpt-4.1", input="what was it?", previous_response_id=r1.id)
    assert r2.output_text == "Echo: what was it?" and r2.previous_response_id == r1.id
    assert last_body(responses_up, "/v1/responses")["previous_response_id"] == r1.id
    # an id the upstream never issued: its own 400 comes back
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="resp/gpt-4.1", input="hi", previous_response_id="resp_never_issued")
    assert e.value.param == "previous_response_id"


@pytest.mark.parametrize("model", CONVERTED)
def test_previous_response_id_is_refused_when_converting(client, openai_up, anthropic_up, model):
    openai_up.clear()
    anthropic_up.clear()
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=model, input="hi", previous_response_id="resp_abc123")
    assert e.value.status_code == 400 and e.value.param == "previous_response_id"
    assert "previous_response_id" in e.value.message
    assert openai_up.received() == [] and anthropic_up.received() == []


# --- 4. errors in OpenAI's shape ------------------------------------------------------------------


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="no-such-model", input="hi")
    assert e.value.status_code == 404 and e.value.body["type"] == "invalid_request_error"
    assert e.value.code == "model_not_found"


@pytest.mark.parametrize("model", ALL)
def test_upstream_429_is_a_rate_limit_error(client, model):
    provider = model.split("/")[0]
    with pytest.raises(openai.RateLimitError) as e:
        client.responses.create(model=f"{provider}/fault-429", input="hi")
    assert e.value.status_code == 429 and e.value.response.headers["retry-after"] == "7"
    assert isinstance(e.value.body, dict) and e.value.body["message"]


def test_bad_key_is_401(gateway):
    bad = openai.OpenAI(base_url=gateway.base + "/v1", api_key="sk-wrong", max_retries=0, timeout=20)
    with pytest.raises(openai.AuthenticationError):
        bad.responses.create(model="oai/gpt-4o-mini", input="hi")


# --- custom (freeform) tools, as Codex sends apply_patch -------------------------------------

APPLY_PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch.",
               "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}}
PATCH = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n"


@pytest.mark.parametrize("model", CONVERTED)
@pytest.mark.parametrize("stream", [False, True])
def test_custom_tool_to_converted_backends(client, openai_up, anthropic_up, model, stream):
    user = {"role": "user", "content": "add a file"}
    if stream:
        with client.responses.stream(model=model, input=[user], tools=[APPLY_PATCH]) as s:
            types = [e.type for e in s]
            r = s.get_final_response()
        assert "response.custom_tool_call_input.done" in types
    else:
        r = client.responses.create(model=model, input=[user], tools=[APPLY_PATCH])
    (call,) = r.output if r.output[0].type != "reasoning" else r.output[1:]
    assert call.type == "custom_tool_call" and call.name == "apply_patch"
    # the doubles answer with their own arguments, not {"input": ...}: the raw JSON is the input
    assert json.loads(call.input) == {"tool": "apply_patch", "n": 0}

    # the upstream saw a function taking {"input": string}, the grammar in its description
    if model.startswith("oai/"):
        (tool,) = last_body(openai_up, "/v1/chat/completions")["tools"]
        params = tool["function"]["parameters"]
    else:
        (tool,) = last_body(anthropic_up, "/v1/messages")["tools"]
        params = tool["input_schema"]
    assert params["required"] == ["input"] and "begin_patch" in params["properties"]["input"]["description"]

    # Codex's next turn: its own call (with a real patch) and the tool's output
    history = [user, {"type": "custom_tool_call", "call_id": call.call_id, "name": "apply_patch", "input": PATCH},
               {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done!"}]
    r2 = client.responses.create(model=model, input=history, tools=[APPLY_PATCH])
    assert r2.output_text.startswith("Tool results: ") and "Done!" in r2.output_text
    if model.startswith("oai/"):
        sent = last_body(openai_up, "/v1/chat/completions")["messages"]
        assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"input": PATCH}
    else:
        sent = last_body(anthropic_up, "/v1/messages")["messages"]
        assert sent[1]["content"][0]["input"] == {"input": PATCH}
