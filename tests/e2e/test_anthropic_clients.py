"""The anthropic SDK (and Claude Code-shaped requests) through the gateway's Anthropic Messages
routes to strict local OpenAI-compatible, Gemini and Anthropic upstreams."""

import json
import re

import anthropic
import httpx
import pytest

from converters import call_ids
from tests.e2e.conftest import CLIENT_KEY, TappedUpstream
from tests.harness import Gateway, Upstream

OPENAI_KEY = "sk-oa-test-key-0123456789"
GEMINI_KEY = "AIza-test-gemini-key-0123456789"
ANTHROPIC_KEY = "sk-ant-test-key-0123456789"
ANTHROPIC_VERSION = "2023-06-01"

OPENAI_MODEL, GEMINI_MODEL, GEMINI3_MODEL, CLAUDE_MODEL = (
    "gpt-4o-mini", "gemini-2.5-flash", "gemini-3-pro-preview", "claude-opus-4-5")
DISCOVERED_CLAUDE = "claude-haiku-4-5"  # only the discovering Anthropic provider knows of it
CONVERTED = [OPENAI_MODEL, GEMINI_MODEL]  # backends the Anthropic format is converted for
HELLO = [{"role": "user", "content": "hello there"}]
TOOLS = [
    {"name": "get_weather", "description": "Weather for a city", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
]
PLANNED_INPUTS = [{"tool": "get_weather", "n": 0}, {"tool": "get_time", "n": 1}]  # what the doubles call
THINKING = {"type": "enabled", "budget_tokens": 2048}


# --- upstreams, gateway, client ------------------------------------------------------------------


@pytest.fixture(scope="module")
def openai_up():
    u = Upstream("openai_compat", "--api-key", OPENAI_KEY, "--models", OPENAI_MODEL)
    yield u
    u.stop()


@pytest.fixture(scope="module")
def gemini_up():
    u = Upstream("gemini_api", "--api-key", GEMINI_KEY, "--models", f"{GEMINI_MODEL},{GEMINI3_MODEL}")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def anthropic_up():
    u = TappedUpstream("anthropic_api", ANTHROPIC_KEY, [CLAUDE_MODEL, DISCOVERED_CLAUDE])  # keeps raw bodies
    yield u
    u.stop()


@pytest.fixture(scope="module")
def gateway(openai_up, gemini_up, anthropic_up, tmp_path_factory):
    cfg = {
        "server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 5}},
        "providers": [
            {"id": "oa", "type": "openai", "base_url": openai_up.base + "/v1", "api_key": OPENAI_KEY},
            {"id": "gem", "type": "gemini", "base_url": gemini_up.base, "api_key": GEMINI_KEY},
            {"id": "claude", "type": "anthropic", "base_url": anthropic_up.base, "api_key": ANTHROPIC_KEY,
             "models": [CLAUDE_MODEL]},
            # the same upstream, its models discovered from its GET /v1/models
            {"id": "claude-auto", "type": "anthropic", "base_url": anthropic_up.base, "api_key": ANTHROPIC_KEY},
        ],
        "routing": {"aliases": {"opus": f"claude/{CLAUDE_MODEL}"}},
    }
    g = Gateway(cfg, tmp_path_factory.mktemp("anthropic-clients") / "proxy.yaml")
    yield g
    g.stop()


@pytest.fixture(scope="module")
def client(gateway):
    return anthropic.Anthropic(base_url=gateway.base, api_key=CLIENT_KEY, max_retries=0, timeout=20)


# --- helpers ---------------------------------------------------------------------------------------


def generate_requests(up) -> list[dict]:
    """What a converted upstream was asked to generate (OpenAI chat or Gemini generateContent)."""
    return [r for r in up.received()
            if r["path"] == "/v1/chat/completions" or ":generateContent" in r["path"]
            or ":streamGenerateContent" in r["path"]]


def stream_final(client, **kw):
    """A streamed answer assembled by the SDK's own accumulator."""
    with client.messages.stream(**kw) as s:
        return s.get_final_message()


def tool_results(msg) -> dict:
    """The user turn answering every tool_use of `msg` with "ok <tool name>"."""
    return {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": b.id, "content": f"ok {b.name}"}
        for b in msg.content if b.type == "tool_use"]}


