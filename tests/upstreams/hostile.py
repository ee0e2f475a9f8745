"""A hostile OpenAI-compatible upstream: answers that are too big, too slow, redirected,
compressed, not JSON, not a stream, malformed mid-stream or cut off (aiohttp.web).

As a process (from the repository root)::

    python -m tests.upstreams.hostile --port 0

prints ``READY <port>``. No authentication (any key is accepted, none checked).

Endpoints:
    GET  /v1/models            the scenario names as an OpenAI model list
    GET  /huge/v1/models       a 210 MB model list (sent in 1 MiB writes)
    POST /v1/chat/completions  the scenario named by the request's model (below)
    POST /huge/v1/chat/completions  the same
    GET/DELETE /__requests     the request log (tests/upstreams/serving.py)
    GET  /__active             how many firehose streams are still being sent
    anything else              404

Scenarios (the request's "model"; `stream` picks the stream variant where there is one):
    ok              a normal answer, "hello" (JSON, or an SSE stream ending in [DONE])
    huge-body       200 application/json, chunked, 200 MB (1 MiB writes), never valid
    long-line       stream: one SSE line of 100 MB with no line end
    drip            200 application/json with Content-Length 1000, then one byte every 0.5 s
    html            200 text/html page (a captive portal, a misrouted proxy)
    json-for-stream a stream request answered with a whole JSON completion
    redirect        301 to http://elsewhere.invalid/steal?token=abc (and /followed on this host
                    when the request has "stream": true, to see whether anyone follows it)
    gzip            the ok answer gzip-compressed, with Content-Encoding: gzip
    weird-encoding  the ok answer with Content-Encoding: snappy-x (not decodable)
    bad-json-event  stream: role, "Hel", then `data: {"choices": [` (not JSON), then "lo",
                    finish_reason stop and [DONE]
    cut             stream: role and "Hel", then the connection is aborted mid-chunk
    firehose        stream: 16 KiB content chunks without end, as fast as they are read
    linger          stream: the whole ok stream, [DONE] included, then 2 s before the body ends
    bad-framing     a first chunk (stream: role and "Hel"; else the start of a JSON body), then bytes
                    that are not chunked framing, then nothing for 10 s with the connection open
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import sys
import time

from aiohttp import web

from tests.upstreams import serving

SCENARIOS = ["ok", "huge-body", "long-line", "drip", "html", "json-for-stream", "redirect", "gzip",
             "weird-encoding", "bad-json-event", "cut", "firehose", "linger", "bad-framing"]
MIB = 1 << 20
ACTIVE = web.AppKey("active", list)


def chunk(model: str, delta: dict, finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-h", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def completion(model: str, text: str = "hello") -> bytes:
    return json.dumps({"id": "chatcmpl-h", "object": "chat.completion", "created": int(time.time()), "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()


def ok_stream(model: str) -> bytes:
    return (chunk(model, {"role": "assistant", "content": ""}) + chunk(model, {"content": "hello"})
            + chunk(model, {}, "stop") + b"data: [DONE]\n\n")


async def stream_of(request: web.Request, content_type: str = "text/event-stream",
                    **headers: str) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": content_type, **headers})
    await resp.prepare(request)
    return resp


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": s, "object": "model", "owned_by": "h"}
                                                         for s in SCENARIOS]})


async def huge_models(request: web.Request) -> web.StreamResponse:
    resp = await stream_of(request, "application/json")
    await resp.write(b'{"object":"list","data":[')
    entry = b'{"id":"m","object":"model","owned_by":"h"},'
    piece = entry * (MIB // len(entry))
    for _ in range(210):
        await resp.write(piece)
    await resp.write(b'{"id":"last"}]}')
    return resp


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model, stream = body.get("model"), body.get("stream") is True
    handler = HANDLERS.get(model)
    if handler is None:
        return web.json_response({"error": {"message": f"unknown scenario {model}", "type": "invalid_request_error",
                                            "code": "model_not_found"}}, status=404)
    return await handler(request, model, stream)


async def ok(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    if stream:
        return web.Response(body=ok_stream(model), content_type="text/event-stream")
    return web.Response(body=completion(model), content_type="application/json")


async def huge_body(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    resp = await stream_of(request, "application/json")
    await resp.write(b'{"id":"x","choices":[{"message":{"content":"')
    piece = b"a" * MIB
    for _ in range(200):
        await resp.write(piece)
    await resp.write(b'"}}]}')
    return resp


async def long_line(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    resp = await stream_of(request)
    await resp.write(chunk(model, {"role": "assistant", "content": ""}) + b"data: ")
    piece = b"a" * MIB
    for _ in range(100):
        await resp.write(piece)
    return resp


async def drip(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "1000"})
    await resp.prepare(request)
    for _ in range(1000):
        await resp.write(b" ")
        await asyncio.sleep(0.5)
    return resp


async def html(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    return web.Response(body=b"<html><body>Please log in to the hotel Wi-Fi</body></html>", content_type="text/html")


async def json_for_stream(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    return web.Response(body=completion(model), content_type="application/json")


async def redirect(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    target = "/followed" if stream else "http://elsewhere.invalid/steal?token=abc"
    return web.Response(status=301, headers={"Location": target})


async def compressed(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    raw = ok_stream(model) if stream else completion(model)
    return web.Response(body=gzip.compress(raw), headers={
        "Content-Type": "text/event-stream" if stream else "application/json", "Content-Encoding": "gzip"})


async def weird_encoding(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    raw = ok_stream(model) if stream else completion(model)
    return web.Response(body=raw, headers={
        "Content-Type": "text/event-stream" if stream else "application/json", "Content-Encoding": "snappy-x"})


async def bad_json_event(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    resp = await stream_of(request)
    await resp.write(chunk(model, {"role": "assistant", "content": ""}) + chunk(model, {"content": "Hel"}))
    await resp.write(b'data: {"choices": [\n\n')
    await resp.write(chunk(model, {"content": "lo"}) + chunk(model, {}, "stop") + b"data: [DONE]\n\n")
    return resp


async def cut(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    resp = await stream_of(request)
    await resp.write(chunk(model, {"role": "assistant", "content": ""}) + chunk(model, {"content": "Hel"}))
    await asyncio.sleep(0.2)
    request.transport.abort()
    return resp


async def firehose(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    # a real provider's send buffer is on its own host, not on the gateway's: keep this one small
    request.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    resp = await stream_of(request)
    piece = chunk(model, {"content": "x" * (16 << 10)})
    request.app[ACTIVE][0] += 1
    try:
        await resp.write(chunk(model, {"role": "assistant", "content": ""}))
        while True:  # ends when the gateway closes the connection (the write raises)
            await resp.write(piece)
    finally:
        request.app[ACTIVE][0] -= 1


async def linger(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    if not stream:
        return await ok(request, model, stream)
    resp = await stream_of(request)
    await resp.write(ok_stream(model))
    await asyncio.sleep(2)
    return resp


async def bad_framing(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    resp = await stream_of(request, "text/event-stream" if stream else "application/json")
    await resp.write(chunk(model, {"role": "assistant", "content": ""}) + chunk(model, {"content": "Hel"})
                     if stream else b'{"id": "chatcmpl-1", ')
    await asyncio.sleep(0.2)  # the gateway has the answer's head by then
    request.transport.write(b"zz\r\nnot a chunk size\r\n")
    await asyncio.sleep(10)
    return resp


async def active(request: web.Request) -> web.Response:
    return web.json_response(request.app[ACTIVE][0])


HANDLERS = {"ok": ok, "huge-body": huge_body, "long-line": long_line, "drip": drip, "html": html,
            "json-for-stream": json_for_stream, "redirect": redirect, "gzip": compressed,
            "weird-encoding": weird_encoding, "bad-json-event": bad_json_event, "cut": cut, "firehose": firehose,
            "linger": linger, "bad-framing": bad_framing}


def make_app(api_key: str | None = None, model_names: list[str] | None = None) -> web.Application:
    app = web.Application(middlewares=[serving.request_log])
    serving.add_request_log(app)
    app[ACTIVE] = [0]
    app.router.add_get("/__active", active)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/huge/v1/models", huge_models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/huge/v1/chat/completions", chat)
    return app


def main(argv: list[str] | None = None) -> None:
    serving.main(make_app, SCENARIOS, __doc__, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
