"""The cached hook dispatch calls exactly what mitmproxy's own trigger_event calls, in its order."""

import asyncio
import logging
import re

import pytest
from mitmproxy import addonmanager, exceptions, hooks
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHook
from mitmproxy.test import taddons, tflow

from llmgate.addons import hook_dispatch

ORIGINAL = hook_dispatch.trigger_event.original


class Recorder:
    def __init__(self, log: list, name: str, fail: str | None = None, halt: bool = False, children=None):
        self.log, self.name, self.fail, self.halt = log, name, fail, halt
        if children is not None:
            self.addons = list(children)

    def request(self, flow) -> None:
        self.log.append((self.name, "request"))
        if self.fail == "request":
            raise ValueError(f"{self.name} broke")
        if self.halt:
            raise exceptions.AddonHalt

    async def response(self, flow) -> None:
        await asyncio.sleep(0)
        self.log.append((self.name, "response"))
        if self.fail == "response":
            raise ValueError(f"{self.name} broke")


def chain(log: list) -> list:
    """Top-level addons, one with sub-addons (as mitmproxy's script loader holds a script's)."""
    return [
        Recorder(log, "a"),
        Recorder(log, "parent", children=[Recorder(log, "c1", fail="request"), Recorder(log, "c2"),
                                          Recorder(log, "c3", children=[Recorder(log, "g1")])]),
        Recorder(log, "b", fail="response"),
        Recorder(log, "d"),
    ]