def anthropic_headers(**extra) -> dict:
    return {"x-api-key": CLIENT_KEY, "anthropic-version": ANTHROPIC_VERSION, **extra}


# --- 1. text, tools and thinking through converted backends ----------------------------------------


@pytest.mark.parametrize("model", CONVERTED)
def test_text(client, model):
    r = client.messages.create(model=model, max_tokens=256, system="Be brief.", messages=HELLO)
    assert [(b.type, b.text) for b in r.content] == [("text", "Echo: hello there")]
    assert r.model == model and r.stop_reason == "end_turn" and r.role == "assistant"
    assert r.id.startswith("msg_") and r.usage.input_tokens > 0 and r.usage.output_tokens > 0


@pytest.mark.parametrize("model", CONVERTED)
def test_stream_text(client, model):
    with client.messages.stream(model=model, max_tokens=256, messages=HELLO) as s:
        pieces = list(s.text_stream)
        msg = s.get_final_message()
    assert "".join(pieces) == "Echo: hello there" and len(pieces) > 1  # really streamed
    assert [(b.type, b.text) for b in msg.content] == [("text", "Echo: hello there")]
    assert msg.model == model and msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0


@pytest.mark.parametrize("model", CONVERTED)
def test_streamed_tool_use_then_tool_results(client, model):
    msgs = [{"role": "user", "content": "weather and time?"}]
    msg = stream_final(client, model=model, max_tokens=1024, messages=msgs, tools=TOOLS)
    calls = [b for b in msg.content if b.type == "tool_use"]
    assert [(b.name, b.input) for b in calls] == [(t["tool"], t) for t in PLANNED_INPUTS]
    assert all(b.id for b in calls) and len({b.id for b in calls}) == 2
    assert msg.stop_reason == "tool_use" and msg.model == model

    msgs += [{"role": "assistant", "content": msg.content}, tool_results(msg)]
    r = client.messages.create(model=model, max_tokens=1024, messages=msgs, tools=TOOLS)
    text = "".join(b.text for b in r.content if b.type == "text")
    assert text.startswith("Tool results: ") and "ok get_weather" in text and "ok get_time" in text
    assert r.stop_reason == "end_turn"


@pytest.mark.parametrize("model", [GEMINI_MODEL, GEMINI3_MODEL])
@pytest.mark.parametrize("stream", [False, True])
def test_gemini_thoughts_arrive_as_thinking_blocks(client, gemini_up, model, stream):
    """Gemini signs the calls, not the thought parts: the thinking block's signature is empty
    (documented in converters/anthropic.py) and the call's signature rides in the tool_use id."""
    kw = {"model": model, "max_tokens": 4096, "thinking": THINKING, "tools": TOOLS,
          "messages": [{"role": "user", "content": "weather and time?"}]}
    msg = stream_final(client, **kw) if stream else client.messages.create(**kw)
    sent = generate_requests(gemini_up)[-1]["body"]
    # Gemini 3 takes a thinkingLevel (a budget is legacy there): 2048 ~ medium, which 3 Pro lacks -> high
    depth = {"thinkingLevel": "high"} if model == GEMINI3_MODEL else {"thinkingBudget": 2048}
    assert sent["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, **depth}
    assert [b.type for b in msg.content] == ["thinking", "tool_use", "tool_use"]
    assert msg.content[0].thinking == "Thinking about: weather and time?"
    assert msg.content[0].signature == ""
    assert call_ids.signature_of(msg.content[1].id)  # Gemini signs the first call of a turn


@pytest.mark.parametrize("model", [GEMINI_MODEL, GEMINI3_MODEL])
@pytest.mark.parametrize("stream", [False, True])
def test_gemini_thinking_tool_loop_passes_signature_validation(client, gemini_up, model, stream):
    msgs = [{"role": "user", "content": "weather and time?"}]
    kw = {"model": model, "max_tokens": 4096, "thinking": THINKING, "tools": TOOLS}
    msg = stream_final(client, messages=msgs, **kw) if stream else client.messages.create(messages=msgs, **kw)
    assert [b.type for b in msg.content] == ["thinking", "tool_use", "tool_use"]

    msgs += [{"role": "assistant", "content": msg.content}, tool_results(msg)]
    r = client.messages.create(messages=msgs, **kw)  # the double refuses forged or missing signatures
    assert r.stop_reason == "end_turn"
    assert "ok get_weather" in r.content[-1].text and "ok get_time" in r.content[-1].text
    replayed = generate_requests(gemini_up)[-1]["body"]["contents"][1]
    first_call = replayed["parts"][0]
    assert replayed["role"] == "model" and first_call["functionCall"]["name"] == "get_weather"
    assert first_call["thoughtSignature"].startswith("++++")  # the very signature the double issued


# --- 2. a Claude Code-shaped request ------------------------------------------------------------------

SCHEMA = "http://json-schema.org/draft-07/schema#"


def _object(properties: dict, required: list[str], **extra) -> dict:
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False, "$schema": SCHEMA, **extra}


