"""Claude Code CLI behind a loopback Anthropic Messages endpoint.

The gateway reaches `opus` / `sonnet` / `haiku` through the local `claude` CLI by
treating it as an ordinary `anthropic`-wire provider whose base_url is this shim:
a small aiohttp server inside the gateway's event loop (started lazily, like the
stream relay) that answers each POST /v1/messages by running

    claude -p --output-format stream-json --verbose --model <model>
           [--include-partial-messages] [--system-prompt <system>] [extra args...]

with the prompt on stdin (converters.claude_code.prompt_of) and translating its
stdout (converters.claude_code.StreamJsonDecoder) into an Anthropic response: SSE
through converters.anthropic.StreamEncoder for stream=true (partial messages on),
one Message for stream=false.

- Auth: every request needs the shim's own key (x-api-key or Bearer), random
  unless given: another local user must not spend this account through the port.
- At most `max_concurrency` CLI processes run at once; a request waits up to
  `queue_timeout` for a slot, then gets 529 overloaded_error.
- Each process runs in its own session (process group) in `cwd` (by default a
  private empty temporary directory), with the gateway's environment plus `env`.
  It is stopped (SIGTERM to the group, SIGKILL after `kill_grace` s) when the
  client goes away, when it runs longer than `timeout`, or on close().
- Errors before the first content are HTTP errors in Anthropic's JSON shape: a
  CLI that exits non-zero gives 502 api_error with the tail of its stderr
  (key-like strings redacted); a result with is_error keeps the status of an
  "API Error: <status>" text (429, 529 ... so the gateway can fail over); a
  timeout gives 504. After content has gone out, the same errors end the SSE
  stream with an error event.
- GET /v1/models lists the aliases; POST /v1/messages/count_tokens answers with a
  local estimate (converters.token_estimate).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import signal
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from converters import anthropic, token_estimate
from converters import canonical as cn
from converters.claude_code import StreamJsonDecoder, collect, prompt_of

log = logging.getLogger(__name__)

MODELS = ("opus", "sonnet", "haiku")
_MODEL = re.compile(r"^(?:(?:opus|sonnet|haiku)(?:\[1m\])?|claude-[a-z0-9][a-z0-9.\-]*(?:\[1m\])?)$")
STDERR_KEEP = 4096  # bytes of stderr kept per process
STDERR_SHOWN = 600  # characters of it put in an error message
READ_SIZE = 1 << 16
_SECRETS = [
    (re.compile(r"sk-[A-Za-z0-9_\-]{8,}"), "sk-<redacted>"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*"), r"\1 <redacted>"),
    (re.compile(r"(?i)\b(api[_-]?key|token|secret|password|authorization)(\"?\s*[:=]\s*\"?)[^\s\"',}]+"),
     r"\1\2<redacted>"),
]
_CONTENT = (cn.BlockStart, cn.TextDelta, cn.ThinkingDelta, cn.SignatureDelta, cn.BlockStop, cn.Finish)


def redact(text: str) -> str:
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


def _error(status: int, message: str, kind: str | None = None) -> web.Response:
    body = anthropic.error_body(status, message)
    if kind:
        body["error"]["type"] = kind
    return web.json_response(body, status=status)


def _stream_error_response(e: cn.StreamError) -> web.Response:
    kind = e.code if e.code in anthropic.ERROR_TYPES else anthropic.error_type(e.status)
    return _error(e.status, e.message, kind)


class _Run:
    """One CLI process: its prompt going in, its stdout decoded, its stderr's tail kept."""

    def __init__(self, proc: asyncio.subprocess.Process, prompt: str, timeout: float):
        self.proc = proc
        self.decoder = StreamJsonDecoder()
        self.deadline = asyncio.get_running_loop().time() + timeout
        self.timeout = timeout
        self._stderr = bytearray()
        self._ended = False
        loop = asyncio.get_running_loop()
        self._feeder = loop.create_task(self._feed(prompt.encode()))
        self._drainer = loop.create_task(self._drain_stderr())

    async def _feed(self, data: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(data)
            await stdin.drain()
            stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it exited before reading everything: its exit status says why

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(READ_SIZE):
            self._stderr += chunk
            del self._stderr[:-STDERR_KEEP]

    def stderr_tail(self) -> str:
        text = redact(self._stderr.decode("utf-8", "replace")).strip()
        return ("..." + text[-STDERR_SHOWN:]) if len(text) > STDERR_SHOWN else text

    async def next(self) -> list[cn.Event] | None:
        """The next decoded events; None once the stream has ended (the last list ends it)."""
        if self._ended:
            return None
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        while True:
            if self.decoder.done:
                self._ended = True
                return []
            remaining = self.deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                chunk = await asyncio.wait_for(self.proc.stdout.read(READ_SIZE), remaining)
            except TimeoutError:
                self._ended = True
                self.decoder.done = True
                return [cn.StreamError(f"The Claude Code CLI gave no complete answer within {self.timeout:g} s.",
                                       "timeout_error", 504)]
            if not chunk:
                return await self._eof()
            events = self.decoder.feed(chunk)
            if self.decoder.done:
                self._ended = True
                return events
            if events:
                return events

    async def _eof(self) -> list[cn.Event]:
        self._ended = True
        try:
            rc = await asyncio.wait_for(self.proc.wait(), 5.0)
        except TimeoutError:
            rc = None  # closed its stdout but lives on; stop() ends it
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._drainer), 1.0)
        tail = self.stderr_tail()
        if rc:
            message = f"The Claude Code CLI exited with status {rc}" + (f": {tail}" if tail else ".")
        else:
            message = "The Claude Code CLI stopped without a result" + (f": {tail}" if tail else ".")
        return self.decoder.finish(message)

    def cancel_io(self) -> None:
        self._feeder.cancel()
        self._drainer.cancel()


