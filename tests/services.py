"""Real services on loopback for the tests and benchmarks, from the distribution's binaries
(scripts/system-deps.sh installs them): each on a free port, its files in a temp dir, stopped
on exit. A missing binary skips the test with the reason (outside pytest: the skip exception).

    with redis_server() as r:            # r.url = "redis://127.0.0.1:<port>/0"
        ...
        r.restart()                      # same port, empty data: a Redis restart
    with haproxy([gw1.port, gw2.port]) as lb:   # lb.base = "http://127.0.0.1:<port>"
        ...
    with postgres_server() as pg:        # pg.url = "postgresql://llmgate:...@127.0.0.1:<port>/llmgate"
        pg.database("other")             # a fresh database's URL
        pg.stop(); pg.start()            # same port and data: a PostgreSQL restart
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
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
    retries 3
    option redispatch 1
frontend gateways
    bind 127.0.0.1:{port}
    default_backend gateways
    http-response set-header X-LB-Server %s
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
    adds health checks so a dead backend is routed around). Each answer names the backend that
    served it in X-LB-Server (gw0, gw1, ... in the order given)."""
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


PG_VERSIONS = "/usr/lib/postgresql/*/bin/postgres"  # Debian's layout: one folder per major version


def _pg_bin() -> Path:
    found = sorted(glob.glob(PG_VERSIONS), key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        pytest.skip("PostgreSQL is not installed (scripts/system-deps.sh installs it as root: apt-get install "
                    "postgresql)")
    return Path(found[-1]).parent


def _unprivileged() -> tuple[list[str], int | None]:
    """The prefix that runs PostgreSQL's programs as a non-root user (they refuse root), and its uid."""
    if os.geteuid() != 0:
        return [], None
    try:
        uid = pwd.getpwnam("postgres").pw_uid
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as (it refuses root)")
    if shutil.which("runuser") is None:
        pytest.skip("running as root without runuser to start PostgreSQL as the 'postgres' user")
    return ["runuser", "-u", "postgres", "--"], uid


class PostgresServer:
    """A cluster made by initdb in a temp dir, password auth on 127.0.0.1; `stop()` and `start()`
    keep its port and data (a PostgreSQL restart)."""

    USER, PASSWORD = "llmgate", "pg-test-password-42"

    def __init__(self, folder: Path):
        self.bin = _pg_bin()
        self.prefix, uid = _unprivileged()
        self.folder, self.data = folder, folder / "data"
        if uid is not None:
            os.chown(folder, uid, -1)
        self.port = free_port()
        pw = folder / "pw"
        pw.write_text(self.PASSWORD)
        if uid is not None:
            os.chown(pw, uid, -1)
        self._run("initdb", "-D", str(self.data), "-U", self.USER, f"--pwfile={pw}", "--auth-host=scram-sha-256",
                  "--auth-local=trust", "-E", "UTF8", "--no-sync")
        self.start()
        self.url = self.database("llmgate")

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run([*self.prefix, str(self.bin / program), *args], capture_output=True, text=True,
                              cwd=self.folder, timeout=60)
        if done.returncode:
            raise RuntimeError(f"{program} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-w", "-o",
                  f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder} "
                  "-c fsync=off", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def database(self, name: str) -> str:
        """A new, empty database's URL (psycopg's identifier quoting)."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self._url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self._url(name)

    def _url(self, db: str) -> str:
        return f"postgresql://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.port}/{db}"


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    with tempfile.TemporaryDirectory(prefix="postgres-") as d:
        pg = PostgresServer(Path(d))
        try:
            yield pg
        finally:
            try:
                pg.stop()
            except RuntimeError:
                pass  # already stopped
