"""Per-kind provider schemas (issue 14): each kind takes the common fields and its own; its secret
headers are declared with it; the admin API's OpenAPI description says the same."""

from pathlib import Path

import pytest
import yaml

from llmgate.addons.flow_record import REDACTED, redacted_headers
from llmgate.addons.redaction import SECRET_HEADERS
from llmgate.errors import GatewayError
from llmgate.operations import config_edit
from llmgate.operations.admin_api import _strict
from llmgate.providers import PROVIDER_TYPES
from llmgate.providers.base import ProviderKind
from llmgate.providers.iflow import signed_headers
from llmgate.settings import KIND_FIELDS, PROVIDER_MODELS, ConfigError, ProviderSettings, parse_settings

COMMON = set(ProviderSettings.model_fields)
OPENAPI = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "admin-openapi.yaml").read_text())
SCHEMAS = OPENAPI["components"]["schemas"]


def entry(type_: str, **fields: str) -> str:
    lines = [f"    {k}: '{v}'" for k, v in {"base_url": "http://h/v1", **fields}.items()]
    return "providers:\n  - id: a\n    type: " + type_ + "\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize("type_", sorted(PROVIDER_TYPES))
@pytest.mark.parametrize("field", sorted(KIND_FIELDS))
def test_a_kind_takes_its_own_fields_and_refuses_the_others_naming_field_type_and_line(type_, field):
    text = entry(type_, **{field: "https://own.example/x"})
    if field in PROVIDER_TYPES[type_].config_fields:
        p = parse_settings(text)[0].providers[0]
        assert getattr(p, field) == "https://own.example/x" and type(p) is PROVIDER_MODELS[type_]
    else:
        with pytest.raises(ConfigError) as e:
            parse_settings(text)
        assert f"proxy.yaml:5: providers[0].{field}: unknown field for type {type_}" in str(e.value)


@pytest.mark.parametrize("type_", sorted(PROVIDER_TYPES))
def test_each_kind_model_is_the_common_fields_and_its_own(type_):
    model = PROVIDER_MODELS[type_]
    assert issubclass(model, ProviderSettings)
    assert set(model.model_fields) == COMMON | set(PROVIDER_TYPES[type_].config_fields)
    assert set(PROVIDER_TYPES[type_].config_fields) <= set(KIND_FIELDS)


def test_fields_of_other_kinds_read_as_none_on_any_provider():
    s, _ = parse_settings("providers:\n- {id: o, type: openai, base_url: 'http://h/v1'}\n"
                          "- {id: g, type: gemini-cli, project: p1}\n- {id: c, type: claude-code, command: cl}\n")
    o, g, c = s.providers
    assert (o.credentials, o.token_url, o.project, o.command) == (None, None, None, None)
    assert (g.project, g.command, c.command, c.project) == ("p1", None, "cl", None)
    with pytest.raises(AttributeError):
        o.no_such_field  # noqa: B018  (only the kind fields default)


def test_equal_entries_are_equal_and_kinds_differ():
    """The catalog and runtime caches compare settings by value (old.get(p.id) == p)."""
    text = "providers:\n- {id: q, type: qwen, credentials: c.json}\n"
    a, b = parse_settings(text)[0].providers[0], parse_settings(text)[0].providers[0]
    assert a == b and a is not b
    assert a != parse_settings(text.replace("c.json", "d.json"))[0].providers[0]
    assert a != parse_settings("providers:\n- {id: q, type: iflow, credentials: c.json}\n")[0].providers[0]


def test_shipped_example_and_readme_entries_load():
    root = Path(__file__).resolve().parents[2]
    parse_settings((root / "proxy.yaml").read_text())
    parse_settings("providers:\n  - {id: qwen, type: qwen}\n  - {id: gcli, type: gemini-cli}\n"
                   "  - {id: agy, type: antigravity, credentials: '~/.llmgate/antigravity/*.json'}\n"
                   "  - {id: iflow, type: iflow}\n  - {id: agy2, type: antigravity, fallback_urls: ['http://h']}\n")


# ---------------------------------------------------------------- secret headers


@pytest.mark.parametrize("type_", sorted(PROVIDER_TYPES))
def test_every_kinds_key_header_is_redacted(type_):
    kind = PROVIDER_TYPES[type_]
    assert {h.lower() for h in kind.auth_headers("k")} <= SECRET_HEADERS
    assert kind.secret_header_names() <= SECRET_HEADERS