class ClaudeCodeShim:
    """A loopback Anthropic Messages server answered by the Claude Code CLI.

    executable: the CLI's name (looked up on PATH) or path; None disables the shim.
    max_concurrency: CLI processes at once; queue_timeout: seconds a request waits for one.
    timeout: seconds one CLI run may take; kill_grace: seconds between SIGTERM and SIGKILL.
    cwd: the CLI's working directory (default: a private empty temporary directory).
    extra_args: appended to every command line (e.g. ("--tools", "") on CLIs that have it).
    env: added to (overriding) the gateway's environment for the CLI.
    api_key: the key callers must present; random when not given (read it from .api_key).
    """

    def __init__(self, executable: str | None = "claude", *, max_concurrency: int = 2, timeout: float = 600.0,
                 queue_timeout: float = 60.0, kill_grace: float = 2.0, cwd: str | None = None,
                 extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None, api_key: str | None = None):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.executable = executable
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.queue_timeout = queue_timeout
        self.kill_grace = kill_grace
        self.cwd = cwd
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.api_key = api_key or secrets.token_urlsafe(24)
        self.port = 0
        self._slots: asyncio.Semaphore | None = None
        self._runner: web.AppRunner | None = None
        self._starting: asyncio.Lock | None = None
        self._tmpdir: str | None = None
        self._procs: set[asyncio.subprocess.Process] = set()
        self._stopping: set[asyncio.Task] = set()

    # -- state --

    @property
    def path(self) -> str | None:
        """The CLI's resolved path; None when there is none."""
        return shutil.which(self.executable) if self.executable else None

    @property
    def unavailable(self) -> str | None:
        """Why the shim cannot answer (for /health); None when it can."""
        if not self.executable:
            return "Claude Code is disabled: no CLI executable is configured."
        if self.path is None:
            return f"The Claude Code CLI ({self.executable!r}) was not found on PATH or is not executable."
        return None

    @property
    def active(self) -> int:
        """CLI processes running now."""
        return len(self._procs)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- server --

    async def ensure_started(self) -> str:
        """Start the server if need be; its base URL (http://127.0.0.1:<port>)."""
        if self._runner is None:
            self._starting = self._starting or asyncio.Lock()
            async with self._starting:
                if self._runner is None:
                    self._slots = asyncio.Semaphore(self.max_concurrency)
                    app = web.Application(client_max_size=64 << 20)
                    app.router.add_post("/v1/messages", self._messages)
                    app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
                    app.router.add_get("/v1/models", self._models)
                    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=5.0)
                    await runner.setup()
                    site = web.TCPSite(runner, "127.0.0.1", 0)
                    await site.start()
                    self.port = runner.addresses[0][1]
                    self._runner = runner
                    log.debug("claude code shim listening on %s", self.base_url)
        return self.base_url

    def kill_all(self) -> None:
        """At gateway shutdown (sync hooks only): no CLI process outlives the gateway."""
        for proc in list(self._procs):
            self._signal(proc, signal.SIGKILL)

    async def close(self) -> None:
        """Stop every running CLI process and the server."""
        for proc in list(self._procs):
            self._stop(proc)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    # -- processes --

    def _workdir(self) -> str:
        if self.cwd:
            return self.cwd
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="llmgate-claude-code-")
        return self._tmpdir

    async def _spawn(self, args: list[str]) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=self._workdir(), env={**os.environ, **self.env},
            start_new_session=True, limit=READ_SIZE)
        self._procs.add(proc)
        return proc

    def _stop(self, proc: asyncio.subprocess.Process, linger: float = 0.0) -> asyncio.Task:
        """End a process (in a task of its own, so a cancelled handler cannot interrupt it),
        after up to `linger` s for it to exit by itself (it printed its result)."""
        task = asyncio.get_running_loop().create_task(self._terminate(proc, linger))
        self._stopping.add(task)
        task.add_done_callback(self._stopped)
        return task

    def _stopped(self, task: asyncio.Task) -> None:
        self._stopping.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("stopping a Claude Code CLI process failed", exc_info=task.exception())

    async def _terminate(self, proc: asyncio.subprocess.Process, linger: float = 0.0) -> None:
        try:
            if linger > 0 and proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), linger)
            if proc.returncode is None:
                self._signal(proc, signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), self.kill_grace)
                except TimeoutError:
                    self._signal(proc, signal.SIGKILL)
                    await proc.wait()
        finally:
            self._procs.discard(proc)

    @staticmethod
    def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
        if proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, sig)  # its own session: the CLI's children (tools, MCP servers) too
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    # -- requests --

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), self.api_key.encode())

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        if not self._authorized(request):
            return _error(401, "Invalid or missing key for the Claude Code shim.")
        try:
            body = await request.json(loads=json.loads)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        return body

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "Invalid or missing key for the Claude Code shim.")
        return web.json_response(anthropic.model_list(list(MODELS)))

    async def _count_tokens(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        try:
            req = anthropic.decode_request({**body, "max_tokens": body.get("max_tokens") or 1})
        except cn.ConversionError as e:
            return _error(400, f"{e.param}: {e}" if e.param else str(e))
        return web.json_response({"input_tokens": token_estimate.estimate(req)})

    def _validate(self, body: dict[str, Any]) -> str | None:
        model, messages, max_tokens = body.get("model"), body.get("messages"), body.get("max_tokens")
        if not isinstance(model, str) or not model:
            return "model: a model name is required."
        if not isinstance(messages, list) or not messages:
            return "messages: a non-empty list of messages is required."
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return "max_tokens: a positive integer is required."
        if "stream" in body and not isinstance(body["stream"], bool):
            return "stream: must be a boolean."
        return None

    def command(self, model: str, system: str | None, stream: bool) -> list[str]:
        """The CLI command line for one request (the prompt goes on stdin)."""
        path = self.path
        assert path is not None
        args = [path, "-p", "--output-format", "stream-json", "--verbose", "--model", model]
        if stream:
            args.append("--include-partial-messages")
        if system:
            args += ["--system-prompt", system]
        return args + self.extra_args

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        if (problem := self._validate(body)) is not None:
            return _error(400, problem)
        model = body["model"]
        if not _MODEL.match(model):
            return _error(404, f"model: {model!r} is not served by Claude Code (use opus, sonnet, haiku "
                               "or a claude-* model name).")
        try:
            prompt, system = prompt_of(body)
        except cn.ConversionError as e:
            return _error(400, f"{e.param}: {e}" if e.param else str(e))
        if (reason := self.unavailable) is not None:
            return _error(503, reason, "api_error")
        stream = body.get("stream") is True
        args = self.command(model, system, stream)
        assert self._slots is not None
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_timeout)
        except TimeoutError:
            return _error(529, f"All {self.max_concurrency} Claude Code slots stayed busy for "
                               f"{self.queue_timeout:g} s.", "overloaded_error")
        proc: asyncio.subprocess.Process | None = None
        run: _Run | None = None
        try:
            try:
                proc = await self._spawn(args)
            except OSError as e:
                return _error(503, f"The Claude Code CLI could not be started: {e.strerror or e}.", "api_error")
            run = _Run(proc, prompt, self.timeout)
            if stream:
                return await self._stream(request, run, model)
            return await self._whole(run, model)
        finally:
            if run is not None:
                run.cancel_io()
            if proc is None:
                self._slots.release()
            else:  # the slot is free once the process is gone
                finished = run is not None and run.decoder.result is not None
                stopping = self._stop(proc, self.kill_grace if finished else 0.0)
                stopping.add_done_callback(lambda _: self._slots.release())  # type: ignore[union-attr]

    async def _whole(self, run: _Run, model: str) -> web.Response:
        events: list[cn.Event] = []
        while (more := await run.next()) is not None:
            events += more
        result = collect(events, model)
        if isinstance(result, cn.StreamError):
            return _stream_error_response(result)
        headers = {}
        if run.decoder.cost_usd is not None:
            headers["x-claude-code-cost-usd"] = f"{run.decoder.cost_usd:.6f}"
        return web.json_response(anthropic.encode_response(result, model), headers=headers)

    async def _stream(self, request: web.Request, run: _Run, model: str) -> web.StreamResponse:
        encoder = anthropic.StreamEncoder(model)
        resp: web.StreamResponse | None = None
        pending: list[cn.Event] = []
        try:
            while (events := await run.next()) is not None:
                if resp is None:
                    pending += events
                    first_error = next((i for i, e in enumerate(pending) if isinstance(e, cn.StreamError)), None)
                    first_content = next((i for i, e in enumerate(pending) if isinstance(e, _CONTENT)), None)
                    if first_error is not None and (first_content is None or first_error < first_content):
                        return _stream_error_response(pending[first_error])  # type: ignore[arg-type]
                    if first_content is None:
                        continue
                    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                                       "Cache-Control": "no-cache"})
                    await resp.prepare(request)
                    events, pending = pending, []
                data = encoder.encode(events)
                if data:
                    await resp.write(data)
            if resp is None:  # cannot happen: the last events hold a Finish or a StreamError
                return _error(502, "The Claude Code CLI gave no answer.")
            if not encoder.closed:
                await resp.write(encoder.encode([cn.StreamError("The Claude Code stream ended early.")]))
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            log.debug("claude code shim: the client left mid-stream")
        if run.decoder.cost_usd is not None:
            log.debug("claude code run cost %.6f USD", run.decoder.cost_usd)
        return resp  # type: ignore[return-value]
