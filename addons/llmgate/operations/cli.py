"""The llmgate command.

    llmgate login qwen|gemini|antigravity|iflow|codex|copilot   log in a subscription account
    llmgate status                                  the running gateway, or that it is not running
    llmgate providers list|get|add|edit|enable|disable|remove|test
    llmgate set <provider>                          the default provider (routing.default)
    llmgate reload                                  re-read proxy.yaml now
    llmgate history [--provider --model --key --status --since --limit --bodies]
    llmgate stats [--by provider|model|key|day] [--since]
    llmgate models [add|link|unlink|remove]         model names and their targets (routing.aliases)
    llmgate credentials import|export|remove <provider>  subscription logins in the hosts' shared store (server.state)

The management commands talk to the running gateway's /admin API (--url, --admin-key). When
nothing listens there (connection refused), provider edits go to the config file instead
(llmgate.operations.config_edit: comments kept, validated, written atomically), history and stats read the
SQLite request log directly, and `providers test` fails (it needs the gateway). Every command
has --json. Errors: one line on stderr, exit code 1, never a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc  # type: ignore[no-redef]

from llmgate.credentials import login as flows
from llmgate.credentials import oauth
from llmgate.providers.codex import codex_home_file


class LlmgateTyper(typer.Typer):
    """Typer, but a usage error is one line on stderr and exit code 1, like every other error."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:  # called programmatically (tests): plain Typer
            return super().__call__(*args, **kwargs)
        command = typer.main.get_command(self)
        try:
            rv = command.main(prog_name="llmgate", standalone_mode=False)
        except click_exc.NoArgsIsHelpError as e:
            typer.echo(e.ctx.get_help() if e.ctx else str(e))
            sys.exit(0)
        except click_exc.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
            _error_line(f"{e.format_message()}{hint}")
            sys.exit(1)
        except typer.Abort:
            _error_line("aborted")
            sys.exit(1)
        except click_exc.ClickException as e:
            _error_line(e.format_message())
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _error_line(message: str) -> None:
    one = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
    typer.echo(f"error: {one}", err=True)


app = LlmgateTyper(help="llmgate: an LLM API gateway on mitmproxy.", no_args_is_help=True,
                   pretty_exceptions_enable=False)


class Provider(StrEnum):
    qwen = "qwen"
    gemini = "gemini"
    antigravity = "antigravity"
    iflow = "iflow"
    codex = "codex"
    copilot = "copilot"


DEFAULT_FILES = {  # where the official CLIs (and the gateway, by default) read them
    Provider.qwen: "~/.qwen/oauth_creds.json",
    Provider.gemini: "~/.gemini/oauth_creds.json",
    Provider.antigravity: "~/.llmgate/antigravity/account.json",
    Provider.iflow: "~/.iflow/oauth_creds.json",
    Provider.codex: codex_home_file(),  # Codex CLI's auth.json (CODEX_HOME)
    Provider.copilot: "~/.llmgate/copilot/account.json",
}
TERMS = {  # said before logins whose vendor restricts use outside its own clients
    Provider.antigravity: "Antigravity's terms forbid third-party clients; accounts have been suspended for "
                          "using them.",
    Provider.codex: "OpenAI's terms cover the ChatGPT sign-in for its own apps (Codex CLI); accounts used from "
                    "other clients can be suspended.",
    Provider.copilot: "GitHub's terms cover Copilot through GitHub's own and supported clients; access used "
                      "otherwise can be suspended.",
}
IFLOW_USERINFO = "https://iflow.cn/api/oauth/getUserInfo"


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"llmgate {version('llmgate')}")
        except PackageNotFoundError:  # run from a checkout that is not installed
            from llmgate.operations.admin_api import VERSION

            typer.echo(f"llmgate {VERSION}")
        raise typer.Exit()


@app.callback()
def main(_: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                         help="print the version and exit")] = False) -> None:
    """llmgate: an LLM API gateway on mitmproxy."""


@app.command(name="login")
def login_command(
    provider: Provider = typer.Argument(..., help="which account to log in"),
    credentials: Path | None = typer.Option(None, help="credentials file to write (default: the CLI's own)"),
    token_url: str | None = typer.Option(None, help="OAuth token endpoint (default: the official one)"),
    auth_url: str | None = typer.Option(None, help="authorization page (Google, iFlow, Codex)"),
    device_url: str | None = typer.Option(None, help="device-code endpoint (Qwen, Copilot)"),
    userinfo_url: str = typer.Option(IFLOW_USERINFO, help="iFlow's user-info endpoint (gives the API key)"),
    port: int | None = typer.Option(None, help="loopback callback port (default: the CLI's, or any free one)"),
    browser: bool = typer.Option(True, help="open the login page in a browser"),
    timeout: float = typer.Option(600.0, help="seconds to wait for the login"),
    proxy: str | None = typer.Option(None, help='proxy URL (http://, socks5://), "env" or "none" (default: '
                                     "the environment's HTTPS_PROXY/NO_PROXY)"),
) -> None:
    """Log in an account and write its credentials where the gateway reads them."""
    path = (credentials or Path(DEFAULT_FILES[provider])).expanduser()
    base = {Provider.qwen: oauth.QWEN, Provider.gemini: oauth.GEMINI_CLI, Provider.antigravity: oauth.ANTIGRAVITY,
            Provider.iflow: oauth.IFLOW, Provider.codex: oauth.CODEX, Provider.copilot: oauth.COPILOT}[provider]
    client = dataclasses.replace(base, token_url=token_url or base.token_url, auth_url=auth_url or base.auth_url,
                                 device_url=device_url or base.device_url)
    say = typer.echo
    if provider in TERMS:
        say(f"Warning: {TERMS[provider]} Continue only if you accept that risk.")
    try:
        if provider is Provider.qwen:
            flows.qwen_device_login(client, path, say, timeout=timeout, proxy=proxy)
        elif provider is Provider.codex:
            flows.codex_login(client, path, say, port, browser, timeout, proxy)
        elif provider is Provider.copilot:
            flows.github_device_login(client, path, say, timeout=timeout, proxy=proxy)
        elif provider is Provider.iflow:
            flows.iflow_login(client, userinfo_url, path, say, 11451 if port is None else port, browser, timeout,
                              proxy)
        else:
            callback = "/oauth-callback" if provider is Provider.antigravity else "/oauth2callback"
            default_port = 51121 if provider is Provider.antigravity else 0
            flows.google_login(client, path, say, callback, default_port if port is None else port, browser,
                               timeout, proxy)
    except (flows.LoginError, OSError) as e:
        say(f"Login failed: {e}", err=True)
        raise typer.Exit(1) from None
    say(f"Logged in; credentials written to {path}")



