"""Claude Code CLI as a backend: the prompt, the stream-json decoder, and the loopback shim
(run in-process against tests/fake_claude/claude)."""

import asyncio
import json
import os
from pathlib import Path

import anthropic
import httpx
import pytest

from converters import canonical as cn
from converters.claude_code import (
    TRANSCRIPT_HEADER,
    StreamJsonDecoder,
    collect,
    prompt_of,
)
from llmgate.providers.claude_code_shim import ClaudeCodeShim, redact

FAKE_DIR = Path(__file__).resolve().parent.parent / "fake_claude"


# --- the prompt ------------------------------------------------------------------

def test_single_user_message_is_sent_as_is():
    assert prompt_of({"messages": [{"role": "user", "content": "Hi there"}]}) == ("Hi there", None)
    body = {"system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    assert prompt_of(body) == ("a\n\nb", "Be brief.\n\nBe kind.")
    assert prompt_of({"system": "  ", "messages": [{"role": "user", "content": "x"}]})[1] is None


def test_conversation_becomes_a_transcript():
    body = {"system": "sys", "messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18 C"}]},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True, "content": "boom"},
            {"type": "text", "text": "And tomorrow?"}]},
    ]}
    prompt, system = prompt_of(body)
    assert system == "sys"
    assert prompt == "\n\n".join([
        TRANSCRIPT_HEADER,
        "Human: What is the weather in Paris?",
        'Assistant: Let me check.\n\n[tool call toolu_1: weather {"city":"Paris"}]',
        "Human: [tool result toolu_1: 18 C]\n\n[tool result toolu_2 (error): boom]\n\nAnd tomorrow?",
    ])
    assert prompt.splitlines()[-1] == "And tomorrow?"


@pytest.mark.parametrize("body, param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]}, "messages.0.content.1"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "image", "source": {}}]}]}]}, "messages.0.content.0.content.0"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "messages.0.content.0"),
    ({"system": [{"type": "image"}], "messages": [{"role": "user", "content": "x"}]}, "system.0"),
    ({"messages": [{"role": "user", "content": ""}]}, "messages"),
])
def test_what_cannot_be_sent_is_refused(body, param):
    with pytest.raises(cn.ConversionError) as e:
        prompt_of(body)
    assert e.value.param == param


# --- the stream --------------------------------------------------------------------

def line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


INIT = {"type": "system", "subtype": "init", "session_id": "s1", "model": "claude-sonnet-4-5-20250929",
        "tools": ["Read"], "cwd": "/tmp", "mcp_servers": [], "permissionMode": "default", "apiKeySource": "none"}
USAGE = {"input_tokens": 10, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 3, "output_tokens": 9}
RESULT = {"type": "result", "subtype": "success", "is_error": False, "duration_ms": 900, "num_turns": 1,
          "result": "Hello world", "session_id": "s1", "total_cost_usd": 0.0042, "usage": USAGE}


def msg(mid, content, stop=None):
    return {"type": "assistant", "session_id": "s1", "parent_tool_use_id": None, "message": {
        "id": mid, "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": content, "stop_reason": stop, "usage": {"input_tokens": 10, "output_tokens": 1}}}


def se(event):
    return {"type": "stream_event", "session_id": "s1", "parent_tool_use_id": None, "event": event}


