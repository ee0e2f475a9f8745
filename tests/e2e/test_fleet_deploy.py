"""The reference deployment (issue 17): gateways sharing Redis and PostgreSQL behind HAProxy.
`make fleet` as shipped (scripts/fleet.sh starts all of it), and one gateway killed with SIGKILL
mid-traffic behind the real HAProxy with its health check: the load balancer routes around it and
no acknowledged request-log row is lost."""

from __future__ import annotations

import re
import socket
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import yaml

from tests.e2e.conftest import CLIENT_KEY, UPSTREAM_KEY
from tests.e2e.test_cores import AUTH, BODY, answered, chats
from tests.harness import ROOT, Gateway, Proc, Upstream, until
from tests.services import binary, free_port, haproxy, postgres_server, redis_server

MARK = re.compile(rb"fleet-(\d+)")
CLIENTS = 2  # sending requests through HAProxy while a gateway is killed


@pytest.fixture
def ups():
    a = Upstream("openai_compat", "--api-key", UPSTREAM_KEY, "--models", "m")
    b = Upstream("openai_compat", "--api-key", UPSTREAM_KEY, "--models", "m")
    yield a, b
    a.stop(), b.stop()


def config(*ups: Upstream, **log) -> dict:
    return {"server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 10}},
            "providers": [{"id": pid, "type": "openai", "base_url": up.base + "/v1", "api_key": UPSTREAM_KEY,
                           "models": ["m", "fault-slow-stream"]} for pid, up in zip("ab", ups, strict=True)],
            "routing": {"strategy": "fill-first"}, "log": log}


def pg_marks(url: str) -> list[int]:
    """The marker of every logged request, one per row (a row written twice shows twice)."""
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('requests')").fetchone() == (None,):
            return []
        rows = conn.execute("SELECT request_body FROM requests").fetchall()
    return marks(body for (body,) in rows)


