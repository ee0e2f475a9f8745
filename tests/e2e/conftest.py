import json
import socket

import pytest

from tests.harness import Gateway, Upstream

CLIENT_KEY = "sk-local-123"
UPSTREAM_KEY = "up-secret-key"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway_config(upstream: Upstream, **server) -> dict:
    up_v1 = upstream.base + "/v1"
    return {
        "server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 2}, **server},
        "providers": [
            # models discovered from the upstream's GET /v1/models
            {"id": "up", "type": "openai", "base_url": up_v1, "api_key": UPSTREAM_KEY},
            # same upstream, fixed model list and an extra header
            {"id": "fixed", "type": "openai", "base_url": up_v1, "api_key": UPSTREAM_KEY,
             "models": ["gpt-4o-mini", "fixed-only"], "headers": {"X-Title": "e2e"}},
            {"id": "wrongkey", "type": "openai", "base_url": up_v1, "api_key": "not-the-key",
             "models": ["wrongkey-model"]},
            {"id": "dead", "type": "openai", "base_url": f"http://127.0.0.1:{closed_port()}/v1",
             "models": ["dead-model"]},
        ],
        "routing": {"aliases": {"coder": "up/qwen3-coder-30b", "mini": "gpt-4o-mini"}},
    }


@pytest.fixture(scope="session")
def upstream():
    u = Upstream("openai_compat", "--api-key", UPSTREAM_KEY, "--models", "gpt-4o-mini,qwen3-coder-30b")
    yield u
    u.stop()


@pytest.fixture(scope="session")
def gateway(upstream, tmp_path_factory):
    g = Gateway(gateway_config(upstream), tmp_path_factory.mktemp("gw") / "proxy.yaml")
    yield g
    g.stop()


@pytest.fixture(scope="module")
def qwen():
    """Qwen's OAuth and portal double (modules that need other options define their own)."""
    u = Upstream("qwen_portal")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def redis():
    """A real redis-server of its own for the module."""
    from tests.services import redis_server

    with redis_server() as r:
        yield r


@pytest.fixture
def client(gateway):
    import openai

    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def tool_calls_of(response, stream: bool) -> list[dict]:
    """The assistant's tool calls as message dicts, from a completion or a stream of chunks
    (streamed calls assembled from their argument fragments, as a client does)."""
    if not stream:
        assert response.choices[0].finish_reason == "tool_calls"
        return [t.model_dump() for t in response.choices[0].message.tool_calls]
    calls: dict[int, dict] = {}
    for chunk in response:
        for tc in (chunk.choices[0].delta.tool_calls or ()) if chunk.choices else ():
            c = calls.setdefault(tc.index, {"id": tc.id, "name": tc.function.name, "args": ""})
            c["args"] += tc.function.arguments or ""
    return [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["args"]}}
            for c in calls.values()]


class TappedUpstream:
    """A provider double (tests/upstreams/<module>) served in-process, which also keeps the raw
    bytes of every request body: its /__requests log holds parsed JSON, which cannot show that
    a body went through byte for byte. Same `base`, `received()` and `clear()` as Upstream."""

    def __init__(self, module: str, api_key: str, models: list[str]):
        import importlib
        import json
        import urllib.request

        from aiohttp import web

        from tests.upstreams.serving import ServerThread

        self._json, self._urllib = json, urllib.request
        self.raw: list[tuple[str, bytes]] = []  # (path with query, body bytes)

        @web.middleware
        async def tap(request, handler):
            if request.path != "/__requests":
                self.raw.append((request.path_qs, await request.read()))
            return await handler(request)

        app = importlib.import_module(f"tests.upstreams.{module}").make_app(api_key, models)
        app.middlewares.insert(0, tap)
        self._server = ServerThread(app)
        self.base = self._server.__enter__()

    def received(self) -> list[dict]:
        with self._urllib.urlopen(self.base + "/__requests") as r:
            return self._json.load(r)

    def clear(self) -> None:
        self._urllib.urlopen(self._urllib.Request(self.base + "/__requests", method="DELETE")).close()
        self.raw.clear()

    def raw_bodies(self, path_part: str) -> list[bytes]:
        return [body for path, body in self.raw if path_part in path]

    def stop(self) -> None:
        self._server.__exit__(None, None, None)


def reset_cooldowns(gateway_base: str, provider: str) -> None:
    """End a provider's cooldowns (the operator's reset), so a test meets the upstream itself."""
    import httpx

    httpx.post(gateway_base + "/admin/reset", json={"provider": provider}).raise_for_status()


def responses_stream_then_hang_up(port: int, model: str, reset: bool = False) -> None:
    """A Responses stream read up to response.completed, then the socket closed at once, as Codex
    does (`reset`: with an RST, as abrupt as it gets)."""
    body = json.dumps({"model": model, "input": "hello", "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + CLIENT_KEY.encode()
                  + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        seen = b""
        while b"event: response.completed" not in seen:
            chunk = s.recv(65536)
            assert chunk, seen[-500:]
            seen += chunk
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