def _s(description: str, **extra) -> dict:
    return {"type": "string", "description": description, **extra}


_EDIT = {"type": "object", "additionalProperties": False, "required": ["old_string", "new_string"],
         "properties": {"old_string": _s("The text to replace"), "new_string": _s("The text to replace it with"),
                        "replace_all": {"type": "boolean", "default": False,
                                        "description": "Replace all occurences of old_string"}}}
_TODO = {"type": "object", "additionalProperties": False, "required": ["content", "status", "activeForm"],
         "properties": {"content": _s("What to do", minLength=1),
                        "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
                        "activeForm": _s("Present continuous form", minLength=1)}}
_POSITIVE_OR_NULL = {"anyOf": [{"type": "integer", "exclusiveMinimum": 0}, {"type": "null"}]}

CLAUDE_CODE_TOOLS = [{"name": name, "description": desc, "input_schema": schema} for name, desc, schema in [
    ("Task", "Launch a new agent to handle complex, multi-step tasks autonomously.", _object(
        {"description": _s("A short (3-5 word) description of the task"), "prompt": _s("The task for the agent"),
         "subagent_type": _s("The type of specialized agent", enum=["general-purpose", "statusline-setup",
                                                                     "output-style-setup"])},
        ["description", "prompt", "subagent_type"])),
    ("Bash", "Executes a given bash command in a persistent shell session.", _object(
        {"command": _s("The command to execute"),
         "timeout": {"type": "number", "maximum": 600000, "description": "Optional timeout in milliseconds"},
         "description": _s("Clear, concise description of what this command does in 5-10 words"),
         "run_in_background": {"type": "boolean", "default": False}}, ["command"])),
    ("Glob", "Fast file pattern matching tool that works with any codebase size.", _object(
        {"pattern": _s("The glob pattern to match files against", examples=["**/*.py"]),
         "path": _s("The directory to search in")}, ["pattern"])),
    ("Grep", "A powerful search tool built on ripgrep.", _object(
        {"pattern": _s("The regular expression pattern"), "path": _s("File or directory to search in"),
         "glob": _s("Glob pattern to filter files"),
         "output_mode": _s("Output mode", enum=["content", "files_with_matches", "count"],
                           default="files_with_matches"),
         "-B": {"type": "number"}, "-A": {"type": "number"}, "-C": {"type": "number"},
         "-n": {"type": "boolean"}, "-i": {"type": "boolean"}, "type": _s("File type to search"),
         "head_limit": {"type": "number"}, "multiline": {"type": "boolean"}}, ["pattern"])),
    ("ExitPlanMode", "Prompts the user to exit plan mode and start coding.", _object(
        {"plan": _s("The plan you came up with")}, ["plan"])),
    ("Read", "Reads a file from the local filesystem.", _object(
        {"file_path": _s("The absolute path to the file to read"),
         "offset": _POSITIVE_OR_NULL, "limit": _POSITIVE_OR_NULL}, ["file_path"])),
    ("Edit", "Performs exact string replacements in files.", _object(
        {"file_path": _s("The absolute path to the file to modify"), **_EDIT["properties"]},
        ["file_path", "old_string", "new_string"])),
    ("MultiEdit", "Makes multiple edits to a single file in one operation.", _object(
        {"file_path": _s("The absolute path to the file to modify"),
         "edits": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/edit"}}},
        ["file_path", "edits"], **{"$defs": {"edit": _EDIT}})),
    ("Write", "Writes a file to the local filesystem.", _object(
        {"file_path": _s("The absolute path to the file to write"), "content": _s("The content to write")},
        ["file_path", "content"])),
    ("NotebookEdit", "Replaces the contents of a specific cell in a Jupyter notebook.", _object(
        {"notebook_path": _s("Absolute path to the notebook"), "cell_id": _s("The ID of the cell"),
         "new_source": _s("The new source for the cell"),
         "cell_type": {"type": "string", "enum": ["code", "markdown"]},
         "edit_mode": {"type": "string", "enum": ["replace", "insert", "delete"], "default": "replace"}},
        ["notebook_path", "new_source"])),
    ("WebFetch", "Fetches content from a URL and processes it using an AI model.", _object(
        {"url": _s("The URL to fetch content from", format="uri", examples=["https://example.com"]),
         "prompt": _s("The prompt to run on the fetched content")}, ["url", "prompt"])),
    ("TodoWrite", "Create and manage a structured task list for your current coding session.", _object(
        {"todos": {"type": "array", "items": {"$ref": "#/$defs/todo"}, "description": "The updated todo list"}},
        ["todos"], **{"$defs": {"todo": _TODO}})),
    ("WebSearch", "Allows Claude to search the web.", _object(
        {"query": _s("The search query to use", minLength=2),
         "allowed_domains": {"type": "array", "items": {"type": "string"}},
         "blocked_domains": {"type": "array", "items": {"type": "string"}}}, ["query"])),
    ("BashOutput", "Retrieves output from a running or completed background bash shell.", _object(
        {"bash_id": _s("The ID of the background shell"),
         "filter": {"anyOf": [_s("Regular expression to filter output lines"), {"type": "null"}]}},
        ["bash_id"])),
    ("KillShell", "Kills a running background bash shell by its ID.", _object(
        {"shell_id": _s("The ID of the background shell to kill")}, ["shell_id"])),
]]
CLAUDE_CODE_SYSTEM = [
    {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
     "cache_control": {"type": "ephemeral"}},
    {"type": "text", "text": "You are an interactive CLI tool that helps users with software engineering tasks.",
     "cache_control": {"type": "ephemeral"}},
]
CLAUDE_CODE_USER_ID = "user_2f1e0d9c8b7a_account__session_5d0c9a57-0d4e-4c8e-9f61-1b2c3d4e5f60"
CLAUDE_CODE_MESSAGES = [
    {"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\nThis is a reminder that your todo list is empty.\n"
                                 "</system-reminder>"},
        {"type": "text", "text": "list the python files"}]},
    {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "I should glob for python files.",
         "signature": "EqQBCkgIBxABGAIqQKk0mFake0SignatureFromAnEarlierClaudeTurn0000000000=="},
        {"type": "tool_use", "id": "toolu_01D7FLrfh4GYq7yT1ULFeyMV", "name": "Glob",
         "input": {"pattern": "**/*.py"}}]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01D7FLrfh4GYq7yT1ULFeyMV", "content": "app.py\nutil.py"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "There are two: app.py and util.py."}]},
    {"role": "user", "content": [
        {"type": "text", "text": "read both and fix the bug", "cache_control": {"type": "ephemeral"}}]},
]
CLAUDE_CODE_BETAS = ["claude-code-20250219", "interleaved-thinking-2025-05-14",
                     "fine-grained-tool-streaming-2025-05-14"]