def marks(bodies) -> list[int]:
    return [int(m.group(1)) for body in bodies if body
            and (m := MARK.search(body.encode() if isinstance(body, str) else bytes(body)))]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def running_under(folder: str) -> list[str]:
    """Command lines of the processes that name this folder."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if folder in line:
            found.append(line)
    return found


def test_make_fleet_serves_logs_to_its_postgres_and_shares_cooldowns_through_its_redis(ups, tmp_path):
    for exe in ("haproxy", "redis-server"):
        binary(exe)
    a, b = ups
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text(yaml.safe_dump(config(a, b, capture_bodies=True)))
    port = free_port()
    while any(not free(port + i) for i in range(1, 5)):  # the script takes the next four ports
        port = free_port()
    fleet = Proc([str(ROOT / "scripts" / "fleet.sh")], env={"FLEET": "2", "PORT": str(port), "CONFIG": str(cfg)})
    try:
        run = fleet.wait_for(r"fleet: 2 gateways .* files in (\S+)", timeout=90).group(1)
        copies = [yaml.safe_load((Path(run) / f"gw{i}" / "proxy.yaml").read_text()) for i in (1, 2)]
        database = copies[0]["log"]["database"]
        assert [c["server"]["state"] for c in copies] == [f"redis://127.0.0.1:{port + 3}/0"] * 2
        assert [c["log"]["database"] for c in copies] == [database] * 2 and f":{port + 4}/" in database
        gws = [f"http://127.0.0.1:{port + i}/v1/chat/completions" for i in (1, 2)]
        for url in gws:
            assert answered(url).status_code == 200
        lb = f"http://127.0.0.1:{port}/v1/chat/completions"
        assert answered(lb).status_code == 200
        for i in range(6):  # through HAProxy, each request marked
            body = {**BODY, "messages": [{"role": "user", "content": f"fleet-{i}"}]}
            assert httpx.post(lb, json=body, headers=AUTH, timeout=10).status_code == 200
        until(lambda: sorted(pg_marks(database)) == list(range(6)), "a row per request in the fleet's PostgreSQL")

        a.clear(), b.clear()
        httpx.post(a.base + "/__fault", json={"scenario": "fault-429", "count": 1, "retry_after": 30})
        assert httpx.post(gws[0], json=BODY, headers=AUTH, timeout=10).status_code == 200  # a: 429, then b
        assert httpx.post(gws[1], json=BODY, headers=AUTH, timeout=10).status_code == 200
        assert (chats(a), chats(b)) == (1, 2)  # the second gateway knew a was cooling (Redis)
        assert "Traceback" not in fleet.output and str(urlsplit(database).password) not in fleet.output
    finally:
        fleet.stop()
    assert fleet.p.returncode is not None and not Path(run).exists()
    assert running_under(run) == [] and not any(listening(port + i) for i in range(5))


def free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@dataclass
class Sent:
    mark: int
    at: float  # monotonic, when sent
    done: float = 0.0
    status: int | None = None  # None: no answer (the connection broke)
    server: str = ""


class Traffic:
    """Clients sending marked requests through HAProxy, one at a time each, until stopped."""

    def __init__(self, base: str, clients: int = CLIENTS):
        self.base, self._stop = base, threading.Event()
        self.sent: list[Sent] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        for t in self._threads:
            t.start()

    def _client(self) -> None:
        with httpx.Client(base_url=self.base, headers=AUTH, timeout=30) as http:
            while not self._stop.is_set():
                with self._lock:
                    s = Sent(len(self.sent), time.monotonic())
                    self.sent.append(s)
                body = {**BODY, "messages": [{"role": "user", "content": f"fleet-{s.mark}"}]}
                try:
                    r = http.post("/v1/chat/completions", json=body)
                    s.status, s.server = r.status_code, r.headers.get("x-lb-server", "")
                except httpx.TransportError:
                    pass
                s.done = time.monotonic()

    def answered(self, server: str, after: float = 0.0) -> list[Sent]:
        return [s for s in list(self.sent) if s.status == 200 and s.server == server and s.at > after]

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(40)


def spilled_marks(folder: Path) -> list[int]:
    """Markers of the rows a gateway committed to its local spill file (PostgreSQL not taking them)."""
    path = folder / "llmgate-requests.sqlite"
    if not path.exists():
        return []
    with closing(sqlite3.connect(path)) as db:
        try:
            rows = db.execute("SELECT request_body FROM pg_spill").fetchall()
        except sqlite3.OperationalError:  # no spill table: nothing was ever spilled
            return []
    return marks(body for (body,) in rows)


def test_a_gateway_killed_mid_traffic_is_routed_around_and_loses_no_acknowledged_row(ups, tmp_path):
    with redis_server() as redis, postgres_server() as pg:
        database = pg.database("fleet_kill")
        cfg = config(*ups, database=database, capture_bodies=True)
        cfg["server"]["state"] = redis.url
        folders = [tmp_path / "gw0", tmp_path / "gw1"]
        gws = []
        for f in folders:
            f.mkdir()
            gws.append(Gateway(cfg, f / "proxy.yaml"))
        try:
            with haproxy([g.port for g in gws], check=True) as lb:  # checks every 200 ms, down after 2 failures
                killed_at, down_at, traffic, stream_error = kill_mid_traffic(lb, gws[0])
            survivor = {s.mark for s in traffic.answered("gw1")}
            until(lambda: survivor <= set(pg_marks(database)), "a row for every answer of the surviving gateway")
            # acknowledged by the killed gateway: committed to PostgreSQL, or to its spill file
            acknowledged = set(pg_marks(database)) | set(spilled_marks(folders[0]))
            gws[0] = Gateway(cfg, folders[0] / "proxy.yaml")  # the restart on its folder replays the spill
            until(lambda: acknowledged <= set(pg_marks(database)) and not spilled_marks(folders[0]),
                  "the killed gateway's spilled rows written by its restart")
            logged = pg_marks(database)
        finally:
            for g in gws:
                g.stop()
    assert stream_error is not None, "the stream on the killed gateway ended normally: it was not in flight"
    after_down = [s for s in traffic.sent if s.at > down_at]
    assert len(after_down) >= 20 and all(s.status == 200 and s.server == "gw1" for s in after_down), \
        [(s.status, s.server) for s in after_down if s.status != 200 or s.server != "gw1"]
    # the requests in flight on it at the kill (one per client), perhaps one more sent on a connection
    # HAProxy had not yet seen closed; a refused connection is retried on the other (option redispatch)
    failed = [s for s in traffic.sent if s.status != 200]
    assert len(failed) <= 2 * CLIENTS and all(s.at < down_at for s in failed), \
        [(s.status, round(s.at - killed_at, 3)) for s in failed]
    assert len(logged) == len(set(logged))  # no row written twice (the replay and its delete)
    unlogged = [s for s in traffic.answered("gw0") if s.mark not in logged]
    # a row is committed within a flush (0.5 s) of its answer: only the last answers before the kill
    # may have none (5 s: room for a loaded machine)
    assert all(s.done > killed_at - 5 for s in unlogged), (len(unlogged), len(traffic.answered("gw0")))


def kill_mid_traffic(lb, victim: Gateway) -> tuple[float, float, Traffic, Exception | None]:
    """SIGKILL the gateway behind gw0 while clients send requests and a stream it serves is open;
    the traffic goes on until 20 requests were sent after HAProxy marked it down."""
    traffic = Traffic(lb.base)
    try:
        until(lambda: min(len(traffic.answered(s)) for s in ("gw0", "gw1")) >= 5, "answers from both gateways")
        with httpx.Client(base_url=lb.base, headers=AUTH, timeout=30) as http:
            body = {"model": "fault-slow-stream", "stream": True, "messages": [{"role": "user", "content": "slow"}]}
            for _ in range(10):  # round-robin: every other request reaches gw0
                with http.stream("POST", "/v1/chat/completions", json=body) as held:
                    if held.headers.get("x-lb-server") != "gw0":
                        continue
                    chunks = held.iter_bytes()
                    next(chunks)
                    victim.p.kill()
                    killed_at = time.monotonic()
                    victim.p.wait()
                    broken: Exception | None = None
                    try:
                        for _ in chunks:
                            pass
                    except httpx.HTTPError as e:
                        broken = e
                    break
            else:
                raise AssertionError("no stream reached gw0")
        lb.proc.wait_for(r"gw0 is DOWN", timeout=10)
        down_at = time.monotonic()
        until(lambda: sum(s.at > down_at and s.done > 0 for s in list(traffic.sent)) >= 20,
              "20 requests answered after gw0 was marked down")
    finally:
        traffic.stop()
    return killed_at, down_at, traffic, broken


def test_a_gateway_stopped_for_a_restart_writes_the_rows_of_its_last_answers(ups, tmp_path):
    """A rolling restart stops gateways with SIGTERM: the rows still queued for the log writer
    (up to 0.5 s of answers) are written before the process exits."""
    with postgres_server() as pg:
        database = pg.database("fleet_stop")
        gw = Gateway(config(*ups, database=database, capture_bodies=True), tmp_path / "proxy.yaml")
        try:
            for i in range(5):
                body = {**BODY, "messages": [{"role": "user", "content": f"fleet-{i}"}]}
                assert httpx.post(gw.base + "/v1/chat/completions", json=body, headers=AUTH, timeout=10).status_code == 200
        finally:
            gw.stop()
        assert gw.p.returncode == 0
        assert sorted(pg_marks(database) + spilled_marks(tmp_path)) == list(range(5))
