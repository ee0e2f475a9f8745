"""Gemini-native clients (the google-genai SDK, and httpx for exact bytes) through the gateway,
to a strict OpenAI-compatible upstream (converted) and a strict Gemini upstream (passed through)."""

import json

import httpx
import pytest
from google import genai
from google.genai import errors, types

from tests.e2e.conftest import CLIENT_KEY, TappedUpstream, reset_cooldowns
from tests.harness import Gateway, Upstream

OPENAI_KEY = "sk-openai-upstream-0123456789"
GEMINI_KEY = "AIza-test-gemini-key-0123456789"
OPENAI_MODELS = ["gpt-4o-mini", "qwen3-coder-30b"]
GEMINI_MODELS = ["gemini-2.5-flash", "gemini-3-pro-preview"]
TOOLS = [types.Tool(function_declarations=[
    types.FunctionDeclaration(
        name="get_weather", description="Weather for a city",
        parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")}, required=["city"])),
    types.FunctionDeclaration(
        name="get_time", description="The time in a timezone",
        parameters=types.Schema(type="OBJECT", properties={"tz": types.Schema(type="STRING")})),
])]
EXPECTED_CALLS = [("get_weather", {"tool": "get_weather", "n": 0}), ("get_time", {"tool": "get_time", "n": 1})]


@pytest.fixture(scope="module")
def openai_up():
    u = Upstream("openai_compat", "--api-key", OPENAI_KEY, "--models", ",".join(OPENAI_MODELS))
    yield u
    u.stop()


@pytest.fixture(scope="module")
def gemini_up():
    u = TappedUpstream("gemini_api", GEMINI_KEY, GEMINI_MODELS)
    yield u
    u.stop()


@pytest.fixture(scope="module")
def gateway(openai_up, gemini_up, tmp_path_factory):
    cfg = {
        "server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 5}},
        "providers": [
            {"id": "oai", "type": "openai", "base_url": openai_up.base + "/v1", "api_key": OPENAI_KEY},
            {"id": "gem", "type": "gemini", "base_url": gemini_up.base, "api_key": GEMINI_KEY},
        ],
    }
    g = Gateway(cfg, tmp_path_factory.mktemp("gemcli") / "proxy.yaml")
    yield g
    g.stop()


@pytest.fixture
def client(gateway):
    return genai.Client(api_key=CLIENT_KEY, http_options=types.HttpOptions(base_url=gateway.base, timeout=20_000))


@pytest.fixture
def http(gateway):
    with httpx.Client(base_url=gateway.base, headers={"x-goog-api-key": CLIENT_KEY}, timeout=20) as c:
        yield c


def chat_requests(up):
    return [r for r in up.received() if r["path"] == "/v1/chat/completions"]


def generate_requests(up):
    return [r for r in up.received() if ":generateContent" in r["path"] or ":streamGenerateContent" in r["path"]]


def google_error(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["code"] == resp.status_code and isinstance(err["message"], str) and err["message"], body
    return err


def stream_parts(chunks) -> list[types.Part]:
    return [p for c in chunks for p in (c.candidates[0].content.parts or ()) if c.candidates and c.candidates[0].content]


# --- 1. to an OpenAI-compatible upstream (converted) ------------------------------------------


def test_generate_content_to_openai(client, openai_up):
    r = client.models.generate_content(model="gpt-4o-mini", contents="hello there")
    assert r.text == "Echo: hello there"
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.usage_metadata.prompt_token_count > 0 and r.usage_metadata.total_token_count > 0
    sent = chat_requests(openai_up)[-1]
    assert sent["headers"]["authorization"] == f"Bearer {OPENAI_KEY}" and CLIENT_KEY not in json.dumps(sent)
    assert sent["body"]["model"] == "gpt-4o-mini" and sent["body"]["messages"][-1]["role"] == "user"


def test_generate_content_stream_to_openai(client, openai_up):
    chunks = list(client.models.generate_content_stream(model="gpt-4o-mini", contents="hello there"))
    assert len(chunks) > 1
    assert "".join(c.text or "" for c in chunks) == "Echo: hello there"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1] if c.candidates)
    assert chat_requests(openai_up)[-1]["body"]["stream"] is True


