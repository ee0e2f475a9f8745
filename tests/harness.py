"""Real processes on loopback for end-to-end tests and the benchmark:
mitmdump with addons/gateway.py, and the local test upstreams."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def until(check, what: str, timeout: float = 30.0):
    """Poll `check` (bounded) for a state the processes reach by themselves, e.g. a request log
    writer's flush every 0.5 s; answers check's first truthy value."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


class Proc:
    """A child process whose output is collected line by line."""

    def __init__(self, args: list[str], env: dict | None = None, cwd: Path = ROOT):
        self.args = args
        self.lines: list[str] = []
        self._q: queue.Queue[str] = queue.Queue()
        self.p = subprocess.Popen(
            args, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, bufsize=1,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))
            self._q.put(line)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match:
        rx = re.compile(pattern)
        for line in list(self.lines):
            if m := rx.search(line):
                return m
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                break
            if m := rx.search(line):
                return m
            if self.p.poll() is not None and self._q.empty():
                break
        raise TimeoutError(f"{self.args[0]}: no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-40:]))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


class Upstream(Proc):
    """tests/upstreams/<module> as a process; `base` is its origin."""

    def __init__(self, module: str = "openai_compat", *extra: str):
        super().__init__([sys.executable, "-u", "-m", f"tests.upstreams.{module}", "--port", "0", *extra])
        self.port = int(self.wait_for(r"READY (\d+)").group(1))
        self.base = f"http://127.0.0.1:{self.port}"

    def received(self) -> list[dict]:
        with urllib.request.urlopen(self.base + "/__requests") as r:
            return json.load(r)

    def clear(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.base + "/__requests", method="DELETE")).close()


class Gateway(Proc):
    """mitmdump (or mitmweb) -s addons/gateway.py with a config written from `config`."""

    def __init__(self, config: dict | str, config_path: Path, *extra: str, tool: str = "mitmdump"):
        self.config_path = config_path
        self.write_config(config)
        super().__init__([
            str(BIN / tool), "-s", str(ROOT / "addons" / "gateway.py"),
            "--mode", "reverse:http://127.0.0.1:1@0", "--listen-host", "127.0.0.1",
            "--set", "connection_strategy=lazy", "--set", f"gateway_config={config_path}", *extra,
        ])
        self.port = int(self.wait_for(r"listening at 127\.0\.0\.1:(\d+)").group(1))
        self.base = f"http://127.0.0.1:{self.port}"

    def write_config(self, config: dict | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)


def bare_mitmdump(target: str) -> Proc:
    p = Proc([str(BIN / "mitmdump"), "-q", "--mode", f"reverse:{target}@0", "--listen-host", "127.0.0.1"])
    return p
