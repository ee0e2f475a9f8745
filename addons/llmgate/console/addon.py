"""Addon: the web console under /ui (issue 15).

client_auth has refused other origins' pages, rebinding hosts and (without server.admin_keys)
non-loopback clients. Here: with admin_keys, a session from /ui/login; every write is JSON
(a web page cannot send that cross-origin without a preflight nobody grants) and carries the
session's CSRF token. The pages call the management API's own functions (AdminApi); the
console's buttons and forms go through /ui/api/... to the same API, with the session.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from mitmproxy import ctx, http

from llmgate.addons.accounting import INBOUND
from llmgate.addons.client_auth import client_ip
from llmgate.addons.limits import request_body
from llmgate.console import logins, pages, queries
from llmgate.console.feed import Feeds
from llmgate.console.session import COOKIE, CSRF_HEADER, LoginThrottle, Session, Sessions, cookie, csrf_ok, key_matches
from llmgate.errors import GatewayError
from llmgate.operations import first_run
from llmgate.operations.admin_api import AdminApi, _no_env_references, _require_json, _strict
from llmgate.providers import PROVIDER_TYPES
from llmgate.request_path.answers import error_response, json_response
from llmgate.request_path.listings import health
from llmgate.request_path.relay import bound_socket_buffers, point_at_relay, restore
from llmgate.settings import PROVIDER_MODELS

log = logging.getLogger("llmgate")

STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
HEADERS = {  # no framing (clickjacking), no inline script, nothing cached or leaked by referrer
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
HOUR, MINUTE = 3600.0, 60.0


def is_console(flow: http.HTTPFlow) -> bool:
    return (flow.metadata.get(INBOUND) or {}).get("endpoint") == "ui"


def page(html: str, status: int = 200) -> http.Response:
    return http.Response.make(status, html.encode(), {"Content-Type": "text/html; charset=utf-8"})


def redirect(to: str) -> http.Response:
    return http.Response.make(303, b"", {"Location": to})


class Console:
    def __init__(self, rt: Any):
        self.rt = rt
        self.admin = AdminApi(rt, lambda: ctx.options.gateway_config, lambda: rt.reload())
        self.sessions = Sessions()
        self.throttle = LoginThrottle()
        self.feeds = Feeds()
        self.logins = logins.Logins()
        self._feeding: dict[str, tuple] = {}  # flow id -> (feed, the request's own fields)
        self._subscribed: Any = None  # the Accounting addon feeding us rows

    # --- hooks --------------------------------------------------------------------------

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or not is_console(flow):
            return  # front_door marked the route and left it to us
        path = flow.request.path.split("?", 1)[0]
        try:
            resp = await self._handle(flow, path)
        except GatewayError as e:
            resp = error_response(e)
        except Exception:
            log.exception("console failed on %s %s", flow.request.method, path)
            resp = error_response(GatewayError(500, "Internal console error; the gateway log has the details.",
                                               code="internal_error"))
        if resp is not None:
            resp.headers.update(HEADERS)
            flow.response = resp

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.id in self._feeding and flow.response is not None:
            flow.response.stream = True
            bound_socket_buffers(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self._end_feed(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._end_feed(flow)

    def _end_feed(self, flow: http.HTTPFlow) -> None:
        held = self._feeding.pop(flow.id, None)
        if held is not None:
            held[0].abandon("client-gone")
            restore(flow.request, held[1])  # show what the browser asked for

    # --- access -------------------------------------------------------------------------

    async def _handle(self, flow: http.HTTPFlow, path: str) -> http.Response | None:
        req = flow.request
        if path.startswith("/ui/static/"):
            return self._static(path.removeprefix("/ui/static/"))
        admin_keys = self.rt.settings.server.admin_keys
        session = self.sessions.get(req.cookies.get(COOKIE), admin_keys)
        if COOKIE in req.cookies:  # the session id is a credential: not in mitmweb or saved flows
            req.cookies[COOKIE] = "[redacted]"
        if path == "/ui/login":
            return self._login(flow, admin_keys)
        new = None
        if session is None:
            if admin_keys:
                if req.method == "GET" and not path.startswith(("/ui/api/", "/ui/feed")):
                    return redirect("/ui/login")
                raise GatewayError(401, "Log in to the console first (/ui/login).", code="login_required")
            session = new = self.sessions.open(None)  # no admin keys: client_auth let only loopback in
        if req.method not in ("GET", "HEAD"):
            _require_json(req)
            if not csrf_ok(session, req.headers.get(CSRF_HEADER)):
                raise GatewayError(403, "The console's CSRF token is missing or wrong; reload the page.",
                                   code="csrf_failed")
        resp = await self._route(flow, path, session)
        if new is not None and resp is not None:
            resp.headers["Set-Cookie"] = cookie(new, flow.client_conn.tls_established)
        return resp

    def _login(self, flow: http.HTTPFlow, admin_keys: list[str]) -> http.Response:
        req = flow.request
        if not admin_keys:
            return redirect("/ui/")  # nothing to log in with: loopback clients are let in
        if req.method == "GET":
            return page(pages.layout("Log in", pages.login_page()))
        if req.method != "POST":
            raise GatewayError(405, "Use GET or POST.", code="method_not_allowed", headers={"Allow": "GET, POST"})
        _require_json(req)  # a cross-site form cannot log a browser in to an attacker's session
        body = self.admin._json(request_body(req, self.rt.settings.server.limits))
        req.content = b'{"key": "[redacted]"}'  # the admin key never reaches a flow view or saved flow
        key = body.get("key")
        client = client_ip(flow) or ""  # behind HAProxy every peer is loopback: throttle the real client
        if self.throttle.blocked(client):
            raise GatewayError(429, "Too many failed logins; try again in a minute.", code="rate_limited",
                               headers={"Retry-After": "60"})
        if not isinstance(key, str) or not key_matches(key, admin_keys):
            self.throttle.failed(client)
            raise GatewayError(401, "That is not an admin key (server.admin_keys).", code="invalid_api_key")
        s = self.sessions.open(key)
        resp = json_response(200, {"ok": True})
        resp.headers["Set-Cookie"] = cookie(s, flow.client_conn.tls_established)
        return resp

    @staticmethod
    def _static(name: str) -> http.Response:
        if name not in STATIC_TYPES:
            raise GatewayError(404, "No such file.", code="not_found")
        return http.Response.make(200, (STATIC / name).read_bytes(), {"Content-Type": STATIC_TYPES[name]})

    # --- routes -------------------------------------------------------------------------

    async def _route(self, flow: http.HTTPFlow, path: str, s: Session) -> http.Response | None:
        req = flow.request
        query = dict(parse_qsl(req.path.partition("?")[2]))
        parts = [unquote(p) for p in path.removeprefix("/ui").strip("/").split("/")] if path != "/ui" else [""]
        if parts[0] == "api":
            return await self._admin_api(flow)
        if req.method == "POST" and path == "/ui/logout":
            self.sessions.close(s.sid)
            resp = json_response(200, {"ok": True})
            resp.headers["Set-Cookie"] = cookie(None, flow.client_conn.tls_established)
            return resp
        if req.method == "POST" and parts[0] == "auto" and len(parts) == 2:
            return json_response(201, self._keep_found(req, parts[1]))
        if req.method == "POST" and parts[0] == "logins" and len(parts) in (2, 3):
            return await self._login_action(req, parts[1:])
        if req.method != "GET":
            raise GatewayError(405, "Method not allowed here.", code="method_not_allowed")
        if parts == ["feed"]:
            await self._feed(flow)  # the flow now streams from the feed: no response set here
            return None
        try:
            html = await self._page(parts, query)
        except GatewayError as e:  # e.g. a filter that is not a number: said on a page, not as JSON
            return page(pages.layout("Error", f'<p class=error>{pages.e(e.message)}</p>', s.csrf), e.status)
        if html is None:
            return page(pages.layout("Not found", "<p>No such console page.</p>", s.csrf), 404)
        return page(pages.layout(html[0], html[1], s.csrf, html[2]))

    async def _page(self, parts: list[str], q: dict[str, str]) -> tuple[str, str, str] | None:
        settings = self.rt.settings
        match parts:
            case [""]:
                return "Dashboard", await self._dashboard(), "/ui/"
            case ["providers"]:
                described = await self._described()
                return "Providers", pages.providers(described, sorted(PROVIDER_TYPES)), "/ui/providers"
            case ["providers", "new"]:
                kind = q.get("type", "")
                if kind not in PROVIDER_MODELS:
                    return None
                return f"Add provider: {kind}", self._form(kind, None), "/ui/providers"
            case ["providers", pid, "edit"] if settings.provider(pid) is not None:
                from llmgate.operations import config_edit

                values = config_edit.get_provider(self.admin.config_path(), pid)
                return f"Edit {pid}", self._form(values["type"], values), "/ui/providers"
            case ["requests"]:
                rows = (await self.admin.history({**q, "limit": q.get("limit") or "100"}))["requests"]
                return "Requests", pages.requests_page(rows, q), "/ui/requests"
            case ["requests", rid] if rid.isdigit():
                row = await self.admin._read(queries.detail, int(rid))
                return (f"Request {rid}", pages.request_detail(row), "/ui/requests") if row else None
            case ["usage"]:
                by = q.get("by") or ""
                by = by if by in pages.USAGE_BY else "provider"
                rows = (await self.admin.stats({"by": by}))["rows"]
                days = (await self.admin.stats({"by": "day"}))["rows"]
                return "Usage", pages.usage(by, rows, days), "/ui/usage"
            case ["config"]:
                return "Config", self._config(), "/ui/config"
            case ["logins"]:
                return "Subscription logins", self._logins(), "/ui/logins"
        return None

    async def _login_action(self, req: http.Request, parts: list[str]) -> http.Response:
        """POST /ui/logins/<id> starts the entry's login; /ui/logins/<id>/credentials writes an uploaded file."""
        body = self.admin._json(request_body(req, self.rt.settings.server.limits))
        if parts[1:] == ["credentials"]:
            req.content = b'{"credentials": "[redacted]"}'  # tokens never reach a flow view or saved flow
            return json_response(200, await self.logins.upload(self.rt, parts[0], body))
        if len(parts) > 1:
            raise GatewayError(404, "No such console action.", code="not_found")
        return json_response(202, await self.logins.start(self.rt, parts[0], body))

    def _found(self) -> dict[str, dict[str, Any]]:
        """What `auto: true` added, each as the proxy.yaml entry that keeps it (keys as ${VAR})."""
        report = self.rt.first_run
        return {f.entry["id"]: first_run.persistent_entry(f) for f in (report.added if report else [])}

    def _keep_found(self, req: http.Request, pid: str) -> dict[str, Any]:
        """Write a provider `auto: true` found into proxy.yaml, with the edits sent (id, base_url, models...)."""
        from llmgate.operations import config_edit

        found = self._found().get(pid)
        if found is None:
            raise GatewayError(404, f"`auto: true` found no provider '{pid}' that proxy.yaml lacks.",
                               code="provider_not_found")
        edits = self.admin._json(request_body(req, self.rt.settings.server.limits))
        _no_env_references(edits)  # only the key variable the gateway itself read is written as a reference
        if edits.get("type", found["type"]) != found["type"]:
            raise GatewayError(400, "type: a found provider keeps its type.", code="invalid_request", param="type")
        entry = {**found, **{k: v for k, v in edits.items() if v is not None}}
        _strict(entry)
        return self.admin._edit(lambda path: config_edit.add_provider(path, entry), entry["id"])

    def _form(self, kind: str, values: dict[str, Any] | None) -> str:
        model = PROVIDER_MODELS[kind]
        required = {"id"} | ({"base_url"} if not PROVIDER_TYPES[kind].default_base_url else set())
        return pages.provider_form(kind, model.model_json_schema(), values, required)

    async def _described(self, report: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """AdminApi.describe of each provider, with /health's state (which knows a subscription
        entry without a usable account cannot serve)."""
        if report is None:
            report = json.loads((await health(self.rt, self.rt.settings)).content or b"{}")
        state = {p["id"]: p["state"] for p in report["providers"]}
        return [{**d, "state": state.get(d["id"], d["state"])}
                for d in (self.admin.describe(p) for p in self.rt.settings.providers)]

    async def _dashboard(self) -> str:
        report = json.loads((await health(self.rt, self.rt.settings)).content or b"{}")
        now = time.time()
        try:
            timeline = await self.admin._read(queries.timeline, now - HOUR, MINUTE, int(HOUR / MINUTE))
        except GatewayError:  # the request log is off or unreadable: the charts stay empty
            timeline = []
        timeline = timeline or [(0, 0, 0)] * int(HOUR / MINUTE)
        return (pages.dashboard(report, await self._described(report), timeline, MINUTE)
                + pages.auto_section(report.get("auto"), self._found()))

    def _config(self) -> str:
        path = os.path.abspath(self.admin.config_path())
        try:
            text = Path(path).read_text(errors="replace")[: 1 << 20]
        except OSError as e:
            text = f"(cannot read: {e.strerror})"
        watch = ctx.master.addons.get("configwatch")
        return (pages.config(path, queries.mask_config(text, self.rt.secrets.current().text),
                             getattr(watch, "last_reload", None))
                + pages.auto_section(self.rt.first_run.health() if self.rt.first_run else None, self._found()))

    def _logins(self) -> str:
        entries = []
        for p in self.rt.settings.providers:
            kind = PROVIDER_TYPES[p.type]
            if kind.accounts:
                d = self.admin.describe(p)
                for a, acc in zip(d["accounts"], self.rt.account_set(p, kind).accounts, strict=False):
                    a.update(logins.account_times(acc))
                entries.append(d)
        return pages.logins(entries, self.logins.status, logins.OVERRIDES, logins.SHAPES)

    async def _admin_api(self, flow: http.HTTPFlow) -> http.Response:
        """/ui/api/<rest> is /admin/<rest>, for this session (the admin API itself takes keys, not cookies)."""
        req = flow.request
        saved = req.path
        req.path = "/admin/" + saved.removeprefix("/ui/api/")
        try:
            return await self.admin.handle(flow)
        finally:
            req.path = saved

    async def _feed(self, flow: http.HTTPFlow) -> None:
        accounting = ctx.master.addons.get("accounting")
        if accounting is not None and self._subscribed is not accounting:
            accounting.subscribers.append(self.feeds.publish)
            self._subscribed = accounting
        feed = self.feeds.new()
        if feed is None:
            raise GatewayError(503, "Too many live feeds are open; close a console tab.", code="too_many_feeds")
        port = await self.rt.relay.ensure_started()
        self._feeding[flow.id] = (feed, point_at_relay(flow.request, port, self.rt.relay.register(feed)))
        return None

