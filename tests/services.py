"""Real services on loopback for the tests and benchmarks, from the distribution's binaries
(scripts/system-deps.sh installs them): each on a free port, its files in a temp dir, stopped
on exit. A missing binary skips the test with the reason (outside pytest: the skip exception).

    with redis_server() as r:            # r.url = "redis://127.0.0.1:<port>/0"
        ...
        r.restart()                      # same port, empty data: a Redis restart
    with haproxy([gw1.port, gw2.port]) as lb:   # lb.base = "http://127.0.0.1:<port>"
        ...
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.harness import Proc

SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")  # haproxy lives there; not on a user's PATH


def binary(name: str) -> str:
    """The path of a distribution binary, or skip the test saying how to get it."""
    found = shutil.which(name) or shutil.which(name, path=":".join(SBIN))
    if found is None:
        pytest.skip(f"{name} is not installed (scripts/system-deps.sh installs it as root: apt-get install {name})")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: Proc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.p.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"{proc.args[0]} not listening on {port}; output:\n" + proc.output[-3000:])


class RedisServer:
    """redis-server with no persistence; `restart()` keeps the port (clients reconnect)."""

    def __init__(self, folder: Path):
        self.exe = binary("redis-server")
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Proc | None = None
        self.start()

    def start(self) -> None:
        self.proc = Proc([self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", str(self.folder), "--protected-mode", "yes"],
                         cwd=self.folder)
        wait_listening(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="redis-") as d:
        r = RedisServer(Path(d))
        try:
            yield r
        finally:
            r.stop()


HAPROXY_CFG = """\
global
    maxconn 4000
    pidfile {folder}/haproxy.pid
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    option http-keep-alive
    retries 0
frontend gateways
    bind 127.0.0.1:{port}
    default_backend gateways
backend gateways
    balance {balance}
{servers}
"""


def haproxy_config(port: int, backends: Sequence[int], folder: Path | str, balance: str = "roundrobin",
                   check: bool = False) -> str:
    servers = "\n".join(f"    server gw{i} 127.0.0.1:{p}{' check inter 200ms fall 2 rise 1' if check else ''}"
                        for i, p in enumerate(backends))
    return HAPROXY_CFG.format(folder=folder, port=port, balance=balance, servers=servers)


class HAProxy:
    def __init__(self, port: int, proc: Proc, config: Path):
        self.port, self.proc, self.config = port, proc, config
        self.base = f"http://127.0.0.1:{port}"


@contextmanager
def haproxy(backends: Sequence[int], balance: str = "roundrobin", check: bool = False) -> Iterator[HAProxy]:
    """HAProxy in front of these loopback ports (one request each in turn by default; `check`
    adds health checks so a dead backend is routed around)."""
    exe = binary("haproxy")
    with tempfile.TemporaryDirectory(prefix="haproxy-") as d:
        port = free_port()
        cfg = Path(d) / "haproxy.cfg"
        cfg.write_text(haproxy_config(port, backends, d, balance, check))
        proc = Proc([exe, "-db", "-f", str(cfg)], cwd=Path(d))  # -db: foreground, log to stderr
        try:
            wait_listening(port, proc)
            yield HAProxy(port, proc, cfg)
        finally:
            proc.stop()
