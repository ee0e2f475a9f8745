"""The management API under /admin/ (described in docs/admin-openapi.yaml), and /metrics.

client_auth has already checked the caller (loopback, or an admin key). Provider, default
provider and model-name changes go to proxy.yaml through llmgate/config_edit (comments kept,
written atomically) and are applied at once. History and stats read the request log in a
worker thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import parse_qsl, unquote

import yaml
from mitmproxy import http

from converters.shapes import string
from llmgate.errors import GatewayError
from llmgate.operations import request_log
from llmgate.providers import PROVIDER_TYPES
from llmgate.request_path.answers import json_response
from llmgate.request_path.provider_call import CallRequest, ProviderCall
from llmgate.request_path.routing import Route
from llmgate.settings import PROVIDER_ENTRY, ConfigError, ProviderSettings, entry_error

OPENAPI = Path(__file__).resolve().parents[3] / "docs" / "admin-openapi.yaml"
VERSION = "0.1.0"
_PROVIDER = re.compile(r"^/admin/providers/([^/]+)(?:/(enable|disable|test))?$")
_MODEL = re.compile(r"^/admin/models/([^/]+)(?:/(link|unlink))?$")
_REQUEST = re.compile(r"^/admin/requests/([^/]+)$")


def _require_json(req: http.Request) -> None:
    """Writes must say they are JSON, also without a body: a web page can send that content
    type to another origin only after a CORS preflight, which this API never grants (a
    text/plain or form POST, or a bodiless one, needs none)."""
    media = (req.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise GatewayError(415, "Admin API writes (POST, PATCH, DELETE) need 'Content-Type: application/json', "
                           "also without a body.", code="unsupported_media_type")


def _no_env_references(body: dict[str, Any]) -> None:
    """Only proxy.yaml edited by hand may read the environment: through the API, ${VAR} would let
    whoever reaches it send any variable of the gateway's to a host of their choosing."""
    from llmgate.operations.config_edit import env_references

    fields = env_references(body)
    if fields:
        raise GatewayError(400, f"{fields[0]}: ${{...}} environment references are not accepted through the admin "
                           "API (it would expand them from the gateway's environment); send the value itself, or "
                           "write the reference into proxy.yaml by hand.", code="invalid_request", param=fields[0])


def _json_ints(v: Any) -> Any:
    """2.0 as JSON means it: the integer 2 (which strict validation would refuse as a float)."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, dict):
        return {k: _json_ints(x) for k, x in v.items()}
    return [_json_ints(x) for x in v] if isinstance(v, list) else v


def _strict(entry: dict[str, Any]) -> None:
    """JSON from the API is checked strictly (no 0 for false, no number for a name); the YAML
    file keeps its usual rules."""
    from pydantic import ValidationError

    try:
        # ${VAR} written by hand in the file is filled in when it loads: stand-ins meanwhile
        checked = {k: ("http://interpolated.invalid" if k.endswith("url") else "interpolated")
                   if isinstance(v, str) and "${" in v else _json_ints(v)
                   for k, v in entry.items() if v is not None}
        PROVIDER_ENTRY.validate_python(checked, strict=True)
    except ValidationError as e:
        loc, msg = entry_error(e.errors()[0])
        field = ".".join(str(x) for x in loc)
        raise GatewayError(400, f"{field}: {msg}", code="invalid_request", param=field or None) from None


def _target(t: Any) -> TypeGuard[str]:
    """A model name's target: "provider/model" or a model name ("provider/" names no model)."""
    return isinstance(t, str) and bool(t) and not t.endswith("/")


def _sentence(e: Exception) -> str:
    text = str(e)
    return f"{text[:1].upper()}{text[1:]}."


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    if not value:
        raise GatewayError(400, "since is empty.", code="invalid_request", param="since")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise GatewayError(400, f"since must be an ISO-8601 time, not {value!r}.", code="invalid_request",
                           param="since") from None