@pytest.mark.parametrize("stream", [False, True])
def test_function_calling_round_trip_to_openai(client, stream):
    user = types.Content(role="user", parts=[types.Part.from_text(text="weather and time?")])
    config = types.GenerateContentConfig(tools=TOOLS)
    if stream:
        chunks = list(client.models.generate_content_stream(model="gpt-4o-mini", contents=[user], config=config))
        parts = stream_parts(chunks)
        calls = [p.function_call for p in parts if p.function_call]
        model_turn = types.Content(role="model", parts=parts)
    else:
        r = client.models.generate_content(model="gpt-4o-mini", contents=[user], config=config)
        calls = r.function_calls
        model_turn = r.candidates[0].content
    assert [(c.name, c.args) for c in calls] == EXPECTED_CALLS
    assert all(isinstance(c.args, dict) for c in calls)
    answers = types.Content(role="user", parts=[
        types.Part.from_function_response(name=c.name, response={"result": f"{c.name} is fine"}) for c in calls])
    final = client.models.generate_content(model="gpt-4o-mini", contents=[user, model_turn, answers], config=config)
    assert not final.function_calls
    assert final.text.startswith("Tool results: ")
    assert "get_weather is fine" in final.text and "get_time is fine" in final.text


def test_count_tokens_is_a_local_estimate_for_openai(client, openai_up):
    openai_up.clear()
    short = client.models.count_tokens(model="gpt-4o-mini", contents="hi").total_tokens
    long = client.models.count_tokens(model="gpt-4o-mini", contents="hello there, " * 50).total_tokens
    assert 0 < short < long
    assert chat_requests(openai_up) == []  # nothing generated to count


def test_models_list_includes_upstream_models(client):
    names = {m.name for m in client.models.list()}
    for model in OPENAI_MODELS + GEMINI_MODELS:
        assert f"models/{model}" in names, names


def test_system_instruction_and_generation_config_reach_openai(client, openai_up):
    config = types.GenerateContentConfig(system_instruction="Be brief.", temperature=0.3, max_output_tokens=50)
    r = client.models.generate_content(model="gpt-4o-mini", contents="hello there", config=config)
    assert r.text == "Echo: hello there"
    body = chat_requests(openai_up)[-1]["body"]
    first = body["messages"][0]
    assert first["role"] in ("system", "developer")
    assert first["content"] in ("Be brief.", [{"type": "text", "text": "Be brief."}])
    assert body["messages"][-1]["role"] == "user"
    assert body["temperature"] == 0.3
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 50


# --- 2. to a Gemini upstream (passed through) --------------------------------------------------

# Odd spacing, key order, an escaped non-ASCII character and a trailing newline: any
# re-serialization on the way would change these bytes.
RAW_BODY = (b'{ "generationConfig" : {"temperature": 0.50, "thinkingConfig": {"thinkingBudget": 0}},\n'
            b'  "contents": [ {"parts": [{"text": "caf\\u00e9  hello"}], "role": "user"} ] }\n')


