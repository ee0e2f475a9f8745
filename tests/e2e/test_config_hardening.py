"""proxy.yaml as an attacker or a half-finished edit can leave it: the gateway keeps serving with
its last good config, says why, and keeps watching the file (issue 12)."""

import os
import re
import time

import httpx
import pytest

from tests.e2e.conftest import CLIENT_KEY, gateway_config
from tests.harness import BIN, ROOT, Gateway, Proc

HELLO = [{"role": "user", "content": "hi"}]


def laughs(levels: int) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def gw(upstream, tmp_path):
    cfg = gateway_config(upstream)
    cfg["routing"]["aliases"] = {"pick": "up/gpt-4o-mini"}
    g = Gateway(cfg, tmp_path / "proxy.yaml")
    g.cfg = cfg
    yield g
    g.stop()


def ask(g: Gateway, key: str | None = CLIENT_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(g.base + "/v1/chat/completions", json={"model": "pick", "messages": HELLO},
                      headers=headers, timeout=20)


def logged(g: Gateway, pattern: str, since: int) -> None:
    """Wait for a log line matching pattern, among those after the first `since` lines."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(re.search(pattern, line) for line in g.lines[since:]):
            return
        time.sleep(0.05)
    raise AssertionError(f"no line matching {pattern!r}:\n" + g.output)


def reloaded(g: Gateway, pick: str) -> None:
    """Point the alias somewhere new, and wait until the gateway has applied it."""
    g.cfg["routing"]["aliases"] = {"pick": pick}
    since = len(g.lines)
    g.write_config(g.cfg)
    logged(g, r"config .*proxy\.yaml: 4 provider\(s\)", since)
    assert ask(g).status_code == 200


def test_alias_bomb_is_refused_and_the_gateway_keeps_serving(gw, upstream):
    gw.write_config(laughs(7))  # 4.8 million strings from 500 bytes
    gw.wait_for(r"config reload failed, keeping the previous config: proxy\.yaml:6: refused: "
                r"more than 100000 values \(aliases counted as expanded\)")
    r = ask(gw)
    assert r.status_code == 200 and upstream.received()[-1]["body"]["model"] == "gpt-4o-mini"
    reloaded(gw, "up/qwen3-coder-30b")  # still watching
    assert upstream.received()[-1]["body"]["model"] == "qwen3-coder-30b"


def test_non_utf8_file_is_reported_and_the_watcher_lives_on(gw, upstream):
    tmp = gw.config_path.with_suffix(".tmp")
    tmp.write_bytes(b"server:\n  api_keys: [caf\xe9]\n")
    os.replace(tmp, gw.config_path)
    gw.wait_for(r"config reload failed, keeping the previous config: proxy\.yaml:2: not UTF-8 \(byte 0xe9")
    assert ask(gw, None).status_code == 401  # the keys of the last good config still apply
    reloaded(gw, "up/qwen3-coder-30b")
    assert upstream.received()[-1]["body"]["model"] == "qwen3-coder-30b"
    assert "Traceback" not in gw.output


def test_empty_or_truncated_file_does_not_turn_authentication_off(gw):
    gw.write_config("")
    gw.wait_for(r"config reload failed, keeping the previous config: proxy\.yaml: has no settings \(empty\)")
    assert ask(gw, None).status_code == 401

    gw.write_config("server:\n  timeouts: {connect: 3}\n")  # cut off before the keys and the providers
    gw.wait_for(r"removes every client key \(key-[0-9a-f]{8}\), so clients need no key; every provider "
                r"\(up, fixed, wrongkey, dead\): applied once the file has not changed")
    assert ask(gw, None).status_code == 401
    reloaded(gw, "up/qwen3-coder-30b")  # the save completes: applied at once, keys kept
    assert ask(gw, None).status_code == 401 and ask(gw).status_code == 200
    assert not any("applied: it removes" in line for line in gw.lines), gw.output


def test_removing_every_client_key_is_applied_once_the_file_is_stable(gw):
    del gw.cfg["server"]["api_keys"]
    gw.write_config(gw.cfg)
    gw.wait_for(r"proxy\.yaml applied: it removes every client key \(key-[0-9a-f]{8}\)")
    assert ask(gw, None).status_code == 200
    assert CLIENT_KEY not in gw.output


@pytest.mark.parametrize("text", ["", "# all commented out\n"])
def test_empty_file_stops_startup_with_a_clear_message(tmp_path, text):
    empty = tmp_path / "proxy.yaml"
    empty.write_text(text)
    p = Proc([str(BIN / "mitmdump"), "-s", str(ROOT / "addons/gateway.py"), "--mode", "reverse:http://127.0.0.1:1@0",
              "--listen-host", "127.0.0.1", "--set", "connection_strategy=lazy", "--set", f"gateway_config={empty}"])
    assert p.p.wait(20) != 0
    p.wait_for(r"proxy\.yaml: has no settings \(empty\); write \{\} for an empty config")
    assert "Traceback" not in p.output