class AdminApi:
    def __init__(self, rt: Any, config_path: Callable[[], str], reload: Callable[[], None]):
        self.rt = rt
        self.config_path = config_path
        self.reload = reload

    async def handle(self, flow: http.HTTPFlow) -> http.Response:
        method = flow.request.method
        path = flow.request.path.split("?", 1)[0].rstrip("/")
        query = dict(parse_qsl(flow.request.path.partition("?")[2], keep_blank_values=True))

        def body() -> dict[str, Any]:  # read by write routes only, so 404 and 405 come first
            _require_json(flow.request)
            return self._json(flow.request.content)

        routes = {
            ("GET", "/admin/status"): lambda: self.status(),
            ("GET", "/admin/providers"): lambda: {"providers": [self.describe(p) for p in self.rt.settings.providers]},
            ("POST", "/admin/providers"): lambda: self.add(body()),
            ("POST", "/admin/reset"): lambda: self.reset(body()),
            ("POST", "/admin/default"): lambda: self.set_default(body()),
            ("POST", "/admin/reload"): lambda: self.reload_now(body()),
            ("GET", "/admin/models"): lambda: {"models": self._models()},
            ("POST", "/admin/models"): lambda: self.add_model(body()),
            ("GET", "/admin/requests"): lambda: self.history(query),
            ("GET", "/admin/stats"): lambda: self.stats(query),
            ("GET", "/admin/keys"): lambda: self.keys(),
            ("GET", "/admin/openapi.json"): lambda: self.openapi(),
        }
        handler = routes.get((method, path)) or self._item_route(method, path, body)
        if handler is None:
            known = {p for _, p in routes}
            if path in known:
                allowed = ", ".join(sorted(m for m, p in routes if p == path))
                raise GatewayError(405, f"Method {method} is not allowed on {path}.", code="method_not_allowed",
                                   headers={"Allow": allowed})
            raise GatewayError(404, f"Unknown admin route: {method} {path}.", code="unknown_route")
        result = handler()
        if asyncio.iscoroutine(result):
            result = await result
        status = 201 if method == "POST" and path in ("/admin/providers", "/admin/models") else 200
        return json_response(status, result)

    def _item_route(self, method: str, path: str, body: Callable[[], dict[str, Any]]) -> Callable[[], Any] | None:
        """/admin/providers/{id}[/action], /admin/models/{name}[/action], /admin/requests/{id}."""
        if m := _PROVIDER.match(path):
            return self._provider_route(method, m.group(1), m.group(2), body)
        if m := _MODEL.match(path):
            return self._model_route(method, unquote(m.group(1)), m.group(2), body)
        if m := _REQUEST.match(path):
            if method != "GET":
                raise GatewayError(405, f"Method {method} is not allowed here.", code="method_not_allowed",
                                   headers={"Allow": "GET"})
            return lambda: self.request(m.group(1))
        return None

    @staticmethod
    def _json(raw: bytes | None) -> dict[str, Any]:
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise GatewayError(400, "The request body is not valid JSON.", code="invalid_request") from None
        if not isinstance(data, dict):
            raise GatewayError(400, "The request body must be a JSON object.", code="invalid_request")
        return data

    # --- status and providers ------------------------------------------------

    async def status(self) -> dict[str, Any]:
        logged = await self._read(request_log.count) if self.rt.request_log is not None else 0
        return {"version": VERSION, "uptime_s": round(time.time() - self.rt.started, 3),
                "config": os.path.abspath(self.config_path()), "providers": len(self.rt.settings.providers),
                "request_log": self.rt.request_log.where if self.rt.request_log is not None else None,
                "requests_logged": logged}

    def describe(self, p: ProviderSettings) -> dict[str, Any]:
        kind = PROVIDER_TYPES[p.type]
        st = self.rt.catalog.status(p)
        models = self.rt.catalog.models(p)
        state = "disabled" if not p.enabled else "ok" if models else "unavailable" if "error" in st else "unknown"
        accounts = []
        if kind.accounts:
            for a in self.rt.account_set(p, kind).current():
                usable = a.usable()
                accounts.append({"name": a.name, "usable": usable, "needs_login": a.needs_login})
        now = time.time()
        cooling = [{"account": acct or None, "model": model or None, "until": _iso(c.until), "reason": c.reason}
                   for (pid, acct, model), c in list(self.rt.pool.cooldowns.items()) if pid == p.id and c.until > now]
        return {"id": p.id, "type": p.type, "enabled": p.enabled, "base_url": p.base_url,
                "models": list(models) if models is not None else None, "api_key": "set" if p.api_key else None,
                "state": state, "accounts": accounts, "cooling": cooling}

    def _write(self, change: Callable[[str], Any], pid: str | None = None) -> Any:
        """An edit of proxy.yaml (config_edit), applied at once."""
        from llmgate.operations import config_edit as ce

        try:
            out = change(self.config_path())
        except ConfigError as e:
            raise GatewayError(400, str(e), code="invalid_config") from None
        except ce.DuplicateProvider:
            raise GatewayError(409, f"A provider with id '{pid}' exists already.", code="duplicate_provider") from None
        except ce.UnknownProvider:
            raise GatewayError(404, f"Unknown provider '{pid}'.", code="provider_not_found") from None
        except ce.DuplicateModel as e:
            raise GatewayError(409, _sentence(e), code="duplicate_model") from None
        except ce.UnknownModel as e:
            raise GatewayError(404, _sentence(e), code="model_not_found") from None
        except ce.LastTarget as e:
            raise GatewayError(409, _sentence(e), code="last_target") from None
        self.reload()
        return out

    def _edit(self, change: Callable[[str], Any], pid: str) -> dict[str, Any]:
        self._write(change, pid)
        p = self.rt.settings.provider(pid)
        return {"provider": self.describe(p)} if p is not None else {"removed": pid}

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        from llmgate.operations import config_edit

        pid = body.get("id")
        if not isinstance(pid, str) or not pid:
            raise GatewayError(400, "A provider needs an id.", code="invalid_request", param="id")
        _no_env_references(body)
        _strict(body)
        entry = {k: v for k, v in body.items() if v is not None}  # null: not given
        return self._edit(lambda path: config_edit.add_provider(path, entry), pid)

    def _provider_route(self, method: str, pid: str, action: str | None,
                        read: Callable[[], dict[str, Any]]) -> Callable[[], Any]:
        from llmgate.operations import config_edit

        if self.rt.settings.provider(pid) is None:
            raise GatewayError(404, f"Unknown provider '{pid}'.", code="provider_not_found")
        if (method, action) == ("GET", None):
            return lambda: {"provider": self.describe(self.rt.settings.provider(pid))}
        if (method, action) == ("PATCH", None):
            body = read()
            for key in ("id", "type", "base_url"):
                if key in body and body[key] is None:
                    raise GatewayError(400, f"{key} cannot be removed.", code="invalid_request", param=key)
            _no_env_references(body)
            current = config_edit.get_provider(self.config_path(), pid)
            other = config_edit.field_of_other_kind(current, body)
            if other:  # 409: as below, the entry's stored type or field is half the cause
                kind = body.get("type") or current.get("type")
                raise GatewayError(409, f"A provider of type {kind} takes no {other}: change type and {other} in "
                                   f"the same change ({other}: null drops it).", code="field_not_for_type",
                                   param=other)
            _strict({k: v for k, v in {**current, **body}.items() if v is not None})
            left = config_edit.secrets_left_behind(current, body)
            if left:
                # 409: refused for the entry's current state, not for the change itself
                raise GatewayError(409, f"This change sends the provider's requests to a new host; its stored "
                                   f"{' and '.join(left)} would not go along: give them again in the same change "
                                   "(null drops them).", code="secret_not_carried", param=left[0])
            new_id = string(body.get("id"), pid)
            return lambda: self._edit(lambda path: config_edit.update_provider(path, pid, body), new_id)
        if (method, action) == ("DELETE", None):
            read()
            return lambda: self._edit(lambda path: config_edit.remove_provider(path, pid), pid)
        if method == "POST" and action in ("enable", "disable"):
            read()
            return lambda: self._edit(lambda path: config_edit.set_enabled(path, pid, action == "enable"), pid)
        if (method, action) == ("POST", "test"):
            body = read()
            if "model" in body and not (isinstance(body["model"], str) and body["model"]):
                raise GatewayError(400, "model must be a non-empty string.", code="invalid_request", param="model")
            return lambda: self.test(pid, body.get("model"))
        allowed = "POST" if action else "GET, PATCH, DELETE"
        raise GatewayError(405, f"Method {method} is not allowed here.", code="method_not_allowed",
                           headers={"Allow": allowed})

    async def test(self, pid: str, model: Any) -> dict[str, Any]:
        """A tiny live request (a few tokens) straight to the provider."""
        from llmgate.request_path.client_apis import OPENAI_CHAT
        from llmgate.request_path.wire import ReasoningMemory, plan, serving_kind

        p = self.rt.settings.provider(pid)
        kind = PROVIDER_TYPES[p.type]
        started = time.monotonic()
        if model is not None and (not isinstance(model, str) or not model):
            raise GatewayError(400, "model must be a non-empty string.", code="invalid_request", param="model")
        if model is None:
            if self.rt.catalog.stale(p):
                await self.rt.catalog.refresh(p)
            listed = self.rt.catalog.models(p) or []
            model = listed[0] if listed else None
        out: dict[str, Any] = {"ok": False, "provider": pid, "model": model, "status": None, "error": None}
        if model is None:
            out.update(error="the provider lists no models; name one", latency_ms=0.0)
            return out
        # 16: the least a Responses upstream accepts (max_output_tokens)
        data = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 16}
        kind = serving_kind(kind, self.rt.catalog.info, p, model, OPENAI_CHAT.wire)  # Copilot: per model
        call = None
        try:
            pl = plan(OPENAI_CHAT, kind, p, model, model, data, json.dumps(data).encode(), False, ReasoningMemory())
            # the same call as real traffic (hosts, refresh on 401, accounts), on any usable account
            call = ProviderCall(self.rt, Route(p, model, "test"), kind, CallRequest(pl.url, pl.error, pl.body,
                                                                                    pl.accept, "test"))
            resp = await call.send()
            assert resp is not None  # None only when the client left, and a test passes no `gone`
            await call.read(resp, 1 << 16, cut=True)
            out["status"], out["ok"] = resp.status, True
        except GatewayError as e:  # the upstream's own status when it answered
            out["status"] = call.ex.status if call is not None and call.ex.status is not None else e.status
            out["error"] = e.message
        except Exception as e:  # a test reports, it does not fail
            out["error"] = f"{type(e).__name__}: {e}"
        finally:
            if call is not None:
                call.release()
        out["latency_ms"] = round((time.monotonic() - started) * 1000, 2)
        return out

    def reset(self, body: dict[str, Any]) -> dict[str, Any]:
        provider, account = body.get("provider"), body.get("account")
        if not isinstance(provider, str):
            raise GatewayError(400, 'Name a configured provider: {"provider": "<id>"}.', code="invalid_request",
                               param="provider")
        if self.rt.settings.provider(provider) is None:
            raise GatewayError(404, f"Unknown provider '{provider}'.", code="provider_not_found", param="provider")
        n = self.rt.pool.reset(provider, account if isinstance(account, str) else None)
        return {"provider": provider, "account": account, "cooldowns_ended": n}

    # --- routing: default provider, reload, model names ---------------------------

    def set_default(self, body: dict[str, Any]) -> dict[str, Any]:
        from llmgate.operations import config_edit

        provider = body.get("provider", "")
        if provider is not None and not (isinstance(provider, str) and provider):
            raise GatewayError(400, 'Name a configured provider: {"provider": "<id>"} (null: no default).',
                               code="invalid_request", param="provider")
        _no_env_references(body)
        if provider is not None and self.rt.settings.provider(provider) is None:
            raise GatewayError(404, f"Unknown provider '{provider}'.", code="provider_not_found", param="provider")
        self._write(lambda path: config_edit.set_default(path, provider))
        return {"default": self.rt.settings.routing.default, "config": os.path.abspath(self.config_path())}

    def reload_now(self, _body: dict[str, Any]) -> dict[str, Any]:
        """Re-read proxy.yaml now; a config that does not load leaves the last good one serving."""
        try:
            self.reload()
            error = None
        except ConfigError as e:
            error = str(e)
        except (OSError, sqlite3.Error) as e:  # the state or log file named in it cannot be opened
            error = f"{type(e).__name__}: {e}"
        return {"applied": error is None, "error": error, "config": os.path.abspath(self.config_path()),
                "providers": len(self.rt.settings.providers)}

    def _models(self) -> list[dict[str, Any]]:
        return [{"name": k, "targets": [v] if isinstance(v, str) else list(v)}
                for k, v in self.rt.settings.routing.aliases.items()]

    def _model(self, name: str) -> dict[str, Any]:
        found = next((m for m in self._models() if m["name"] == name), None)
        if found is None:
            raise GatewayError(404, f"No model named '{name}'.", code="model_not_found")
        return found

    def add_model(self, body: dict[str, Any]) -> dict[str, Any]:
        from llmgate.operations import config_edit

        name, targets = body.get("name"), body.get("targets")
        extra = sorted(set(body) - {"name", "targets"})
        if extra:
            raise GatewayError(400, f"{extra[0]}: not a field of a model.", code="invalid_request", param=extra[0])
        if not isinstance(name, str) or not name:
            raise GatewayError(400, "A model needs a name.", code="invalid_request", param="name")
        if not (isinstance(targets, list) and targets and all(map(_target, targets))):
            raise GatewayError(400, 'targets must be a non-empty list of "provider/model" names.',
                               code="invalid_request", param="targets")
        _no_env_references(body)
        return {"model": self._write(lambda path: config_edit.add_model(path, name, targets))}

    def _model_route(self, method: str, name: str, action: str | None,
                     read: Callable[[], dict[str, Any]]) -> Callable[[], Any]:
        from llmgate.operations import config_edit

        self._model(name)  # 404 first
        if (method, action) == ("GET", None):
            return lambda: {"model": self._model(name)}
        if (method, action) == ("DELETE", None):
            read()
            return lambda: {"removed": self._write(lambda path: config_edit.remove_model(path, name))["name"]}
        if method == "POST" and action in ("link", "unlink"):
            body = read()
            target = body.get("target")
            if not _target(target):
                raise GatewayError(400, 'Name a target: {"target": "provider/model"}.', code="invalid_request",
                                   param="target")
            _no_env_references(body)
            edit = config_edit.link_model if action == "link" else config_edit.unlink_model
            return lambda: {"model": self._write(lambda path: edit(path, name, target))}
        raise GatewayError(405, f"Method {method} is not allowed here.", code="method_not_allowed",
                           headers={"Allow": "POST" if action else "GET, DELETE"})

    # --- request log --------------------------------------------------------------

    async def _read(self, query: Callable[..., Any], *args: Any) -> Any:
        log = self.rt.request_log
        if log is None:
            raise GatewayError(404, "The request log is off (log.enabled: false).", code="request_log_off")

        empty: Any = 0 if query is request_log.count else None if query is request_log.detail else []

        try:  # the SQLite file or PostgreSQL (log.database)
            return await asyncio.to_thread(lambda: log.read(query, *args, empty=empty))
        except request_log.Unreadable as e:
            raise GatewayError(503, f"The request log cannot be read: {e}.", code="request_log_unavailable") from None

    async def history(self, q: dict[str, str]) -> dict[str, Any]:
        try:
            status = int(q["status"]) if q.get("status") else None
            limit = int(q.get("limit") or 50)
        except ValueError:
            raise GatewayError(400, "status and limit must be integers.", code="invalid_request") from None
        if not 1 <= limit <= 1000:
            raise GatewayError(400, "limit must be between 1 and 1000.", code="invalid_request", param="limit")
        if status is not None and not 0 <= status <= 999:  # an HTTP status (SQLite takes no int past 64 bits)
            raise GatewayError(400, "status must be an HTTP status (0-999).", code="invalid_request", param="status")
        rows = await self._read(request_log.history, q.get("provider"), q.get("model"), q.get("key"), status,
                                _since(q.get("since")), limit)
        return {"requests": rows}

    async def request(self, rid: str) -> dict[str, Any]:
        row = await self._read(request_log.detail, int(rid)) if re.fullmatch(r"[0-9]{1,18}", rid) else None
        if not row:
            raise GatewayError(404, f"No request with id {rid} in the request log.", code="request_not_found")
        return {"request": row}

    async def stats(self, q: dict[str, str]) -> dict[str, Any]:
        by = q.get("by") or "provider"
        if by not in request_log.STATS_BY:
            raise GatewayError(400, f"by must be one of {', '.join(request_log.STATS_BY)}.", code="invalid_request",
                               param="by")
        return {"by": by, "rows": await self._read(request_log.stats, by, _since(q.get("since")))}

    async def keys(self) -> dict[str, Any]:
        rows = {r["key"]: r for r in await self._read(request_log.stats, "key")}
        out = []
        for _, kid in self.rt.settings.server.key_ids():
            r = rows.get(kid, {})
            out.append({"name": kid, "id": kid, "requests": r.get("requests", 0),
                        "tokens": r.get("prompt_tokens", 0) + r.get("completion_tokens", 0)})
        return {"keys": out}

    def openapi(self) -> dict[str, Any]:
        try:
            return yaml.safe_load(OPENAPI.read_text())
        except OSError:
            raise GatewayError(404, "docs/admin-openapi.yaml is not installed.", code="not_found") from None
