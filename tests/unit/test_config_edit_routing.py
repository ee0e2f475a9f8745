"""config_edit's routing edits: the default provider and model names (routing.aliases), with
the file's comments, order and style kept, every result checked by the gateway's own parser."""

from __future__ import annotations

import pytest

from llmgate.operations import config_edit as ce
from llmgate.settings import load_settings

BASE = """\
# top
providers:
  - id: a   # first
    type: openai
    base_url: http://x/v1

  - id: b
    type: openai
    base_url: http://y/v1
  # - id: c (an example)

# routing comment
routing:
  max_attempts: 2   # eol
  # after routing
"""


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "proxy.yaml"
    p.write_text(BASE)
    return p


def test_default_is_added_changed_and_removed_with_comments_kept(cfg):
    ce.set_default(cfg, "a")
    assert cfg.read_text() == BASE.replace("  # after routing", "  default: a\n  # after routing")
    ce.set_default(cfg, "b")
    assert load_settings(str(cfg))[0].routing.default == "b"
    ce.set_default(cfg, None)
    assert cfg.read_text() == BASE


def test_unknown_default_provider_leaves_the_file(cfg):
    with pytest.raises(ce.ConfigError, match="routing.default names unknown provider 'zz'"):
        ce.set_default(cfg, "zz")
    assert cfg.read_text() == BASE


def test_routing_is_created_after_the_last_comment(tmp_path):
    p = tmp_path / "proxy.yaml"
    p.write_text("providers:\n  - {id: a, type: openai, base_url: 'http://x/v1'}\n# end\n")
    ce.set_default(p, "a")
    assert p.read_text() == "providers:\n  - {id: a, type: openai, base_url: 'http://x/v1'}\n# end\nrouting:\n" \
                            "  default: a\n"


def test_model_names_add_link_unlink_remove(cfg):
    assert ce.add_model(cfg, "best", ["a/m1"]) == {"name": "best", "targets": ["a/m1"]}
    assert cfg.read_text().endswith("  max_attempts: 2   # eol\n  aliases:\n    best: [a/m1]\n  # after routing\n")
    assert ce.link_model(cfg, "best", "b/m2")["targets"] == ["a/m1", "b/m2"]
    assert ce.link_model(cfg, "best", "b/m2")["targets"] == ["a/m1", "b/m2"]  # linked already: unchanged
    ce.add_model(cfg, "fast", ["m3"])
    assert ce.unlink_model(cfg, "best", "a/m1")["targets"] == ["b/m2"]
    assert load_settings(str(cfg))[0].routing.aliases == {"best": ["b/m2"], "fast": ["m3"]}
    assert ce.remove_model(cfg, "best") == {"name": "best", "targets": ["b/m2"]}
    ce.remove_model(cfg, "fast")
    assert cfg.read_text() == BASE


def test_a_hand_written_single_target_becomes_a_list_when_linked(tmp_path):
    p = tmp_path / "proxy.yaml"
    p.write_text(BASE.replace("  # after routing", "  aliases:\n    # mine\n    old: a/m0   # why\n"))
    ce.link_model(p, "old", "b/m1")
    assert "    # mine\n    old: [a/m0, b/m1]" in p.read_text()


@pytest.mark.parametrize("edit, error", [
    (lambda p: ce.add_model(p, "best", ["b/x"]), ce.DuplicateModel),
    (lambda p: ce.link_model(p, "ghost", "a/x"), ce.UnknownModel),
    (lambda p: ce.unlink_model(p, "best", "a/other"), ce.UnknownModel),
    (lambda p: ce.unlink_model(p, "best", "a/m1"), ce.LastTarget),
    (lambda p: ce.remove_model(p, "ghost"), ce.UnknownModel),
    (lambda p: ce.add_model(p, "new", ["a/"]), ce.ConfigError),  # names provider a, but no model
])
def test_refused_edits_leave_the_file(cfg, edit, error):
    ce.add_model(cfg, "best", ["a/m1"])
    before = cfg.read_text()
    with pytest.raises(error):
        edit(cfg)
    assert cfg.read_text() == before


@pytest.mark.parametrize("name", ["x" * 300, "\x00", "- a", "#x", " lead", "key: v", "<<", "=", "null", "true",
                                  "1e3", "{a}", "a/b"])
def test_names_yaml_would_misread_stay_strings(cfg, name):
    ce.add_model(cfg, name, [f"a/{name}"])
    assert load_settings(str(cfg))[0].routing.aliases == {name: [f"a/{name}"]}
    ce.remove_model(cfg, name)
    assert cfg.read_text() == BASE
