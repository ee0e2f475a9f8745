"""Codex's namespace tool and hosted tools through the converters (issue 13, defect 1)."""

import json

from converters import anthropic, gemini, kiro, openai_chat, responses
from converters import canonical as cn

FN = {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}
CODEX = {  # what Codex CLI 0.17x sends on every request, trimmed
    "model": "m", "input": "hi",
    "tools": [
        {"type": "function", "name": "shell", "parameters": FN},
        {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.", "tools": [
            {"type": "function", "name": "spawn_agent", "description": "Start one.", "parameters": FN},
            {"type": "function", "name": "wait", "parameters": FN}]},
        {"type": "web_search", "external_web_access": True},
    ],
}


def test_namespace_members_become_flat_function_tools_and_web_search_a_hosted_tool():
    req = responses.decode_request(CODEX)
    assert [t.name for t in req.tools] == ["shell", "multi_agent_v1__spawn_agent", "multi_agent_v1__wait"]
    assert req.namespaced == {"multi_agent_v1__spawn_agent": ("multi_agent_v1", "spawn_agent"),
                              "multi_agent_v1__wait": ("multi_agent_v1", "wait")}
    assert req.tools[1].description == "[multi_agent_v1: Sub-agents.] Start one."
    assert [(h.kind, h.config) for h in req.hosted_tools] == [("web_search", {"external_web_access": True})]


def test_long_or_odd_names_fit_provider_limits_and_stay_distinct():
    a = responses.flat_name("n" * 40, "tool.one" + "x" * 30)
    b = responses.flat_name("n" * 40, "tool.two" + "x" * 30)
    assert len(a) == len(b) == 64 and a != b
    assert all(c.isalnum() or c in "_-" for c in a + b)
    assert responses.flat_name("ns_", "_x") == "ns__x"  # Codex's own trimming around the delimiter


def test_calls_go_back_in_namespace_form_whole_and_streamed():
    req = responses.decode_request(CODEX)
    call = cn.ToolCall("call_1", "multi_agent_v1__spawn_agent", '{"message":"go"}')
    r = cn.Response("r1", "m", [call], "tool_calls")
    (item,) = responses.encode_response(r, "m", req.freeform_tools, req.namespaced)["output"]
    assert (item["type"], item["name"], item["namespace"]) == ("function_call", "spawn_agent", "multi_agent_v1")
    enc = responses.StreamEncoder("m", req.freeform_tools, req.namespaced)
    out = enc.encode([cn.MessageStart("r1", "m"), cn.BlockStart(0, cn.ToolCall("call_1", call.name, "")),
                      cn.ArgumentsDelta(0, '{"message":"go"}'), cn.BlockStop(0), cn.Finish("tool_calls")])
    items = [json.loads(line[6:])["item"] for line in out.decode().splitlines()
             if line.startswith("data: ") and '"response.output_item.' in line]
    assert {(i["name"], i.get("namespace")) for i in items} == {("spawn_agent", "multi_agent_v1")}
    plain = responses.encode_response(cn.Response("r2", "m", [cn.ToolCall("c", "shell", "{}")], "tool_calls"),
                                      "m", (), req.namespaced)["output"][0]
    assert "namespace" not in plain


def test_a_namespaced_call_in_the_history_is_sent_under_its_flat_name():
    body = {**CODEX, "input": [
        {"type": "function_call", "call_id": "c1", "name": "wait", "namespace": "multi_agent_v1", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "done"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "q"}},
    ]}
    req = responses.decode_request(body)
    call, result = req.messages[0].content[0], req.messages[1].content[0]
    assert (call.name, result.name) == ("multi_agent_v1__wait", "multi_agent_v1__wait")
    assert len(req.messages) == 2  # the hosted search's own item is not replayed


def test_web_search_maps_to_anthropic_server_tool():
    req = responses.decode_request(CODEX)
    body = anthropic.encode_request(req)
    assert body["tools"][-1] == {"type": "web_search_20250305", "name": "web_search"}
    assert [t["name"] for t in body["tools"][:3]] == ["shell", "multi_agent_v1__spawn_agent", "multi_agent_v1__wait"]
    assert req.dropped_tools == []


def test_gemini_takes_google_search_only_without_function_tools():
    req = responses.decode_request(CODEX)
    assert "googleSearch" not in json.dumps(gemini.encode_request(req))  # Gemini refuses the mix
    assert req.dropped_tools == ["web_search"]
    alone = responses.decode_request({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]})
    assert gemini.encode_request(alone)["tools"] == [{"googleSearch": {}}] and alone.dropped_tools == []


def test_hosted_tools_without_equivalent_are_dropped_and_named():
    body = {"model": "m", "input": "hi", "tools": [
        {"type": "file_search", "vector_store_ids": ["v"]}, {"type": "code_interpreter", "container": {"type": "auto"}},
        {"type": "image_generation"}, {"type": "mcp", "server_label": "x", "server_url": "https://x"},
        {"type": "local_shell"}, {"type": "web_search_preview"}]}
    req = responses.decode_request(body)
    openai_chat.encode_request(req)
    assert req.dropped_tools == ["file_search", "code_interpreter", "image_generation", "mcp", "local_shell",
                                 "web_search"]
    req = responses.decode_request(body)
    kiro.encode_request(req, "conv")
    assert "web_search" in req.dropped_tools


def test_anthropic_server_tools_and_client_defined_tools():
    data = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        {"type": "code_execution_20250825", "name": "code_execution"},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        {"name": "mine", "input_schema": FN}]}
    req = anthropic.decode_request(data)
    assert [t.name for t in req.tools] == ["bash", "str_replace_based_edit_tool", "mine"]
    assert [h.kind for h in req.hosted_tools] == ["web_search", "code_execution"]
    body = responses.encode_request(req)
    assert {"type": "web_search"} in body["tools"] and req.dropped_tools == ["code_execution"]
    assert req.tools[0].parameters["properties"]["command"]["type"] == "string"


def test_gemini_client_built_in_tools_are_hosted():
    req = gemini.decode_request({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                                 "tools": [{"googleSearch": {}}, {"urlContext": {}}]}, "gemini-2.5-flash")
    assert [h.kind for h in req.hosted_tools] == ["web_search", "urlContext"]
    body = anthropic.encode_request(req)
    assert body["tools"] == [{"type": "web_search_20250305", "name": "web_search"}]
    assert req.dropped_tools == ["urlContext"]