# =============================================================================== management commands

DEFAULT_URL = "http://127.0.0.1:8143"
LOG_FILE = "llmgate-requests.sqlite"

UrlOpt = Annotated[str, typer.Option("--url", envvar="LLMGATE_URL", show_envvar=True,
                                     help="the running gateway")]
AdminKeyOpt = Annotated[str | None, typer.Option("--admin-key", envvar="LLMGATE_ADMIN_KEY", show_envvar=True,
                                                 help="admin key (server.admin_keys), if the gateway has any")]
ConfigOpt = Annotated[Path, typer.Option("--config", envvar="LLMGATE_CONFIG",
                                         help="proxy.yaml, edited directly when the gateway is not running")]
LogDbOpt = Annotated[Path | None, typer.Option(
    "--log-db", help=f"request log read when the gateway is not running (default: log.file, else {LOG_FILE} "
                     "beside the config)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output (JSON on stdout)")]
SinceOpt = Annotated[str | None, typer.Option(
    "--since", help="ISO-8601 time (local time unless it has an offset) or an age: 30m, 2h, 7d, 1w")]


class CliError(Exception):
    """Reported as one line on stderr, exit code 1."""


class GatewayDown(Exception):
    """Nothing listens at --url (connection refused)."""


def handled(fn: Callable) -> Callable:
    """Every error is one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        from llmgate.operations import config_edit
        from llmgate.settings import ConfigError

        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (CliError, ConfigError, config_edit.DuplicateProvider, config_edit.UnknownProvider) as e:
            message = str(e)
        except GatewayDown as e:
            message = f"gateway not running at {e}"
        except sqlite3.Error as e:
            message = f"request log: {e}"
        except OSError as e:
            message = f"{e.filename + ': ' if getattr(e, 'filename', None) else ''}{e.strerror or e}"
        except httpx.HTTPError as e:
            message = f"gateway: {e}"
        except KeyboardInterrupt:
            message = "interrupted"
        _error_line(message)
        raise typer.Exit(1)

    return run


# ------------------------------------------------------------------------------- the admin API


class Admin:
    """The running gateway's /admin API."""

    def __init__(self, url: str, admin_key: str | None):
        self.url = url.rstrip("/")
        # JSON on every call: the API refuses writes without it (a web page could forge those)
        self.headers = {"Content-Type": "application/json",
                        **({"Authorization": f"Bearer {admin_key}"} if admin_key else {})}

    def call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
             timeout: float = 30.0) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            r = httpx.request(method, self.url + path, json=body, params=params, headers=self.headers,
                              timeout=httpx.Timeout(timeout, connect=5.0))
        except httpx.ConnectError as e:
            if _refused(e):
                raise GatewayDown(self.url) from None
            raise CliError(f"cannot reach the gateway at {self.url}: {_reason(e)}") from None
        except httpx.TimeoutException:
            raise CliError(f"the gateway at {self.url} did not answer within {timeout:g} s") from None
        except httpx.HTTPError as e:
            raise CliError(f"gateway at {self.url}: {_reason(e)}") from None
        try:
            data = r.json()
        except ValueError:
            data = None
        if r.status_code >= 400:
            err = data.get("error") if isinstance(data, dict) else None
            message = (err.get("message") if isinstance(err, dict) else err) or r.reason_phrase or "error"
            if r.status_code == 401:
                message += " Pass --admin-key (or set LLMGATE_ADMIN_KEY)."
            elif r.status_code == 404 and path.startswith("/admin/") and not isinstance(err, dict):
                message = f"{self.url} has no llmgate admin API ({method} {path}: 404)"
            raise CliError(f"{message} (HTTP {r.status_code})")
        if data is None:
            raise CliError(f"{method} {self.url}{path}: the answer is not JSON (is this an llmgate gateway?)")
        return data


def _refused(e: BaseException) -> bool:
    seen = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ConnectionRefusedError) or getattr(cur, "errno", None) == errno.ECONNREFUSED:
            return True
        if "refused" in str(cur).lower():
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _reason(e: BaseException) -> str:
    return str(e) or type(e).__name__


# ------------------------------------------------------------------------------- output


def _console():
    from rich.console import Console

    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200
    return Console(width=width, highlight=False, soft_wrap=False)


def _table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    from rich.table import Table

    t = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    _console().print(t)


def _emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _say(message: str, as_json: bool = False) -> None:
    """A human note: stdout, or stderr when stdout carries JSON."""
    typer.echo(message, err=as_json)


def _ts(value: Any) -> str:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    return str(value or "")


def _num(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}{unit}" if value >= 10 else f"{value:.1f}{unit}"
    return f"{value}{unit}"


# ------------------------------------------------------------------------------- offline helpers


def _parse_since(value: str | None) -> datetime | None:
    """An aware datetime from ISO-8601 (naive = local time) or an age (30m, 2h, 7d, 1w)."""
    if not value:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*", value, re.I)
    if m:
        n, unit = float(m.group(1)), m.group(2).lower()
        seconds = n * {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"--since: {value!r} is neither an ISO-8601 time nor an age like 30m, 2h, 7d") from None
    return dt.astimezone() if dt.tzinfo is None else dt


def _since_iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat(timespec="seconds") if dt else None


def _log_db(config: Path, log_db: Path | None) -> Path:
    """The request log's path: --log-db, else the config's log.file, else beside the config."""
    if log_db is not None:
        return log_db.expanduser()
    try:
        from llmgate.operations.config_edit import read_config

        file = ((read_config(config).get("log") or {}).get("file")) if config.exists() else None
    except Exception:  # noqa: BLE001 - an unreadable config: fall back to the default place
        file = None
    if isinstance(file, str) and file and "${" not in file:
        p = Path(file).expanduser()
        if p.is_absolute() or p.exists():
            return p
        beside = config.resolve().parent / p
        return beside if beside.exists() else p
    return config.resolve().parent / LOG_FILE