TOOL_NAMES = [t["name"] for t in CLAUDE_CODE_TOOLS]


@pytest.fixture(scope="module")
def claude_code(gateway):
    """The SDK dressed as Claude Code: its headers, and the beta Messages API (?beta=true)."""
    return anthropic.Anthropic(base_url=gateway.base, api_key=CLIENT_KEY, max_retries=0, timeout=20,
                               default_headers={"x-app": "cli", "user-agent": "claude-cli/2.0.14 (external, cli)",
                                                "anthropic-version": ANTHROPIC_VERSION,
                                                "anthropic-dangerous-direct-browser-access": "true"})


@pytest.mark.parametrize("model", [GEMINI3_MODEL, OPENAI_MODEL])
def test_claude_code_request(claude_code, openai_up, gemini_up, model):
    assert len(CLAUDE_CODE_TOOLS) == 15
    with claude_code.beta.messages.stream(
            model=model, max_tokens=32000, system=CLAUDE_CODE_SYSTEM, tools=CLAUDE_CODE_TOOLS,
            messages=CLAUDE_CODE_MESSAGES, metadata={"user_id": CLAUDE_CODE_USER_ID},
            thinking={"type": "enabled", "budget_tokens": 31999}, betas=CLAUDE_CODE_BETAS,
            extra_body={"temperature": 1},  # this SDK's signature lacks it; Claude Code sends it
            extra_query={"beta": "true"}) as s:
        assert s.response.status_code == 200
        msg = s.get_final_message()
    calls = [b for b in msg.content if b.type == "tool_use"]
    assert [b.name for b in calls] == TOOL_NAMES  # the doubles call every tool they were given
    assert calls[0].input == {"tool": "Task", "n": 0}
    assert msg.stop_reason == "tool_use" and msg.model == model

    up = gemini_up if model.startswith("gemini") else openai_up
    sent = generate_requests(up)[-1]
    assert CLIENT_KEY not in json.dumps(sent)
    body = sent["body"]
    if up is gemini_up:
        assert sent["headers"]["x-goog-api-key"] == GEMINI_KEY
        assert sent["path"] == f"/v1beta/models/{model}:streamGenerateContent"
        declarations = body["tools"][0]["functionDeclarations"]
        assert [d["name"] for d in declarations] == TOOL_NAMES
        text = json.dumps(declarations)
        for keyword in ("$schema", "$defs", "$ref", "additionalProperties", "exclusiveMinimum", "examples"):
            assert f'"{keyword}"' not in text  # Gemini's Schema knows none of these
        multi_edit = next(d for d in declarations if d["name"] == "MultiEdit")["parameters"]
        edit_item = multi_edit["properties"]["edits"]["items"]  # the $ref, inlined
        assert edit_item["type"] == "OBJECT" and set(edit_item["properties"]) == {
            "old_string", "new_string", "replace_all"}
        assert [p["text"] for p in body["systemInstruction"]["parts"]] == [b["text"] for b in CLAUDE_CODE_SYSTEM]
        parts = [p for c in body["contents"] for p in c["parts"]]
        assert {"functionCall": {"name": "Glob", "args": {"pattern": "**/*.py"}}}.items() <= parts[2].items()
        assert parts[3]["functionResponse"]["name"] == "Glob"
        assert body["generationConfig"]["thinkingConfig"]["includeThoughts"] is True
        assert next(b.type for b in msg.content) == "thinking"
    else:
        assert sent["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
        assert [t["function"]["name"] for t in body["tools"]] == TOOL_NAMES
        assert body["tools"][0]["function"]["parameters"]["properties"] == CLAUDE_CODE_TOOLS[0][
            "input_schema"]["properties"]
        system = body["messages"][0]
        assert system["role"] in ("system", "developer")
        system_text = system["content"] if isinstance(system["content"], str) else "".join(
            p["text"] for p in system["content"])
        assert all(b["text"] in system_text for b in CLAUDE_CODE_SYSTEM)
        roles = [m["role"] for m in body["messages"]]
        assert roles == [system["role"], "user", "assistant", "tool", "assistant", "user"]
        assert body["messages"][2]["tool_calls"][0]["function"]["name"] == "Glob"
        assert body["messages"][3]["tool_call_id"] == body["messages"][2]["tool_calls"][0]["id"]
        assert body["user"] == CLAUDE_CODE_USER_ID
        first = body["messages"][1]["content"]  # two text blocks: the reminder, then the prompt
        reminder, prompt = (b["text"] for b in CLAUDE_CODE_MESSAGES[0]["content"])
        if isinstance(first, list):
            assert [p["text"] for p in first] == [reminder, prompt]
        else:
            assert re.fullmatch(re.escape(reminder) + r"\s+" + re.escape(prompt), first), f"run together: {first!r}"


# --- 3. identity passthrough to an Anthropic upstream -----------------------------------------------


@pytest.fixture(scope="module")
def signed_turn(client):
    """A real assistant turn of the Anthropic double: signed thinking, then a tool call."""
    r = client.messages.create(model=CLAUDE_MODEL, max_tokens=2048, tools=TOOLS[:1],
                               thinking={"type": "enabled", "budget_tokens": 1024},
                               messages=[{"role": "user", "content": "weather in Zürich?"}])
    assert [b.type for b in r.content] == ["thinking", "tool_use"] and r.content[0].signature
    return [b.model_dump(exclude_none=True) for b in r.content]


def passthrough_body(model: str, turn: list[dict]) -> dict:
    return {
        "model": model,
        "max_tokens": 2048,
        "service_tier": "standard_only",  # known to Anthropic, not modelled by the gateway's converter
        "system": [{"type": "text", "text": "Réponds brièvement ✓", "cache_control": {"type": "ephemeral"}}],
        "tools": [{**TOOLS[0], "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "metadata": {"user_id": "user-1234"},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "weather in Zürich?",
                                          "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": turn},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": turn[1]["id"], "content": "sunny",
                                          "cache_control": {"type": "ephemeral"}}]},
        ],
    }


