import asyncio
import logging
import os
import re

import pytest
from mitmproxy.test import taddons

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
        ("providers:\n  - id: a\n    type: openai\n    base_url: http://x\n    command: rm\n",
         "proxy.yaml:5: providers[0].command: unknown field for type openai"),
        ("providers:\n  - id: a\n    base_url: http://x\n", "proxy.yaml:2: providers[0].type: Field required"),
        ("providers:\n  - id: a\n    type: qwen\n    token_url: 'http://t/ x'\n",
         "proxy.yaml:4: providers[0].token_url: must not contain spaces"),
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
    assert s.auto and s.providers == [] and s.routing.default is None  # nothing that may not exist (issue 15)


# --- hardening: bounded YAML, unreadable files, empty files (issue 12) ------------------------

def laughs(levels: int) -> str:
    """The "billion laughs": each level is nine aliases of the one before (9**levels strings)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_naming_the_limit():
    text = laughs(6)  # 531441 strings from a few hundred bytes
    assert len(text) < 400
    with pytest.raises(ConfigError) as e:
        parse_settings(text)
    assert "refused: more than 100000 values (aliases counted as expanded)" in str(e.value)
    assert str(e.value).startswith("proxy.yaml:6:")  # the line where the limit was crossed


@pytest.mark.parametrize("text, expected", [
    ("a: &a [*a]\n", "proxy.yaml:1: refused: alias *a is inside its own anchor"),
    ("server: " + "[" * 100 + "]" * 100 + "\n", "refused: nested deeper than 64 levels"),
    ("".join(f"k{i}: &k{i} [*k{i - 1}]\n" if i else "k0: &k0 [1]\n" for i in range(70)),
     "refused: nested deeper than 64 levels once its aliases are expanded"),
])
def test_recursive_and_deep_yaml_is_refused(text, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_settings(text)


def test_aliases_within_the_limits_still_work():
    s, _ = parse_settings("providers:\n- {id: a, type: openai, base_url: 'http://h/v1', headers: &h {X-Title: app}}\n"
                          "- {id: b, type: openai, base_url: 'http://i/v1', headers: *h}\n")
    assert s.provider("b").headers == {"X-Title": "app"}


def test_oversized_file_is_refused_without_reading_it_all(tmp_path):
    big = tmp_path / "proxy.yaml"
    big.write_text("# padding\n" * 200_000)
    with pytest.raises(ConfigError, match=r"proxy.yaml: larger than the limit of 1048576 bytes"):
        load_settings(big)


def test_non_utf8_file_is_a_config_error_naming_the_line(tmp_path):
    bad = tmp_path / "proxy.yaml"
    bad.write_bytes(b"server:\n  api_keys: [caf\xe9]\n")
    with pytest.raises(ConfigError, match=r"proxy.yaml:2: not UTF-8 \(byte 0xe9 at offset 24\)"):
        load_settings(bad)


@pytest.mark.parametrize("text", ["", "   \n\n", "# all commented out\n#server:\n", "---\n", "~\n"])
def test_empty_file_is_an_error(text):
    with pytest.raises(ConfigError, match=re.escape("proxy.yaml: has no settings (empty); write {} for an empty config")):
        parse_settings(text)


def test_explicit_empty_mapping_is_a_config():
    assert parse_settings("{}")[0].providers == []


# --- the watcher: one poll at a time (ConfigWatch.check), injected clock, no sleeps -------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Watched:
    """A ConfigWatch over a real file in tmp_path, polled by hand."""

    def __init__(self, tmp_path, text: str):
        from llmgate.addons.config_watch import ConfigWatch
        from llmgate.runtime import Runtime

        self.path = tmp_path / "proxy.yaml"
        self.version = 0
        self.write(text)
        self.rt = Runtime()
        self.clock = Clock()
        self.cw = ConfigWatch(self.rt, poll_seconds=0, settle_seconds=3, clock=self.clock)

    def write(self, data: str | bytes) -> None:
        self.path.write_bytes(data.encode() if isinstance(data, str) else data)
        self.version += 1  # a distinct mtime per write, however fast the test writes
        os.utime(self.path, ns=(self.version * 10**9, self.version * 10**9))

    async def poll(self, seconds: float = 1.0) -> None:
        self.clock.now += seconds
        await self.cw.check()

    def run(self, body) -> None:
        async def main():
            with taddons.context(self.cw) as tctx:
                tctx.configure(self.cw, gateway_config=str(self.path))
                await body(self)
        asyncio.run(main())


KEYED = ("server:\n  api_keys: [{name: alice, key: sk-alice-secret}, sk-anon-secret]\n  admin_keys: [adm-secret]\n"
         "providers: [{id: a, type: openai, base_url: 'http://h/v1'}]\n")


def test_unreadable_or_broken_file_keeps_the_config_and_is_logged_once(tmp_path, caplog):
    async def body(w):
        for broken in (b"server: {api_keys: [caf\xe9]}\n", laughs(7), "providers: [{id: a}]\n"):
            w.write(broken)
            with caplog.at_level(logging.ERROR, "llmgate"):
                caplog.clear()
                await w.poll()
                await w.poll()  # the same broken file again: not logged again
            assert len(caplog.records) == 1, caplog.text
            assert "config reload failed, keeping the previous config" in caplog.text
            assert [p.id for p in w.rt.settings.providers] == ["a"]
        w.write("providers: [{id: b, type: openai, base_url: 'http://i/v1'}]\n")
        await w.poll()  # the watcher is alive and a good file is applied at once
        assert [p.id for p in w.rt.settings.providers] == ["b"]

    Watched(tmp_path, "providers: [{id: a, type: openai, base_url: 'http://h/v1'}]\n").run(body)


def test_failure_opening_state_files_keeps_the_config(tmp_path, caplog):
    async def body(w):
        (tmp_path / "plain-file").write_text("")
        w.write(f"server: {{state_file: '{tmp_path}/plain-file/state.sqlite'}}\n"
                "providers: [{id: b, type: openai, base_url: 'http://i/v1'}]\n")
        with caplog.at_level(logging.ERROR, "llmgate"):
            await w.poll()
        assert "config reload failed, keeping the previous config: " in caplog.text
        assert [p.id for p in w.rt.settings.providers] == ["a"]

    Watched(tmp_path, "providers: [{id: a, type: openai, base_url: 'http://h/v1'}]\n").run(body)


@pytest.mark.parametrize("change, named", [
    ("server: {admin_keys: [adm-secret]}\nproviders: [{id: a, type: openai, base_url: 'http://h/v1'}]\n",
     "every client key (alice, key-"),
    ("server: {api_keys: [sk-anon-secret]}\nproviders: [{id: a, type: openai, base_url: 'http://h/v1'}]\n",
     "every admin key (1)"),
    ("server:\n  api_keys: [sk-anon-secret]\n  admin_keys: [adm-secret]\n", "every provider (a)"),
])
def test_removing_every_key_or_provider_waits_for_the_file_to_settle(tmp_path, caplog, change, named):
    async def body(w):
        before = w.rt.settings
        with caplog.at_level(logging.WARNING, "llmgate"):
            w.write(change)
            await w.poll()
            await w.poll(2)
            w.write(change + "\n")  # still being written: the wait starts again
            await w.poll()
            await w.poll(2)
            assert w.rt.settings is before
            await w.poll(1)  # unchanged for 3 s
        assert w.rt.settings is not before
        held, applied = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING][-2:]
        assert named in held and "applied once the file has not changed for 3 s" in held
        assert named in applied and "applied: it removes" in applied
        assert "secret" not in caplog.text

    Watched(tmp_path, KEYED).run(body)


def test_a_truncated_file_replaced_by_the_whole_one_never_drops_the_keys(tmp_path):
    async def body(w):
        w.write(KEYED.split("providers")[0].split("  api_keys")[0])  # "server:\n": keys gone
        await w.poll()
        assert w.rt.settings.server.api_keys
        w.write(KEYED.replace("'http://h/v1'", "'http://moved/v1'"))
        await w.poll()
        assert w.rt.settings.provider("a").base_url == "http://moved/v1" and w.rt.settings.server.api_keys

    Watched(tmp_path, KEYED).run(body)


def test_the_watch_loop_outlives_unexpected_errors(tmp_path, caplog):
    from llmgate.addons.config_watch import ConfigWatch

    class Flaky(ConfigWatch):
        polls = 0

        async def check(self):
            self.polls += 1
            if self.polls <= 2:
                raise RuntimeError("boom")
            await super().check()

    async def body(w):
        w.cw.__class__ = Flaky
        w.write("providers: [{id: b, type: openai, base_url: 'http://i/v1'}]\n")
        with caplog.at_level(logging.ERROR, "llmgate"):
            task = asyncio.get_running_loop().create_task(w.cw._watch())
            while w.rt.settings.provider("b") is None:
                await asyncio.sleep(0)
            task.cancel()
        assert [r.getMessage() for r in caplog.records] == ["config watcher: RuntimeError: boom (still watching)"]

    Watched(tmp_path, "providers: [{id: a, type: openai, base_url: 'http://h/v1'}]\n").run(body)


def test_empty_file_at_start_up_is_an_error(tmp_path, caplog):
    from llmgate.addons.config_watch import ConfigWatch
    from llmgate.runtime import Runtime

    (tmp_path / "proxy.yaml").write_text("# nothing yet\n")
    cw = ConfigWatch(Runtime())
    with taddons.context(cw) as tctx, caplog.at_level(logging.ERROR):
        tctx.configure(cw, gateway_config=str(tmp_path / "proxy.yaml"))
    assert "proxy.yaml: has no settings (empty)" in caplog.text


def test_opening_a_locked_state_file_does_not_stall_the_event_loop(tmp_path):
    import sqlite3

    state = tmp_path / "elsewhere.sqlite"
    holder = sqlite3.connect(state)
    holder.execute("BEGIN EXCLUSIVE")  # another process busy with the file: opening it waits

    async def body(w):
        w.write(f"server: {{state_file: '{state}'}}\nproviders: [{{id: b, type: openai, base_url: 'http://i/v1'}}]\n")
        reload = asyncio.get_running_loop().create_task(w.poll())
        ticks = 0
        while ticks < 100 and not reload.done():  # other tasks run while the reload waits
            await asyncio.sleep(0)
            ticks += 1
        assert ticks == 100 and w.rt.settings.provider("b") is None
        holder.rollback()
        await reload
        assert w.rt.settings.provider("b") is not None and w.rt.pool.store.path == state

    try:
        Watched(tmp_path, "providers: [{id: a, type: openai, base_url: 'http://h/v1'}]\n").run(body)
    finally:
        holder.close()


# --- alias targets and CORS (issue 15) -----------------------------------------------------------

ALIAS_BASE = """
providers:
  - {id: lms, type: openai, base_url: "http://a/v1", models: [qwen3, "meta/llama"]}
  - {id: or, type: openai, base_url: "http://b/v1"}
