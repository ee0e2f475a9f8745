"""Instructions per request under valgrind (callgrind): a cost figure a busy machine cannot skew.

CPU seconds and requests/s move by +-20% when other work shares this 2-core machine; counted
instructions do not. One proxy runs under callgrind with counting off; after a warm-up, N
sequential requests are counted, then an idle stretch as long (timers and polls that run
whatever the load), which is subtracted.

    .venv/bin/python bench/instructions.py bare|gateway [--route same|gemini|stream|chunks] [--root DIR] [-n 100]

--route chunks is bench/streams.py's stream, one at a time: `--chunks` chunks `--gap` ms apart (far
enough apart under valgrind that each is its own read), a new client connection per stream, the
model renamed by an alias on the gateway; the figure is per stream.

Run two side by side (e.g. the gateway of a `git archive` checkout with --root, and this one)
to compare changes. Slow (valgrind: ~5 min a run), so not part of `make bench`.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import multiprocessing
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

from bench import streams  # noqa: E402
from bench.bench import BODY, GEMINI_MODEL, KEY, free_port  # noqa: E402
from tests.harness import BIN, ROOT, Proc, Upstream  # noqa: E402


def counted(pid: int, out: str, work: Callable[[], None]) -> tuple[int, float]:
    """(instructions, seconds) of `work` in the callgrind process `pid`."""
    ctl = lambda *a: subprocess.run(["callgrind_control", *a, str(pid)], capture_output=True)  # noqa: E731
    ctl("-z")
    ctl("-i", "on")
    start = time.monotonic()
    work()
    took = time.monotonic() - start
    ctl("-i", "off")
    before = set(glob.glob(out + ".*"))
    ctl("-d")
    deadline = time.monotonic() + 60
    while not (dumped := set(glob.glob(out + ".*")) - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1)  # the dump is written in one go, but give it a moment
    m = re.search(r"^totals: (\d+)", Path(dumped.pop()).read_text(errors="replace"), re.M)  # "summary:" says 0
    if m is None:
        raise RuntimeError(f"callgrind's dump in {out}.* has no totals")
    return int(m.group(1)), took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("system", choices=["bare", "gateway"])
    ap.add_argument("--route", choices=["same", "gemini", "stream", "chunks"], default="same")
    ap.add_argument("--chunks", type=int, default=25, help="--route chunks: chunks per stream")
    ap.add_argument("--gap", type=float, default=40.0, help="--route chunks: ms between chunks")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose gateway runs")
    ap.add_argument("-n", type=int, default=100, help="requests counted")
    args = ap.parse_args()

    up = Upstream("openai_compat", "--models", "gpt-4o-mini")
    gem = Upstream("gemini_api", "--models", GEMINI_MODEL)
    chunky_port = free_port()  # --route chunks: bench/streams.py's upstream
    chunky = multiprocessing.Process(target=streams.serve_upstream, args=(chunky_port, args.chunks, args.gap / 1000),
                                     daemon=True)
    chunky.start()
    cfg = Path(tempfile.mkdtemp()) / "proxy.yaml"
    cfg.write_text(f"server: {{api_keys: [{KEY}]}}\nproviders:\n"
                   f"  - {{id: up, type: openai, base_url: '{up.base}/v1', models: [gpt-4o-mini]}}\n"
                   f"  - {{id: gem, type: gemini, base_url: '{gem.base}', models: [{GEMINI_MODEL}]}}\n"
                   f"  - {{id: chunky, type: openai, base_url: 'http://127.0.0.1:{chunky_port}/v1',"
                   f" models: [{streams.MODEL}]}}\n"
                   f"routing: {{aliases: {{alias: chunky/{streams.MODEL}}}}}\n")
    port = free_port()
    out = str(Path(tempfile.mkdtemp()) / "callgrind.out")
    mitmdump = [str(BIN / "python"), str(BIN / "mitmdump"), "-q", "--listen-host", "127.0.0.1"]
    if args.system == "bare":
        streaming = ["--set", "stream_large_bodies=1"] if args.route in ("stream", "chunks") else []  # else it buffers
        target = f"http://127.0.0.1:{chunky_port}" if args.route == "chunks" else up.base
        cmd, env = [*mitmdump, "--mode", f"reverse:{target}@{port}", *streaming], {}
    else:
        cmd = [*mitmdump, "--mode", f"reverse:http://127.0.0.1:1@{port}", "-s", str(args.root / "addons/gateway.py"),
               "--set", "connection_strategy=lazy", "--set", f"gateway_config={cfg}"]
        env = {"PYTHONPATH": f"{args.root}:{args.root / 'addons'}"}
    proxy = Proc(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *cmd], env=env)
    model = {"gemini": GEMINI_MODEL, "chunks": "alias" if args.system == "gateway" else streams.MODEL}
    body = {**BODY, "model": model.get(args.route, "gpt-4o-mini"),
            **({"stream": True} if args.route in ("stream", "chunks") else {})}
    data, headers = json.dumps(body).encode(), {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

        def run(n: int) -> None:
            nonlocal conn
            for _ in range(n):
                if args.route == "chunks":  # a new connection per stream, as bench/streams.py's clients
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                conn.request("POST", "/v1/chat/completions", data, headers)
                r = conn.getresponse()
                answer = r.read()
                if r.status != 200:
                    raise SystemExit(f"{r.status}: {answer[:300]!r}")

        deadline = time.monotonic() + 600  # mitmdump starts in minutes under valgrind
        while True:
            try:
                run(1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                conn.close()
                time.sleep(2)
        run(20)  # warm-up
        busy, took = counted(proxy.p.pid, out, lambda: run(args.n))
        idle, _ = counted(proxy.p.pid, out, lambda: time.sleep(took))
        unit = f"stream of {args.chunks} chunks" if args.route == "chunks" else "request"
        print(f"{args.system} ({args.root.name if args.system == 'gateway' else 'mitmproxy'}), {args.route}: "
              f"{(busy - idle) / args.n / 1e6:.2f} M instructions per {unit} "
              f"(idle work subtracted: {idle / busy:.0%})")
    finally:
        proxy.stop()
        up.stop()
        gem.stop()
        chunky.terminate()


if __name__ == "__main__":
    main()