def _open_log(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise CliError(f"the gateway is not running and there is no request log at {path} (use --log-db)")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    db.row_factory = sqlite3.Row
    return db


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= 1000:
        raise CliError("--limit must be between 1 and 1000")
    return limit


def _log_source(config: Path, log_db: Path | None) -> Path | str:
    """Where history and stats read without a gateway: --log-db, else the config's log.database
    (PostgreSQL, ${VAR} expanded), else the SQLite file (_log_db)."""
    if log_db is None and config.exists():
        from llmgate.settings import ConfigError, load_settings

        try:
            database = load_settings(config)[0].log.database
        except (ConfigError, OSError):  # the SQLite fallback says what is missing
            database = None
        if database:
            return database
    return _log_db(config, log_db)


def _offline_count(source: Path | str) -> dict[str, Any]:
    """The request log status shows while the gateway is down: where it is (a PostgreSQL URL without
    its password) and its row count, when it can be read."""
    if isinstance(source, Path) and not source.exists():
        return {}
    out: dict[str, Any] = {"request_log": _shown(source)}
    with contextlib.suppress(CliError, sqlite3.Error):  # the status report should not fail on the log
        out["requests_logged"] = _offline_read(source, lambda db: db.execute("SELECT COUNT(*) FROM requests")
                                               .fetchone()[0], empty=0)
    return out


def _shown(source: Path | str) -> str:
    from llmgate.operations.request_log_pg import safe_url

    return safe_url(source) if isinstance(source, str) else str(source)


def _offline_read(source: Path | str, query: Callable[[Any], Any], empty: Any = None) -> Any:
    """query's answer from the request log; `empty` when PostgreSQL has no table yet (default [])."""
    if isinstance(source, str):
        from llmgate.operations.request_log import Unreadable
        from llmgate.operations.request_log_pg import read

        try:
            return read(source, query, empty=[] if empty is None else empty)
        except Unreadable as e:
            raise CliError(f"the gateway is not running and the request log at {_shown(source)} cannot be read: "
                           f"{e}") from None
    with _open_log(source) as db:
        return query(db)


def _offline_history(source: Path | str, provider: str | None, model: str | None, key: str | None,
                     status: int | None, since: datetime | None, limit: int,
                     bodies: bool = False) -> list[dict[str, Any]]:
    """The same query as GET /admin/requests (llmgate.operations.request_log.history), with bodies as
    GET /admin/requests/{id} gives them."""
    from llmgate.operations import request_log

    def query(db: Any) -> list[dict[str, Any]]:
        rows = request_log.history(db, provider, model, key, status, since.timestamp() if since else None, limit)
        return [d for r in rows if (d := request_log.detail(db, r["id"])) is not None] if bodies else rows

    return _offline_read(source, query)


def _offline_stats(source: Path | str, by: str, since: datetime | None) -> list[dict[str, Any]]:
    """The same grouping as GET /admin/stats (llmgate.operations.request_log.stats)."""
    from llmgate.operations import request_log

    return _offline_read(source, lambda db: request_log.stats(db, by, since.timestamp() if since else None))


def _offline_provider(entry: dict[str, Any]) -> dict[str, Any]:
    """A config entry in the shape GET /admin/providers gives (state unknown: nothing runs)."""
    from llmgate.providers import PROVIDER_TYPES

    kind = PROVIDER_TYPES.get(str(entry.get("type")))
    enabled = entry.get("enabled", True) is not False
    return {"id": entry.get("id"), "type": entry.get("type"), "enabled": enabled,
            "base_url": entry.get("base_url") or (kind.default_base_url if kind else None),
            "models": entry.get("models"), "api_key": "set" if entry.get("api_key") else None,
            "state": "unknown" if enabled else "disabled", "accounts": [], "cooling": []}


def _require_config(config: Path) -> None:
    if not config.exists():
        raise CliError(f"the gateway is not running and there is no config file at {config} (use --config)")


# ------------------------------------------------------------------------------- status


@app.command(name="status")
@handled
def status_command(url: UrlOpt = DEFAULT_URL, admin_key: AdminKeyOpt = None, config: ConfigOpt = Path("proxy.yaml"),
                   log_db: LogDbOpt = None, as_json: JsonOpt = False) -> None:
    """Is the gateway running? Version, uptime, config, providers, request log.

    Exit code 1 when it is not running (what the config and the request log hold is shown all the same)."""
    try:
        st = Admin(url, admin_key).call("GET", "/admin/status")
    except GatewayDown:
        out: dict[str, Any] = {"running": False, "url": url, "config": str(config), "providers": None,
                               "request_log": None, "requests_logged": None}
        if config.exists():
            from llmgate.operations.config_edit import list_providers

            try:
                out["providers"] = len(list_providers(config))
            except Exception:  # noqa: BLE001 - the status report should not fail on a broken config
                pass
        out.update(_offline_count(_log_source(config, log_db)))
        if as_json:
            _emit_json(out)
        else:
            typer.echo(f"gateway not running at {url}")
            _table(["", ""], [["config", f"{config}" + ("" if config.exists() else " (missing)")],
                              ["providers", out["providers"] if out["providers"] is not None else "-"],
                              ["request log", out["request_log"] or "-"],
                              ["requests logged", "-" if out["requests_logged"] is None else out["requests_logged"]]])
        raise typer.Exit(1) from None
    if as_json:
        _emit_json({"running": True, "url": url, **st})
        return
    uptime = st.get("uptime_s")
    typer.echo(f"gateway running at {url}")
    _table(["", ""], [["version", st.get("version")],
                      ["uptime", str(timedelta(seconds=int(uptime))) if isinstance(uptime, (int, float)) else "-"],
                      ["config", st.get("config")], ["providers", st.get("providers")],
                      ["request log", st.get("request_log") or "off"],
                      ["requests logged", st.get("requests_logged")]])


# ------------------------------------------------------------------------------- providers

providers_app = typer.Typer(help="List, add, edit, enable, disable, remove and test providers.",
                            no_args_is_help=True)
app.add_typer(providers_app, name="providers")


def _provider_rows(providers: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for p in providers:
        models = p.get("models")
        models_txt = "(discovered)" if models is None else ", ".join(models) if models else "(none)"
        accounts = p.get("accounts") or []
        notes = []
        if accounts:
            usable = sum(1 for a in accounts if a.get("usable"))
            notes.append(f"{usable}/{len(accounts)} accounts usable")
            notes += [f"{a.get('name')}: {a['needs_login']}" for a in accounts if a.get("needs_login")]
        for c in p.get("cooling") or []:
            what = "/".join(x for x in (c.get("account"), c.get("model")) if x) or "all"
            notes.append(f"cooling {what} until {c.get('until')} ({c.get('reason')})")
        rows.append([p.get("id"), p.get("type"), "yes" if p.get("enabled") else "no", p.get("state"),
                     p.get("base_url"), models_txt, p.get("api_key") or "-", "; ".join(notes)])
    return rows


PROVIDER_COLUMNS = ["ID", "TYPE", "ENABLED", "STATE", "BASE URL", "MODELS", "API KEY", "NOTES"]


@providers_app.command(name="list")
@handled
def providers_list(url: UrlOpt = DEFAULT_URL, admin_key: AdminKeyOpt = None, config: ConfigOpt = Path("proxy.yaml"),
                   as_json: JsonOpt = False) -> None:
    """The providers, their state, accounts and cooldowns.

    From the config file when the gateway is not running."""
    try:
        data = Admin(url, admin_key).call("GET", "/admin/providers")
        providers, running = data.get("providers") or [], True
    except GatewayDown:
        from llmgate.operations.config_edit import list_providers

        _require_config(config)
        providers, running = [_offline_provider(p) for p in list_providers(config)], False
        typer.echo(f"gateway not running: providers from {config}", err=True)
    if as_json:
        _emit_json({"providers": providers} if running else {"running": False, "config": str(config),
                                                             "providers": providers})
        return
    if not providers:
        typer.echo("no providers")
        return
    _table(PROVIDER_COLUMNS, _provider_rows(providers))


@providers_app.command(name="get")
@handled
def providers_get(id: Annotated[str, typer.Argument(help="the provider")], url: UrlOpt = DEFAULT_URL,
                  admin_key: AdminKeyOpt = None, config: ConfigOpt = Path("proxy.yaml"),
                  as_json: JsonOpt = False) -> None:
    """One provider, its state, accounts and cooldowns (from the config file when the gateway is not running)."""
    try:
        p, running = Admin(url, admin_key).call("GET", f"/admin/providers/{_seg(id)}")["provider"], True
    except GatewayDown:
        from llmgate.operations.config_edit import get_provider

        _require_config(config)
        p, running = _offline_provider(get_provider(config, id)), False
        typer.echo(f"gateway not running: provider from {config}", err=True)
    if as_json:
        _emit_json({"provider": p} if running else {"running": False, "config": str(config), "provider": p})
        return
    _table(PROVIDER_COLUMNS, _provider_rows([p]))


def _read_json_arg(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).expanduser().read_text(encoding="utf-8")
    except OSError as e:
        raise CliError(f"--from-json {source}: {e.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise CliError(f"--from-json {source}: not valid JSON: {e}") from None


def _models_arg(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [m.strip() for m in value.split(",") if m.strip()]


def _value_arg(text: str) -> Any:
    """--set KEY=VALUE: VALUE as JSON when it parses (numbers, true/false, null, lists, objects), else a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _edit_result(action: str, pid: str, result: dict[str, Any], as_json: bool, offline: Path | None,
                 url: str) -> None:
    if as_json:
        _emit_json(result if offline is None else {"running": False, "config": str(offline), **result})
    if offline is not None:
        _say(f"gateway not running: edited {offline}", as_json)
    if not as_json:
        p = result.get("provider") or {}
        state = f" ({p['state']})" if p.get("state") and offline is None else ""
        typer.echo(f"{action} provider {pid}{state} {_where(url, offline)}")


def _where(url: str, offline: Path | None) -> str:
    """What a change went to: the running gateway, or the file."""
    return f"in {offline}" if offline is not None else f"at the gateway {url.rstrip('/')}"


def _offline_or_online(url: str, admin_key: str | None, config: Path, online: Callable[[Admin], dict[str, Any]],
                       offline: Callable[[Path], dict[str, Any]],
                       change: Any = None) -> tuple[dict[str, Any], Path | None]:
    from llmgate.operations.config_edit import env_references

    try:
        admin = Admin(url, admin_key)
        if not env_references(change):
            return online(admin), None
        served = admin.call("GET", "/admin/status")["config"]
    except GatewayDown:
        _require_config(config)
        return offline(config), config
    # ${VAR} is refused by the API (only the file may read the gateway's environment): write the
    # file, as its owner may, and the gateway reloads it
    if not (config.exists() and Path(served).exists() and config.samefile(served)):
        raise CliError(f"${{VAR}} references go into proxy.yaml by hand, not through the admin API; the gateway "
                       f"at {url} reads {served}: pass --config {served} to edit it from here")
    result = offline(config)
    typer.echo(f"wrote {config} (${{VAR}} references go in by hand); the gateway at {url} reloads it", err=True)
    return result, None


@providers_app.command(name="add")
@handled
def providers_add(
    id: Annotated[str | None, typer.Option("--id", help="provider id (letters, digits, _ . -)")] = None,
    type: Annotated[str | None, typer.Option("--type", help="openai, anthropic, gemini, qwen, ...")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="the key, or a ${VAR} reference")] = None,
    models: Annotated[str | None, typer.Option("--models", help="comma-separated (default: discovered)")] = None,
    from_json: Annotated[str | None, typer.Option("--from-json", help="the entry as JSON: a file, or - for stdin "
                                                                     "(options given as well override it)")] = None,
    url: UrlOpt = DEFAULT_URL, admin_key: AdminKeyOpt = None, config: ConfigOpt = Path("proxy.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Add a provider.

    The running gateway writes it to proxy.yaml and serves it at once; without a running gateway it goes
    into --config directly."""
    entry: dict[str, Any] = {}
    if from_json is not None:
        entry = _read_json_arg(from_json)
        if not isinstance(entry, dict):
            raise CliError("--from-json: the provider entry must be a JSON object")
    for key, value in (("id", id), ("type", type), ("base_url", base_url), ("api_key", api_key),
                       ("models", _models_arg(models))):
        if value is not None:
            entry[key] = value
    pid = entry.get("id")
    if not isinstance(pid, str) or not pid:
        raise CliError("a provider needs an id (--id, or \"id\" in --from-json)")
    if not entry.get("type"):
        raise CliError("a provider needs a type (--type, or \"type\" in --from-json)")

    def offline(path: Path) -> dict[str, Any]:
        from llmgate.operations.config_edit import add_provider

        return {"provider": add_provider(path, entry)}

    result, offline_path = _offline_or_online(
        url, admin_key, config, lambda a: a.call("POST", "/admin/providers", entry), offline, entry)
    _edit_result("added", pid, result, as_json, offline_path, url)


@providers_app.command(name="edit")
@handled
def providers_edit(
    id: Annotated[str, typer.Argument(help="the provider to change")],
    type: Annotated[str | None, typer.Option("--type")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="the key, or a ${VAR} reference")] = None,
    models: Annotated[str | None, typer.Option("--models", help="comma-separated; '' = discover them")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE (VALUE as JSON if it parses); "
                                                                 "repeatable")] = None,
    unset: Annotated[list[str] | None, typer.Option("--unset", help="remove an optional field; repeatable")] = None,
    from_json: Annotated[str | None, typer.Option("--from-json", help="the changes as a JSON object (null "
                                                                     "removes a field): a file, or -")] = None,
    url: UrlOpt = DEFAULT_URL, admin_key: AdminKeyOpt = None, config: ConfigOpt = Path("proxy.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Change fields of a provider."""
    changes: dict[str, Any] = {}
    if from_json is not None:
        changes = _read_json_arg(from_json)
        if not isinstance(changes, dict):
            raise CliError("--from-json: the changes must be a JSON object")
    for key, value in (("type", type), ("base_url", base_url), ("api_key", api_key)):
        if value is not None:
            changes[key] = value
    if models is not None:
        changes["models"] = _models_arg(models) or None
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set {item!r}: expected KEY=VALUE")
        changes[key.strip()] = _value_arg(value)
    for key in unset or []:
        changes[key] = None
    if not changes:
        raise CliError("nothing to change (give --base-url, --models, --set KEY=VALUE, --unset KEY, ...)")

    def offline(path: Path) -> dict[str, Any]:
        from llmgate.operations.config_edit import update_provider

        return {"provider": update_provider(path, id, changes)}

    result, offline_path = _offline_or_online(
        url, admin_key, config, lambda a: a.call("PATCH", f"/admin/providers/{_seg(id)}", changes), offline, changes)
    _edit_result("changed", id, result, as_json, offline_path, url)


def _seg(pid: str) -> str:
    from urllib.parse import quote

    return quote(pid, safe="")


def _switch(pid: str, enabled: bool, url: str, admin_key: str | None, config: Path, as_json: bool) -> None:
    def offline(path: Path) -> dict[str, Any]:
        from llmgate.operations.config_edit import set_enabled

        return {"provider": set_enabled(path, pid, enabled)}

    action = "enable" if enabled else "disable"
    result, offline_path = _offline_or_online(
        url, admin_key, config, lambda a: a.call("POST", f"/admin/providers/{_seg(pid)}/{action}"), offline)
    _edit_result(action + "d", pid, result, as_json, offline_path, url)


@providers_app.command(name="enable")
@handled
def providers_enable(id: Annotated[str, typer.Argument(help="the provider")], url: UrlOpt = DEFAULT_URL,
                     admin_key: AdminKeyOpt = None, config: ConfigOpt = Path("proxy.yaml"),
                     as_json: JsonOpt = False) -> None:
    """Route requests to a provider again."""
    _switch(id, True, url, admin_key, config, as_json)


@providers_app.command(name="disable")
@handled
def providers_disable(id: Annotated[str, typer.Argument(help="the provider")], url: UrlOpt = DEFAULT_URL,
                      admin_key: AdminKeyOpt = None, config: ConfigOpt = Path("proxy.yaml"),
                      as_json: JsonOpt = False) -> None:
    """Stop routing requests to a provider (its entry stays, with enabled: false)."""
    _switch(id, False, url, admin_key, config, as_json)


@providers_app.command(name="remove")
@handled
def providers_remove(id: Annotated[str, typer.Argument(help="the provider")], url: UrlOpt = DEFAULT_URL,
                     admin_key: AdminKeyOpt = None, config: ConfigOpt = Path("proxy.yaml"),
                     as_json: JsonOpt = False) -> None:
    """Remove a provider's entry."""

    def offline(path: Path) -> dict[str, Any]:
        from llmgate.operations.config_edit import remove_provider

        remove_provider(path, id)
        return {"removed": id}

    result, offline_path = _offline_or_online(
        url, admin_key, config, lambda a: a.call("DELETE", f"/admin/providers/{_seg(id)}"), offline)
    _edit_result("removed", id, result, as_json, offline_path, url)


@providers_app.command(name="test")
@handled
def providers_test(id: Annotated[str, typer.Argument(help="the provider")],
                   model: Annotated[str | None, typer.Option("--model", help="default: its first model")] = None,
                   url: UrlOpt = DEFAULT_URL, admin_key: AdminKeyOpt = None,
                   config: ConfigOpt = Path("proxy.yaml"), as_json: JsonOpt = False) -> None:
    """Send a one-token request straight to a provider.

    Needs the running gateway. Exit code 1 when the provider does not answer well."""
    try:
        r = Admin(url, admin_key).call("POST", f"/admin/providers/{_seg(id)}/test", {"model": model} if model else {},
                                       timeout=180.0)
    except GatewayDown:
        raise CliError(f"providers test needs the running gateway; nothing answers at {url}") from None
    if as_json:
        _emit_json(r)
    status = r.get("status")
    what = f"model {r.get('model')}, status {status if status is not None else '-'}, {_num(r.get('latency_ms'))} ms"
    if r.get("ok"):
        if not as_json:
            typer.echo(f"provider {id} ok: {what}")
        return
    _error_line(f"provider {id} not ok: {what}: {r.get('error') or 'failed'}")
    raise typer.Exit(1)


# ------------------------------------------------------------------------------- history and stats


HISTORY_COLUMNS = ["TIME", "KEY", "MODEL", "PROVIDER", "ACCOUNT", "STATUS", "LATENCY", "TOKENS IN/OUT", "ERROR"]


@app.command(name="history")
@handled
def history_command(
    provider: Annotated[str | None, typer.Option("--provider")] = None,
    model: Annotated[str | None, typer.Option("--model", help="as the client asked")] = None,
    key: Annotated[str | None, typer.Option("--key", help="client key name (server.api_keys)")] = None,
    status: Annotated[int | None, typer.Option("--status", help="HTTP status")] = None,
    since: SinceOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="rows, newest first (1..1000)")] = 50,
    bodies: Annotated[bool, typer.Option("--bodies", help="with the request and response bodies "
                                                          "(kept when log.capture_bodies is on)")] = False,
    url: UrlOpt = DEFAULT_URL, admin_key: AdminKeyOpt = None, config: ConfigOpt = Path("proxy.yaml"),
    log_db: LogDbOpt = None, as_json: JsonOpt = False,
) -> None:
    """Recent requests from the request log, newest first."""
    _check_limit(limit)
    since_dt = _parse_since(since)
    admin = Admin(url, admin_key)
    try:
        data = admin.call("GET", "/admin/requests", params={
            "provider": provider, "model": model, "key": key, "status": status, "since": _since_iso(since_dt),
            "limit": limit})
        rows, source = data.get("requests") or [], None
        if bodies:
            rows = [admin.call("GET", f"/admin/requests/{r['id']}")["request"] for r in rows]
    except GatewayDown:
        source = _log_source(config, log_db)
        rows = _offline_history(source, provider, model, key, status, since_dt, limit, bodies)
        typer.echo(f"gateway not running: reading {_shown(source)}", err=True)
    if as_json:
        _emit_json({"requests": rows} if source is None else {"running": False, "request_log": _shown(source),
                                                              "requests": rows})
        return
    if not rows:
        typer.echo("no requests")
        return
    _table(HISTORY_COLUMNS, [[
        _ts(r.get("ts")), r.get("key_id") or "-", r.get("model"), r.get("provider") or "-", r.get("account") or "-",
        r.get("status") if r.get("status") is not None else "-", _num(r.get("latency_ms"), " ms"),
        f"{_num(r.get('prompt_tokens'))}/{_num(r.get('completion_tokens'))}", r.get("error") or "",
    ] for r in rows])
    if bodies:
        _print_bodies(rows)


def _print_bodies(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        typer.echo(f"\n--- request {r.get('id')} ({_ts(r.get('ts'))}, {r.get('model')}, status {r.get('status')})")
        if r.get("request_body") is None and r.get("response_body") is None:
            typer.echo("(no bodies: log.capture_bodies was off)")
            continue
        for k in ("request_body", "response_body"):
            typer.echo(f"{k.replace('_', ' ')}:\n{r.get(k) or ''}")


class StatsBy(StrEnum):
    provider = "provider"
    model = "model"
    key = "key"
    day = "day"


@app.command(name="stats")
@handled
def stats_command(
    by: Annotated[StatsBy, typer.Option("--by", help="group by")] = StatsBy.provider,
    since: SinceOpt = None,
    url: UrlOpt = DEFAULT_URL, admin_key: AdminKeyOpt = None, config: ConfigOpt = Path("proxy.yaml"),
    log_db: LogDbOpt = None, as_json: JsonOpt = False,
) -> None:
    """Requests, errors, tokens and latency from the request log, grouped."""
    since_dt = _parse_since(since)
    try:
        data = Admin(url, admin_key).call("GET", "/admin/stats", params={"by": by.value,
                                                                         "since": _since_iso(since_dt)})
        rows, source = data.get("rows") or [], None
    except GatewayDown:
        source = _log_source(config, log_db)
        rows = _offline_stats(source, by.value, since_dt)
        typer.echo(f"gateway not running: reading {_shown(source)}", err=True)
    if as_json:
        out = {"by": by.value, "rows": rows}
        _emit_json(out if source is None else {"running": False, "request_log": _shown(source), **out})
        return
    if not rows:
        typer.echo("no requests")
        return
    _table([by.value.upper(), "REQUESTS", "ERRORS", "PROMPT", "COMPLETION", "CACHED", "REASONING", "AVG LATENCY"],
           [[r.get("key"), r.get("requests"), r.get("errors"), r.get("prompt_tokens"), r.get("completion_tokens"),
             r.get("cached_tokens"), r.get("reasoning_tokens"), _num(r.get("avg_latency_ms"), " ms")] for r in rows])


# ------------------------------------------------------------------------------- models


models_app = typer.Typer(help="The model names the gateway routes; add, link, unlink and remove model names "
                              "(routing.aliases).")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
@handled
def models_command(ctx: typer.Context, url: UrlOpt = DEFAULT_URL, admin_key: AdminKeyOpt = None,
                   config: ConfigOpt = Path("proxy.yaml"), as_json: JsonOpt = False) -> None:
    """The model names the gateway routes, and how many of each pool's accounts are routable now.

    Without a running gateway: the model lists and aliases the config names."""
    if ctx.invoked_subcommand is not None:
        return
    admin = Admin(url, admin_key)
    try:
        health = _health(admin)
        providers = admin.call("GET", "/admin/providers").get("providers") or []
    except GatewayDown:
        _require_config(config)
        rows = _offline_models(config)
        typer.echo(f"gateway not running: models named in {config} (discovered lists unknown)", err=True)
        if as_json:
            _emit_json({"running": False, "config": str(config), "models": rows})
        else:
            _table(["MODEL", "PROVIDERS"], [[r["id"], ", ".join(r["providers"])] for r in rows])
        return
    served: dict[str, list[str]] = {}
    for p in providers:
        if p.get("enabled"):
            for m in p.get("models") or []:
                served.setdefault(m, []).append(p.get("id"))
    rows = []
    for name, pool in (health.get("models") or {}).items():
        rows.append({"id": name, "providers": served.get(name) or ["(alias)"], "configured": pool.get("configured"),
                     "routable": pool.get("routable"), "cooling": pool.get("cooling") or []})
    if as_json:
        _emit_json({"models": rows})
        return
    if not rows:
        typer.echo("no models")
        return
    _table(["MODEL", "PROVIDERS", "ROUTABLE", "COOLING"], [[
        r["id"], ", ".join(r["providers"]), f"{_num(r['routable'])}/{_num(r['configured'])}",
        "; ".join(f"{c.get('provider')}{'/' + c['account'] if c.get('account') else ''} until {c.get('until')}"
                  for c in r["cooling"]),
    ] for r in rows])


def _model_edit(action: str, name: str, online: Callable[[Admin], dict[str, Any]],
                offline: Callable[[Path], dict[str, Any]], change: Any, url: str, admin_key: str | None,
                config: Path, as_json: bool) -> None:
    result, offline_path = _offline_or_online(url, admin_key, config, online, offline, change)
    if as_json:
        _emit_json(result if offline_path is None else {"running": False, "config": str(offline_path), **result})
        return
    m = result.get("model")
    targets = f": {', '.join(m['targets'])}" if m else ""
    typer.echo(f"{action} model {name}{targets} {_where(url, offline_path)}")


@models_app.command(name="add")
@handled
def models_add(name: Annotated[str, typer.Argument(help="the model name clients ask for")],
               targets: Annotated[list[str], typer.Argument(help="provider/model (or a model name); one or more")],
               url: UrlOpt = DEFAULT_URL, admin_key: AdminKeyOpt = None, config: ConfigOpt = Path("proxy.yaml"),
               as_json: JsonOpt = False) -> None:
    """Define a model name routed to one or more targets."""
    from llmgate.operations import config_edit as ce

    body = {"name": name, "targets": targets}
    _model_edit("added", name, lambda a: a.call("POST", "/admin/models", body),
                lambda path: {"model": ce.add_model(path, name, targets)}, body, url, admin_key, config, as_json)


@models_app.command(name="link")
@handled
def models_link(name: Annotated[str, typer.Argument(help="the model name")],
                target: Annotated[str, typer.Argument(help="provider/model (or a model name)")],
                url: UrlOpt = DEFAULT_URL, admin_key: AdminKeyOpt = None, config: ConfigOpt = Path("proxy.yaml"),
                as_json: JsonOpt = False) -> None:
    """Add a target to a model name."""
    from llmgate.operations import config_edit as ce

    _model_edit("linked", name, lambda a: a.call("POST", f"/admin/models/{_seg(name)}/link", {"target": target}),
                lambda path: {"model": ce.link_model(path, name, target)}, target, url, admin_key, config, as_json)


@models_app.command(name="unlink")
@handled
def models_unlink(name: Annotated[str, typer.Argument(help="the model name")],
                  target: Annotated[str, typer.Argument(help="one of its targets")],
                  url: UrlOpt = DEFAULT_URL, admin_key: AdminKeyOpt = None, config: ConfigOpt = Path("proxy.yaml"),
                  as_json: JsonOpt = False) -> None:
    """Take a target from a model name (its last one: remove the model instead)."""
    from llmgate.operations import config_edit as ce

    _model_edit("unlinked", name, lambda a: a.call("POST", f"/admin/models/{_seg(name)}/unlink", {"target": target}),
                lambda path: {"model": ce.unlink_model(path, name, target)}, target, url, admin_key, config, as_json)


@models_app.command(name="remove")
@handled
def models_remove(name: Annotated[str, typer.Argument(help="the model name")], url: UrlOpt = DEFAULT_URL,
                  admin_key: AdminKeyOpt = None, config: ConfigOpt = Path("proxy.yaml"),
                  as_json: JsonOpt = False) -> None:
    """Remove a model name."""
    from llmgate.operations import config_edit as ce

    _model_edit("removed", name, lambda a: a.call("DELETE", f"/admin/models/{_seg(name)}"),
                lambda path: {"removed": ce.remove_model(path, name)["name"]}, None, url, admin_key, config,
                as_json)


# ------------------------------------------------------------------------------- default provider, reload


@app.command(name="set")
@handled
def set_command(provider: Annotated[str, typer.Argument(help="the provider requests go to by default")],
                url: UrlOpt = DEFAULT_URL, admin_key: AdminKeyOpt = None, config: ConfigOpt = Path("proxy.yaml"),
                as_json: JsonOpt = False) -> None:
    """Make a provider the default (routing.default): applied at once, written to proxy.yaml."""
    from llmgate.operations.config_edit import set_default

    body = {"provider": provider}
    result, offline_path = _offline_or_online(
        url, admin_key, config, lambda a: a.call("POST", "/admin/default", body),
        lambda path: {"default": set_default(path, provider), "config": str(path)}, body)
    if as_json:
        _emit_json(result if offline_path is None else {"running": False, **result})
        return
    typer.echo(f"default provider {provider} {_where(url, offline_path)} (written to {result.get('config')})")


@app.command(name="reload")
@handled
def reload_command(url: UrlOpt = DEFAULT_URL, admin_key: AdminKeyOpt = None, as_json: JsonOpt = False) -> None:
    """Have the running gateway re-read proxy.yaml now.

    Exit code 1 when it does not load (the last good config keeps serving)."""
    try:
        r = Admin(url, admin_key).call("POST", "/admin/reload")
    except GatewayDown:
        raise CliError(f"reload needs the running gateway; nothing answers at {url}") from None
    if as_json:
        _emit_json(r)
    if not r.get("applied"):
        _error_line(f"the gateway at {url} kept its last good config: {r.get('config')}: {r.get('error')}")
        raise typer.Exit(1)
    if not as_json:
        typer.echo(f"reloaded {r.get('config')} at the gateway {url}: {r.get('providers')} provider(s)")


def _health(admin: Admin) -> dict[str, Any]:
    """GET /health (no key needed); 503 still carries the report."""
    try:
        r = httpx.get(admin.url + "/health", timeout=30.0)
    except httpx.ConnectError as e:
        if _refused(e):
            raise GatewayDown(admin.url) from None
        raise CliError(f"cannot reach the gateway at {admin.url}: {_reason(e)}") from None
    except httpx.HTTPError as e:
        raise CliError(f"gateway at {admin.url}: {_reason(e)}") from None
    try:
        data = r.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or "models" not in data:
        raise CliError(f"GET {admin.url}/health: HTTP {r.status_code}, not an llmgate health report")
    return data


def _offline_models(config: Path) -> list[dict[str, Any]]:
    from llmgate.operations.config_edit import read_config

    data = read_config(config)
    served: dict[str, list[str]] = {}
    for p in data.get("providers") or []:
        if isinstance(p, dict) and p.get("enabled", True) is not False:
            models = p.get("models")
            if models is None:
                served.setdefault(f"(discovered from {p.get('id')})", []).append(str(p.get("id")))
            for m in models or []:
                served.setdefault(str(m), []).append(str(p.get("id")))
    aliases = ((data.get("routing") or {}).get("aliases")) or {}
    for alias, targets in aliases.items():
        targets = [targets] if isinstance(targets, str) else list(targets or [])
        served.setdefault(str(alias), []).extend(f"alias: {t}" for t in targets)
    return [{"id": k, "providers": v} for k, v in served.items()]



# =============================================================================== credentials (several hosts)

credentials_app = typer.Typer(help="Subscription credentials in the store the gateway hosts share (server.state): "
                              "import a CLI's credentials file, export its current tokens, remove an account.",
                              no_args_is_help=True)
app.add_typer(credentials_app, name="credentials")
CredFileOpt = Annotated[Path | None, typer.Option("--file", help="the CLI's credentials file (default: the "
                                                  "provider's `credentials`, or its kind's default file)")]


def _shared_account(config: Path, pid: str, file: Path | None) -> tuple[str, str, Path, Any]:
    """(server.state URL, account name, file, provider kind) of a subscription provider in proxy.yaml."""
    import glob

    from llmgate.credentials import fleet

    url, pattern, configured, kind = _shared_provider(config, pid)
    if glob.has_magic(pattern) and file is None:
        raise CliError(f"provider '{pid}' names one file per account ({configured}): pass --file")
    named = file if file is not None and glob.has_magic(pattern) else Path(pattern)
    return url, fleet.account_name(named), (file or Path(pattern)).expanduser(), kind


def _shared_provider(config: Path, pid: str) -> tuple[str, str, str, Any]:
    """(server.state URL, credentials path or glob expanded, as configured, its kind) of a subscription
    provider."""
    from llmgate.providers import PROVIDER_TYPES
    from llmgate.settings import load_settings

    if not config.exists():
        raise CliError(f"no config file at {config} (use --config)")
    settings, _ = load_settings(config)
    if not settings.server.state:
        raise CliError(f"{config} sets no server.state: each gateway reads its own credentials files")
    p = next((p for p in settings.providers if p.id == pid), None)
    kind = PROVIDER_TYPES.get(p.type) if p is not None else None
    configured = (getattr(p, "credentials", None) or (kind.credentials if kind else None)) if p else None
    if p is None or not configured:
        raise CliError(f"{config} has no subscription provider '{pid}' with a credentials file")
    return settings.server.state, os.path.expanduser(configured), configured, kind


def _in_store(url: str, work: Callable[[Any], Any]) -> Any:
    """Run `work(store)` against the shared store; errors as one line, never the URL's password."""
    import asyncio
    from urllib.parse import urlsplit

    from redis.exceptions import RedisError

    from llmgate.credentials import fleet
    from llmgate.credentials.store import RefreshFailed

    async def run() -> Any:
        store = fleet.cli_state(url)
        try:
            return await work(store)
        finally:
            await store.client.aclose()

    try:
        return asyncio.run(run())
    except (RedisError, OSError) as e:
        where = urlsplit(url)
        raise CliError(f"the shared store at {where.hostname}:{where.port or 6379} is unreachable "
                       f"({type(e).__name__})") from None
    except RefreshFailed as e:
        raise CliError(str(e)) from None


@credentials_app.command(name="import")
@handled
def credentials_import(pid: Annotated[str, typer.Argument(metavar="PROVIDER_ID", help="the provider")],
                       file: CredFileOpt = None, config: ConfigOpt = Path("proxy.yaml"),
                       as_json: JsonOpt = False) -> None:
    """Copy a CLI's credentials file into the shared store (a new login replaces what it holds)."""
    from llmgate.credentials import fleet
    from llmgate.credentials.store import read_json

    url, account, path, kind = _shared_account(config, pid, file)
    try:
        data = read_json(path)
    except ValueError as e:
        raise CliError(f"{path}: not a credentials file ({e})") from None
    if not isinstance(data, dict) or not data:
        raise CliError(f"{path}: no credentials in it (log in with the CLI first)")
    if kind.bundle is not None:  # what the login needs from beside its file travels with it
        data = kind.bundle(path, data)
    version = _in_store(url, lambda store: fleet.import_credentials(store, pid, account, data))
    if as_json:
        _emit_json({"provider": pid, "account": account, "file": str(path), "version": version})
    else:
        _say(f"Imported {path} as account {account} of provider '{pid}' into the shared store.")


@credentials_app.command(name="export")
@handled
def credentials_export(pid: Annotated[str, typer.Argument(metavar="PROVIDER_ID", help="the provider")],
                       file: CredFileOpt = None, config: ConfigOpt = Path("proxy.yaml"),
                       as_json: JsonOpt = False) -> None:
    """Write the shared store's current tokens to the CLI's file (atomic, 0600, its other fields kept)."""
    from llmgate.credentials import fleet
    from llmgate.credentials.store import read_json, write_atomic

    url, account, path, kind = _shared_account(config, pid, file)
    data = _in_store(url, lambda store: fleet.export_credentials(store, pid, account))
    if data is None:
        raise CliError(f"the shared store holds no credentials for account {account} of provider '{pid}'")
    data = {k: v for k, v in data.items() if k not in kind.bundled}  # the CLI's own file keeps its fields only
    try:
        old = read_json(path)
    except (OSError, ValueError):
        old = None
    write_atomic(path, {**old, **data} if isinstance(old, dict) else data)
    if as_json:
        _emit_json({"provider": pid, "account": account, "file": str(path)})
    else:
        _say(f"Wrote the current tokens of account {account} of provider '{pid}' to {path}.")


@credentials_app.command(name="remove")
@handled
def credentials_remove(pid: Annotated[str, typer.Argument(metavar="PROVIDER_ID", help="the provider")],
                       account: Annotated[str, typer.Argument(help="the account (its file's name without "
                                                                       "the extension)")],
                       config: ConfigOpt = Path("proxy.yaml"), as_json: JsonOpt = False) -> None:
    """Take an account out of every host (its stored tokens go; a host's own file does not bring it back)."""
    from llmgate.credentials import fleet

    url, *_ = _shared_provider(config, pid)
    known = _in_store(url, lambda store: fleet.remove_credentials(store, pid, account))
    if as_json:
        _emit_json({"provider": pid, "account": account, "known": known})
    elif known:
        _say(f"Removed account {account} of provider '{pid}' from the shared store: no host uses it.")
    else:
        _say(f"The shared store did not know account {account} of provider '{pid}'; marked removed anyway.")


if __name__ == "__main__":
    app()