def test_headers_the_accounts_set_are_declared_with_their_kind():
    signed = signed_headers("iflow-key-123456", "session-1", now_ms=1)
    assert {"authorization", "x-iflow-signature"} <= PROVIDER_TYPES["iflow"].secret_header_names()
    assert "code-token" in PROVIDER_TYPES["codegeex"].secret_header_names()
    flow_headers = dict(redacted_headers(signed))
    assert flow_headers[b"x-iflow-signature"] == REDACTED.encode() and flow_headers[b"Authorization"] == b"[redacted]"
    assert flow_headers[b"session-id"] == b"session-1"  # not a secret: kept for debugging


def test_a_kind_declares_its_secret_headers_beside_its_key_header():
    kind = ProviderKind(type="x", wire="openai_chat", chat_url=lambda b, m, s: b, models_path=None,
                        auth_headers=lambda key: {"X-Key": key}, parse_models=lambda body: [],
                        secret_headers=("X-Signature",))
    assert kind.secret_header_names() == {"x-key", "x-signature"}


# ---------------------------------------------------------------- admin API and its description


def test_admin_checks_name_the_field_not_the_union_tag():
    with pytest.raises(GatewayError) as e:
        _strict({"id": "a", "type": "openai", "base_url": "http://a/v1", "command": "rm"})
    assert (e.value.status, e.value.param) == (400, "command")
    assert e.value.message == "command: unknown field for type openai"
    with pytest.raises(GatewayError) as e:
        _strict({"id": "a", "type": "nope", "base_url": "http://a/v1"})
    assert e.value.param == "type" and "unknown provider type 'nope'" in e.value.message
    _strict({"id": "a", "type": "claude-code", "command": "/usr/bin/claude"})


@pytest.mark.parametrize("current, changes, field", [
    ({"type": "qwen", "credentials": "c"}, {"type": "openai"}, "credentials"),  # stored field, new type
    ({"type": "openai"}, {"project": "p"}, "project"),  # new field, stored type
    ({"type": "openai"}, {"type": "gemini-cli", "project": "p"}, None),  # fits the new type
    ({"type": "openai"}, {"type": "openai", "project": "p"}, None),  # the change alone is wrong: a 400
    ({"type": "qwen", "credentials": "c"}, {"type": "openai", "credentials": None}, None),  # null drops it
    ({"type": "qwen", "credentials": "c"}, {"token_url": "http://t"}, None),
])
def test_a_patch_meeting_a_field_of_another_kind(current, changes, field):
    assert config_edit.field_of_other_kind({"id": "a", **current}, changes) == field


def test_openapi_describes_each_kind_as_the_code_does():
    entry_schema = SCHEMAS["ProviderEntry"]
    mapping = entry_schema["discriminator"]["mapping"]
    assert set(mapping) == set(PROVIDER_TYPES) == set(SCHEMAS["ProviderType"]["enum"])
    assert {m["$ref"] for m in entry_schema["oneOf"]} == set(mapping.values())
    for type_, ref in mapping.items():
        schema = SCHEMAS[ref.rsplit("/", 1)[1]]
        assert type_ in schema["properties"]["type"]["enum"], type_
        assert set(schema["properties"]) == set(PROVIDER_MODELS[type_].model_fields), type_
        assert ("base_url" in schema["required"]) == (PROVIDER_TYPES[type_].default_base_url is None), type_
    every = set().union(*(m.model_fields for m in PROVIDER_MODELS.values()))
    assert set(SCHEMAS["ProviderChanges"]["properties"]) == every


def test_admin_takes_integral_json_numbers_as_integers_also_nested():
    """JSON Schema's integer includes 2.0; strict validation alone would refuse it."""
    _strict({"id": "a", "type": "openai", "base_url": "http://a/v1", "weight": 2.0,
             "thinking": {"m*": {"min_budget": 128.0, "max_budget": 1024}}})
    with pytest.raises(GatewayError) as e:
        _strict({"id": "a", "type": "openai", "base_url": "http://a/v1", "thinking": {"m": {"min_budget": 1.5}}})
    assert e.value.param == "thinking.m.min_budget"