PARTIAL = [
    INIT,
    se({"type": "message_start", "message": {"id": "msg_A", "model": "claude-sonnet-4-5-20250929", "content": [],
                                             "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    se({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
    se({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me"}}),
    se({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "SIG"}}),
    se({"type": "content_block_stop", "index": 0}),
    msg("msg_A", [{"type": "thinking", "thinking": "Let me", "signature": "SIG"}]),
    se({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
    se({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hello"}}),
    se({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": " world"}}),
    se({"type": "content_block_stop", "index": 1}),
    msg("msg_A", [{"type": "text", "text": "Hello world"}]),
    se({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}}),
    se({"type": "message_stop"}),
    RESULT,
]

EXPECTED_PARTIAL = [
    cn.MessageStart("msg_A", "claude-sonnet-4-5-20250929"),
    cn.UsageUpdate(cn.Usage(input_tokens=10, output_tokens=1)),
    cn.BlockStart(0, cn.Thinking("")), cn.ThinkingDelta(0, "Let me"), cn.SignatureDelta(0, "SIG"), cn.BlockStop(0),
    cn.BlockStart(1, cn.Text("")), cn.TextDelta(1, "Hello"), cn.TextDelta(1, " world"), cn.BlockStop(1),
    cn.UsageUpdate(cn.Usage(input_tokens=15, output_tokens=9, cached_tokens=3, cache_write_tokens=2)),
    cn.Finish("stop"),
]


def test_partial_messages_give_deltas_and_skip_the_repeated_whole_messages():
    d = StreamJsonDecoder()
    assert d.feed(b"".join(line(o) for o in PARTIAL)) == EXPECTED_PARTIAL
    assert d.done and d.session_id == "s1" and d.cost_usd == 0.0042


def test_any_chunking_gives_the_same_events():
    data = b"".join(line(o) for o in PARTIAL)
    d = StreamJsonDecoder()
    events = [e for i in range(0, len(data), 7) for e in d.feed(data[i:i + 7])]
    assert events == EXPECTED_PARTIAL


def test_whole_messages_give_whole_blocks():
    lines = [INIT, msg("msg_A", [{"type": "thinking", "thinking": "Let me", "signature": "SIG"}]),
             msg("msg_A", [{"type": "text", "text": "Hello world"}], "end_turn"), RESULT]
    d = StreamJsonDecoder()
    events = d.feed(b"".join(line(o) for o in lines))
    assert events == [
        cn.MessageStart("msg_A", "claude-sonnet-4-5-20250929"),
        cn.BlockStart(0, cn.Thinking("Let me", "SIG")), cn.BlockStop(0),
        cn.BlockStart(1, cn.Text("Hello world")), cn.BlockStop(1),
        cn.UsageUpdate(cn.Usage(input_tokens=15, output_tokens=9, cached_tokens=3, cache_write_tokens=2)),
        cn.Finish("stop"),
    ]
    r = collect(events, "sonnet")
    assert isinstance(r, cn.Response) and cn.text_of(r.content) == "Hello world" and r.content[0].signature == "SIG"


def test_the_clis_own_tool_loop_is_skipped():
    lines = [
        INIT,
        msg("msg_A", [{"type": "text", "text": "Let me look."}]),
        msg("msg_A", [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/x"}}], "tool_use"),
        {"type": "user", "session_id": "s1", "parent_tool_use_id": None, "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "nothing"}]}},
        msg("msg_S", [{"type": "text", "text": "sub-agent chatter"}]) | {"parent_tool_use_id": "toolu_1"},
        {"type": "system", "subtype": "compact_boundary"},
        b"not json at all",
        msg("msg_B", [{"type": "text", "text": "Done."}], "max_tokens"),
        RESULT,
    ]
    d = StreamJsonDecoder()
    events = d.feed(b"".join(o + b"\n" if isinstance(o, bytes) else line(o) for o in lines))
    assert [e for e in events if isinstance(e, (cn.BlockStart, cn.BlockStop))] == [
        cn.BlockStart(0, cn.Text("Let me look.")), cn.BlockStop(0), cn.BlockStart(1, cn.Text("Done.")), cn.BlockStop(1)]
    assert events[-1] == cn.Finish("length")


def test_partial_tool_use_is_skipped():
    lines = [
        se({"type": "message_start", "message": {"id": "msg_A", "content": []}}),
        se({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "Bash"}}),
        se({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        se({"type": "content_block_stop", "index": 0}),
        se({"type": "message_stop"}),
        se({"type": "message_start", "message": {"id": "msg_B", "content": []}}),
        se({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "Hi"}}),
        RESULT,  # the block is closed before the end
    ]
    events = StreamJsonDecoder().feed(b"".join(line(o) for o in lines))
    assert events == [cn.MessageStart("msg_A", ""), cn.BlockStart(0, cn.Text("")), cn.TextDelta(0, "Hi"),
                      cn.BlockStop(0), events[-2], cn.Finish("stop")]


def test_synthetic_error_notices_are_skipped():
    notice = msg("msg_E", [{"type": "text", "text": "API Error: 529 overloaded"}], "stop_sequence")
    notice["message"]["model"] = "<synthetic>"
    result = {**RESULT, "is_error": True, "result": "API Error: 529 overloaded"}
    events = StreamJsonDecoder().feed(line(INIT) + line(notice) + line(result))
    assert not any(isinstance(e, cn.BlockStart) for e in events)
    assert events[-1] == cn.StreamError("Claude Code failed: API Error: 529 overloaded", "overloaded_error", 529)


def test_result_text_stands_in_when_no_message_was_seen():
    events = StreamJsonDecoder().feed(line(INIT) + line(RESULT))
    r = collect(events, "sonnet")
    assert isinstance(r, cn.Response) and cn.text_of(r.content) == "Hello world"


@pytest.mark.parametrize("result, status, code, text", [
    ({"subtype": "success", "is_error": True,
      "result": 'API Error: 529 {"type":"error","error":{"type":"overloaded_error"}}'}, 529, "overloaded_error", "529"),
    ({"subtype": "success", "is_error": True, "result": "API Error: 429 rate limited"}, 429, "rate_limit_error", "429"),
    ({"subtype": "success", "is_error": True, "result": "Invalid API key · Please run /login"}, 502, "api_error",
     "Invalid API key"),
    ({"subtype": "error_max_turns", "is_error": False}, 502, "api_error", "error_max_turns"),
    ({"subtype": "error_during_execution", "is_error": True, "errors": ["tool crashed"]}, 502, "api_error",
     "tool crashed"),
])
def test_failed_results_are_stream_errors(result, status, code, text):
    events = StreamJsonDecoder().feed(line(INIT) + line({"type": "result", **result, "usage": USAGE}))
    err = events[-1]
    assert isinstance(err, cn.StreamError) and (err.status, err.code) == (status, code) and text in err.message
    assert not any(isinstance(e, cn.Finish) for e in events)
    assert collect(events, "x") == err


def test_a_stream_without_result_fails_at_finish():
    d = StreamJsonDecoder()
    events = d.feed(line(INIT) + line(PARTIAL[1]) + line(PARTIAL[7]) + b'{"type": "stream_ev')
    assert events[-1] == cn.BlockStart(0, cn.Text(""))
    tail = d.finish("the CLI exited with status 137")
    assert tail == [cn.BlockStop(0), cn.StreamError("the CLI exited with status 137", "api_error", 502)]
    assert d.finish() == [] and d.feed(line(RESULT)) == []


def test_redact():
    assert "SECRET" not in redact("key sk-ant-api03-SECRETSECRET and api_key=SECRET2 Bearer SECRETTOKEN1")


# --- the shim ----------------------------------------------------------------------

@pytest.fixture(autouse=True)
def fake_cli(monkeypatch):
    monkeypatch.setenv("PATH", f"{FAKE_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
    for var in ("FAKE_CLAUDE_MODE", "FAKE_CLAUDE_PIDFILE", "FAKE_CLAUDE_RECORD", "FAKE_CLAUDE_DELAY"):
        monkeypatch.delenv(var, raising=False)


def with_shim(test, **kwargs):
    async def main():
        shim = ClaudeCodeShim(**kwargs)
        try:
            url = await shim.ensure_started()
            async with anthropic.AsyncAnthropic(base_url=url, api_key=shim.api_key, max_retries=0) as client:
                return await test(shim, client)
        finally:
            await shim.close()
    return asyncio.run(main())


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def wait_gone(pid: int, seconds: float = 6.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if gone(pid):
            return True
        await asyncio.sleep(0.05)
    return gone(pid)


def test_non_stream(tmp_path, monkeypatch):
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_CLAUDE_RECORD", str(record))

    async def test(shim, client):
        m = await client.messages.create(model="haiku", max_tokens=100, system="Be brief.", messages=[
            {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "Say hi"}])
        assert [b.text for b in m.content] == ["Echo: Human: Say hi"]  # the transcript's last line
        assert m.model == "haiku" and m.stop_reason == "end_turn" and m.id.startswith("msg_")
        assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.output_tokens) == (12, 5, 7)
        raw = await client.messages.with_raw_response.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        assert raw.headers["x-claude-code-cost-usd"] == "0.012300"
        for _ in range(100):  # the process exits by itself after its result
            if shim.active == 0:
                break
            await asyncio.sleep(0.02)
        assert shim.active == 0

    with_shim(test)
    seen = json.loads(record.read_text())
    assert seen["argv"] == ["-p", "--output-format", "stream-json", "--verbose", "--model", "claude-sonnet-4-6"]
    assert seen["stdin"] == "x"


def test_command_line_and_transcript(tmp_path, monkeypatch):
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_CLAUDE_RECORD", str(record))

    async def test(shim, client):
        async with client.messages.stream(model="opus", max_tokens=5, system="Be brief.", messages=[
                {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "Say hi"}]) as s:
            await s.get_final_message()

    with_shim(test, extra_args=["--max-turns", "1"])
    seen = json.loads(record.read_text())
    assert seen["argv"] == ["-p", "--output-format", "stream-json", "--verbose", "--model", "opus",
                            "--include-partial-messages", "--system-prompt", "Be brief.", "--max-turns", "1"]
    assert seen["stdin"] == f"{TRANSCRIPT_HEADER}\n\nHuman: first\n\nAssistant: ok\n\nHuman: Say hi"


def test_stream():
    async def test(shim, client):
        texts = []
        async with client.messages.stream(model="sonnet", max_tokens=100,
                                          messages=[{"role": "user", "content": "stream me please"}]) as s:
            async for t in s.text_stream:
                texts.append(t)
            final = await s.get_final_message()
        assert "".join(texts) == "Echo: stream me please" and len(texts) > 1
        assert [b.text for b in final.content] == ["Echo: stream me please"]
        assert final.stop_reason == "end_turn" and final.usage.output_tokens == 7

    with_shim(test)


def test_tool_loop_of_the_cli_is_not_shown(monkeypatch):
    monkeypatch.setenv("FAKE_CLAUDE_MODE", "tools")

    async def test(shim, client):
        m = await client.messages.create(model="haiku", max_tokens=100, messages=[{"role": "user", "content": "q"}])
        assert [b.type for b in m.content] == ["text", "text"] and m.content[1].text == "Echo: q"
        async with client.messages.stream(model="haiku", max_tokens=100,
                                          messages=[{"role": "user", "content": "q"}]) as s:
            final = await s.get_final_message()
        assert [b.text for b in final.content] == ["Let me look.", "Echo: q"]
        assert final.stop_reason == "end_turn"

    with_shim(test)


def test_concurrency_is_bounded(monkeypatch):
    monkeypatch.setenv("FAKE_CLAUDE_MODE", "slow")
    monkeypatch.setenv("FAKE_CLAUDE_DELAY", "0.15")

    async def test(shim, client):
        peak = 0
        done = False

        async def sample():
            nonlocal peak
            while not done:
                peak = max(peak, shim.active)
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        results = await asyncio.gather(*(client.messages.create(
            model="haiku", max_tokens=10, messages=[{"role": "user", "content": f"n{i}"}]) for i in range(5)))
        done = True
        await sampler
        assert sorted(r.content[0].text[:8] for r in results) == [f"Echo: n{i}" for i in range(5)]
        assert peak == 2

    with_shim(test, max_concurrency=2)


def test_client_disconnect_kills_the_cli(tmp_path, monkeypatch):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_CLAUDE_MODE", "slow")
    monkeypatch.setenv("FAKE_CLAUDE_PIDFILE", str(pidfile))

    async def test(shim, client):
        url = shim.base_url + "/v1/messages"
        body = {"model": "sonnet", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient(timeout=10) as http:
            async with http.stream("POST", url, json=body, headers={"x-api-key": shim.api_key}) as r:
                assert r.status_code == 200
                async for chunk in r.aiter_bytes():
                    assert b"message_start" in chunk
                    break
        pid = int(pidfile.read_text())
        assert not gone(pid)
        assert await wait_gone(pid)
        for _ in range(100):
            if shim.active == 0:
                break
            await asyncio.sleep(0.05)
        assert shim.active == 0

    with_shim(test)


def test_non_stream_disconnect_kills_the_cli(tmp_path, monkeypatch):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_CLAUDE_MODE", "hang")
    monkeypatch.setenv("FAKE_CLAUDE_PIDFILE", str(pidfile))

    async def test(shim, client):
        body = {"model": "sonnet", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient(timeout=1.0) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(shim.base_url + "/v1/messages", json=body, headers={"x-api-key": shim.api_key})
        assert await wait_gone(int(pidfile.read_text()))

    with_shim(test)


def test_timeout_kills_the_cli(tmp_path, monkeypatch):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_CLAUDE_MODE", "hang")
    monkeypatch.setenv("FAKE_CLAUDE_PIDFILE", str(pidfile))

    async def test(shim, client):
        with pytest.raises(anthropic.APIStatusError) as e:
            await client.messages.create(model="haiku", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == 504 and e.value.body["error"]["type"] == "timeout_error"
        assert await wait_gone(int(pidfile.read_text()))

    with_shim(test, timeout=0.5)


def test_close_stops_running_processes(tmp_path, monkeypatch):
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_CLAUDE_MODE", "hang")
    monkeypatch.setenv("FAKE_CLAUDE_PIDFILE", str(pidfile))

    async def main():
        shim = ClaudeCodeShim(kill_grace=0.5)
        await shim.ensure_started()
        client = anthropic.AsyncAnthropic(base_url=shim.base_url, api_key=shim.api_key, max_retries=0)
        call = asyncio.create_task(client.messages.create(
            model="haiku", max_tokens=10, messages=[{"role": "user", "content": "x"}]))
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text():
                break
            await asyncio.sleep(0.05)
        await shim.close()
        assert gone(int(pidfile.read_text()))
        with pytest.raises(anthropic.APIError):
            await call
        await client.close()

    asyncio.run(main())


def test_cli_missing():
    assert ClaudeCodeShim(executable=None).unavailable
    shim = ClaudeCodeShim(executable="claude-not-installed-here")
    assert shim.path is None and "not found" in shim.unavailable
    assert ClaudeCodeShim().unavailable is None and ClaudeCodeShim().path == str(FAKE_DIR / "claude")

    async def test(shim, client):
        with pytest.raises(anthropic.APIStatusError) as e:
            await client.messages.create(model="haiku", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == 503 and "not found" in e.value.message

    with_shim(test, executable="claude-not-installed-here")


def test_cli_error_is_502_with_stderr(monkeypatch):
    monkeypatch.setenv("FAKE_CLAUDE_MODE", "error")

    async def test(shim, client):
        for stream in (False, True):
            with pytest.raises(anthropic.APIStatusError) as e:
                await client.messages.create(model="haiku", max_tokens=10, stream=stream,
                                             messages=[{"role": "user", "content": "x"}])
            err = e.value.body["error"]
            assert e.value.status_code == 502 and err["type"] == "api_error"
            assert "status 1" in err["message"] and "Invalid API key" in err["message"]
            assert "SECRET" not in err["message"]

    with_shim(test)


def test_api_error_result_keeps_its_status(monkeypatch):
    monkeypatch.setenv("FAKE_CLAUDE_MODE", "api_error")

    async def test(shim, client):
        for stream in (False, True):
            with pytest.raises(anthropic.APIStatusError) as e:
                await client.messages.create(model="haiku", max_tokens=10, stream=stream,
                                             messages=[{"role": "user", "content": "x"}])
            assert e.value.status_code == 529 and e.value.body["error"]["type"] == "overloaded_error"

    with_shim(test)


def test_bad_requests():
    async def test(shim, client):
        url = shim.base_url + "/v1/messages"
        key = {"x-api-key": shim.api_key}
        ok = {"model": "haiku", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        async with httpx.AsyncClient(timeout=10) as http:
            cases = [
                ({**ok, "max_tokens": None}, key, 400, "invalid_request_error", "max_tokens"),
                ({k: v for k, v in ok.items() if k != "model"}, key, 400, "invalid_request_error", "model"),
                ({**ok, "messages": []}, key, 400, "invalid_request_error", "messages"),
                ({**ok, "model": "gpt-4o"}, key, 404, "not_found_error", "gpt-4o"),
                ({**ok, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, key, 400,
                 "invalid_request_error", "messages.0.content.0"),
                (ok, {"x-api-key": "wrong"}, 401, "authentication_error", "key"),
                (ok, {}, 401, "authentication_error", "key"),
            ]
            for body, headers, status, kind, text in cases:
                r = await http.post(url, json=body, headers=headers)
                assert r.status_code == status, (body, r.text)
                err = r.json()
                assert err["type"] == "error" and err["error"]["type"] == kind and text in err["error"]["message"]
            r = await http.post(url, content=b"{nope", headers=key)
            assert r.status_code == 400
            r = await http.post(url, json=ok, headers={"authorization": f"Bearer {shim.api_key}"})
            assert r.status_code == 200 and r.json()["content"][0]["text"] == "Echo: x"

    with_shim(test)


def test_models_and_count_tokens():
    async def test(shim, client):
        models = [m.id async for m in client.models.list()]
        assert models == ["opus", "sonnet", "haiku"]
        n = await client.messages.count_tokens(model="haiku", messages=[{"role": "user", "content": "x" * 400}])
        assert n.input_tokens == 104

    with_shim(test)
