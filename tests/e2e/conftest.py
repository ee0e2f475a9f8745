import socket

import pytest

from tests.harness import Gateway, Upstream

CLIENT_KEY = "sk-local-123"
UPSTREAM_KEY = "up-secret-key"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway_config(upstream: Upstream, **server) -> dict:
    up_v1 = upstream.base + "/v1"
    return {
        "server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 2}, **server},
        "providers": [
            # models discovered from the upstream's GET /v1/models
            {"id": "up", "type": "openai", "base_url": up_v1, "api_key": UPSTREAM_KEY},
            # same upstream, fixed model list and an extra header
            {"id": "fixed", "type": "openai", "base_url": up_v1, "api_key": UPSTREAM_KEY,
             "models": ["gpt-4o-mini", "fixed-only"], "headers": {"X-Title": "e2e"}},
            {"id": "wrongkey", "type": "openai", "base_url": up_v1, "api_key": "not-the-key",
             "models": ["wrongkey-model"]},
            {"id": "dead", "type": "openai", "base_url": f"http://127.0.0.1:{closed_port()}/v1",
             "models": ["dead-model"]},
        ],
        "routing": {"aliases": {"coder": "up/qwen3-coder-30b", "mini": "gpt-4o-mini"}},
    }


@pytest.fixture(scope="session")
def upstream():
    u = Upstream("openai_compat", "--api-key", UPSTREAM_KEY, "--models", "gpt-4o-mini,qwen3-coder-30b")
    yield u
    u.stop()


@pytest.fixture(scope="session")
def gateway(upstream, tmp_path_factory):
    g = Gateway(gateway_config(upstream), tmp_path_factory.mktemp("gw") / "proxy.yaml")
    yield g
    g.stop()


@pytest.fixture
def client(gateway):
    import openai

    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
