"""What every test upstream shares: its app with the request log (application: GET/DELETE
/__requests), the control endpoints of a double with state (add_controls, control_body,
expire_tokens, set_scenario, updated_config), its command line (serve make_app(api_key, models),
print READY <port>) and ServerThread, to serve one in-process from a test."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, fields
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

REQUEST_LOG = web.AppKey("request_log", list)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def record(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        body = None
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return {"method": request.method, "path": request.path, "query": request.query_string,
            "headers": headers, "body": body}


@web.middleware
async def request_log(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Records every request but those to the log itself; put it first in middlewares."""
    if request.path != "/__requests":
        request.app[REQUEST_LOG].append(await record(request))
    return await handler(request)


async def get_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[REQUEST_LOG])


async def clear_requests(request: web.Request) -> web.Response:
    log = request.app[REQUEST_LOG]
    cleared = len(log)
    log.clear()
    return web.json_response({"cleared": cleared})


def add_request_log(app: web.Application) -> None:
    app[REQUEST_LOG] = []
    app.router.add_get("/__requests", get_requests)
    app.router.add_delete("/__requests", clear_requests)


def application(*middlewares: Middleware) -> web.Application:
    """A double's app: the request log first, then its `middlewares`; bodies up to 64 MiB."""
    app = web.Application(middlewares=[request_log, *middlewares], client_max_size=64 * 1024**2)
    add_request_log(app)
    return app


def add_controls(app: web.Application, prefix: str, inspect: Handler, posts: dict[str, Handler],
                 reset: Callable[[web.Application], None]) -> None:
    """A double's control endpoints (no auth): GET <prefix> -> inspect, POST <prefix>/<name>
    for each of posts, and POST <prefix>/reset -> reset(app), answered {"reset": true}."""
    async def reset_endpoint(request: web.Request) -> web.Response:
        reset(request.app)
        return web.json_response({"reset": True})

    app.router.add_get(prefix, inspect)
    for name, handler in {**posts, "reset": reset_endpoint}.items():
        app.router.add_post(f"{prefix}/{name}", handler)


async def control_body(request: web.Request) -> dict[str, Any]:
    """A control request's JSON object (an empty body: {})."""
    raw = await request.read()
    data = json.loads(raw) if raw.strip() else {}
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="JSON object expected")
    return data


def expire_tokens(tokens: dict[str, tuple[str, float]]) -> web.Response:
    """Expires every token of a token -> (owner, expiry epoch s) map -> {"expired": count}."""
    for tok, (owner, exp) in tokens.items():
        tokens[tok] = (owner, min(exp, time.time() - 1))
    return web.json_response({"expired": len(tokens)})


def set_scenario(scenario: Any, body: dict[str, Any], modes: Sequence[str]) -> web.Response:
    """POST /__scenario {mode, times?, models?}: checked, then scenario.set -> scenario.as_dict()."""
    mode, times, models = body.get("mode"), body.get("times"), body.get("models")
    if mode is not None and mode not in modes:
        raise web.HTTPBadRequest(text=f"mode must be null or one of {list(modes)}")
    if times is not None and (not isinstance(times, int) or times < 1):
        raise web.HTTPBadRequest(text="times must be a positive integer")
    if models is not None and not isinstance(models, list):
        raise web.HTTPBadRequest(text="models must be a list")
    scenario.set(mode, times, models)
    return web.json_response(scenario.as_dict())


def updated_config(config: Any, changes: dict[str, Any]) -> Any:
    """The dataclass `config` with `changes`, after its check() (else HTTP 400, as is an unknown name)."""
    unknown = set(changes) - {f.name for f in fields(config)}
    if unknown:
        raise web.HTTPBadRequest(text=f"unknown settings {sorted(unknown)}")
    updated = type(config)(**{**asdict(config), **changes})
    try:
        updated.check()
    except ValueError as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    return updated


async def serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"READY {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def arg_parser(default_models: list[str], doc: str | None,
               api_key_help: str = "omit to disable auth") -> argparse.ArgumentParser:
    """--host, --port, --api-key and --models; a double adds its own flags."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help=api_key_help)
    parser.add_argument("--models", default=",".join(default_models),
                        help="comma-separated model ids (scenario models are always added)")
    return parser


def models_of(args: argparse.Namespace) -> list[str]:
    return [m.strip() for m in args.models.split(",") if m.strip()]


def main(make_app: Callable[[str | None, list[str]], web.Application], default_models: list[str],
         doc: str | None, argv: list[str] | None = None) -> None:
    args = arg_parser(default_models, doc).parse_args(argv)
    asyncio.run(serve(make_app(args.api_key, models_of(args)), args.host, args.port))


class ServerThread:
    """Serves an aiohttp app on a free loopback port from a background thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def __enter__(self) -> str:
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    async def _start(self) -> int:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return self.runner.addresses[0][1]
