"""Tests for the Kiro (AWS CodeWhisperer / Q) test double (tests/upstreams/kiro_api.py)."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer, EventStreamMessage

from tests.upstreams import kiro_api
from tests.upstreams.kiro_api import DEFAULT_MODELS, Config, encode_frame, make_app
from tests.upstreams.serving import ServerThread

REPO = Path(__file__).resolve().parents[2]
MODEL = "claude-sonnet-4.5"
WEATHER = {"toolSpecification": {"name": "get_weather", "description": "Weather for a city",
                                 "inputSchema": {"json": {"type": "object", "properties": {}}}}}
CLOCK = {"toolSpecification": {"name": "get_time", "description": "The time",
                               "inputSchema": {"json": {"type": "object"}}}}


@pytest.fixture(scope="module")
def base_url():
    with ServerThread(make_app()) as url:
        yield url


@pytest.fixture
def http(base_url):
    with httpx.Client(base_url=base_url, timeout=10) as client:
        yield client
        client.post("/__scenario", json={"mode": None})
        client.post("/__config", json={k: v for k, v in vars(Config()).items()})


def seed(client: httpx.Client, auth: str = "social", **extra: Any) -> dict[str, Any]:
    response = client.post("/__seed", json={"auth": auth, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def bearer(creds: dict[str, Any] | str) -> dict[str, str]:
    token = creds if isinstance(creds, str) else creds["accessToken"]
    return {"Authorization": f"Bearer {token}"}


def user(content: str, **extra: Any) -> dict[str, Any]:
    return {"userInputMessage": {"content": content, "modelId": MODEL, "origin": "AI_EDITOR",
                                 **extra}}


def assistant(content: str, **extra: Any) -> dict[str, Any]:
    return {"assistantResponseMessage": {"content": content, **extra}}


def request_body(creds: dict[str, Any] | None, content: str = "hello world", *,
                 model: str = MODEL, history: list[dict[str, Any]] | None = None,
                 context: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"content": content, "modelId": model, "origin": "AI_EDITOR"}
    if context is not None:
        message["userInputMessageContext"] = context
    state: dict[str, Any] = {"agentTaskType": "vibe", "chatTriggerType": "MANUAL",
                             "conversationId": "conv-1",
                             "currentMessage": {"userInputMessage": message}}
    if history is not None:
        state["history"] = history
    body: dict[str, Any] = {"conversationState": state, **extra}
    if creds is not None and creds.get("profileArn"):
        body["profileArn"] = creds["profileArn"]
    return body


def generate(client: httpx.Client, creds: dict[str, Any], body: dict[str, Any],
             **kwargs: Any) -> httpx.Response:
    return client.post("/generateAssistantResponse", json=body, headers=bearer(creds), **kwargs)


def messages(data: bytes) -> list[EventStreamMessage]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


def events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for message in messages(data):
        assert message.headers[":message-type"] == "event"
        assert message.headers[":content-type"] == "application/json"
        out.append((message.headers[":event-type"], json.loads(message.payload)))
    return out


def answer_text(evts: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(p["content"] for name, p in evts if name == "assistantResponseEvent")


# --------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------

def test_encoded_frame_parses_with_botocore_and_crc_is_checked():
    frame = encode_frame({":message-type": "event", ":event-type": "assistantResponseEvent",
                          ":content-type": "application/json"}, b'{"content":"hi"}')
    (message,) = messages(frame)
    assert message.headers == {":message-type": "event", ":event-type": "assistantResponseEvent",
                               ":content-type": "application/json"}
    assert message.payload == b'{"content":"hi"}'
    assert message.prelude.total_length == len(frame)
    assert int.from_bytes(frame[:4], "big") == len(frame)
    with pytest.raises(ChecksumMismatch):
        messages(kiro_api.corrupt(frame))
    with pytest.raises(ChecksumMismatch):  # a broken prelude CRC is caught as well
        messages(frame[:8] + bytes([frame[8] ^ 1]) + frame[9:])


def test_echo_answer_is_a_real_event_stream(http):
    creds = seed(http)
    response = generate(http, creds, request_body(creds))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.amazon.eventstream"
    assert response.headers["x-amzn-requestid"]
    evts = events(response.content)
    names = [name for name, _ in evts]
    assert names[0] == "messageMetadataEvent" and evts[0][1]["conversationId"] == "conv-1"
    assert names.count("assistantResponseEvent") > 2
    assert answer_text(evts) == "Echo: hello world"
    assert names[-2:] == ["metadataEvent", "contextUsageEvent"]
    usage = evts[-2][1]["tokenUsage"]
    assert set(usage) == {"uncachedInputTokens", "cacheReadInputTokens",
                          "cacheWriteInputTokens", "outputTokens", "totalTokens"}
    assert usage["outputTokens"] == 3
    assert usage["totalTokens"] == usage["uncachedInputTokens"] + usage["outputTokens"]
    assert 0 < evts[-1][1]["contextUsagePercentage"] < 100
    # fed in odd-sized pieces the parser yields the same messages
    buffer, parsed = EventStreamBuffer(), []
    for i in range(0, len(response.content), 7):
        buffer.add_data(response.content[i:i + 7])
        parsed += [m.payload for m in buffer]
    assert parsed == [m.payload for m in messages(response.content)]


def test_images_are_counted(http):
    creds = seed(http)
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    body = request_body(creds, "look")
    body["conversationState"]["currentMessage"]["userInputMessage"]["images"] = [
        {"format": "png", "source": {"bytes": png}}]
    assert answer_text(events(generate(http, creds, body).content)) == "Echo: look [1 image(s)]"


# --------------------------------------------------------------------------
# Auth
# --------------------------------------------------------------------------

def assert_bad_token(response: httpx.Response) -> None:
    assert response.status_code == 403
    assert response.json() == {"message": "The bearer token included in the request is invalid.",
                               "reason": None}
    assert response.headers["x-amzn-errortype"] == "AccessDeniedException"


def test_bad_tokens_get_403(http):
    creds = seed(http)
    body = request_body(creds)
    assert_bad_token(http.post("/generateAssistantResponse", json=body))
    assert_bad_token(generate(http, {"accessToken": "aoa-unknown"}, body))
    assert_bad_token(generate(http, creds | {"accessToken": creds["refreshToken"]}, body))
    expired = seed(http, expired=True)
    assert_bad_token(generate(http, expired, request_body(expired)))
    assert generate(http, creds, body).status_code == 200
    http.post("/__expire_access", json={"accessToken": creds["accessToken"]})
    assert_bad_token(generate(http, creds, body))
    other = seed(http)
    http.post("/__expire_access")
    assert_bad_token(generate(http, other, request_body(other)))


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------

def current(body: dict[str, Any]) -> dict[str, Any]:
    return body["conversationState"]["currentMessage"]["userInputMessage"]


def set_history(*items: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body["conversationState"]["history"] = [copy.deepcopy(i) for i in items]
    return mutate


def with_tools(*tools: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        current(body)["userInputMessageContext"] = {"tools": [copy.deepcopy(t) for t in tools]}
    return mutate


def long_name(body: dict[str, Any]) -> None:
    tool = copy.deepcopy(WEATHER)
    tool["toolSpecification"]["name"] = "t" * 65
    with_tools(tool)(body)


def long_description(body: dict[str, Any]) -> None:
    tool = copy.deepcopy(WEATHER)
    tool["toolSpecification"]["description"] = "d" * 10241
    with_tools(tool)(body)


def schema_not_object(body: dict[str, Any]) -> None:
    tool = copy.deepcopy(WEATHER)
    tool["toolSpecification"]["inputSchema"]["json"] = "object"
    with_tools(tool)(body)


USE = {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}
RESULT = {"toolUseId": "tooluse_1", "content": [{"text": "sunny"}], "status": "success"}


def results(*items: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body["conversationState"]["history"] = [user("weather?"), assistant("ok", toolUses=[USE])]
        current(body)["userInputMessageContext"] = {"tools": [WEATHER], "toolResults": list(items)}
    return mutate


def chain(*mutations: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(body)
    return mutate


REJECTIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "empty content": (lambda b: current(b).update(content=""), "content: must not be empty"),
    "empty history content": (set_history(user(""), assistant("hi")), "history[0]"),
    "empty assistant content": (set_history(user("hi"), assistant("")),
                                "assistantResponseMessage.content: must not be empty"),
    "two user turns": (set_history(user("a"), user("b")), "history[1]: expected assistant"),
    "starts with assistant": (set_history(assistant("a"), user("b")),
                              "history[0]: expected userInputMessage"),
    "ends with user": (set_history(user("a"), assistant("b"), user("c")), "must end with"),
    "both kinds in one item": (set_history({**user("a"), **assistant("b")}), "exactly one of"),
    "tool name 65 chars": (long_name, "65 characters, at most 64"),
    "description too long": (long_description, "at most 10240"),
    "schema not an object": (schema_not_object, "inputSchema.json: expected an object"),
    "duplicate tool names": (with_tools(WEATHER, WEATHER), "duplicate tool name"),
    "missing profileArn": (lambda b: b.pop("profileArn"), "profileArn: required for social"),
    "wrong origin": (lambda b: current(b).update(origin="IDE"), "origin: must be one of"),
    "missing origin": (lambda b: current(b).pop("origin"), "origin: required"),
    "no agentTaskType": (lambda b: b["conversationState"].pop("agentTaskType"),
                         "agentTaskType: required"),
    "bad chatTriggerType": (lambda b: b["conversationState"].update(chatTriggerType="AUTO"),
                            "chatTriggerType"),
    "unknown field": (lambda b: b.update(temperature=0.5), "body.temperature: unknown field"),
    "null field": (lambda b: current(b).update(images=None), "null is not accepted"),
    "assistant as current": (lambda b: b["conversationState"].update(
        currentMessage=assistant("x")), "currentMessage.userInputMessage: required"),
    "bad image": (lambda b: current(b).update(images=[{"format": "png",
                                                       "source": {"bytes": "***"}}]),
                  "not valid base64"),
    "result for an unknown tool use": (results({**RESULT, "toolUseId": "tooluse_9"}),
                                       "answers no toolUse"),
    "tool use left unanswered": (results(), "no toolResults for toolUses"),
    "duplicate tool results": (results(RESULT, RESULT), "duplicate toolUseId"),
    "tool history without tools": (chain(results(RESULT),
                                         lambda b: current(b)["userInputMessageContext"].pop(
                                             "tools")), "tools: required when"),
    "empty-string input key": (set_history(user("a"), assistant("b", toolUses=[
        {**USE, "input": {"": 1}}])), "empty-string keys"),
    "bad thinking type": (lambda b: b.update(additionalModelRequestFields={
        "thinking": {"type": "on"}}), "thinking.type"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_malformed_requests_are_rejected(http, case):
    creds = seed(http)
    body = request_body(creds)
    mutate, detail = REJECTIONS[case]
    mutate(body)
    response = generate(http, creds, body)
    assert response.status_code == 400, response.text
    assert response.json() == {"message": "Improperly formed request.", "reason": None}
    assert response.headers["x-amzn-errortype"] == "ValidationException"
    assert detail in response.headers["x-double-detail"]
    assert detail in http.get("/__state").json()["last_rejection"]


def test_invalid_json_is_improperly_formed(http):
    creds = seed(http)
    response = http.post("/generateAssistantResponse", content=b"{nope", headers=bearer(creds))
    assert response.status_code == 400
    assert response.json()["message"] == "Improperly formed request."


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "gpt-4o"])
def test_dashed_or_unknown_model_ids_are_invalid(http, model):
    creds = seed(http)
    response = generate(http, creds, request_body(creds, model=model))
    assert response.status_code == 400
    assert response.json() == {
        "message": "Invalid model. Please select a different model to continue.",
        "reason": "INVALID_MODEL_ID"}
    body = request_body(creds, history=[user("a"), assistant("b")])
    body["conversationState"]["history"][0]["userInputMessage"]["modelId"] = model
    assert generate(http, creds, body).json()["reason"] == "INVALID_MODEL_ID"


def test_limits_are_inclusive_and_idc_needs_no_profile(http):
    creds = seed(http)
    tool = copy.deepcopy(WEATHER)
    tool["toolSpecification"]["name"] = "t" * 64
    tool["toolSpecification"]["description"] = "d" * 10240
    body = request_body(creds, context={"tools": [tool, {"cachePoint": {"type": "default"}}]},
                        history=[user("a"), assistant("b")])
    assert generate(http, creds, body).status_code == 200
    idc = seed(http, "idc")
    assert "profileArn" not in idc
    assert generate(http, idc, request_body(idc)).status_code == 200


def test_another_accounts_profile_is_denied(http):
    creds, other = seed(http), seed(http)
    body = request_body(creds)
    body["profileArn"] = other["profileArn"]
    response = generate(http, creds, body)
    assert response.status_code == 403
    assert response.json()["message"] == "User is not authorized to make this call."


# --------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------

def tool_events(evts: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [payload for name, payload in evts if name == "toolUseEvent"]


def test_tool_use_fragments_with_one_verbatim_repeat(http):
    creds = seed(http)
    response = generate(http, creds, request_body(creds, context={"tools": [WEATHER, CLOCK]}))
    evts = events(response.content)
    assert answer_text(evts) == ""
    uses = tool_events(evts)
    ids = list(dict.fromkeys(u["toolUseId"] for u in uses))
    assert len(ids) == 2 and all(i.startswith("tooluse_") for i in ids)
    repeats = [i for i in range(1, len(uses)) if uses[i] == uses[i - 1]]
    assert len(repeats) == 1 and "input" in uses[repeats[0]]
    for n, (tool_use_id, name) in enumerate(zip(ids, ["get_weather", "get_time"], strict=False)):
        mine = [u for u in uses if u["toolUseId"] == tool_use_id]
        assert all(u["name"] == name for u in mine)
        assert "input" not in mine[0] and mine[-1] == {"name": name, "toolUseId": tool_use_id,
                                                        "stop": True}
        fragments = [u["input"] for u in mine if "input" in u]
        assert len(fragments) > 3
        deduped = [f for i, f in enumerate(fragments)
                   if i == 0 or mine[i + 1] != mine[i]]  # drop an event equal to the one before
        assert json.loads("".join(deduped)) == {"tool": name, "n": n}
        if n == 0:
            with pytest.raises(json.JSONDecodeError):  # a client that doubles it breaks
                json.loads("".join(fragments))
    assert evts[-2][1]["tokenUsage"]["outputTokens"] == 10


def test_duplicate_setting(http):
    creds = seed(http)
    assert http.post("/__config", json={"duplicate": "none"}).json()["duplicate"] == "none"
    uses = tool_events(events(generate(
        http, creds, request_body(creds, context={"tools": [WEATHER]})).content))
    assert json.loads("".join(u.get("input", "") for u in uses)) == {"tool": "get_weather", "n": 0}
    http.post("/__config", json={"duplicate": "text"})
    evts = events(generate(http, creds, request_body(creds)).content)
    texts = [p["content"] for name, p in evts if name == "assistantResponseEvent"]
    assert texts[1] == texts[2] and "".join(texts[:2] + texts[3:]) == "Echo: hello world"
    assert http.post("/__config", json={"duplicate": "twice"}).status_code == 400


def test_tool_results_are_answered(http):
    creds = seed(http)
    second = {**USE, "toolUseId": "tooluse_2", "name": "get_time", "input": {}}
    body = request_body(creds, "Tool results provided.",
                        history=[user("weather and time?"),
                                 assistant("calling", toolUses=[USE, second])],
                        context={"tools": [WEATHER, CLOCK], "toolResults": [
                            RESULT, {"toolUseId": "tooluse_2", "content": [{"json": {"h": 12}}],
                                     "status": "error"}]})
    response = generate(http, creds, body)
    assert response.status_code == 200, response.headers.get("x-double-detail")
    evts = events(response.content)
    assert answer_text(evts) == 'Tool results: sunny; {"h": 12}'
    assert tool_events(evts) == []


def test_tool_calls_can_be_turned_off(http):
    creds = seed(http)
    http.post("/__config", json={"tool_calls": False})
    evts = events(generate(http, creds, request_body(creds, context={"tools": [WEATHER]})).content)
    assert answer_text(evts) == "Echo: hello world" and tool_events(evts) == []


# --------------------------------------------------------------------------
# Thinking
# --------------------------------------------------------------------------

def test_reasoning_events_and_signature_replay(http):
    creds = seed(http)
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 2048}}
    evts = events(generate(http, creds, request_body(
        creds, additionalModelRequestFields=thinking)).content)
    reasoning = [p for name, p in evts if name == "reasoningContentEvent"]
    names = [name for name, _ in evts]
    assert names.index("reasoningContentEvent") < names.index("assistantResponseEvent")
    thought = "".join(p["text"] for p in reasoning)
    assert thought == "Thinking about: hello world"
    signature = reasoning[-1]["signature"]
    assert answer_text(evts) == "Echo: hello world"

    def replay(said: str) -> httpx.Response:
        history = [user("hello world"), assistant("Echo: hello world", reasoningContent={
            "reasoningText": {"text": said, "signature": signature}})]
        return generate(http, creds, request_body(creds, "again", history=history,
                                                  additionalModelRequestFields=thinking))

    assert replay(thought).status_code == 200
    tampered = replay(thought + "!")
    assert tampered.status_code == 400
    assert "not a signature issued" in tampered.headers["x-double-detail"]
    plain = events(generate(http, creds, request_body(creds, additionalModelRequestFields={
        "thinking": {"type": "disabled"}})).content)
    assert "reasoningContentEvent" not in [name for name, _ in plain]


def test_prompt_tag_thinking(http):
    creds = seed(http)
    content = "<thinking_mode>enabled</thinking_mode><max_thinking_length>20000" \
              "</max_thinking_length>\n\nhi"
    text = answer_text(events(generate(http, creds, request_body(creds, content)).content))
    assert text.startswith("<thinking>Thinking about the request.</thinking>\n\nEcho: ")


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------

@pytest.mark.parametrize("mode, status, error_type, reason", [
    ("throttling", 429, "ThrottlingException", None),
    ("quota", 402, "ServiceQuotaExceededException", "MONTHLY_REQUEST_COUNT"),
    ("suspended", 403, "AccessDeniedException", "TEMPORARILY_SUSPENDED"),
    ("internal", 500, "InternalServerException", None),
])
def test_http_fault_scenarios(http, mode, status, error_type, reason):
    creds = seed(http)
    http.post("/__scenario", json={"mode": mode, "times": 1})
    response = generate(http, creds, request_body(creds))
    assert response.status_code == status
    assert response.headers["x-amzn-errortype"] == error_type
    assert response.json()["reason"] == reason
    if mode == "throttling":
        assert response.json()["message"] == "Too many requests, please wait before trying again."
    if mode == "suspended":
        assert "temporarily is suspended" in response.json()["message"]
    assert generate(http, creds, request_body(creds)).status_code == 200  # times used up
    assert http.get("/__state").json()["scenario"]["mode"] is None


def test_scenario_applies_after_validation_and_to_listed_models(http):
    creds = seed(http)
    http.post("/__scenario", json={"mode": "throttling", "models": ["claude-haiku-4.5"]})
    assert generate(http, creds, request_body(creds)).status_code == 200
    assert generate(http, creds, request_body(creds, model="claude-haiku-4.5")).status_code == 429
    assert generate(http, creds, request_body(creds, "")).status_code == 400


def test_suspended_hits_model_list_too(http):
    creds = seed(http)
    http.post("/__scenario", json={"mode": "suspended"})
    response = http.get("/ListAvailableModels", headers=bearer(creds),
                        params={"origin": "AI_EDITOR", "profileArn": creds["profileArn"]})
    assert response.status_code == 403 and response.json()["reason"] == "TEMPORARILY_SUSPENDED"


def test_in_stream_exceptions(http):
    creds = seed(http)
    http.post("/__scenario", json={"mode": "throttling_stream", "times": 1})
    response = generate(http, creds, request_body(creds))
    assert response.status_code == 200
    parsed = messages(response.content)
    assert [m.headers[":message-type"] for m in parsed] == ["event"] * 3 + ["exception"]
    assert parsed[-1].headers[":exception-type"] == "ThrottlingException"
    assert json.loads(parsed[-1].payload)["message"].startswith("Too many requests")

    http.post("/__scenario", json={"mode": "quota_stream", "times": 1})
    (only,) = messages(generate(http, creds, request_body(creds)).content)
    assert only.headers[":exception-type"] == "ServiceQuotaExceededException"
    assert json.loads(only.payload)["reason"] == "MONTHLY_REQUEST_COUNT"

    http.post("/__scenario", json={"mode": "error_stream", "times": 1})
    last = messages(generate(http, creds, request_body(creds)).content)[-1]
    assert last.headers[":message-type"] == "error"
    assert last.headers[":error-code"] == "InternalServerException"
    assert last.payload == b""


def test_corrupt_frame_fails_the_crc(http):
    creds = seed(http)
    http.post("/__scenario", json={"mode": "corrupt"})
    buffer = EventStreamBuffer()
    buffer.add_data(generate(http, creds, request_body(creds)).content)
    assert next(buffer).headers[":event-type"] == "messageMetadataEvent"
    assert next(buffer).headers[":event-type"] == "assistantResponseEvent"
    with pytest.raises(ChecksumMismatch):
        next(buffer)


def test_cut_closes_mid_frame(http):
    creds = seed(http)
    http.post("/__scenario", json={"mode": "cut"})
    received = b""
    with pytest.raises(httpx.RemoteProtocolError), http.stream(
            "POST", "/generateAssistantResponse", json=request_body(creds),
            headers=bearer(creds)) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received += chunk
    buffer = EventStreamBuffer()
    buffer.add_data(received)
    assert len(list(buffer)) == 2
    assert 0 < len(buffer._data) < int.from_bytes(buffer._data[:4], "big")


def test_split_body_still_parses(http):
    creds = seed(http)
    http.post("/__scenario", json={"mode": "split"})
    chunks = []
    with http.stream("POST", "/generateAssistantResponse", json=request_body(creds),
                     headers=bearer(creds)) as response:
        chunks = list(response.iter_raw())
    data = b"".join(chunks)
    assert len(chunks) > 1
    assert answer_text(events(data)) == "Echo: hello world"


def test_slow_stream(http):
    creds = seed(http)
    http.post("/__config", json={"slow_delay": 0.05})
    http.post("/__scenario", json={"mode": "slow"})
    started = time.monotonic()
    response = generate(http, creds, request_body(creds))
    frames = messages(response.content)
    assert time.monotonic() - started >= 0.05 * len(frames) * 0.9
    assert answer_text(events(response.content)) == "Echo: hello world"


def test_hang_sends_nothing(http):
    creds = seed(http)
    http.post("/__scenario", json={"mode": "hang", "times": 1})
    with pytest.raises(httpx.ReadTimeout):
        generate(http, creds, request_body(creds), timeout=0.5)


def test_control_rejects_bad_input(http):
    assert http.post("/__scenario", json={"mode": "explode"}).status_code == 400
    assert http.post("/__scenario", json={"mode": "cut", "times": 0}).status_code == 400
    assert http.post("/__config", json={"nope": 1}).status_code == 400
    assert http.post("/__seed", json={"auth": "saml"}).status_code == 400


# --------------------------------------------------------------------------
# Refresh
# --------------------------------------------------------------------------

def test_social_refresh_rotates(http):
    creds = seed(http, expired=True)
    assert creds["authMethod"] == "social" and creds["expiresAt"].endswith("Z")
    assert_bad_token(generate(http, creds, request_body(creds)))
    before = http.get("/__state").json()
    response = http.post("/refreshToken", json={"refreshToken": creds["refreshToken"]})
    assert response.status_code == 200
    fresh = response.json()
    assert set(fresh) == {"accessToken", "refreshToken", "expiresIn", "profileArn"}
    assert fresh["profileArn"] == creds["profileArn"] and fresh["expiresIn"] == 3600
    assert fresh["refreshToken"] != creds["refreshToken"]
    assert generate(http, fresh, request_body(creds)).status_code == 200
    reused = http.post("/refreshToken", json={"refreshToken": creds["refreshToken"]})
    assert reused.status_code == 401 and reused.json() == {"message": "Invalid refresh token"}
    again = http.post("/refreshToken", json={"refreshToken": fresh["refreshToken"]})
    assert again.status_code == 200
    assert http.post("/refreshToken", json={}).status_code == 400
    idc = seed(http, "idc")
    assert http.post("/refreshToken", json={"refreshToken": idc["refreshToken"]}).status_code == 401
    after = http.get("/__state").json()
    assert after["social_refresh_calls"] - before["social_refresh_calls"] == 5
    assert after["refresh_failures"] - before["refresh_failures"] == 3


def test_idc_refresh_rotates(http):
    creds = seed(http, "idc", expired=True)
    client = creds["_client"]
    assert creds["authMethod"] == "IdC" and len(creds["clientIdHash"]) == 40
    assert set(client) == {"clientId", "clientSecret", "expiresAt"}
    form = {"clientId": client["clientId"], "clientSecret": client["clientSecret"],
            "grantType": "refresh_token", "refreshToken": creds["refreshToken"]}

    def token(**changes: Any) -> httpx.Response:
        return http.post("/token", json={**form, **changes})

    wrong = token(clientSecret="nope")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert wrong.headers["x-amzn-errortype"] == "InvalidClientException"
    assert token(clientId="unknown").status_code == 401
    grant = token(grantType="authorization_code")
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
    bad = token(refreshToken="aor-unknown")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    assert token(refreshToken=seed(http)["refreshToken"]).json()["error"] == "invalid_grant"
    assert http.post("/token", json={"refreshToken": "x"}).json()["error"] == "invalid_request"

    response = token()
    assert response.status_code == 200
    fresh = response.json()
    assert set(fresh) == {"accessToken", "tokenType", "expiresIn", "refreshToken"}
    assert fresh["tokenType"] == "Bearer" and fresh["refreshToken"] != creds["refreshToken"]
    assert generate(http, fresh, request_body(None)).status_code == 200
    assert token().json()["error"] == "invalid_grant"  # the old refresh token is spent
    assert token(refreshToken=fresh["refreshToken"]).status_code == 200

    other = seed(http, "idc")  # another client's refresh token
    assert token(refreshToken=other["refreshToken"]).json()["error"] == "invalid_grant"
    lapsed = seed(http, "idc", client_expired=True)
    response = http.post("/token", json={
        "clientId": lapsed["_client"]["clientId"], "grantType": "refresh_token",
        "clientSecret": lapsed["_client"]["clientSecret"], "refreshToken": lapsed["refreshToken"]})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


# --------------------------------------------------------------------------
# Models, log, CLI
# --------------------------------------------------------------------------

def test_list_available_models(http):
    creds = seed(http)
    params = {"origin": "AI_EDITOR", "profileArn": creds["profileArn"]}
    assert_bad_token(http.get("/ListAvailableModels", params=params))
    assert http.get("/ListAvailableModels", headers=bearer(creds),
                    params={"profileArn": creds["profileArn"]}).status_code == 400
    assert http.get("/ListAvailableModels", headers=bearer(creds),
                    params={"origin": "AI_EDITOR"}).status_code == 400
    body = http.get("/ListAvailableModels", headers=bearer(creds), params=params).json()
    assert [m["modelId"] for m in body["models"]] == DEFAULT_MODELS
    assert body["defaultModel"]["modelId"] == "auto" and "nextToken" not in body
    sonnet = body["models"][1]
    assert sonnet["modelName"] == "Claude Sonnet 4.5"
    assert set(sonnet["tokenLimits"]) == {"maxInputTokens", "maxOutputTokens"}
    assert sonnet["rateUnit"] == "Credit" and sonnet["supportedInputTypes"] == ["TEXT", "IMAGE"]
    idc = seed(http, "idc")
    page = http.get("/ListAvailableModels", headers=bearer(idc),
                    params={"origin": "AI_EDITOR", "maxResults": 2}).json()
    seen = [m["modelId"] for m in page["models"]]
    while "nextToken" in page:
        page = http.get("/ListAvailableModels", headers=bearer(idc), params={
            "origin": "AI_EDITOR", "maxResults": 2, "nextToken": page["nextToken"]}).json()
        seen += [m["modelId"] for m in page["models"]]
    assert seen == DEFAULT_MODELS


def test_request_log_and_state(http):
    http.delete("/__requests")
    creds = seed(http)
    generate(http, creds, request_body(creds))
    log = http.get("/__requests").json()
    call = next(r for r in log if r["path"] == "/generateAssistantResponse")
    assert call["body"]["conversationState"]["conversationId"] == "conv-1"
    assert call["headers"]["authorization"] == f"Bearer {creds['accessToken']}"
    state = http.get("/__state").json()
    assert state["generate_calls"] >= 1
    account = next(a for a in state["accounts"] if a["profileArn"] == creds["profileArn"])
    assert account["refreshToken"] == creds["refreshToken"] and account["auth"] == "social"


def test_cli_prints_ready():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.upstreams.kiro_api", "--host", "127.0.0.1", "--port", "0",
         "--models", "claude-haiku-4.5", "--duplicate", "none"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("READY ")
        port = int(line.split()[1])
        config = httpx.get(f"http://127.0.0.1:{port}/__config", timeout=5).json()
        assert config["models"] == ["claude-haiku-4.5"] and config["duplicate"] == "none"
    finally:
        process.terminate()
        process.wait(10)
