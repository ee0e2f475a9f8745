"""Streams under load: bare mitmdump vs the gateway, side by side in one run.

Each stream is an OpenAI chat completion of `--chunks` chunks sent `--gap` ms apart by a local
upstream; each chunk carries the time the upstream sent it, so the client measures the delay
every hop added. Streams are opened at `--rate` per second until `--streams` are open at once.
Printed per system: added chunk delay p50/p99, the median gap between a stream's chunks (50 ms
spacing must arrive as ~50 ms gaps, not as bursts), first-token p50, streams that arrived as one
burst, and the proxy's CPU seconds, with CPU and delay p50 as multiples of bare mitmdump's (the
targets: <= 1.25x and <= 2x). Loopback only; every run is bounded and stops by itself.

    .venv/bin/python bench/streams.py [--streams 200] [--chunks 100] [--gap 50] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (whose bench.py would shadow the folder)

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from bench.bench import free_port, start_mitmdump, wait_port  # noqa: E402
from tests.harness import BIN, ROOT, Proc  # noqa: E402

KEY = "sk-bench"
MODEL = "bench-model"


# --- the upstream: chunks stamped with their send time -------------------------------------

def _chunk(i: int, content: str, finish: str | None = None) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}]}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def make_upstream(chunks: int, gap: float) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(chunks):
            await resp.write(_chunk(i, f"t={time.time():.6f};"))
            await asyncio.sleep(gap)
        await resp.write(_chunk(chunks, "", "stop") + b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    return app


def serve_upstream(port: int, chunks: int, gap: float) -> None:
    web.run_app(make_upstream(chunks, gap), host="127.0.0.1", port=port, print=None, backlog=4096)


# --- the client: one process, many streams ---------------------------------------------------

async def _one(session: aiohttp.ClientSession, url: str, model: str, out: list) -> None:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    started = time.time()
    arrivals: list[tuple[float, float]] = []  # (sent by upstream, received)
    try:
        async with session.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
            if r.status != 200:
                out.append({"error": r.status})
                return
            async for line in r.content:
                now = time.time()
                i = line.find(b"t=")
                if i >= 0:
                    arrivals.append((float(line[i + 2:line.index(b";", i)]), now))
    except (TimeoutError, aiohttp.ClientError) as e:
        out.append({"error": type(e).__name__})
        return
    out.append({"started": started, "arrivals": arrivals})


async def _clients(url: str, model: str, n: int, rate: float, timeout: float) -> list:
    out: list = []
    conn = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout)) as s:
        tasks = []
        for _ in range(n):
            tasks.append(asyncio.create_task(_one(s, url, model, out)))
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)
    return out


def client_process(url: str, model: str, n: int, rate: float, timeout: float, q: multiprocessing.Queue) -> None:
    q.put(asyncio.run(_clients(url, model, n, rate, timeout)))


# --- measuring ------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(url: str, model: str, streams: int, rate: float, timeout: float, clients: int) -> list:
    q: multiprocessing.Queue = multiprocessing.Queue()
    per = [streams // clients + (1 if i < streams % clients else 0) for i in range(clients)]
    procs = [multiprocessing.Process(target=client_process, args=(url, model, n, rate / clients, timeout, q))
             for n in per if n]
    for p in procs:
        p.start()
    results = [r for _ in procs for r in q.get(timeout=timeout + 60)]
    for p in procs:
        p.join(10)
    return results


def summarize(results: list, gap_ms: float) -> dict:
    ok = [r for r in results if "arrivals" in r and r["arrivals"]]
    delays = sorted((recv - sent) * 1000 for r in ok for sent, recv in r["arrivals"])
    gaps = [statistics.median((b[1] - a[1]) * 1000 for a, b in zip(r["arrivals"], r["arrivals"][1:], strict=False))
            for r in ok if len(r["arrivals"]) > 2]
    first = [(r["arrivals"][0][1] - r["started"]) * 1000 for r in ok]
    # a burst: the whole stream arrived within two upstream gaps
    bursts = sum(1 for r in ok if len(r["arrivals"]) > 2
                 and (r["arrivals"][-1][1] - r["arrivals"][0][1]) * 1000 < 2 * gap_ms)
    return {
        "ok": len(ok), "failed": len(results) - len(ok),
        "delay_p50": delays[len(delays) // 2] if delays else float("nan"),
        "delay_p99": delays[int(len(delays) * 0.99)] if delays else float("nan"),
        "gap_p50": statistics.median(gaps) if gaps else float("nan"),
        "first_p50": statistics.median(first) if first else float("nan"),
        "bursts": bursts,
    }


def start_gateway(port: int, root: Path, cfg: Path) -> Proc:
    """mitmdump with `root`'s gateway, importing that checkout's packages (not the installed ones)."""
    p = Proc([str(BIN / "mitmdump"), "-q", "--mode", f"reverse:http://127.0.0.1:1@{port}", "--listen-host", "127.0.0.1",
              "-s", str(root / "addons/gateway.py"), "--set", "connection_strategy=lazy",
              "--set", f"gateway_config={cfg}"], env={"PYTHONPATH": f"{root}{os.pathsep}{root / 'addons'}"})
    wait_port(port)
    return p


def stream_run(system: tuple[Proc, str, str], n: int, args: argparse.Namespace, timeout: float
               ) -> tuple[dict, float]:
    """One load of n streams on one system: (its summary, the proxy's CPU seconds)."""
    proc, base, model = system
    run_load(base + "/v1/chat/completions", model, min(n, 20), 100, timeout, 1)  # warm up
    before = cpu_seconds(proc.p.pid)
    s = summarize(run_load(base + "/v1/chat/completions", model, n, args.rate, timeout, args.clients), args.gap)
    return s, cpu_seconds(proc.p.pid) - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, nargs="+", default=[100, 200])
    ap.add_argument("--chunks", type=int, default=100)
    ap.add_argument("--gap", type=float, default=50.0, help="ms between upstream chunks")
    ap.add_argument("--rate", type=float, default=500.0, help="streams opened per second")
    ap.add_argument("--clients", type=int, default=2, help="client processes")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per stream count (the ratios' median is the figure)")
    ap.add_argument("--baseline", type=Path, action="append", default=[],
                    help="another checkout whose gateway runs alongside, e.g. a `git archive` of main")
    args = ap.parse_args()

    up_port = free_port()
    upstream = multiprocessing.Process(target=serve_upstream, args=(up_port, args.chunks, args.gap / 1000),
                                       daemon=True)
    upstream.start()
    procs: list[Proc] = []
    try:
        bare_port = free_port()
        bare = start_mitmdump(bare_port, f"http://127.0.0.1:{up_port}", "--set", "stream_large_bodies=1")
        procs.append(bare)
        cfg = Path(tempfile.mkdtemp()) / "proxy.yaml"
        cfg.write_text(f"server: {{api_keys: [{KEY}]}}\nlog: {{enabled: false}}\n"
                       f"providers:\n  - {{id: up, type: openai, base_url: 'http://127.0.0.1:{up_port}/v1',"
                       f" models: [{MODEL}]}}\nrouting: {{aliases: {{alias: up/{MODEL}}}}}\n")
        systems = {"bare mitmdump": (bare, f"http://127.0.0.1:{bare_port}", MODEL)}
        for name, root in [("llmgate (alias)", ROOT), *((f"{p.name} (alias)", p) for p in args.baseline)]:
            port = free_port()
            gw = start_gateway(port, root, cfg)
            procs.append(gw)
            systems[name] = (gw, f"http://127.0.0.1:{port}", "alias")
        timeout = args.chunks * args.gap / 1000 * 4 + 60
        print(f"{args.chunks} chunks {args.gap:g} ms apart per stream, opened at {args.rate:g}/s\n")
        print(f"{'streams':>7}  {'system':18}{'ok':>6}{'fail':>6}{'delay p50':>11}{'p99':>9}{'gap p50':>9}"
              f"{'first p50':>11}{'bursts':>8}{'CPU s':>8}{'CPU/bare':>10}{'delay/bare':>11}")
        for n in args.streams:
            ratios: dict[str, list[tuple[float, float]]] = {name: [] for name in systems}
            names = list(systems)
            for r in range(args.rounds):  # rounds take turns, the order rotating: a stretch of load falls on all
                order = names[r % len(names):] + names[:r % len(names)]
                runs = {name: stream_run(systems[name], n, args, timeout) for name in order}
                bare_cpu, bare_delay = runs["bare mitmdump"][1], runs["bare mitmdump"][0]["delay_p50"]
                for name, (s, cpu) in ((name, runs[name]) for name in names):
                    ratios[name].append((cpu / bare_cpu, s["delay_p50"] / bare_delay))
                    print(f"{n:>7}  {name:18}{s['ok']:>6}{s['failed']:>6}{s['delay_p50']:>9.1f}ms"
                          f"{s['delay_p99']:>7.0f}ms{s['gap_p50']:>7.1f}ms{s['first_p50']:>9.0f}ms{s['bursts']:>8}"
                          f"{cpu:>8.2f}{cpu / bare_cpu:>9.2f}x{s['delay_p50'] / bare_delay:>10.2f}x")
            for name in names[1:]:
                print(f"{n:>7}  {name:18} median of {args.rounds} rounds: CPU/bare "
                      f"{statistics.median(c for c, _ in ratios[name]):.2f}x (target <= 1.25x), delay/bare "
                      f"{statistics.median(d for _, d in ratios[name]):.2f}x (target <= 2x)")
    finally:
        for p in procs:
            p.stop()
        upstream.terminate()


if __name__ == "__main__":
    main()
