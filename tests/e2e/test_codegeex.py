"""CodeGeeX through the gateway: the openai and anthropic SDKs as clients, the strict CodeGeeX
double (code-token auth, add/finish SSE) as upstream."""

import anthropic
import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY
from tests.harness import Gateway, Upstream

TOKEN = "cgx-token-0123456789"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    up = Upstream("codegeex_api", "--token", TOKEN)
    cfg = {"server": {"api_keys": [CLIENT_KEY]},
           "providers": [{"id": "cgx", "type": "codegeex", "base_url": up.base, "api_key": TOKEN}]}
    g = Gateway(cfg, tmp_path_factory.mktemp("cgx") / "proxy.yaml")
    g.up = up
    yield g
    g.stop()
    up.stop()


@pytest.fixture
def oai(gateway):
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def test_models_come_from_its_endpoint(oai):
    assert "codegeex-4" in {m.id for m in oai.models.list()}


def test_openai_chat_both_ways(oai, gateway):
    history = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
               {"role": "assistant", "content": "an answer"}, *HELLO]
    r = oai.chat.completions.create(model="codegeex-4", messages=history)
    assert r.choices[0].message.content == "Echo: hello there" and r.model == "codegeex-4"
    stream = oai.chat.completions.create(model="codegeex-4", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: hello there"
    sent = [q for q in gateway.up.received() if q["path"] == "/prod/code/chatCodeSseV3/chat"][0]
    assert sent["headers"]["code-token"] == TOKEN
    assert sent["body"]["history"][0]["answer"] == "an answer"


def test_anthropic_client(gateway):
    c = anthropic.Anthropic(base_url=gateway.base, api_key=CLIENT_KEY, max_retries=0)
    with c.messages.stream(model="codegeex-4", max_tokens=100, messages=HELLO) as s:
        msg = s.get_final_message()
    assert msg.content[0].text == "Echo: hello there" and msg.stop_reason == "end_turn"


def test_tools_are_refused_clearly(oai):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="codegeex-4", messages=HELLO, tools=tools)
    assert e.value.body["param"] == "tools" and "tool" in e.value.body["message"].lower()


def test_a_cut_stream_ends_with_an_error_event(oai):
    stream = oai.chat.completions.create(model="fault-cut", messages=HELLO, stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
