"""Tests for the CodeGeeX test double (tests/upstreams/codegeex_api.py), and for
converters/codegeex.py against it (encode -> double -> StreamDecoder)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from converters import canonical as cn
from converters import codegeex
from tests.upstreams.codegeex_api import make_app
from tests.upstreams.serving import ServerThread

TOKEN = "codegeex-token-0123"
CHAT = "/prod/code/chatCodeSseV3/chat"
MODELS = "/prod/v3/chat/model"
BODY = {"user_role": 0, "ide": "VSCode", "prompt": "hi there", "history": [], "talkId": "t-1",
        "model": "codegeex-4", "machineId": "m-1", "locale": "en"}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base_url():
    with ServerThread(make_app(TOKEN, ["codegeex-4", "claude-sonnet-4"])) as url:
        yield url


@pytest.fixture
def http(base_url):
    with httpx.Client(base_url=base_url, timeout=10, headers={"code-token": TOKEN}) as client:
        client.delete("/__requests")
        yield client


def events_of(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_answer_is_add_fragments_then_finish(http):
    response = http.post(CHAT, json=BODY)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content == (
        b'event: add\ndata: {"text": "Echo"}\n\n'
        b'event: add\ndata: {"text": ": hi"}\n\n'
        b'event: add\ndata: {"text": " the"}\n\n'
        b'event: add\ndata: {"text": "re"}\n\n'
        b'event: finish\ndata: {"text": "Echo: hi there"}\n\n'
    )


def test_non_ascii_prompt(http):
    events = events_of(http.post(CHAT, json={**BODY, "prompt": "héllo 😀"}).content)
    assert "".join(d["text"] for n, d in events if n == "add") == "Echo: héllo 😀"
    assert events[-1] == ("finish", {"text": "Echo: héllo 😀"})


@pytest.mark.parametrize("headers", [{}, {"code-token": ""}, {"code-token": "wrong"}])
def test_bad_token_is_401(base_url, headers):
    for method, path in (("POST", CHAT), ("GET", MODELS)):
        response = httpx.request(method, base_url + path, json=BODY, headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert body["code"] == 401 and "code-token" in body["msg"]


def test_without_configured_tokens_any_token_is_accepted():
    with ServerThread(make_app(None)) as url:
        assert httpx.post(url + CHAT, json=BODY, headers={"code-token": "anything"}).status_code == 200
        assert httpx.post(url + CHAT, json=BODY).status_code == 401


def test_several_tokens():
    with ServerThread(make_app(["a", "b"])) as url:
        assert httpx.post(url + CHAT, json=BODY, headers={"code-token": "b"}).status_code == 200
        assert httpx.post(url + CHAT, json=BODY, headers={"code-token": "c"}).status_code == 401


def test_peer_fields_are_accepted(http):
    body = {**BODY, "ide_version": "", "plugin_version": "", "user_id": "u", "agent": None,
            "candidates": {"candidate_msg_id": "", "candidate_type": "", "selected_candidate": ""},
            "history": [{"query": "q", "answer": "a", "id": "h1"}, {"query": "q2", "answer": ""}],
            "machineId": "", "locale": ""}
    assert http.post(CHAT, json=body).status_code == 200


@pytest.mark.parametrize("change, message", [
    ({"extra": 1}, "unknown field 'extra'"),
    ({"prompt": None}, "field 'prompt' must be a string"),
    ({"prompt": "  "}, "field 'prompt' must not be empty"),
    ({"user_role": True}, "field 'user_role' must be an integer"),
    ({"user_role": "0"}, "field 'user_role' must be an integer"),
    ({"history": {}}, "field 'history' must be an array"),
    ({"history": ["q"]}, "history[0] must be an object"),
    ({"history": [{"query": "q"}]}, "missing required field 'history[0].answer'"),
    ({"history": [{"query": "q", "answer": "a", "role": "user"}]}, "unknown field 'history[0].role'"),
    ({"history": [{"query": "q", "answer": 1}]}, "field 'history[0].answer' must be a string"),
    ({"model": "gpt-4o"}, "model 'gpt-4o' is not supported"),
    ({"talkId": ""}, "field 'talkId' must not be empty"),
    ({"ide": ""}, "field 'ide' must not be empty"),
    ({"agent": 1}, "field 'agent' must be null or a string"),
    ({"candidates": {"x": ""}}, "unknown field 'candidates.x'"),
    ({"ide_version": 2}, "field 'ide_version' must be a string"),
])
def test_validation(http, change, message):
    response = http.post(CHAT, json={**BODY, **change})
    assert response.status_code == 400
    assert response.json() == {"code": 400, "msg": message}


@pytest.mark.parametrize("field", ["user_role", "ide", "prompt", "history", "talkId", "model", "machineId", "locale"])
def test_required_fields(http, field):
    body = {k: v for k, v in BODY.items() if k != field}
    response = http.post(CHAT, json=body)
    assert response.status_code == 400
    assert response.json()["msg"] == f"missing required field {field!r}"


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]"])
def test_body_must_be_a_json_object(http, content):
    response = http.post(CHAT, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["code"] == 400


def test_model_list(http):
    response = http.get(MODELS)
    assert response.status_code == 200
    body = response.json()
    assert [o["id"] for o in body["options"]] == ["codegeex-4", "claude-sonnet-4", "fault-cut", "fault-error",
                                                   "fault-no-finish"]
    assert body["default"] == "codegeex-4"
    assert body["options"][0] == {"id": "codegeex-4", "name": "codegeex-4",
                                  "description": {"zh": "codegeex-4", "en": "codegeex-4"}, "host": ""}


def test_unknown_path_is_404(http):
    response = http.get("/v1/models")
    assert response.status_code == 404
    assert response.json() == {"code": 404, "msg": "Not Found: GET /v1/models"}


def test_fault_cut(http):
    with http.stream("POST", CHAT, json={**BODY, "model": "fault-cut"}) as response:
        assert response.status_code == 200
        received = b""
        with pytest.raises(httpx.HTTPError):
            for chunk in response.iter_raw():
                received += chunk
    assert received == b'event: add\ndata: {"text": "Echo"}\n\nevent: add\ndata: {"text": ": hi"}\n\n'


def test_fault_error(http):
    events = events_of(http.post(CHAT, json={**BODY, "model": "fault-error"}).content)
    assert events == [("add", {"text": "Echo"}),
                      ("error", {"code": 500, "msg": "The model service is busy, please try again later."})]


def test_fault_no_finish(http):
    events = events_of(http.post(CHAT, json={**BODY, "model": "fault-no-finish"}).content)
    assert [n for n, _ in events] == ["add"] * 4


def test_request_log(http):
    http.post(CHAT, json=BODY)
    [entry] = http.get("/__requests").json()
    assert (entry["method"], entry["path"], entry["body"]) == ("POST", CHAT, BODY)
    assert entry["headers"]["code-token"] == TOKEN
    assert http.delete("/__requests").json() == {"cleared": 1}


# --- the converter against the double ------------------------------------------

def decode(raw: bytes) -> list[cn.Event]:
    dec = codegeex.StreamDecoder("codegeex-4")
    return dec.feed(raw) + dec.finish()


def test_converter_round_trip(http):
    req = cn.Request(model="claude-sonnet-4", system=[cn.Text("be brief")],
                     messages=[cn.Message("user", [cn.Text("q1")]),
                               cn.Message("assistant", [cn.Thinking("hm"), cn.Text("a1")]),
                               cn.Message("user", [cn.Text("q2")])])
    body = codegeex.encode_request(req, "talk-9", "machine-9")
    response = http.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    events = decode(response.content)
    assert "".join(e.text for e in events if isinstance(e, cn.TextDelta)) == "Echo: q2"
    assert events[-1] == cn.Finish("stop")
    assert codegeex.decode_response(response.content).content == [cn.Text("Echo: q2")]
    [entry] = http.get("/__requests").json()
    assert entry["body"]["history"] == [{"query": "be brief\n\nq1", "answer": "a1", "id": "talk-9-0"}]


def test_converter_on_scenarios(http):
    body = codegeex.encode_request(cn.Request(model="fault-error", messages=[cn.Message("user", [cn.Text("x")])]),
                                   "t", "m")
    events = decode(http.post(CHAT, json=body).content)
    assert events[-1] == cn.StreamError("The model service is busy, please try again later.", "upstream_error", 502)
    body["model"] = "fault-no-finish"
    assert decode(http.post(CHAT, json=body).content)[-1].code == "stream_truncated"


def test_converter_reads_the_401(base_url):
    response = httpx.post(base_url + CHAT, json=BODY, headers={"code-token": "nope"})
    message, code = codegeex.decode_error(response.status_code, response.content)
    assert code == "401" and "code-token" in message


# --- command line --------------------------------------------------------------

def test_cli_prints_ready_and_serves():
    proc = subprocess.Popen([sys.executable, "-m", "tests.upstreams.codegeex_api", "--host", "127.0.0.1",
                             "--port", "0", "--token", "cli-token", "--models", "codegeex-4"],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY ")
        url = f"http://127.0.0.1:{int(line.split()[1])}"
        assert httpx.post(url + CHAT, json=BODY, headers={"code-token": "cli-token"}).status_code == 200
        assert httpx.post(url + CHAT, json=BODY, headers={"code-token": TOKEN}).status_code == 401
        assert httpx.post(url + CHAT, json={**BODY, "model": "claude-sonnet-4"},
                          headers={"code-token": "cli-token"}).status_code == 400
    finally:
        proc.terminate()
        proc.wait(10)
