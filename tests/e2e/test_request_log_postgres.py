"""The request log in PostgreSQL (log.database), end to end: gateway processes writing to one real
PostgreSQL (tests/services.postgres_server), read back through /admin, the console and the installed
`llmgate` command; PostgreSQL stopped during traffic; a gateway killed with SIGKILL."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.e2e.conftest import UPSTREAM_KEY, closed_port
from tests.harness import BIN, Gateway, until
from tests.services import PostgresServer, postgres_server

ALICE, BOB = "sk-alice-pg-111", "sk-bob-pg-222"


@pytest.fixture(scope="module")
def pg():
    with postgres_server() as server:
        yield server


@pytest.fixture
def db(pg, request) -> str:
    return pg.database(request.node.name.lower()[:60])


def config(upstream, database: str, capture: bool = True) -> dict:
    return {
        "server": {"api_keys": [{"name": "alice", "key": ALICE}, {"name": "bob", "key": BOB}],
                   "timeouts": {"connect": 3, "read": 10}},
        "log": {"database": database, "capture_bodies": capture},
        "providers": [{"id": "up", "type": "openai", "base_url": upstream.base + "/v1", "api_key": UPSTREAM_KEY,
                       "models": ["gpt-4o-mini"]}],
    }


def start(upstream, database: str, folder: Path, capture: bool = True) -> Gateway:
    folder.mkdir(exist_ok=True)
    return Gateway(config(upstream, database, capture), folder / "proxy.yaml")


def chat(gw: Gateway, key: str, text: str = "hi") -> httpx.Response:
    return httpx.post(gw.base + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}, timeout=30)


def pg_rows(database: str) -> list[dict]:
    try:
        with psycopg.connect(database) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            return cur.execute("SELECT * FROM requests ORDER BY id").fetchall()
    except psycopg.errors.UndefinedTable:
        return []


def spilled(gw: Gateway) -> int:
    """Rows this gateway has committed to its local spill file (acknowledged, not yet in PostgreSQL)."""
    path = gw.config_path.parent / "llmgate-requests.sqlite"
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return conn.execute("SELECT COUNT(*) FROM pg_spill").fetchone()[0]
    except sqlite3.Error:
        return 0


def llmgate(*args: str, exit_code: int = 0) -> dict:
    done = subprocess.run([str(BIN / "llmgate"), *args, "--json"], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if not k.startswith("LLMGATE_")})
    assert done.returncode == exit_code, done.stdout + done.stderr
    assert PostgresServer.PASSWORD not in done.stdout + done.stderr
    return json.loads(done.stdout)


def no_password_in(*gateways: Gateway) -> None:
    for gw in gateways:
        assert PostgresServer.PASSWORD not in gw.output


def test_rows_from_two_gateways_land_in_one_database_and_every_reader_shows_them(upstream, db, tmp_path):
    gw1, gw2 = start(upstream, db, tmp_path / "one"), start(upstream, db, tmp_path / "two")
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: chat(gw1, ALICE) if i % 2 else chat(gw2, BOB), range(20)))
        assert [a.status_code for a in answers] == [200] * 20
        until(lambda: len(pg_rows(db)) == 20, "20 rows in PostgreSQL")
        assert {r["key_id"] for r in pg_rows(db)} == {"alice", "bob"}

        listed = httpx.get(gw1.base + "/admin/requests", params={"limit": 100}).json()["requests"]
        assert sorted(r["key_id"] for r in listed) == ["alice"] * 10 + ["bob"] * 10
        one = httpx.get(f"{gw2.base}/admin/requests/{listed[0]['id']}").json()["request"]
        assert one["model"] == "gpt-4o-mini" and '"hi"' in one["request_body"]
        by_key = httpx.get(gw2.base + "/admin/stats", params={"by": "key"}).json()["rows"]
        assert {r["key"]: r["requests"] for r in by_key} == {"alice": 10, "bob": 10}
        status = httpx.get(gw1.base + "/admin/status").json()
        assert status["requests_logged"] == 20 and status["request_log"].startswith("postgresql://llmgate:***@")
        page = httpx.get(gw2.base + "/ui/requests")
        assert page.status_code == 200 and page.text.count("gpt-4o-mini") >= 20
        detail = httpx.get(f"{gw1.base}/ui/requests/{listed[-1]['id']}")
        assert detail.status_code == 200 and "&quot;hi&quot;" in detail.text
        shown = httpx.get(gw2.base + "/ui/config").text  # proxy.yaml as the console shows it
        assert "log:" in shown and PostgresServer.PASSWORD not in shown

        history = llmgate("history", "--url", gw1.base, "--limit", "100")["requests"]
        assert sorted(r["key_id"] for r in history) == ["alice"] * 10 + ["bob"] * 10
        stats = llmgate("stats", "--url", gw2.base, "--by", "key")["rows"]
        assert {r["key"]: r["requests"] for r in stats} == {"alice": 10, "bob": 10}
    finally:
        gw1.stop()
        gw2.stop()
    # no gateway running: the command finds the database through the config
    down = f"http://127.0.0.1:{closed_port()}"
    offline = llmgate("stats", "--url", down, "--config", str(gw1.config_path), "--by", "day")
    assert offline["running"] is False and offline["request_log"].startswith("postgresql://llmgate:***@")
    assert sum(r["requests"] for r in offline["rows"]) == 20
    offline = llmgate("history", "--url", down, "--config", str(gw2.config_path), "--bodies")
    assert len(offline["requests"]) == 20 and all('"hi"' in r["request_body"] for r in offline["requests"])
    offline = llmgate("status", "--url", down, "--config", str(gw1.config_path), exit_code=1)  # 1: not running
    assert offline["requests_logged"] == 20 and offline["request_log"].startswith("postgresql://llmgate:***@")
    no_password_in(gw1, gw2)


def test_postgres_stopped_during_traffic_costs_no_request_and_no_row(upstream, pg, db, tmp_path):
    gw = start(upstream, db, tmp_path / "gw")
    statuses: list[int | str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                statuses.append(chat(gw, ALICE).status_code)
            except httpx.HTTPError as e:  # shown by the assertion below
                statuses.append(repr(e))

    senders = [threading.Thread(target=traffic) for _ in range(2)]
    try:
        for t in senders:
            t.start()
        until(lambda: len(pg_rows(db)) >= 5, "rows in PostgreSQL before it stops")
        pg.stop()
        try:
            until(lambda: spilled(gw) >= 10, "rows spilled while PostgreSQL is down")
            unreadable = httpx.get(gw.base + "/admin/requests")
            assert unreadable.status_code == 503
            assert unreadable.json()["error"]["code"] == "request_log_unavailable"
            assert PostgresServer.PASSWORD not in unreadable.text
        finally:
            pg.start()
        until(lambda: spilled(gw) == 0, "the spill replayed")
        stop.set()
        for t in senders:
            t.join(30)
        assert set(statuses) == {200}
        until(lambda: len(pg_rows(db)) == len(statuses), f"all {len(statuses)} rows in PostgreSQL")
        assert len({r["uid"] for r in pg_rows(db)}) == len(statuses)
        gw.wait_for("PostgreSQL at postgresql://llmgate:\\*\\*\\*@.* answers again")
        assert gw.output.count("cannot be written") == 1  # logged once per outage
    finally:
        stop.set()
        gw.stop()
    no_password_in(gw)


def test_a_gateway_killed_with_sigkill_loses_no_acknowledged_row(upstream, pg, db, tmp_path):
    """Acknowledged: committed to PostgreSQL or to the local spill file. Rows of both kinds are there
    after a SIGKILL: the spilled ones are written when the next gateway on that folder starts."""
    gw = start(upstream, db, tmp_path / "gw")
    try:
        assert all(chat(gw, BOB).status_code == 200 for _ in range(5))
        until(lambda: len(pg_rows(db)) == 5, "5 rows in PostgreSQL")
        pg.stop()
        try:
            assert all(chat(gw, BOB).status_code == 200 for _ in range(7))
            until(lambda: spilled(gw) == 7, "7 rows in the spill file")
            gw.p.kill()
            gw.p.wait()
        finally:
            pg.start()
    finally:
        gw.stop()
    assert len(pg_rows(db)) == 5
    again = Gateway(config(upstream, db), gw.config_path)
    try:
        until(lambda: len(pg_rows(db)) == 12, "the spilled rows written by the next start")
        until(lambda: spilled(again) == 0, "the spill emptied (deleted after PostgreSQL's commit)")
        assert [r["key_id"] for r in pg_rows(db)] == ["bob"] * 12
    finally:
        again.stop()
    no_password_in(gw, again)


def test_bodies_are_stored_with_secrets_redacted_and_not_at_all_without_capture(upstream, db, tmp_path):
    capturing = start(upstream, db, tmp_path / "capturing")
    plain = start(upstream, db, tmp_path / "plain", capture=False)
    try:
        leak = f"my keys are {UPSTREAM_KEY} and {ALICE}"
        assert chat(capturing, ALICE, leak).status_code == 200
        assert chat(plain, ALICE, leak).status_code == 200
        rows = until(lambda: len(pg_rows(db)) == 2 and pg_rows(db), "2 rows")
    finally:
        capturing.stop()
        plain.stop()
    stored = [r for r in rows if r["request_body"] is not None]
    assert len(stored) == 1 and b"[redacted]" in stored[0]["request_body"]
    assert [r["response_body"] for r in rows if r["request_body"] is None] == [None]
    everything = repr(rows).encode()
    for secret in (UPSTREAM_KEY, ALICE, BOB, PostgresServer.PASSWORD):
        assert secret.encode() not in everything