ENCODINGS = {  # how clients put the JSON on the wire
    "compact": lambda body: json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),  # the SDKs
    "spaced": lambda body: json.dumps(body).encode(),  # python requests' json=, curl -d with a saved body
}


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("model", [CLAUDE_MODEL, "opus"])
def test_anthropic_passthrough_is_byte_identical(gateway, anthropic_up, signed_turn, model, encoding):
    raw = ENCODINGS[encoding](passthrough_body(model, signed_turn))
    beta = "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
    r = httpx.post(gateway.base + "/v1/messages", content=raw, timeout=20,
                   headers=anthropic_headers(**{"anthropic-beta": beta, "content-type": "application/json"}))
    assert r.status_code == 200, r.text
    assert r.json()["content"][-1]["text"] == "Tool results: sunny" and r.json()["model"] == model

    expected = raw.replace(json.dumps(model).encode(), json.dumps(CLAUDE_MODEL).encode(), 1)
    received = [body for path, body in anthropic_up.raw if path == "/v1/messages"][-1]
    assert received == expected  # not one byte changed but the model name
    headers = anthropic_up.received()[-1]["headers"]
    assert headers["anthropic-beta"] == beta
    assert headers["x-api-key"] == ANTHROPIC_KEY and CLIENT_KEY not in json.dumps(headers)