def run_both(event_of, addons_of, caplog) -> tuple[list, list]:
    """The calls (and logged errors) of mitmproxy's dispatch and of the cached one, each on a fresh chain."""
    async def run(trigger) -> list:
        log: list = []
        with taddons.context() as tctx:
            for a in addons_of(log):
                tctx.master.addons.add(a)
            caplog.clear()
            with caplog.at_level(logging.ERROR):
                for event in event_of():
                    await trigger(tctx.master.addons, event)
            log.extend(("logged", r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR)
        return log
    async def both() -> tuple[list, list]:
        return await run(ORIGINAL), await run(hook_dispatch.trigger_event)
    return asyncio.run(both())


def test_same_calls_order_and_error_handling(caplog):
    f = tflow.tflow(resp=True)
    events = lambda: [HttpRequestHook(f), HttpResponseHook(f), HttpRequestHook(f)]  # noqa: E731
    original, cached = run_both(events, chain, caplog)
    assert cached == original
    # what that behaviour is: c1's error skips its siblings under the same top-level addon, not the next ones
    assert ("c2", "request") not in cached and ("b", "request") in cached and ("d", "response") in cached
    assert ("logged", "Addon error: c1 broke") in cached and ("logged", "Addon error: b broke") in cached


def test_addon_halt_ends_the_hook(caplog):
    f = tflow.tflow()
    addons = lambda log: [Recorder(log, "a"), Recorder(log, "stop", halt=True), Recorder(log, "after")]  # noqa: E731
    original, cached = run_both(lambda: [HttpRequestHook(f)], addons, caplog)
    assert cached == original == [("a", "request"), ("stop", "request")]


def test_tree_changes_are_seen(monkeypatch):
    for name in ("trigger_event", "register", "remove", "add", "clear"):
        monkeypatch.setattr(addonmanager.AddonManager, name, getattr(addonmanager.AddonManager, name))
    hook_dispatch.install()
    hook_dispatch.install()  # again (a script reload): still one layer
    assert addonmanager.AddonManager.trigger_event is hook_dispatch.trigger_event
    assert not hasattr(addonmanager.AddonManager.add.original, "original")
    log: list = []
    f = tflow.tflow()

    async def scenario() -> None:
        with taddons.context() as tctx:
            m = tctx.master.addons
            fire = lambda: m.trigger_event(HttpRequestHook(f))  # noqa: E731
            first = Recorder(log, "first")
            m.add(first)
            await fire()
            late = Recorder(log, "late")
            m.add(late)  # added after the list was made
            await fire()
            m.remove(first)
            await fire()
            parent = Recorder(log, "parent", children=[])
            m.add(parent)
            child = Recorder(log, "child")
            parent.addons.append(child)  # a script (re)loaded: the parent registers its new module
            m.register(child)
            await fire()

    asyncio.run(scenario())
    assert log == [("first", "request"), ("first", "request"), ("late", "request"), ("late", "request"),
                   ("late", "request"), ("parent", "request"), ("child", "request")]


def test_option_change_drops_the_list():
    log: list = []
    f = tflow.tflow()

    async def scenario() -> None:
        with taddons.context(hook_dispatch.HookDispatch()) as tctx:
            m = tctx.master.addons
            parent = Recorder(log, "parent", children=[Recorder(log, "x")])
            m.add(parent)
            await hook_dispatch.trigger_event(m, HttpRequestHook(f))
            parent.addons.insert(0, Recorder(log, "y"))  # reordered in place, as `scripts` being set does
            tctx.options.update(showhost=True)
            await hook_dispatch.trigger_event(m, HttpRequestHook(f))

    asyncio.run(scenario())
    assert log == [("parent", "request"), ("x", "request"), ("parent", "request"), ("y", "request"), ("x", "request")]


def test_lifecycle_hooks_take_mitmproxy_path():
    calls = []

    class Running:
        def running(self) -> None:
            calls.append("running")

    async def scenario() -> None:
        with taddons.context() as tctx:
            tctx.master.addons.add(Running())
            await hook_dispatch.trigger_event(tctx.master.addons, hooks.RunningHook())
            assert "_llmgate_hooks" not in tctx.master.addons.__dict__

    asyncio.run(scenario())
    assert calls == ["running"]


@pytest.mark.parametrize("bad", [42, "not callable"])
def test_a_handler_that_is_not_callable_is_reported_as_mitmproxy_does(bad, caplog):
    class Odd:
        request = bad

    f = tflow.tflow()
    original, cached = run_both(lambda: [HttpRequestHook(f)], lambda log: [Odd()], caplog)
    same = lambda log: [re.sub(r"0x[0-9a-f]+", "", m) for _, m in log]  # noqa: E731  (two instances)
    assert same(cached) == same(original) and any("not callable" in m for _, m in cached)


def test_idle_builtin_handlers_are_left_out_until_their_option_is_set():
    """mitmproxy's MapRemote, ModifyHeaders, BlockList... do nothing without rules: not called then;
    set a rule and the next hook runs them, with mitmproxy's own effect on the flow."""
    from mitmproxy.addons import blocklist, maplocal, mapremote, modifybody, modifyheaders, stickyauth, stickycookie
    from mitmproxy.proxy.layers.http import HttpRequestHeadersHook

    addons = [maplocal.MapLocal(), mapremote.MapRemote(), modifybody.ModifyBody(), modifyheaders.ModifyHeaders(),
              blocklist.BlockList(), stickyauth.StickyAuth(), stickycookie.StickyCookie()]

    def handlers(m, name: str) -> set[str]:
        return {f.__qualname__ for funcs in m.__dict__["_llmgate_hooks"][name] for f in funcs}

    async def scenario() -> None:
        with taddons.context(hook_dispatch.HookDispatch(), *addons) as tctx:
            m = tctx.master.addons
            f = tflow.tflow()
            await hook_dispatch.trigger_event(m, HttpRequestHeadersHook(f))
            await hook_dispatch.trigger_event(m, HttpRequestHook(f))
            assert not handlers(m, "requestheaders") & {"ModifyHeaders.requestheaders"}
            assert not handlers(m, "request") & {"MapLocal.request", "MapRemote.request", "ModifyBody.request",
                                                  "BlockList.request", "StickyAuth.request", "StickyCookie.request"}
            assert f.request.url == "http://address:22/path" and "x-added" not in f.request.headers

            tctx.options.update(map_remote=["|//address:22/path|//elsewhere:22/moved"],
                                modify_headers=["/~q/x-added/yes"], block_list=["|~u moved|418"])
            f = tflow.tflow()
            await hook_dispatch.trigger_event(m, HttpRequestHeadersHook(f))
            await hook_dispatch.trigger_event(m, HttpRequestHook(f))
            assert {"MapRemote.request", "BlockList.request"} <= handlers(m, "request")
            assert f.request.url == "http://elsewhere:22/moved" and f.request.headers["x-added"] == "yes"
            assert f.response is not None and f.response.status_code == 418

    asyncio.run(scenario())
