"""llmgate.operations.config_edit: provider edits of proxy.yaml that keep comments, ${VAR} and layout,
validate before writing and write atomically."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from llmgate.operations import config_edit as ce
from llmgate.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
# gateway config (top comment)
server:
  api_keys: []

providers:
  # the local server
  - id: local
    type: openai
    base_url: http://127.0.0.1:1234/v1
    api_key: ${LOCAL_KEY:-}   # from the environment

  # the second one, and its comment
  - id: second
    type: openai              # beside the type
    base_url: http://127.0.0.1:5678/v1
    models: [m1, m2]

  # - id: commented-out
  #   type: openai

routing:
  aliases: {fast: m1}
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    p = tmp_path / "proxy.yaml"
    p.write_text(CONFIG)
    return p


def snapshot(p: Path) -> tuple[str, int, int]:
    st = p.stat()
    return p.read_text(), st.st_ino, st.st_mtime_ns


def lines_around(text: str, needle: str) -> tuple[str, str]:
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if needle in ln)
    return lines[i - 1], lines[i]


# ------------------------------------------------------------------------------ comments and layout


def test_untouched_parts_stay_byte_for_byte(cfg: Path):
    ce.update_provider(cfg, "local", {"base_url": "http://127.0.0.1:9999/v1"})
    assert cfg.read_text() == CONFIG.replace("127.0.0.1:1234", "127.0.0.1:9999")


def test_comments_above_and_beside_an_entry_survive_edits_of_another(cfg: Path):
    ce.update_provider(cfg, "local", {"models": ["a", "b"], "weight": 2, "headers": {"X-Title": "t"}})
    ce.set_enabled(cfg, "local", False)
    text = cfg.read_text()
    assert lines_around(text, "- id: second") == ("  # the second one, and its comment", "  - id: second")
    assert "    type: openai              # beside the type\n" in text
    assert "# gateway config (top comment)" in text and "  # the local server\n  - id: local" in text
    assert "api_key: ${LOCAL_KEY:-}   # from the environment" in text
    # the new keys belong to `local`, above the blank line and the comment of `second`
    local_block = text.split("  # the second one")[0]
    assert "models: [a, b]" in local_block and "weight: 2" in local_block and "enabled: false" in local_block
    assert local_block.endswith("\n\n")
    settings, _ = load_settings(cfg)
    assert settings.provider("local").models == ["a", "b"] and not settings.provider("local").enabled


def test_add_goes_before_the_comments_that_end_the_list(cfg: Path):
    ce.add_provider(cfg, {"id": "third", "type": "anthropic", "base_url": "https://api.anthropic.com",
                          "api_key": "${ANTHROPIC_API_KEY}", "models": ["claude-x"]})
    text = cfg.read_text()
    third = text.index("  - id: third")
    assert text.index("models: [m1, m2]") < third < text.index("  # - id: commented-out") < text.index("routing:")
    assert "\n\n  - id: third\n" in text  # set off by a blank line, as the other entries are
    assert "    api_key: ${ANTHROPIC_API_KEY}\n    models: [claude-x]\n\n  # - id: commented-out" in text


def test_add_then_remove_gives_back_the_same_file(cfg: Path):
    ce.add_provider(cfg, {"id": "third", "type": "openai", "base_url": "http://x/v1"})
    ce.remove_provider(cfg, "third")
    assert cfg.read_text() == CONFIG


def test_example_config_round_trips(tmp_path: Path):
    p = tmp_path / "proxy.yaml"
    original = (ROOT / "proxy.yaml").read_text()
    p.write_text(original)
    ce.add_provider(p, {"id": "zz", "type": "openai", "base_url": "http://x/v1"})
    ce.remove_provider(p, "zz")
    assert p.read_text() == original


def test_remove_takes_the_comment_directly_above_and_keeps_the_others(cfg: Path):
    removed = ce.remove_provider(cfg, "second")
    assert removed["id"] == "second" and removed["models"] == ["m1", "m2"]
    text = cfg.read_text()
    assert "id: second" not in text and "the second one" not in text and "beside the type" not in text
    assert "  # - id: commented-out\n  #   type: openai\n" in text  # after the list, still
    assert "# the local server" in text and "# from the environment" in text
    load_settings(cfg)


def test_remove_first_entry_keeps_the_comment_of_the_next(cfg: Path):
    ce.remove_provider(cfg, "local")
    text = cfg.read_text()
    assert "id: local" not in text
    assert lines_around(text, "- id: second")[0] == "  # the second one, and its comment"
    load_settings(cfg)


def test_entries_follow_the_files_indentation(tmp_path: Path):
    p = tmp_path / "proxy.yaml"
    p.write_text("providers:\n- id: a\n  type: openai\n  base_url: http://a/v1\n")
    ce.add_provider(p, {"id": "b", "type": "openai", "base_url": "http://b/v1", "models": ["x"]})
    assert p.read_text() == ("providers:\n- id: a\n  type: openai\n  base_url: http://a/v1\n"
                             "- id: b\n  type: openai\n  base_url: http://b/v1\n  models: [x]\n")


def test_block_style_values_stay_block_style(tmp_path: Path):
    p = tmp_path / "proxy.yaml"
    p.write_text("providers:\n  - id: a\n    type: openai\n    base_url: http://a/v1\n    models:\n      - x\n")
    ce.update_provider(p, "a", {"models": ["y", "z"]})
    assert p.read_text().endswith("    models:\n      - y\n      - z\n")


# ------------------------------------------------------------------------------ ${VAR} and values


def test_var_references_are_written_and_returned_uninterpolated(cfg: Path, monkeypatch):
    monkeypatch.setenv("LOCAL_KEY", "secret-local")
    monkeypatch.setenv("NEW_KEY", "secret-new")
    entry = ce.add_provider(cfg, {"id": "new", "type": "openai", "base_url": "${NEW_BASE:-http://n/v1}",
                                  "api_key": "${NEW_KEY}"})
    assert entry == {"id": "new", "type": "openai", "base_url": "${NEW_BASE:-http://n/v1}", "api_key": "${NEW_KEY}"}
    local = ce.update_provider(cfg, "local", {"weight": 3})
    assert local["api_key"] == "${LOCAL_KEY:-}"
    text = cfg.read_text()
    assert "secret" not in text
    assert "api_key: ${NEW_KEY}" in text and "${LOCAL_KEY:-}" in text
    settings, _ = load_settings(cfg)  # interpolated only when loading
    assert settings.provider("new").api_key == "secret-new"
    assert settings.provider("new").base_url == "http://n/v1"


@pytest.mark.parametrize("value", ["yes", "on", "No", "1_000", "0x1F", "2024-01-01", "null", "~", "1e3",
                                   "a: b", "#x", " lead", "? x", "\x85", "\u2028", "- x", "[a]", ""])
def test_awkward_strings_load_back_as_the_same_strings(tmp_path: Path, value: str):
    p = tmp_path / "proxy.yaml"
    p.write_text("providers: []\n")
    ce.add_provider(p, {"id": "a", "type": "gemini-cli", "base_url": "http://a", "models": [value],
                        "headers": {"X-Awkward": value}, "project": value})  # header names are tokens
    prov = load_settings(p)[0].provider("a")
    assert prov.models == [value] and prov.headers == {"X-Awkward": value} and prov.project == value


def test_update_none_removes_a_key_and_rename_checks_duplicates(cfg: Path):
    out = ce.update_provider(cfg, "second", {"models": None})
    assert "models" not in out and "models: [m1, m2]" not in cfg.read_text()
    with pytest.raises(ce.DuplicateProvider):
        ce.update_provider(cfg, "second", {"id": "local"})
    renamed = ce.update_provider(cfg, "second", {"id": "renamed"})
    assert renamed["id"] == "renamed"
    assert "  # the second one, and its comment\n  - id: renamed\n" in cfg.read_text()


def test_enable_and_disable(cfg: Path):
    assert ce.set_enabled(cfg, "local", True) == ce.list_providers(cfg)[0]  # already on: nothing written
    assert "enabled" not in cfg.read_text()
    assert ce.set_enabled(cfg, "second", False)["enabled"] is False
    assert ce.set_enabled(cfg, "second", True)["enabled"] is True
    assert load_settings(cfg)[0].provider("second").enabled


# ------------------------------------------------------------------------------ refusals leave the file alone


@pytest.mark.parametrize("edit, words", [
    (lambda p: ce.add_provider(p, {"id": "x", "type": "nope", "base_url": "http://x/v1"}), ["type", "nope"]),
    (lambda p: ce.add_provider(p, {"id": "x", "type": "openai"}), ["base_url", "Field required"]),
    (lambda p: ce.add_provider(p, {"id": "bad id!", "type": "openai", "base_url": "http://x/v1"}), ["id"]),
    (lambda p: ce.add_provider(p, {"id": "x", "type": "openai", "base_url": "http://x/v1", "colour": "red"}),
     ["colour", "unknown field"]),
    (lambda p: ce.update_provider(p, "local", {"base_url": "ftp://x"}), ["base_url", "http"]),
    (lambda p: ce.update_provider(p, "local", {"base_url": None}), ["base_url"]),
    (lambda p: ce.update_provider(p, "local", {"weight": 0}), ["weight"]),
    (lambda p: ce.update_provider(p, "second", {"id": None}), ["id"]),
])
def test_invalid_edits_are_refused_and_the_file_is_untouched(cfg: Path, edit, words):
    before = snapshot(cfg)
    with pytest.raises(ConfigError) as e:
        edit(cfg)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert "providers[" in str(e.value)  # the message names the field
    assert snapshot(cfg) == before
    assert os.listdir(cfg.parent) == ["proxy.yaml"]


def test_duplicate_id_is_refused(cfg: Path):
    before = snapshot(cfg)
    with pytest.raises(ce.DuplicateProvider) as e:
        ce.add_provider(cfg, {"id": "local", "type": "openai", "base_url": "http://x/v1"})
    assert isinstance(e.value, ValueError) and "local" in str(e.value)
    assert snapshot(cfg) == before


@pytest.mark.parametrize("edit", [
    lambda p: ce.update_provider(p, "ghost", {"weight": 2}),
    lambda p: ce.set_enabled(p, "ghost", False),
    lambda p: ce.remove_provider(p, "ghost"),
    lambda p: ce.get_provider(p, "ghost"),
])
def test_unknown_id_is_refused(cfg: Path, edit):
    before = snapshot(cfg)
    with pytest.raises(ce.UnknownProvider) as e:
        edit(cfg)
    assert isinstance(e.value, ValueError) and "ghost" in str(e.value)
    assert snapshot(cfg) == before


def test_a_file_that_is_not_yaml_is_refused(tmp_path: Path):
    p = tmp_path / "proxy.yaml"
    p.write_text("providers: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ce.add_provider(p, {"id": "a", "type": "openai", "base_url": "http://a/v1"})
    assert p.read_text() == "providers: [\n"


def test_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        ce.update_provider(tmp_path / "nope.yaml", "a", {"weight": 2})
    created = tmp_path / "new.yaml"
    ce.add_provider(created, {"id": "q", "type": "qwen"})
    assert created.read_text() == "providers:\n  - id: q\n    type: qwen\n"


# ------------------------------------------------------------------------------ a missing providers key


@pytest.mark.parametrize("text, expected", [
    ("server:\n  api_keys: []\n\n# routing comment\nrouting:\n  aliases: {}\n",
     "server:\n  api_keys: []\n\nproviders:\n  - id: a\n    type: openai\n    base_url: http://a/v1\n\n"
     "# routing comment\nrouting:\n  aliases: {}\n"),
    ("server:\n  api_keys: []\n", "server:\n  api_keys: []\nproviders:\n  - id: a\n    type: openai\n"
                                   "    base_url: http://a/v1\n"),
    ("# only a comment\n", None),
    ("# header\nproviders:\nrouting: {}\n",
     "# header\nproviders:\n  - id: a\n    type: openai\n    base_url: http://a/v1\nrouting: {}\n"),
    ("providers: []\n", "providers:\n  - id: a\n    type: openai\n    base_url: http://a/v1\n"),
    ("", "providers:\n  - id: a\n    type: openai\n    base_url: http://a/v1\n"),
])
def test_providers_key_is_created_when_missing(tmp_path: Path, text: str, expected: str | None):
    p = tmp_path / "proxy.yaml"
    p.write_text(text)
    ce.add_provider(p, {"id": "a", "type": "openai", "base_url": "http://a/v1"})
    if expected is not None:
        assert p.read_text() == expected
    assert [x.id for x in load_settings(p)[0].providers] == ["a"]
    if text.startswith("#"):
        assert p.read_text().startswith(text.splitlines()[0])


# ------------------------------------------------------------------------------ atomic writes


def test_write_is_atomic_keeps_the_mode_and_leaves_no_temp_files(cfg: Path):
    cfg.chmod(0o640)
    inode = cfg.stat().st_ino
    with open(cfg) as original:  # held open, so its inode number cannot be reused meanwhile
        ce.add_provider(cfg, {"id": "n", "type": "openai", "base_url": "http://n/v1"})
        ce.update_provider(cfg, "n", {"weight": 2})
        ce.remove_provider(cfg, "n")
        assert stat.S_IMODE(cfg.stat().st_mode) == 0o640
        assert cfg.stat().st_ino != inode  # replaced by rename, never rewritten in place
        assert original.read() == CONFIG
    assert os.listdir(cfg.parent) == ["proxy.yaml"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(cfg: Path, monkeypatch):
    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ce.os, "replace", boom)
    with pytest.raises(OSError):
        ce.add_provider(cfg, {"id": "n", "type": "openai", "base_url": "http://n/v1"})
    assert cfg.read_text() == CONFIG
    assert os.listdir(cfg.parent) == ["proxy.yaml"]


def test_readers_get_plain_data(cfg: Path):
    providers = ce.list_providers(cfg)
    assert providers[1] == {"id": "second", "type": "openai", "base_url": "http://127.0.0.1:5678/v1",
                            "models": ["m1", "m2"]}
    assert type(providers[1]) is dict and type(providers[1]["models"]) is list
    assert ce.get_provider(cfg, "local")["api_key"] == "${LOCAL_KEY:-}"


# ---------------------------------------------------------------- admin API policy (issue 12)


def test_env_references_name_every_field_holding_one():
    body = {"id": "x", "api_key": "${K}", "headers": {"A": "ok", "X-Key": "Bearer ${K}"},
            "fallback_urls": ["http://a", "http://${H}/v1"], "models": ["m"], "weight": 2, "enabled": None}
    assert ce.env_references(body) == ["api_key", "headers.X-Key", "fallback_urls[1]"]
    assert ce.env_references({"api_key": "$HOME {x}", "models": None}) == []
    assert ce.env_references(None) == []


CURRENT = {"id": "p", "type": "openai", "base_url": "https://api.example/v1", "api_key": "${K}",
           "headers": {"X-Token": "t"}}


@pytest.mark.parametrize("changes, left", [
    ({"base_url": "https://evil.example/v1"}, ["api_key", "headers"]),
    ({"base_url": "https://evil.example/v1", "api_key": "new"}, ["headers"]),
    ({"base_url": "https://evil.example/v1", "api_key": None, "headers": None}, []),
    ({"base_url": "http://api.example/v1"}, ["api_key", "headers"]),  # another scheme: another origin
    ({"base_url": "https://api.example:8443/v1"}, ["api_key", "headers"]),
    ({"fallback_urls": ["https://evil.example/v1"]}, ["api_key", "headers"]),
    ({"token_url": "https://evil.example/token"}, ["api_key", "headers"]),
    ({"base_url": "https://API.example:443/v2"}, []),  # the same origin, another path
    ({"fallback_urls": ["https://api.example/v1beta"]}, []),
    ({"weight": 3, "api_key": "x"}, []),
])
def test_secrets_stay_with_the_hosts_they_were_written_for(changes, left):
    assert ce.secrets_left_behind(CURRENT, changes) == left


def test_secrets_left_behind_includes_credentials_and_ignores_absent_secrets():
    sub = {"id": "q", "type": "qwen", "credentials": "~/.qwen/oauth_creds.json"}
    assert ce.secrets_left_behind(sub, {"base_url": "https://evil.example"}) == ["credentials"]
    assert ce.secrets_left_behind({"id": "n", "type": "openai", "base_url": "http://a/v1"},
                                  {"base_url": "http://b/v1"}) == []


@pytest.mark.parametrize("field, value, message", [
    ("headers", {"X-A": "a\r\nX-Injected: 1"}, "the value of X-A must not contain line breaks"),
    ("headers", {"X A": "a"}, "'X A' is not a valid HTTP header name"),
    ("base_url", "http://h/v1 x", "must not contain spaces"),
    ("base_url", "http://h:99999/v1", "port up to 65535"),
    ("token_url", "https://h/token\t", "must not contain spaces"),
    ("fallback_urls", ["http://ok/v1", "http://h\x00/v1"], "control characters"),
])
def test_hand_written_bad_fields_are_refused_naming_field_and_line(tmp_path: Path, field, value, message):
    """The YAML path meets the same rules as the API (settings.ProviderSettings)."""
    import yaml

    p = tmp_path / "proxy.yaml"
    entry = {"id": "a", "type": "qwen" if field == "token_url" else "openai", "base_url": "http://a/v1", field: value}
    p.write_text(yaml.safe_dump({"providers": [entry]}, sort_keys=False))
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert re.search(rf"proxy\.yaml:\d+: providers\[0\]\.{field}: .*{re.escape(message)}", str(e.value)), e.value
    assert "X-Injected" not in str(e.value)  # a header's value (perhaps a secret) is never echoed
