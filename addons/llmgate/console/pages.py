"""The console's HTML: plain functions from data to markup (every value escaped here)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from llmgate.console.charts import bars

NAV = (("/ui/", "Dashboard"), ("/ui/providers", "Providers"), ("/ui/logins", "Logins"),
       ("/ui/requests", "Requests"), ("/ui/usage", "Usage"), ("/ui/config", "Config"))


def e(v: Any) -> str:
    return escape("" if v is None else str(v))


def layout(title: str, body: str, csrf: str = "", active: str = "") -> str:
    nav = "".join(f'<a href="{href}"{" class=active" if href == active else ""}>{label}</a>' for href, label in NAV)
    logout = ('<button class="link" data-post="/ui/logout" data-next="/ui/login">Log out</button>'
              if csrf else "")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            f'<meta name="csrf-token" content="{e(csrf)}"><title>{e(title)} · llmgate</title>'
            '<link rel=stylesheet href="/ui/static/console.css"><script src="/ui/static/console.js" defer></script>'
            f'</head><body><header><strong>llmgate</strong><nav>{nav}</nav>{logout}</header>'
            f'<main><h1>{e(title)}</h1><div id="message" role="status"></div>{body}</main></body></html>')


def table(head: Iterable[str], rows: Iterable[Iterable[str]], empty: str = "none", id_: str = "") -> str:
    """Cells are markup already (escape with e())."""
    head, rows = tuple(head), list(rows)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    if not rows:
        body = f'<tr class="empty"><td colspan="{len(head)}">{e(empty)}</td></tr>'
    attr = f' id="{id_}"' if id_ else ""
    heads = "".join(f"<th>{e(h)}</th>" for h in head)
    return f"<table{attr}><thead><tr>{heads}</tr></thead><tbody>{body}</tbody></table>"


def ends_in(until_iso: str, now: float | None = None) -> str:
    left = datetime.fromisoformat(until_iso).timestamp() - (time.time() if now is None else now)
    if left <= 0:
        return "now"
    m, s = divmod(int(left), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def post_button(label: str, url: str, body: dict | None = None, confirm: str = "", target: str = "") -> str:
    attrs = f' data-post="{e(url)}" data-body="{e(json.dumps(body or {}))}"'
    attrs += f' data-confirm="{e(confirm)}"' if confirm else ""
    attrs += f' data-target="{e(target)}"' if target else ""
    return f"<button{attrs}>{e(label)}</button>"


# --- dashboard ----------------------------------------------------------------------------

def dashboard(health: dict[str, Any], providers: list[dict[str, Any]],
              timeline: list[tuple[int, int, int]], step: float) -> str:
    routable = sorted(m for m, v in health.get("models", {}).items() if v["routable"])
    n = sum(r[0] for r in timeline)
    errors = sum(r[1] for r in timeline)
    cards = (f'<section class="cards"><div><b>{len(routable)}</b> routable models</div>'
             f'<div><b>{n / (len(timeline) * step or 1):.3f}</b> requests/s (last hour)</div>'
             f'<div><b>{(errors / n * 100) if n else 0:.1f}%</b> errors</div>'
             f'<div><b>{sum(r[2] for r in timeline)}</b> tokens</div></section>')
    labels = [f"-{len(timeline) - i}m" for i in range(len(timeline))]
    minutes = list(zip(labels, timeline, strict=True))
    charts = (bars("Requests per minute", [(lb, r[0]) for lb, r in minutes])
              + bars("Error rate", [(lb, r[1] / r[0] * 100 if r[0] else 0) for lb, r in minutes], "%")
              + bars("Tokens per minute", [(lb, r[2]) for lb, r in minutes]))
    rows = [[f'<a href="/ui/providers#{e(p["id"])}">{e(p["id"])}</a>', e(p["type"]),
             f'<span class="state {e(p["state"])}">{e(p["state"])}</span>',
             accounts_cell(p["accounts"]), cooling_cell(p),
             post_button("Reset", "/ui/api/reset", {"provider": p["id"]})]
            for p in providers]
    models = ", ".join(f"<code>{e(m)}</code>" for m in routable) or "none"
    return (cards + f'<section class=charts>{charts}</section><h2>Providers</h2>'
            + table(("provider", "type", "state", "accounts", "cooldowns", ""), rows, "no providers configured")
            + f"<h2>Routable models</h2><p>{models}</p>")


def accounts_cell(accounts: list[dict[str, Any]]) -> str:
    return "<br>".join(f'{e(a["name"])}: {"usable" if a["usable"] else e(a["needs_login"] or "not usable")}'
                       for a in accounts) or "-"


def cooling_cell(p: dict[str, Any]) -> str:
    out = []
    for c in p["cooling"]:
        who = " / ".join(e(x) for x in (c["account"], c["model"]) if x) or "whole entry"
        body = {"provider": p["id"], **({"account": c["account"]} if c["account"] else {})}
        out.append(f'<span class="cooldown">{who}: {e(c["reason"])}, ends in {ends_in(c["until"])}</span> '
                   + post_button("Reset", "/ui/api/reset", body))
    return "<br>".join(out) or "-"


# --- providers ----------------------------------------------------------------------------

def providers(described: list[dict[str, Any]], kinds: list[str]) -> str:
    rows = []
    for p in described:
        pid = quote(p["id"], safe="")
        toggle = "disable" if p["enabled"] else "enable"
        rows.append([
            f'<span id="{e(p["id"])}">{e(p["id"])}</span>', e(p["type"]), e(p["base_url"]),
            f'<span class="state {e(p["state"])}">{e(p["state"])}</span>',
            e(", ".join(p["models"] or []) or "-"),
            f'<a class=button href="/ui/providers/{pid}/edit">Edit</a>'
            + post_button(toggle.capitalize(), f"/ui/api/providers/{pid}/{toggle}")
            + post_button("Test", f"/ui/api/providers/{pid}/test", target=f"test-{p['id']}")
            + f'<button data-post="/ui/api/providers/{pid}" data-method="DELETE" '
              f'data-confirm="Remove provider {e(p["id"])} from proxy.yaml?">Remove</button>'
            + f'<output id="test-{e(p["id"])}"></output>'])
    add = "".join(f'<a class=button href="/ui/providers/new?type={quote(k)}">{e(k)}</a>' for k in kinds)
    return (table(("id", "type", "base_url", "state", "models", ""), rows, "no providers configured")
            + f"<h2>Add a provider</h2><p class=kinds>{add}</p>")


def provider_form(kind: str, schema: dict[str, Any], values: dict[str, Any] | None, required: set[str]) -> str:
    """A form from the kind's config schema (JSON Schema of its settings model). `values`: an
    entry being edited (its secret fields are never filled in)."""
    editing = values is not None
    values = values or {}
    fields = []
    for name, prop in schema["properties"].items():
        if name == "type":
            continue
        kind_of = field_type(prop)
        secret = is_secret(name)
        value = "" if secret else values.get(name)
        label = f'<label for="f-{name}">{e(name)}{" *" if name in required else ""}</label>'
        attrs = f'id="f-{name}" name="{name}" data-type="{kind_of}"'
        if kind_of == "bool":
            checked = " checked" if values.get(name, prop.get("default")) else ""
            control = f'<input type=checkbox {attrs}{checked}>'
        elif kind_of in ("list", "json"):
            shown = "\n".join(value) if kind_of == "list" and value else json.dumps(value, indent=1) if value else ""
            control = f"<textarea {attrs} rows=2>{e(shown)}</textarea>"
        else:
            typ = "password" if secret else "number" if kind_of == "number" else "text"
            default = prop.get("default")
            hint = (' placeholder="unchanged"' if secret and values.get(name)
                    else f' placeholder="default: {e(default)}"' if default is not None and not editing else "")
            control = f'<input type={typ} {attrs} value="{e(value)}"{hint} autocomplete=off>'
        help_ = prop.get("description") or {"list": "one per line", "json": "JSON"}.get(kind_of, "")
        fields.append(f"<div class=field>{label}{control}<small>{e(help_)}</small></div>")
    if editing:
        url, method, title = f"/ui/api/providers/{quote(str(values['id']), safe='')}", "PATCH", "Save"
    else:
        url, method, title = "/ui/api/providers", "POST", "Add"
    return (f'<form class=provider data-json data-action="{url}" data-method="{method}" data-next="/ui/providers"'
            f'{" data-changed-only" if editing else ""}>'
            f'<input type=hidden name=type value="{e(kind)}" data-type="text">{"".join(fields)}'
            f"<button type=submit>{title}</button></form>")


def field_type(prop: dict[str, Any]) -> str:
    types = {s.get("type") for s in prop.get("anyOf", [prop])} - {"null"}
    if types == {"string"}:
        return "text"
    if types <= {"integer", "number"} and types:
        return "number"
    if types == {"boolean"}:
        return "bool"
    if types == {"array"}:
        return "list"
    return "json"


def is_secret(name: str) -> bool:
    return name == "api_key" or any(w in name for w in ("secret", "password")) or name.endswith("_token")


# --- requests -----------------------------------------------------------------------------

REQUEST_COLUMNS = ("time", "key", "api", "endpoint", "model", "provider", "account", "status", "latency ms",
                   "tokens", "error")


def request_cells(r: dict[str, Any], link: bool = True) -> list[str]:
    tokens = f'{r.get("prompt_tokens")}+{r.get("completion_tokens")}' if r.get("prompt_tokens") is not None else "-"
    first = f'<a href="/ui/requests/{int(r["id"])}">{when(r["ts"])}</a>' if link and r.get("id") else when(r["ts"])
    return [first, *(e(r.get(k) or "-") for k in ("key_id", "inbound", "endpoint", "model", "provider", "account")),
            f'<span class="status s{str(r.get("status"))[:1]}">{e(r.get("status"))}</span>',
            e(r.get("latency_ms")), e(tokens), e(r.get("error") or "")]


def requests_page(rows: list[dict[str, Any]], q: dict[str, str]) -> str:
    hints = {"status": "e.g. 429", "since": "ISO time, UTC"}
    inputs = "".join(f'<label>{k} <input name="{k}" value="{e(q.get(k, ""))}" size=12 '
                     f'placeholder="{hints.get(k, "")}"></label>'
                     for k in ("provider", "model", "key", "status", "since"))
    form = f'<form class=filters method=get action="/ui/requests">{inputs}<button>Filter</button></form>'
    live = ('<h2>Live feed <small id="feed-state">connecting…</small></h2>'
            + table(REQUEST_COLUMNS, [], "waiting for requests…", id_="feed"))
    return form + live + "<h2>History</h2>" + table(REQUEST_COLUMNS, (request_cells(r) for r in rows),
                                                     "no requests match")


def request_detail(r: dict[str, Any]) -> str:
    fields = "".join(f"<dt>{e(k)}</dt><dd>{e(when(v) if k == 'ts' else v)}</dd>"
                     for k, v in r.items() if k not in ("request_body", "response_body"))
    bodies = ""
    for k in ("request_body", "response_body"):
        if r.get(k) is not None:
            bodies += f"<h2>{e(k.replace('_', ' '))}</h2><pre>{e(bytes(r[k]).decode('utf-8', 'replace'))}</pre>"
    if not bodies:
        bodies = "<p>No bodies captured (log.capture_bodies is off).</p>"
    return f'<p><a href="/ui/requests">← requests</a></p><dl class=detail>{fields}</dl>{bodies}'


# --- usage --------------------------------------------------------------------------------

USAGE_BY = ("provider", "model", "key", "day")


def usage(by: str, rows: list[dict[str, Any]], days: list[dict[str, Any]]) -> str:
    tabs = "".join(f'<a href="/ui/usage?{urlencode({"by": b})}"{" class=active" if b == by else ""}>by {b}</a>'
                   for b in USAGE_BY)
    daily = sorted(days, key=lambda d: d["key"])
    charts = (bars("Requests per day", [(d["key"], d["requests"]) for d in daily])
              + bars("Tokens per day", [(d["key"], d["prompt_tokens"] + d["completion_tokens"]) for d in daily]))
    top = rows[:30]
    by_chart = bars(f"Tokens by {by}", [(str(r["key"]), r["prompt_tokens"] + r["completion_tokens"]) for r in top])
    cols = ("key", "requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
            "avg_latency_ms")
    cells = ([e(r[c] if c != "avg_latency_ms" or r[c] is None else round(r[c], 1)) for c in cols] for r in rows)
    return (f'<section class=charts>{charts}</section><nav class=tabs>{tabs}</nav>{by_chart}'
            + table((by, *cols[1:]), cells, "no requests logged"))


# --- config and logins --------------------------------------------------------------------

def config(path: str, text: str, reload: tuple[float, str | None] | None) -> str:
    if reload is None:
        last = "no reload since start-up"
    else:
        last = f"{when(reload[0])} UTC: " + (f'<span class="state unavailable">failed</span> {e(reload[1])}'
                                            if reload[1] else '<span class="state ok">applied</span>')
    return f"<p>File: <code>{e(path)}</code></p><p>Last reload: {last}</p><pre class=config>{e(text)}</pre>"


def auto_section(auto: dict[str, Any] | None, keep: dict[str, dict[str, Any]]) -> str:
    """What `auto: true` found (/health's "auto"), what it could not reach, the next step; each
    provider found with a form that writes it into proxy.yaml (`keep`: its entry there, keys as ${VAR})."""
    if auto is None:
        return ""
    rows = [[e(f["id"]), e(f["type"]), e(f["from"]), e(f.get("model") or "-"), e(f.get("note") or ""),
             keep_form(keep[f["id"]]) if f["id"] in keep else "-"] for f in auto["found"]]
    out = ("<h2>Found on this machine (auto: true)</h2>"
           + table(("provider", "type", "found in", "model for auto", "note", "keep in proxy.yaml"), rows,
                   "nothing found", "auto-found"))
    if auto["unreachable"]:
        out += "<p>Unreachable:</p><ul class=auto-unreachable>" + "".join(
            f"<li>{e(u)}</li>" for u in auto["unreachable"]) + "</ul>"
    if auto.get("next_step"):
        out += f'<p class="error next-step">Next step: {e(auto["next_step"])}</p>'
    return out


def keep_form(entry: dict[str, Any]) -> str:
    """The found entry, its id, base URL and models editable; saved as a proxy.yaml entry."""
    pid = entry["id"]
    fixed = ", ".join(f"{k}: {v}" for k, v in entry.items() if k not in ("id", "base_url"))  # type; key as ${VAR}
    fields = [("id", pid), *([("base_url", entry["base_url"])] if "base_url" in entry else [])]
    inputs = "".join(f'<div class=field><label for="k-{e(pid)}-{n}">{n}</label><input type=text '
                     f'id="k-{e(pid)}-{n}" name={n} data-type=text value="{e(v)}" autocomplete=off></div>'
                     for n, v in fields)
    inputs += (f'<div class=field><label for="k-{e(pid)}-models">models</label><textarea id="k-{e(pid)}-models" '
               'name=models data-type=list rows=2 placeholder="discovered"></textarea></div>')
    return (f'<form class=keep data-json data-action="/ui/auto/{quote(pid, safe="")}" data-next="/ui/providers">'
            f'<details><summary>Edit and keep</summary><p><code>{e(fixed)}</code></p>{inputs}'
            f'<button type=submit>Keep {e(pid)}</button></details></form>')


LOGIN_LABELS = {"qwen": "Start device login", "gemini-cli": "Log in with Google", "antigravity": "Log in with Google",
                "iflow": "Log in with iFlow"}
LOOPBACK_KINDS = ("gemini-cli", "antigravity", "iflow")
TERMS = {"antigravity": "Antigravity's terms forbid third-party clients; accounts have been suspended for it.",
         "kiro": "Kiro's terms forbid third-party clients; accounts have been suspended for it."}


def logins(entries: list[dict[str, Any]], running: dict[str, dict[str, Any]],
           endpoints: dict[str, tuple[str, ...]], uploads: Iterable[str]) -> str:
    """Each subscription entry: its accounts (expiry, last refresh, cooldowns), the login running
    for it, a form starting one (`endpoints`: the overrides each kind takes) and a file upload."""
    out = []
    for p in entries:
        pid, kind = p["id"], p["type"]
        rows = [[e(a["name"]), "usable" if a["usable"] else e(a["needs_login"]), e(a.get("expiry") or "-"),
                 e(a.get("refreshed") or "-"), account_cooling(p, a["name"])] for a in p["accounts"]]
        login = running.get(pid)
        status = ""
        if login:
            message = e(login["message"])
            if login.get("url"):  # the URL in the message, as a link
                link = f'<a href="{e(login["url"])}" target=_blank rel=noopener>{e(login["url"])}</a>'
                message = message.replace(e(login["url"]), link, 1)
            status = f'<p class="login {e(login["state"])}" id="login-{e(pid)}">{message}</p>'
        waiting = login is not None and login["state"] in ("starting", "waiting")
        start = "" if waiting or kind not in endpoints else login_form(pid, kind, endpoints[kind])
        upload = upload_form(pid) if kind in uploads else ""
        terms = f'<p class=error>{e(TERMS[kind])}</p>' if kind in TERMS else ""
        out.append(f'<section class=login-entry><h2>{e(pid)} <small>{e(kind)}</small></h2>{terms}'
                   + table(("account", "state", "token expires", "last refresh (file written)", "cooldowns"), rows,
                           "no credentials file")
                   + f"{status}{start}{upload}</section>")
    return "".join(out) or "<p>No subscription providers configured (qwen, gemini-cli, antigravity, iflow).</p>"


def account_cooling(p: dict[str, Any], account: str) -> str:
    """The account's own cooldowns and the whole entry's, each with "ends in"."""
    mine = [c for c in p["cooling"] if c["account"] in (account, None)]
    return "<br>".join(f'<span class="cooldown">{e(c["model"] or "all models")}: {e(c["reason"])}, ends in '
                       f'{ends_in(c["until"])}</span>' for c in mine) or "-"


def login_form(pid: str, kind: str, overrides: tuple[str, ...]) -> str:
    """Starts the login; the endpoints (as `llmgate login` takes them) stay folded: for mirrors and tests."""
    url = f"/ui/logins/{quote(pid, safe='')}"
    fields = "".join(f'<div class=field><label for="l-{e(pid)}-{name}">{name}</label>'
                     f'<input type={"number" if name == "port" else "text"} id="l-{e(pid)}-{name}" name={name} '
                     f'data-type={"number" if name == "port" else "text"} autocomplete=off></div>'
                     for name in overrides)
    opens = " data-open" if kind in LOOPBACK_KINDS else ""  # the login page is the whole next step
    return (f'<form class=login-start data-json{opens} data-action="{e(url)}" data-next="/ui/logins">'
            f'<button type=submit>{e(LOGIN_LABELS[kind])}</button>'
            f'<details><summary>Endpoints</summary>{fields}</details></form>')


def upload_form(pid: str) -> str:
    url = f"/ui/logins/{quote(pid, safe='')}/credentials"
    return (f'<form class=upload data-upload data-action="{e(url)}" data-next="/ui/logins">'
            f'<label for="u-{e(pid)}">Credentials file</label> <input type=file id="u-{e(pid)}" accept=".json,'
            f'application/json"> <button type=submit>Upload</button></form>')


def login_page() -> str:
    return ('<form class=login data-json data-action="/ui/login" data-method="POST" data-next="/ui/">'
            '<div class=field><label for=key>Admin key</label>'
            '<input type=password id=key name=key data-type=text autocomplete=current-password autofocus></div>'
            '<button type=submit>Log in</button></form>')
