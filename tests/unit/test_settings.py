import pytest
from llmgate.settings import ConfigError, load_settings, parse_settings

GOOD = """
server:
  api_keys: [sk-local-123]
providers:
  - id: lmstudio
    type: openai
    base_url: http://127.0.0.1:1234/v1/
    api_key: ${TEST_LMS_KEY}
    models: [qwen3-coder-30b]
    headers: {X-Title: my-app}
routing:
  default: lmstudio
  aliases: {coder: lmstudio/qwen3-coder-30b}
"""


def test_good_config(monkeypatch):
    monkeypatch.setenv("TEST_LMS_KEY", "secret")
    s, warnings = parse_settings(GOOD)
    p = s.provider("lmstudio")
    assert p.api_key == "secret" and p.base_url == "http://127.0.0.1:1234/v1"
    assert p.headers == {"X-Title": "my-app"} and s.routing.default == "lmstudio"
    assert s.server.timeouts.read == 600 and warnings == []


def test_unset_variable_is_a_warning_naming_the_field(monkeypatch):
    monkeypatch.delenv("TEST_LMS_KEY", raising=False)
    s, warnings = parse_settings(GOOD)
    assert s.provider("lmstudio").api_key == ""
    assert warnings == ["providers[0].api_key: environment variable TEST_LMS_KEY is not set"]


def test_variable_fallback(monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    s, _ = parse_settings("providers: [{id: a, type: openai, base_url: '${NOPE:-http://h:1}/v1'}]")
    assert s.provider("a").base_url == "http://h:1/v1"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("providers:\n  - id: a\n    type: openai\n    base_url: ftp://x\n",
         "proxy.yaml:4: providers[0].base_url: must be an http:// or https:// URL"),
        ("providers:\n  - id: a\n    type: nope\n    base_url: http://x\n",
         "proxy.yaml:3: providers[0].type: unknown provider type 'nope'"),
        ("providers:\n  - id: a\n    type: openai\n    base_url: http://x\n    modles: [m]\n",
         "proxy.yaml:5: providers[0].modles: unknown field"),
        ("providers:\n  - id: a\n    type: openai\n", "providers[0].base_url: Field required"),
        ("routing:\n  default: ghost\n", "routing.default names unknown provider 'ghost'"),
        ("providers:\n- {id: a, type: openai, base_url: 'http://x'}\n- {id: a, type: openai, base_url: 'http://y'}\n",
         "duplicate provider id(s): a"),
        ("server:\n  timeouts: {read: -1}\n", "proxy.yaml:2: server.timeouts.read: Input should be greater than 0"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("providers: [\n", "not valid YAML"),
    ],
)
def test_bad_config_names_field_and_line(text, expected):
    with pytest.raises(ConfigError) as e:
        parse_settings(text)
    assert expected in str(e.value)
    assert "Traceback" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")


def test_shipped_example_is_valid():
    import pathlib

    s, _ = load_settings(pathlib.Path(__file__).parents[2] / "proxy.yaml")
    assert [p.id for p in s.providers] == ["lmstudio", "ollama"]