# --- 4. count_tokens ----------------------------------------------------------------------------------

COUNTED = {"system": "You are terse.", "tools": TOOLS,
           "messages": [{"role": "user", "content": "How many tokens is this sentence, roughly?"}]}


@pytest.mark.parametrize("model", [CLAUDE_MODEL, "opus", f"claude/{CLAUDE_MODEL}"])
def test_count_tokens_anthropic_is_native(client, anthropic_up, model):
    n = client.messages.count_tokens(model=model, **COUNTED).input_tokens
    direct = anthropic.Anthropic(base_url=anthropic_up.base, api_key=ANTHROPIC_KEY, max_retries=0)
    assert n == direct.messages.count_tokens(model=CLAUDE_MODEL, **COUNTED).input_tokens > 0


def test_count_tokens_gemini_is_native(client, gemini_up):
    n = client.messages.count_tokens(model=GEMINI_MODEL, **COUNTED).input_tokens
    asked = [r for r in gemini_up.received() if r["path"].endswith(":countTokens")][-1]
    assert asked["path"] == f"/v1beta/models/{GEMINI_MODEL}:countTokens"
    direct = httpx.post(gemini_up.base + asked["path"], json=asked["body"], headers={"x-goog-api-key": GEMINI_KEY})
    assert n == direct.json()["totalTokens"] > 0