def test_generate_content_body_is_byte_identical(http, gemini_up):
    gemini_up.clear()
    r = http.post("/v1beta/models/gemini-2.5-flash:generateContent", content=RAW_BODY,
                  headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == "Echo: caf\u00e9  hello"
    assert r.json()["modelVersion"] == "gemini-2.5-flash"
    assert gemini_up.raw_bodies(":generateContent") == [RAW_BODY]
    sent = generate_requests(gemini_up)[-1]
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent["headers"]["x-goog-api-key"] == GEMINI_KEY and CLIENT_KEY not in json.dumps(sent)


def test_stream_sse_body_is_byte_identical(http, gemini_up):
    gemini_up.clear()
    r = http.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", content=RAW_BODY,
                  headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data: "):]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert len(events) > 1
    assert "".join(p.get("text", "") for e in events for p in e["candidates"][0]["content"]["parts"]) == \
        "Echo: caf\u00e9  hello"
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert gemini_up.raw_bodies(":streamGenerateContent") == [RAW_BODY]
    assert generate_requests(gemini_up)[-1]["query"] == "alt=sse"


def test_thoughts_and_signatures_round_trip_through_the_sdk(client, gemini_up):
    """gemini-3 thinks: a thought part, then the calls with a thoughtSignature on the first one.
    The double refuses the next turn unless that signature comes back unchanged."""
    user = types.Content(role="user", parts=[types.Part.from_text(text="weather and time?")])
    config = types.GenerateContentConfig(tools=TOOLS, thinking_config=types.ThinkingConfig(include_thoughts=True))
    chunks = list(client.models.generate_content_stream(model="gemini-3-pro-preview", contents=[user], config=config))
    parts = stream_parts(chunks)
    thoughts = [p for p in parts if p.thought]
    assert thoughts and thoughts[0].text == "Thinking about: weather and time?"
    calls = [p for p in parts if p.function_call]
    assert [(p.function_call.name, p.function_call.args) for p in calls] == EXPECTED_CALLS
    assert isinstance(calls[0].thought_signature, bytes) and calls[0].thought_signature
    assert chunks[-1].usage_metadata.thoughts_token_count > 0

    answers = types.Content(role="user", parts=[
        types.Part.from_function_response(name=p.function_call.name, response={"result": "ok"}) for p in calls])
    final = list(client.models.generate_content_stream(
        model="gemini-3-pro-preview", contents=[user, types.Content(role="model", parts=parts), answers],
        config=config))
    text = "".join(p.text for p in stream_parts(final) if p.text and not p.thought)
    assert text.startswith("Tool results: ")
    sent = generate_requests(gemini_up)[-1]["body"]["contents"][1]["parts"]
    first_call = next(p for p in sent if "functionCall" in p)
    assert first_call["thoughtSignature"]  # the signature went back (and the double accepted it)


def test_forged_signature_is_refused_by_the_upstream(client):
    """The check above is real: a signature the double never issued is a 400."""
    user = types.Content(role="user", parts=[types.Part.from_text(text="weather?")])
    model_turn = types.Content(role="model", parts=[types.Part(
        function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"}), thought_signature=b"forged!!")])
    answer = types.Content(role="user", parts=[types.Part.from_function_response(name="get_weather",
                                                                                  response={"result": "ok"})])
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_content(model="gemini-3-pro-preview", contents=[user, model_turn, answer],
                                       config=types.GenerateContentConfig(tools=TOOLS))
    assert e.value.code == 400 and e.value.status == "INVALID_ARGUMENT"


def test_count_tokens_goes_to_the_gemini_upstream(client, gemini_up):
    text = "hello there, how many tokens is this sentence?"
    gemini_up.clear()
    counted = client.models.count_tokens(model="gemini-2.5-flash", contents=text).total_tokens
    assert [r["path"] for r in gemini_up.received()] == ["/v1beta/models/gemini-2.5-flash:countTokens"]
    direct = httpx.post(f"{gemini_up.base}/v1beta/models/gemini-2.5-flash:countTokens",
                        headers={"x-goog-api-key": GEMINI_KEY},
                        json={"contents": [{"role": "user", "parts": [{"text": text}]}]})
    assert direct.status_code == 200, direct.text
    assert counted == direct.json()["totalTokens"] > 0


# --- 3. streamGenerateContent without alt=sse: one JSON array ----------------------------------


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gemini-2.5-flash"])
def test_stream_without_sse_is_one_json_array(http, model):
    body = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}
    r = http.post(f"/v1beta/models/{model}:streamGenerateContent", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    elements = json.loads(r.content)
    assert isinstance(elements, list) and len(elements) > 1
    parsed = [types.GenerateContentResponse.model_validate(e) for e in elements]
    assert all(e["candidates"] for e in elements)
    assert "".join(p.text or "" for p in parsed) == "Echo: hello there"
    assert elements[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all("finishReason" not in e["candidates"][0] for e in elements[:-1])


# --- 4. errors in Google's shape ----------------------------------------------------------------


def test_unknown_model_is_404_not_found(client, http):
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_content(model="no-such-model", contents="hi")
    assert e.value.code == 404 and e.value.status == "NOT_FOUND"
    r = http.post("/v1beta/models/no-such-model:generateContent",
                  json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert r.status_code == 404 and google_error(r)["status"] == "NOT_FOUND"


def test_bad_key_is_401_unauthenticated(gateway, gemini_up):
    bad = genai.Client(api_key="not-a-gateway-key", http_options=types.HttpOptions(base_url=gateway.base))
    gemini_up.clear()
    with pytest.raises(errors.ClientError) as e:
        bad.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert e.value.code == 401 and e.value.status == "UNAUTHENTICATED"
    r = httpx.post(f"{gateway.base}/v1beta/models/gemini-2.5-flash:generateContent?key=wrong",
                   json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert r.status_code == 401 and google_error(r)["status"] == "UNAUTHENTICATED"
    assert gemini_up.received() == []


def test_key_in_query_string_is_accepted(gateway, gemini_up):
    r = httpx.post(f"{gateway.base}/v1beta/models/gemini-2.5-flash:generateContent?key={CLIENT_KEY}",
                   json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, timeout=20)
    assert r.status_code == 200, r.text
    assert r.json()["candidates"][0]["content"]["parts"][-1]["text"] == "Echo: hi"
    assert CLIENT_KEY not in json.dumps(generate_requests(gemini_up)[-1])


def test_upstream_429_is_passed_on(client, http):
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_content(model="gem/fault-429", contents="hi")
    assert e.value.code == 429 and e.value.status == "RESOURCE_EXHAUSTED"
    r = http.post("/v1beta/models/gem/fault-429:generateContent",
                  json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert r.status_code == 429 and google_error(r)["status"] == "RESOURCE_EXHAUSTED"
    assert r.headers.get("retry-after") == "7"  # from the upstream's RetryInfo retryDelay "7s"


def test_upstream_429_keeps_googles_error_details(http):
    """Gemini client, Gemini upstream: the 429's details are the client's to read. gemini-cli
    (googleQuotaErrors.ts) tells a per-minute limit (RetryInfo: wait retryDelay) from a daily
    one (QuotaFailure: give up) only by them."""
    reset_cooldowns(str(http.base_url).rstrip("/"), "gem")  # an earlier test's 429 is still cooling
    r = http.post("/v1beta/models/gem/fault-429:generateContent",
                  json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert r.status_code == 429
    details = google_error(r).get("details") or []
    kinds = {d.get("@type") for d in details}
    assert {"type.googleapis.com/google.rpc.ErrorInfo", "type.googleapis.com/google.rpc.QuotaFailure",
            "type.googleapis.com/google.rpc.RetryInfo"} <= kinds, r.text
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"} in details


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gemini-2.5-flash"])
def test_missing_contents_is_400_invalid_argument(http, model):
    r = http.post(f"/v1beta/models/{model}:generateContent", json={"generationConfig": {"temperature": 0.5}})
    assert r.status_code == 400, r.text
    assert google_error(r)["status"] == "INVALID_ARGUMENT"


# --- 5. the seed-compatible alias ---------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gemini-2.5-flash"])
def test_seed_alias_generate_content(http, model):
    r = http.post(f"/gemini/models/{model}:generateContent",
                  json={"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]})
    assert r.status_code == 200, r.text
    assert r.json()["candidates"][0]["content"]["parts"][-1]["text"] == "Echo: hello there"
    assert r.json()["modelVersion"] == model
