"""Issue 14, per-kind provider schemas as a user meets them: a running gateway refuses another
kind's field by name, through the admin API and in a hand-edited proxy.yaml, and keeps serving."""

from __future__ import annotations

import httpx
import pytest

from tests.harness import Gateway, Upstream

UP = {"id": "up", "type": "openai", "models": ["gpt-4o-mini"]}


@pytest.fixture(scope="module")
def up():
    u = Upstream("openai_compat", "--models", "gpt-4o-mini")
    yield u
    u.stop()


@pytest.fixture()
def gw(up, tmp_path):
    g = Gateway({"providers": [{**UP, "base_url": up.base + "/v1"}]}, tmp_path / "proxy.yaml")
    yield g
    g.stop()


def chat(g: Gateway) -> httpx.Response:
    return httpx.post(g.base + "/v1/chat/completions",
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


def test_admin_refuses_a_field_of_another_kind_naming_it(gw, up):
    before = gw.config_path.read_text()
    r = httpx.post(gw.base + "/admin/providers", json={"id": "x", "type": "openai", "base_url": up.base + "/v1",
                                                       "command": "rm"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "command"
    assert r.json()["error"]["message"] == "command: unknown field for type openai"
    r = httpx.patch(gw.base + "/admin/providers/up", json={"project": "p"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "field_not_for_type", r.text
    assert r.json()["error"]["param"] == "project"
    assert gw.config_path.read_text() == before
    assert chat(gw).status_code == 200


def test_a_type_change_takes_the_new_kinds_fields_and_leaves_the_old_ones_only_when_dropped(gw, up):
    r = httpx.post(gw.base + "/admin/providers", json={"id": "cc", "type": "claude-code", "command": "/no/such/cli"})
    assert r.status_code == 201, r.text
    r = httpx.patch(gw.base + "/admin/providers/cc", json={"type": "openai", "base_url": up.base + "/v1"})
    assert r.status_code == 409 and r.json()["error"]["param"] == "command", r.text
    r = httpx.patch(gw.base + "/admin/providers/cc", json={"type": "openai", "base_url": up.base + "/v1",
                                                           "command": None, "models": ["gpt-4o-mini"]})
    assert r.status_code == 200 and r.json()["provider"]["type"] == "openai", r.text
    assert "command" not in gw.config_path.read_text()


def test_hand_edited_field_of_another_kind_names_field_line_and_type(gw, up):
    gw.write_config(f"providers:\n  - id: up\n    type: openai\n    base_url: {up.base}/v1\n"
                    "    models: [gpt-4o-mini]\n    credentials: ~/.qwen/oauth_creds.json\n")
    gw.wait_for(r"config reload failed, keeping the previous config: invalid config")
    gw.wait_for(r"^\s+proxy\.yaml:6: providers\[0\]\.credentials: unknown field for type openai$")
    assert chat(gw).status_code == 200
