"""Gateway benchmark: direct upstream vs bare mitmdump passthrough vs the gateway, in one run.

Prints requests/s at 16 connections, p50 latency at 1 connection (non-streamed
chat completions), and time to first token of a streamed completion, with the
ratios the targets are stated in (gateway >= 0.85x bare mitmdump throughput,
time-to-first-token overhead <= 3 ms). Loopback only; every run is bounded.

    .venv/bin/python bench/bench.py [--seconds 5] [--ttft-requests 200]

Uses wrk (apt install wrk) for load when present, else a Python load loop
(which then competes with the servers for the CPU; figures are lower).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from tests.harness import BIN, ROOT, Proc, Upstream  # noqa: E402

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}
GEMINI_MODEL = "gemini-2.5-flash"
CLAUDE_MODEL = "claude-sonnet-4-5"
MESSAGES_BODY = {"max_tokens": 64, "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}
KEY = "sk-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port}")


def start_mitmdump(port: int, target: str, *extra: str) -> Proc:
    p = Proc([str(BIN / "mitmdump"), "-q", "--mode", f"reverse:{target}@{port}",
              "--listen-host", "127.0.0.1", *extra])
    wait_port(port)
    return p


def wrk(url: str, connections: int, seconds: float, body: dict) -> tuple[float, float, int]:
    """(requests/s, p50 ms, requests made) from wrk."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(f'wrk.method="POST"\nwrk.body={json.dumps(json.dumps(body))}\n'
                f'wrk.headers["Content-Type"]="application/json"\nwrk.headers["Authorization"]="Bearer {KEY}"\n')
    out = subprocess.run(
        ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--latency",
         "-s", f.name, url], capture_output=True, text=True, timeout=seconds + 30,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"errors under load:\n{out}")
    rps = float(_found(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = _found(r"50%\s+([\d.]+)(us|ms|s)", out)
    p50 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    return rps, p50, int(_found(r"(\d+) requests in", out).group(1))


def _found(pattern: str, out: str) -> re.Match[str]:
    m = re.search(pattern, out)
    if m is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return m


async def py_load(url: str, connections: int, seconds: float, body: dict) -> tuple[float, float, int]:
    lat: list[float] = []
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as s:
        async def worker():
            while time.monotonic() < deadline:
                t = time.perf_counter()
                async with s.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
                    await r.read()
                    assert r.status == 200, r.status
                lat.append(time.perf_counter() - t)
        await asyncio.gather(*(worker() for _ in range(connections)))
    return len(lat) / seconds, statistics.median(lat) * 1000, len(lat)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident memory (VmHWM)."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def cpu_and_memory(systems: dict[str, tuple[Proc, tuple[str, str]]], total: int, seconds: float) -> None:
    """CPU per 1000 requests at 16 connections, and peak RSS once each system has answered
    `total` requests (those of the earlier runs not counted), side by side. Systems may share
    a process (a converted route): its peak then follows all of their requests."""
    print(f"\n{'':22}{'CPU s / 1000 req':>18}{'peak RSS MiB':>14}   (after {total} more requests each)")
    for name, (proc, target) in systems.items():
        done, start = 0, proc_cpu(proc.p.pid)
        while done < total:
            done += load(target, 16, min(seconds, max(1.0, (total - done) / 400)))[2]
        cpu = (proc_cpu(proc.p.pid) - start) / done * 1000
        print(f"{name:22}{cpu:18.2f}{peak_rss_mib(proc.p.pid):14.1f}")


def load(target: tuple[str, str], connections: int, seconds: float) -> tuple[float, float, int]:
    url, model = target
    body = {**(MESSAGES_BODY if url.endswith("/v1/messages") else BODY), "model": model}
    if shutil.which("wrk"):
        return wrk(url, connections, seconds, body)
    return asyncio.run(py_load(url, connections, seconds, body))


async def ttft(url: str, n: int) -> list[float]:
    """Ms from sending a streamed request to receiving its first content chunk, n times
    (after 5 not counted), over one connection."""
    body = {**BODY, "stream": True}
    samples = []
    async with aiohttp.ClientSession() as s:
        for i in range(n + 5):
            t = time.perf_counter()
            async with s.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
                assert r.status == 200, await r.text()
                async for line in r.content:
                    if b'"content":"' in line and b'"content":""' not in line:
                        if i >= 5:  # warm-up
                            samples.append((time.perf_counter() - t) * 1000)
                        break
                await r.read()
    return samples


def ttft_side_by_side(urls: dict[str, str], n: int, rounds: int = 6) -> dict[str, float]:
    """Median time to first token per system, from rounds that take turns (the order rotating),
    so a stretch of load on this shared machine falls on all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in urls}
    names = list(urls)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name] += asyncio.run(ttft(urls[name], max(1, n // rounds)))
    return {name: statistics.median(v) for name, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each load run")
    ap.add_argument("--rounds", type=int, default=5, help="alternating load runs per target")
    ap.add_argument("--ttft-requests", type=int, default=300)
    ap.add_argument("--memory-requests", type=int, default=20000, help="requests before peak RSS is read")
    args = ap.parse_args()

    procs: list[Proc] = []
    try:
        up = Upstream("openai_compat", "--models", "gpt-4o-mini")
        procs.append(up)
        gem = Upstream("gemini_api", "--models", GEMINI_MODEL)
        procs.append(gem)
        claude = Upstream("anthropic_api")
        procs.append(claude)
        bare_port, gw_port = free_port(), free_port()
        bare = start_mitmdump(bare_port, up.base)
        procs.append(bare)
        cfg = Path(tempfile.mkdtemp()) / "proxy.yaml"
        cfg.write_text(
            f"server: {{api_keys: [{KEY}]}}\n"
            f"providers:\n  - {{id: up, type: openai, base_url: '{up.base}/v1', models: [gpt-4o-mini]}}\n"
            f"  - {{id: gem, type: gemini, base_url: '{gem.base}', models: [{GEMINI_MODEL}]}}\n"
            f"  - {{id: claude, type: anthropic, base_url: '{claude.base}', models: [{CLAUDE_MODEL}]}}\n"
        )
        gw_args = ["-s", str(ROOT / "addons/gateway.py"), "--set", "connection_strategy=lazy",
                   "--set", f"gateway_config={cfg}"]
        gateway = start_mitmdump(gw_port, "http://127.0.0.1:1", *gw_args)
        procs.append(gateway)
        nolog_cfg = cfg.with_name("nolog.yaml")  # the same gateway without its request log
        nolog_cfg.write_text(cfg.read_text() + "log: {enabled: false}\n")
        nolog_port = free_port()
        procs.append(start_mitmdump(nolog_port, "http://127.0.0.1:1", "-s", str(ROOT / "addons/gateway.py"),
                                    "--set", "connection_strategy=lazy", "--set", f"gateway_config={nolog_cfg}"))
        watched_port = free_port()
        procs.append(start_mitmdump(watched_port, "http://127.0.0.1:1", *gw_args,
                                    "--set", "gateway_upstream_flows=on"))
        chat = "/v1/chat/completions"
        targets = {
            "direct upstream": (up.base + chat, "gpt-4o-mini"),
            "bare mitmdump": (f"http://127.0.0.1:{bare_port}{chat}", "gpt-4o-mini"),
            "gateway": (f"http://127.0.0.1:{gw_port}{chat}", "gpt-4o-mini"),
            "gateway+upflows": (f"http://127.0.0.1:{watched_port}{chat}", "gpt-4o-mini"),
            "gateway, no req. log": (f"http://127.0.0.1:{nolog_port}{chat}", "gpt-4o-mini"),
            "gateway->gemini": (f"http://127.0.0.1:{gw_port}{chat}", GEMINI_MODEL),  # converted both ways
            # Anthropic Messages clients: converted to an OpenAI-compatible upstream, passed through
            "anthropic->openai": (f"http://127.0.0.1:{gw_port}/v1/messages", "gpt-4o-mini"),
            "anthropic->anthropic": (f"http://127.0.0.1:{gw_port}/v1/messages", CLAUDE_MODEL),
        }
        print(f"load generator: {'wrk' if shutil.which('wrk') else 'python (install wrk for better figures)'}; "
              f"{args.seconds:g} s per run\n")
        # The machine is shared and noisy: runs alternate between targets, and the
        # ratio is the median of the ratios of runs made side by side.
        rps: dict[str, list[float]] = {name: [] for name in targets}
        for target in targets.values():
            load(target, 4, 1.0)  # warm up connections and code paths
        names = list(targets)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotate: no target always goes first
                rps[name].append(load(targets[name], 16, args.seconds)[0])
        p50 = {name: load(target, 1, args.seconds)[1] for name, target in targets.items()}
        print(f"{'':22}{'req/s @16 conn':>16}{'p50 ms @1 conn':>16}   (req/s: median of {args.rounds} runs)")
        for name in targets:
            print(f"{name:22}{statistics.median(rps[name]):16.0f}{p50[name]:16.2f}")

        def ratio(name: str) -> float:
            return statistics.median(g / b for g, b in zip(rps[name], rps["bare mitmdump"], strict=False))

        print(f"\nthroughput gateway / bare mitmdump: {ratio('gateway'):.2f}x (target >= 0.85x)")
        print(f"  with provider-side flows recorded (mitmweb, -w): {ratio('gateway+upflows'):.2f}x")
        print(f"  without the request log: {ratio('gateway, no req. log'):.2f}x")
        print(f"converted route (OpenAI client -> Gemini upstream) / bare mitmdump: "
              f"{ratio('gateway->gemini'):.2f}x (target >= 0.75x)")
        print(f"Anthropic client -> OpenAI-compatible upstream (converted, target >= 0.75x): "
              f"{ratio('anthropic->openai'):.2f}x; "
              f"-> Anthropic upstream (passthrough): {ratio('anthropic->anthropic'):.2f}x")

        # a bare mitmdump that streams (it buffers by default) shows mitmproxy's own share
        streaming_port = free_port()
        procs.append(start_mitmdump(streaming_port, up.base, "--set", "stream_large_bodies=1"))
        t = ttft_side_by_side({"direct": targets["direct upstream"][0],
                               "bare": f"http://127.0.0.1:{streaming_port}{chat}",
                               "gateway": targets["gateway"][0]}, args.ttft_requests)
        t_direct, t_bare, t_gw = t["direct"], t["bare"], t["gateway"]
        print(f"time to first token, median of {args.ttft_requests} (6 rounds taking turns): direct {t_direct:.2f} ms, "
              f"bare mitmdump (streaming) {t_bare:.2f} ms, gateway {t_gw:.2f} ms, "
              f"overhead {t_gw - t_direct:.2f} ms (target <= 3 ms)")
        cpu_and_memory({"bare mitmdump": (bare, targets["bare mitmdump"]), "gateway": (gateway, targets["gateway"]),
                        "gateway->gemini": (gateway, targets["gateway->gemini"])}, args.memory_requests, args.seconds)
        converter_costs()
        pool_selection_cost()
        redaction_cost()
    finally:
        for p in procs:
            p.stop()


def converter_costs(events: int = 2000) -> None:
    """CPU per SSE event of the stream transforms, in-process (no network)."""
    from converters import gemini, openai_chat
    from converters.pipeline import Converting
    from llmgate.request_path.relay import StreamTransform

    def gemini_event(i: int) -> bytes:
        body = {"candidates": [{"content": {"role": "model", "parts": [{"text": f"tok{i} "}]}}],
                "modelVersion": GEMINI_MODEL, "responseId": "r"}
        return b"data: " + json.dumps(body).encode() + b"\r\n\r\n"

    def openai_event(i: int) -> bytes:
        body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-08-06",
                "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}]}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    cases: dict[str, tuple[Callable[[], StreamTransform], Callable[[int], bytes]]] = {
        "OpenAI -> OpenAI (model rename)": (lambda: openai_chat.StreamRelabel("gpt-4o-mini"), openai_event),
        "Gemini -> OpenAI (converted)": (lambda: Converting(gemini.StreamDecoder(),
                                                            openai_chat.StreamEncoder("m", True)), gemini_event),
    }
    print(f"\nstream transform CPU per SSE event (median of 5 x {events} events):")
    for name, (make, event) in cases.items():
        data = [event(i) for i in range(events)]
        times = []
        for _ in range(5):
            t, start = make(), time.perf_counter()
            for chunk in data:
                t.feed(chunk)
            times.append((time.perf_counter() - start) / events * 1e6)
        print(f"  {name:34} {statistics.median(times):6.1f} us")


def pool_selection_cost(requests: int = 20000) -> None:
    """CPU per request of choosing a pool member (routing.members, pool.order, cooldown and
    concurrency checks), in-process, for a 5-member pool with one member cooling."""
    from llmgate.request_path.pool import PoolState
    from llmgate.request_path.routing import members
    from llmgate.settings import GatewaySettings

    settings = GatewaySettings.model_validate({"providers": [
        {"id": f"p{i}", "type": "openai", "base_url": f"http://127.0.0.1:{9000 + i}/v1", "models": ["m"],
         "max_concurrency": 100} for i in range(5)]})
    pool = PoolState()
    pool.cool("p2", "", "m", 3600, "429: bench")
    models_of = lambda p: p.models  # noqa: E731
    print(f"\npool selection CPU per request (5 members, one cooling; median of 5 x {requests}):")
    for strategy in ("round-robin", "least-busy", "weighted"):
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(requests):
                routes = members(settings, models_of, "m")
                for r in pool.order("m", routes, strategy, None):
                    if pool.available(r.provider.id, "", r.model, r.provider.max_concurrency):
                        break
            times.append((time.perf_counter() - start) / requests * 1e6)
        print(f"  {strategy:34} {statistics.median(times):6.1f} us (mitmproxy itself: ~1400 us of CPU per request)")


def redaction_cost(n: int = 20000) -> None:
    """CPU of scrubbing configured secrets (llmgate/addons/redaction.py), 12 unrelated secrets of
    ~30 characters: per non-streamed body (no secret in it: the usual case) and per stream chunk."""
    from llmgate.addons.redaction import Redactor, Scrubbing

    prefixes = ("sk-", "AIza", "ya29.", "1//", "sk-ant-", "gsk_", "xai-", "", "", "", "", "")
    secrets = [p + "".join(chr(97 + (i * 7 + j * 13) % 26) for j in range(26)) for i, p in enumerate(prefixes)]
    r = Redactor(secrets)
    text = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. " * 1000
    event = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
             "choices": [{"index": 0, "delta": {"content": "some token text "}}]}
    chunk = b"data: " + json.dumps(event).encode() + b"\n\n"

    class Passing:  # the transform Scrubbing wraps: here one that passes everything on
        def feed(self, chunk: bytes) -> bytes:
            return chunk

        def finish(self) -> bytes:
            return b""

        def fail(self, message: str, code: str = "upstream_error") -> bytes:
            return b""

    def per_call(f, arg) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n):
                f(arg)
            times.append((time.perf_counter() - start) / n * 1e6)
        return statistics.median(times)

    print(f"\nsecret scrubbing CPU, 12 secrets (median of 5 x {n}):")
    for size in (1 << 10, 16 << 10, 64 << 10):
        print(f"  {size >> 10:2d} KB body, no secret in it        {per_call(r.bytes, text[:size]):8.2f} us")
    print(f"   1 KB body, one secret in it       {per_call(r.bytes, text[:1000] + secrets[7].encode()):8.2f} us")
    print(f"  stream chunk, {len(chunk)} B (whole event)   {per_call(Scrubbing(Passing(), r).feed, chunk):8.2f} us")
    print(f"  stream chunk, {len(chunk) - 9} B (cut in a word) "
          f"{per_call(Scrubbing(Passing(), r).feed, chunk[:-9]):8.2f} us")


if __name__ == "__main__":
    main()
