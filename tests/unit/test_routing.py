import pytest

from llmgate.errors import GatewayError
from llmgate.request_path.routing import resolve
from llmgate.settings import parse_settings

CONFIG = """
providers:
  - {id: lms, type: openai, base_url: "http://a/v1", models: [qwen3, shared]}
  - {id: openrouter, type: openai, base_url: "http://b/v1", models: ["anthropic/claude", shared]}
  - {id: offline, type: openai, base_url: "http://c/v1", models: [offmodel], enabled: false}
  - {id: disc, type: openai, base_url: "http://d/v1"}
routing:
  aliases: {coder: lms/qwen3, fast: shared, chain: coder}
"""


@pytest.fixture
def settings():
    return parse_settings(CONFIG)[0]


def route(settings, model, forced=None, header=None, discovered=None):
    def models_of(p):
        return p.models if p.models is not None else (discovered or {}).get(p.id)
    r = resolve(settings, models_of, model, forced, header)
    return r.provider.id, r.model, r.how


def test_order(settings):
    assert route(settings, "coder") == ("lms", "qwen3", "alias")
    assert route(settings, "chain") == ("lms", "qwen3", "alias")
    assert route(settings, "fast") == ("lms", "shared", "alias")
    assert route(settings, "openrouter/anthropic/claude") == ("openrouter", "anthropic/claude", "prefix")
    assert route(settings, "anthropic/claude") == ("openrouter", "anthropic/claude", "listed")
    assert route(settings, "shared") == ("lms", "shared", "listed")
    assert route(settings, "shared", header="openrouter") == ("openrouter", "shared", "header")
    assert route(settings, "qwen3", forced="openrouter") == ("openrouter", "qwen3", "path")
    assert route(settings, "lms/qwen3", forced="lms") == ("lms", "qwen3", "path")
    assert route(settings, "found", discovered={"disc": ["found"]}) == ("disc", "found", "listed")


def test_unknown_model_and_default(settings):
    with pytest.raises(GatewayError) as e:
        route(settings, "nobody-has-this")
    assert e.value.status == 404 and "GET /v1/models" in e.value.message
    settings.routing.default = "lms"
    assert route(settings, "nobody-has-this") == ("lms", "nobody-has-this", "default")


def test_disabled_and_unknown_providers(settings):
    with pytest.raises(GatewayError, match="disabled"):
        route(settings, "offline/offmodel")
    with pytest.raises(GatewayError, match="model_not_found|not served"):
        route(settings, "offmodel")
    with pytest.raises(GatewayError, match="Unknown provider 'ghost'"):
        route(settings, "x", forced="ghost")
    with pytest.raises(GatewayError, match="Model-Provider"):
        route(settings, "x", header="ghost")


def test_path_and_header_take_a_provider_type_when_one_provider_has_it():
    s = parse_settings("""
providers:
  - {id: lms, type: openai, base_url: "http://a/v1", models: [qwen3]}
  - {id: gem, type: gemini, base_url: "http://g", models: [gemini-2.5-flash]}
  - {id: c1, type: anthropic, base_url: "http://c", models: [claude]}
  - {id: c2, type: anthropic, base_url: "http://d", models: [claude]}
""")[0]
    assert route(s, "qwen3", forced="gemini") == ("gem", "qwen3", "path")
    assert route(s, "qwen3", header="gemini") == ("gem", "qwen3", "header")
    assert route(s, "qwen3", header="openai") == ("lms", "qwen3", "header")
    with pytest.raises(GatewayError, match="Unknown provider 'anthropic'"):  # two of that type: which?
        route(s, "claude", forced="anthropic")
    with pytest.raises(GatewayError, match="Unknown provider 'anthropic'"):
        route(s, "claude", header="anthropic")


def test_an_id_wins_over_a_type():
    s = parse_settings("""
providers:
  - {id: gemini, type: openai, base_url: "http://a/v1", models: [m]}
  - {id: g2, type: gemini, base_url: "http://g", models: [m]}
""")[0]
    assert route(s, "m", forced="gemini") == ("gemini", "m", "path")
    assert route(s, "m", header="gemini") == ("gemini", "m", "header")


def test_seed_paths():
    from llmgate.request_path.inbound import match

    has = lambda ids: (lambda pid: pid in ids)  # noqa: E731
    ib = match("/gemini/models", False, has({"gemini"}))
    assert (ib.endpoint, ib.api.name, ib.forced) == ("models", "gemini", "gemini")  # that provider's list
    ib = match("/gemini/models", False, has(set()))
    assert (ib.endpoint, ib.api.name, ib.forced) == ("models", "gemini", None)  # every model
    ib = match("/anthropic/models", False, has({"anthropic"}))
    assert (ib.endpoint, ib.api.name, ib.forced) == ("models", "anthropic", "anthropic")
    ib = match("/gemini/models/m:generateContent", False, has({"gemini"}))
    assert (ib.endpoint, ib.forced) == ("gemini", None)  # generation still routes by model
    assert match("/provider_health", False, has(set())).endpoint == "provider_health"
    assert match("/x/provider_health", False, has({"x"})).endpoint == "unknown"
