"""iFlow through the gateway: the openai SDK as client, the strict iFlow double (it checks the
HMAC-signed session headers) as upstream; the key from proxy.yaml or from iFlow's credentials file."""

import json

import httpx
import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY
from tests.harness import Gateway, Upstream

IFLOW_KEY = "sk-iflow-0123456789abcdef"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def iflow():
    u = Upstream("iflow_api", "--api-key", IFLOW_KEY, "--models", "qwen3-coder-plus,kimi-k2")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def creds_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("iflow") / "oauth_creds.json"
    path.write_text(json.dumps({"access_token": "a", "refresh_token": "r", "expiry_date": 1, "apiKey": IFLOW_KEY}))
    return path


@pytest.fixture(scope="module")
def client(iflow, creds_file, tmp_path_factory):
    cfg = {
        "server": {"api_keys": [CLIENT_KEY]},
        "providers": [
            {"id": "iflow", "type": "iflow", "base_url": iflow.base + "/v1", "api_key": IFLOW_KEY},
            {"id": "iflow-file", "type": "iflow", "base_url": iflow.base + "/v1", "credentials": str(creds_file)},
            {"id": "iflow-bad", "type": "iflow", "base_url": iflow.base + "/v1", "api_key": "sk-not-a-key"},
        ],
    }
    g = Gateway(cfg, tmp_path_factory.mktemp("iflow-gw") / "proxy.yaml")
    yield openai.OpenAI(base_url=g.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
    g.stop()


@pytest.mark.parametrize("model", ["qwen3-coder-plus", "iflow-file/kimi-k2"])
def test_signed_requests_are_accepted(client, iflow, model):
    r = client.chat.completions.create(model=model, messages=HELLO)
    assert r.choices[0].message.content == "Echo: hello there"
    stream = client.chat.completions.create(model=model, messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: hello there"
    seen = [q for q in httpx.get(f"{iflow.base}/__requests").json() if q["path"] == "/v1/chat/completions"][-1]
    assert seen["headers"]["user-agent"] == "iFlow-Cli"
    assert seen["headers"]["session-id"].startswith("session-")
    assert seen["headers"]["authorization"] == f"Bearer {IFLOW_KEY}"


def test_a_key_iflow_refuses_is_its_error(client):
    with pytest.raises(openai.InternalServerError) as e:  # the provider's key, not the client's: a 502
        client.chat.completions.create(model="iflow-bad/qwen3-coder-plus", messages=HELLO)
    assert e.value.status_code == 502 and e.value.body["code"] == "provider_auth_failed"
    assert "'iflow-bad' refused" in e.value.message
    assert "sk-not-a-key" not in json.dumps(e.value.body)


def test_models_are_the_built_in_list(client):
    ids = {m.id for m in client.models.list()}
    assert {"qwen3-coder-plus", "kimi-k2", "glm-4.6"} <= ids
