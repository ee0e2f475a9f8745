"""Addon: mitmproxy's hook dispatch, with the list of handlers per hook worked out once.

For every hook of every flow (requestheaders, request, responseheaders, response, each
followed by an `update`), mitmproxy's AddonManager.trigger_event walks the whole addon tree
(~45 addons with this gateway's), looks each one's handler up with getattr, and runs every
addon under its own context manager and coroutine. Almost none of them handle a given hook,
yet that walk was the largest single cost per request: ~0.5 ms of CPU of the gateway's
~2.5 ms (measured with wrk at 16 connections; bench/instructions.py and `make bench` show it).

Here the handlers of each hook are listed once, grouped by top-level addon, and the list is
dropped whenever the tree can change (an addon added, removed or registered, as a script
reload does, or an option changed, which may reorder scripts). What a hook does is unchanged:
the same handlers in the same order, async ones awaited, an error in one logged as mitmproxy
logs it and ending the rest of its own top-level addon only (so a failing check in this
gateway's script never lets the addons after it run without it), AddonHalt ending the hook.
Lifecycle hooks (load, configure, running, done) keep mitmproxy's own path.

Left out of the lists: handlers of mitmproxy's own addons that do nothing while their option is
unset (IDLE; the lists are rebuilt on every option change, which is what sets them). MapLocal's
request hook, for one, works out each request's pretty_url before it looks at its empty rules:
~30 us per request, on the way to the first token.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mitmproxy import addonmanager, ctx, exceptions, hooks

UNCACHED = frozenset(("load", "configure", "running", "done"))
Groups = list[list[Callable[..., Any]]]
_original = getattr(addonmanager.AddonManager.trigger_event, "original", addonmanager.AddonManager.trigger_event)


def _no_rules(addon: Any) -> bool:
    return getattr(addon, "replacements", None) == []


def _no_filter(addon: Any) -> bool:
    return hasattr(addon, "flt") and addon.flt is None


IDLE: dict[tuple[str, str], Callable[[Any], bool]] = {  # (mitmproxy addon class, hook): does nothing now
    ("MapLocal", "request"): _no_rules,
    ("MapRemote", "request"): _no_rules,
    ("ModifyBody", "request"): _no_rules,
    ("ModifyBody", "response"): _no_rules,
    ("ModifyHeaders", "requestheaders"): _no_rules,
    ("ModifyHeaders", "responseheaders"): _no_rules,
    ("BlockList", "request"): lambda a: getattr(a, "items", None) == [],
    ("StickyAuth", "request"): _no_filter,
    ("StickyCookie", "request"): _no_filter,
    ("StickyCookie", "response"): _no_filter,
}


def _idle(addon: Any, hook: str) -> bool:
    check = IDLE.get((type(addon).__name__, hook))
    return check is not None and type(addon).__module__.startswith("mitmproxy.addons.") and check(addon)


def _groups(manager: addonmanager.AddonManager, event: hooks.Hook) -> Groups:
    """The handlers of `event`, one list per top-level addon that has any, in chain order."""
    out: Groups = []
    for top in manager.chain:
        funcs = [func for addon, func in manager._iter_hooks(top, event) if not _idle(addon, event.name)]
        if funcs:
            out.append(funcs)
    return out


def _log_error(value: BaseException) -> None:
    """As mitmproxy's safecall logs an addon's exception."""
    tb = addonmanager.cut_traceback(value.__traceback__, "trigger_event")
    addonmanager.logger.error(f"Addon error: {value}", exc_info=(type(value), value, tb))


async def trigger_event(self: addonmanager.AddonManager, event: hooks.Hook) -> None:
    name = event.name
    if name in UNCACHED:
        return await _original(self, event)
    cache: dict[str, Groups] = self.__dict__.setdefault("_llmgate_hooks", {})
    groups = cache.get(name)
    if groups is None:
        try:
            groups = _groups(self, event)
        except exceptions.AddonManagerError:  # a handler that is not callable: mitmproxy logs it per call
            return await _original(self, event)
        cache[name] = groups
    args = event.args()
    for funcs in groups:
        try:
            for func in funcs:
                res = func(*args)
                if res is not None and inspect.isawaitable(res):
                    await res
        except exceptions.AddonHalt:
            return
        except exceptions.OptionsError:
            raise
        except Exception as e:
            _log_error(e)


trigger_event.original = _original  # type: ignore[attr-defined]


def _invalidating(method: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(self: addonmanager.AddonManager, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            forget(self)
    wrapper.original = method  # type: ignore[attr-defined]
    return wrapper


def install() -> None:
    """Patch AddonManager (once per process, also across script reloads)."""
    cls = addonmanager.AddonManager
    if hasattr(cls.trigger_event, "original"):
        return
    cls.trigger_event = trigger_event  # type: ignore[method-assign]
    for name in ("register", "remove", "add", "clear"):
        method = getattr(cls, name)
        setattr(cls, name, _invalidating(getattr(method, "original", method)))


def forget(manager: addonmanager.AddonManager) -> None:
    manager.__dict__.pop("_llmgate_hooks", None)


class HookDispatch:
    def load(self, loader: addonmanager.Loader) -> None:
        install()

    def configure(self, updated: set[str]) -> None:
        forget(ctx.master.addons)  # e.g. `scripts` reordered without an add or remove