def test_count_tokens_openai_is_a_local_estimate(client, openai_up):
    openai_up.clear()
    short = client.messages.count_tokens(model=OPENAI_MODEL, messages=HELLO).input_tokens
    long = client.messages.count_tokens(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": "hello there " * 400}]).input_tokens
    assert 0 < short < long
    assert 4800 / 4 <= long <= 4800 / 4 + 50  # ~4 characters a token
    assert openai_up.received() == []  # OpenAI has no counting endpoint: nothing was sent


# --- 5. models and the seed-compatible routes -------------------------------------------------------------


def test_models_in_anthropic_shape(client, gateway):
    models = list(client.models.list())
    ids = [m.id for m in models]
    assert {OPENAI_MODEL, GEMINI_MODEL, GEMINI3_MODEL, CLAUDE_MODEL, "opus"} <= set(ids)
    assert all(m.type == "model" and m.display_name and m.created_at for m in models)
    assert client.models.retrieve(CLAUDE_MODEL).id == CLAUDE_MODEL

    page = httpx.get(gateway.base + "/v1/models", headers=anthropic_headers()).json()
    assert page["has_more"] is False and page["first_id"] == ids[0] and page["last_id"] == ids[-1]
    assert "object" not in page  # not OpenAI's {"object": "list"}


def test_anthropic_provider_discovers_its_models(gateway, client):
    """An Anthropic provider without a `models:` list learns them from GET /v1/models, which
    (like every Anthropic /v1 call) needs the anthropic-version header."""
    forced = anthropic.Anthropic(base_url=gateway.base + "/claude-auto", api_key=CLIENT_KEY, max_retries=0)
    assert {CLAUDE_MODEL, DISCOVERED_CLAUDE} <= {m.id for m in forced.models.list()}
    r = client.messages.create(model=DISCOVERED_CLAUDE, max_tokens=64, messages=HELLO)
    assert r.content[0].text == "Echo: hello there" and r.model == DISCOVERED_CLAUDE


def test_seed_routes(gateway):
    page = httpx.get(gateway.base + "/anthropic/models", headers={"x-api-key": CLIENT_KEY})
    assert page.status_code == 200
    data = page.json()["data"]  # Anthropic's shape even without anthropic-version
    assert {"type": "model", "id": GEMINI_MODEL}.items() <= next(m for m in data if m["id"] == GEMINI_MODEL).items()

    r = httpx.post(gateway.base + "/anthropic/messages", headers=anthropic_headers(), timeout=20,
                   json={"model": GEMINI_MODEL, "max_tokens": 64, "messages": HELLO})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "message" and body["content"] == [{"type": "text", "text": "Echo: hello there"}]


# --- 6. errors in Anthropic's shape -----------------------------------------------------------------------


def assert_anthropic_error(body, kind: str) -> None:
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"]


def test_unknown_model_is_not_found(client):
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="no-such-model", max_tokens=64, messages=HELLO)
    assert_anthropic_error(e.value.body, "not_found_error")
    assert "no-such-model" in e.value.body["error"]["message"]


def test_bad_client_key(gateway):
    bad = anthropic.Anthropic(base_url=gateway.base, api_key="sk-wrong", max_retries=0, timeout=20)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model=OPENAI_MODEL, max_tokens=64, messages=HELLO)
    assert_anthropic_error(e.value.body, "authentication_error")


@pytest.mark.parametrize("provider", ["oa", "gem", "claude"])
def test_upstream_429_keeps_retry_after(client, provider):
    with pytest.raises(anthropic.RateLimitError) as e:
        client.messages.create(model=f"{provider}/fault-429", max_tokens=64, messages=HELLO)
    assert_anthropic_error(e.value.body, "rate_limit_error")
    assert e.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("model", ["oa/fault-cut", "gem/fault-cut", "claude/fault-cut",
                                   "claude/fault-stream-error"])
def test_error_inside_the_stream_reaches_the_sdk(client, model):
    text = ""
    with (pytest.raises(anthropic.APIStatusError) as e,
          client.messages.stream(model=model, max_tokens=64, messages=HELLO) as s):
        for piece in s.text_stream:
            text += piece
    assert e.value.status_code == 200  # the stream had started: the error came as `event: error`
    assert_anthropic_error(e.value.body, "overloaded_error" if model.endswith("stream-error") else "api_error")
    assert text and "Echo: hello there".startswith(text)  # what came before the break got through


@pytest.mark.parametrize("model", [OPENAI_MODEL, GEMINI_MODEL, CLAUDE_MODEL])
def test_missing_max_tokens(gateway, model):
    r = httpx.post(gateway.base + "/v1/messages", headers=anthropic_headers(), timeout=20,
                   json={"model": model, "messages": HELLO})
    assert r.status_code == 400
    assert_anthropic_error(r.json(), "invalid_request_error")
    assert "max_tokens" in r.json()["error"]["message"]
