"""Seed-compatible details (issue 15): a provider named by its type in the path and the
Model-Provider header, /gemini/models for the `gemini` provider, /provider_health, and
provider/model names in GET /v1/models (routing.list_prefixed)."""

import httpx
import pytest

from tests.e2e.conftest import CLIENT_KEY, UPSTREAM_KEY
from tests.harness import Gateway, Upstream

GEMINI_KEY = "AIza-seed-gemini-0123456789"
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


@pytest.fixture(scope="module")
def gem():
    g = Upstream("gemini_api", "--api-key", GEMINI_KEY, "--models", "gemini-2.5-flash")
    yield g
    g.stop()


@pytest.fixture(scope="module")
def gw(upstream, gem, tmp_path_factory):
    cfg = {
        "server": {"api_keys": [CLIENT_KEY]},
        "providers": [
            # the only `openai` provider; its double also serves qwen3-coder-30b, which it does not list
            {"id": "up", "type": "openai", "base_url": upstream.base + "/v1", "api_key": UPSTREAM_KEY,
             "models": ["gpt-4o-mini"]},
            {"id": "gemini", "type": "gemini", "base_url": gem.base, "api_key": GEMINI_KEY},
        ],
        "routing": {"default": "gemini", "list_prefixed": True},
    }
    g = Gateway(cfg, tmp_path_factory.mktemp("seed") / "proxy.yaml")
    yield g
    g.stop()


def chat(gw, path="/v1/chat/completions", **headers):
    body = {"model": "qwen3-coder-30b", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(gw.base + path, json=body, headers={**AUTH, **headers}, timeout=20)


def test_model_provider_header_and_path_take_the_only_provider_of_a_type(gw):
    assert chat(gw).status_code == 404  # by default to `gemini`, which has no such model
    r = chat(gw, **{"Model-Provider": "openai"})
    assert r.status_code == 200 and r.json()["model"] == "qwen3-coder-30b"
    r = chat(gw, "/openai/v1/chat/completions")
    assert r.status_code == 200 and r.json()["model"] == "qwen3-coder-30b"
    r = chat(gw, "/claude/v1/chat/completions")  # no provider of that id or type
    assert r.status_code == 404 and "Unknown provider 'claude'" in r.json()["error"]["message"]


def test_gemini_models_lists_the_gemini_providers_models(gw):
    names = lambda r: [m["name"] for m in r.json()["models"]]  # noqa: E731
    r = httpx.get(gw.base + "/gemini/models", headers=AUTH)
    assert r.status_code == 200 and "models/gemini-2.5-flash" in names(r)
    assert not [n for n in names(r) if "gpt-4o-mini" in n]  # the `up` provider's
    assert names(r) == names(httpx.get(gw.base + "/gemini/v1beta/models", headers=AUTH))
    everything = names(httpx.get(gw.base + "/v1beta/models", headers=AUTH))
    assert "models/gpt-4o-mini" in everything and "models/gemini-2.5-flash" in everything


def test_provider_health_is_the_per_model_part_of_health(gw):
    full = httpx.get(gw.base + "/health").json()
    r = httpx.get(gw.base + "/provider_health")  # no key, as /health
    assert r.status_code == 200
    assert r.json() == {"routable_models": full["routable_models"], "models": full["models"]}
    assert set(r.json()["models"]) >= {"gpt-4o-mini", "gemini-2.5-flash"}


def test_models_list_prefixed_names_that_route(gw):
    ids = [m["id"] for m in httpx.get(gw.base + "/v1/models", headers=AUTH).json()["data"]]
    assert {"gpt-4o-mini", "up/gpt-4o-mini", "gemini-2.5-flash", "gemini/gemini-2.5-flash"} <= set(ids)
    r = httpx.get(gw.base + "/v1/models/up/gpt-4o-mini", headers=AUTH)
    assert r.status_code == 200 and r.json()["id"] == "up/gpt-4o-mini"
    body = {"model": "up/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(gw.base + "/v1/chat/completions", json=body, headers=AUTH, timeout=20)
    assert r.status_code == 200 and r.json()["model"] == "up/gpt-4o-mini"
