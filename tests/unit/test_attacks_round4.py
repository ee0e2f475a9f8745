"""Hostile bytes from upstreams and stores, at the pure functions that read them (the e2e side is
tests/e2e/test_attacks_round4.py)."""

from __future__ import annotations

import json

import pytest

from converters.first_event import FirstEvent
from llmgate.addons.proxy_guard import is_local, proxy_key
from llmgate.addons.redaction import url_passwords
from llmgate.errors import GatewayError
from llmgate.operations.request_log_pg import safe_url
from llmgate.providers.codex import collect

NESTED = b"[" * 50_000  # deeper than json's recursion limit, smaller than a held first event


@pytest.mark.parametrize("wire", ["openai_chat", "anthropic", "gemini", "code_assist", "responses"])
def test_a_first_event_nested_past_the_json_limit_is_the_relays_to_judge(wire):
    assert FirstEvent(wire).feed(b"data: " + NESTED + b"\n\n") is True


def sse(*events: dict | bytes) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


def test_codex_collect_takes_any_output_index_and_skips_unreadable_events():
    done = {"type": "response.completed", "response": {"id": "r"}}
    body = sse(NESTED, {"type": "response.output_item.done", "output_index": [1], "item": {"n": 1}},
               {"type": "response.output_item.done", "output_index": 1.5, "item": {"n": 2}},
               {"type": "response.output_item.done", "output_index": "x", "item": {"n": 3}}, done)
    assert [i["n"] for i in json.loads(collect(body))["output"]] == [1, 2, 3]


def test_codex_collect_of_garbage_is_a_502():
    with pytest.raises(GatewayError) as e:
        collect(sse(NESTED))
    assert e.value.status == 502


def test_store_url_passwords_are_found_and_masked_in_userinfo_and_query():
    url = "postgresql://u:p%40ss@db:5432/log?sslmode=require&password=q-secret&sslpassword=k-secret"
    assert set(url_passwords(url)) == {"p%40ss", "p@ss", "q-secret", "k-secret"}
    shown = safe_url(url)
    assert "q-secret" not in shown and "k-secret" not in shown and "p%40ss" not in shown
    assert "sslmode=require" in shown
    assert set(url_passwords("redis://:r-secret@cache:6379/0")) == {"r-secret"}
    assert url_passwords(None) == [] and url_passwords("redis://[broken") == []


@pytest.mark.parametrize("value, key", [
    ("Basic bGxtZ2F0ZTpzZWNyZXQ=", "secret"),  # llmgate:secret
    ("Basic c2VjcmV0Og==", "secret"),  # secret: (the key as the user name)
    ("Bearer secret", "secret"),
    ("Basic !!!", None), ("Digest x", None), ("", None), (None, None),
])
def test_proxy_key_from_proxy_authorization(value, key):
    assert proxy_key(value) == key


@pytest.mark.parametrize("ip, local", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("::ffff:127.0.0.1", True), ("0.0.0.0", True),
    ("::", True), ("fe80::1%eth0", False), ("192.0.2.2", False), ("10.0.0.1", False), ("example.com", False),
])
def test_local_addresses(ip, local):
    assert is_local(ip) is local


def _shared_folder_with_link(tmp_path, owner: int):
    import os

    if os.geteuid() != 0:
        pytest.skip("planting another user's symlink needs root")
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp
    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    link = shared / "creds.json"
    link.symlink_to(victim)
    os.lchown(link, owner, owner)
    return link, victim


def test_credentials_are_not_written_through_another_users_symlink_in_a_shared_folder(tmp_path):
    """write_atomic follows symlinks (realpath, then a rename over the target): in /tmp another user's
    link made root's `llmgate credentials export --file /tmp/...` replace any file it pointed at."""
    from llmgate.credentials.store import write_atomic

    link, victim = _shared_folder_with_link(tmp_path, 65534)
    with pytest.raises(PermissionError):
        write_atomic(link, {"refresh_token": "r"})
    assert victim.read_text() == "precious\n"


def test_credentials_are_written_through_ones_own_symlink(tmp_path):
    from llmgate.credentials.store import write_atomic

    link, victim = _shared_folder_with_link(tmp_path, 0)
    write_atomic(link, {"refresh_token": "r"})
    assert json.loads(victim.read_text()) == {"refresh_token": "r"} and link.is_symlink()