routing:
  aliases:
"""


@pytest.mark.parametrize("target", ["lms/qwen3", "or/qwen/qwen3-coder", "qwen3", "anything-discovered",
                                    "meta/llama", "other", ["lms/qwen3", "or/x"]])
def test_alias_targets_that_load(target):
    s, _ = parse_settings(ALIAS_BASE + f"    a: {target!r}\n    other: lms/qwen3\n".replace("'", '"'))
    assert s.routing.aliases["a"] == target


@pytest.mark.parametrize("target, missing", [("openrouter/qwen/qwen3-coder", "openrouter"),
                                             ("ghost/m", "ghost"), (["lms/qwen3", "nope/m"], "nope")])
def test_alias_target_naming_a_missing_provider_is_an_error(target, missing):
    with pytest.raises(ConfigError) as e:
        parse_settings(ALIAS_BASE + f"    big: {target!r}\n".replace("'", '"'))
    msg = str(e.value)
    assert "proxy.yaml:7: routing.aliases.big: target" in msg  # the alias's line
    assert f"names provider {missing!r}, which does not exist" in msg
    assert "providers: lms, or" in msg and "write it as 'provider/" in msg


def test_readme_configs_load():
    import pathlib

    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    full = [b for b in blocks if b.lstrip().startswith("auto:") and "providers:" in b]
    assert full, "README's full example config"
    for b in full:
        s, _ = parse_settings(b.replace("${", "${X_UNSET_"))  # unset variables only warn
        assert s.routing.aliases


@pytest.mark.parametrize("given, origin", [("https://App.Example.com/", "https://app.example.com"),
                                           ("http://localhost:80", "http://localhost"),
                                           ("http://127.0.0.1:5173", "http://127.0.0.1:5173"), ("*", "*")])
def test_cors_origins_are_kept_as_browsers_send_them(given, origin):
    s, _ = parse_settings(f"server:\n  api_keys: [k]\n  cors: {{origins: [{given!r}]}}\n")
    assert s.server.cors.origins == [origin] and s.server.cors.max_age == 600


@pytest.mark.parametrize("text, expected", [
    ("server:\n  cors: {origins: ['https://a.example/app']}\n", "is not an origin"),
    ("server:\n  cors: {origins: ['ftp://a.example']}\n", "is not an origin"),
    ("server:\n  cors: {origins: ['*']}\n", "proxy.yaml:2: server.cors.origins: '*' needs server.api_keys"),
    ("server:\n  cors: {origins: ['http://a'], expose_headers: ['bad header']}\n", "not a valid HTTP header name"),
])
def test_bad_cors_settings(text, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_settings(text)
    assert parse_settings("{}")[0].server.cors is None  # off by default


def test_alias_targets_of_providers_auto_may_find_load_only_with_auto():
    text = "routing:\n  aliases: {coder: openrouter/qwen/qwen3-coder}\n"
    assert parse_settings("auto: true\n" + text)[0].routing.aliases["coder"] == "openrouter/qwen/qwen3-coder"
    with pytest.raises(ConfigError, match="names provider 'openrouter', which does not exist"):
        parse_settings(text)


def test_removing_a_provider_an_alias_names_is_refused_and_the_file_kept(tmp_path):
    from llmgate.operations import config_edit

    cfg = tmp_path / "proxy.yaml"
    cfg.write_text(ALIAS_BASE + "    fast: or/qwen/qwen3-coder\n")
    before = cfg.read_text()
    with pytest.raises(ConfigError, match="routing.aliases.fast: target 'or/qwen/qwen3-coder' names provider 'or'"):
        config_edit.remove_provider(cfg, "or")
    assert cfg.read_text() == before
