"""The request log's PostgreSQL store: migrations, the spill and memory bounds, and reads that
answer as SQLite's do. Against a real PostgreSQL (tests/services.postgres_server); no sleeps:
the sink's retry clock is injected."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import psycopg
import pytest

from llmgate.console import queries
from llmgate.operations import request_log, request_log_pg
from llmgate.operations.request_log import COLUMNS
from llmgate.operations.request_log_pg import MEMORY_ROWS, PostgresSink, SchemaTooNew, migrate
from tests.services import postgres_server

NOW = float(int(time.time())) - 3600  # within the retention the writer purges by


@pytest.fixture(scope="module")
def pg():
    with postgres_server() as server:
        yield server


@pytest.fixture
def url(pg, request):
    return pg.database(request.node.name.lower().replace("[", "_").replace("]", "").replace("-", "_")[:60])


def row(i: int, **over) -> tuple:
    r = {"ts": NOW + i, "key_id": "team", "inbound": "openai", "endpoint": "chat", "model": "m",
         "provider": "p" if i % 2 else "q", "status": 200, "stream": 0, "latency_ms": 10.0 + i, "attempts": 1,
         "prompt_tokens": 3, "completion_tokens": 4, "error": None if i % 3 else "upstream_error",
         "request_body": b"in\x00" + bytes([i % 256]), **over}
    return tuple(r.get(c) for c in COLUMNS)


def refused() -> psycopg.Connection:
    raise psycopg.OperationalError("connection refused")


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def pg_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]


# --- migrations -------------------------------------------------------------------------


def test_migrate_creates_the_schema_once_and_records_its_version(url):
    with psycopg.connect(url, autocommit=True) as conn:
        assert migrate(conn) == len(request_log_pg.MIGRATIONS)
        assert migrate(conn) == len(request_log_pg.MIGRATIONS)  # a second start changes nothing
        versions = conn.execute("SELECT version FROM llmgate_schema ORDER BY version").fetchall()
        assert [v for (v,) in versions] == list(range(1, len(request_log_pg.MIGRATIONS) + 1))
        assert conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 0


def test_hosts_starting_together_migrate_one_at_a_time(url):
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM llmgate_schema").fetchone()[0] == len(request_log_pg.MIGRATIONS)


def test_a_schema_from_a_newer_llmgate_is_not_written(url, tmp_path, caplog):
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        conn.execute("INSERT INTO llmgate_schema VALUES (%s, 0)", (len(request_log_pg.MIGRATIONS) + 1,))
        with pytest.raises(SchemaTooNew):
            migrate(conn)
    sink = PostgresSink(url, tmp_path / "spill.sqlite", clock=Clock())
    with caplog.at_level(logging.WARNING, "llmgate"):
        sink.write([row(1)])
    assert "newer than this llmgate" in caplog.text
    assert sink.spilled() == 1 and pg_count(url) == 0


# --- degradation: spill, memory bound, catching up ---------------------------------------------


def test_rows_spill_while_postgres_is_away_and_are_written_once_when_it_returns(url, tmp_path, caplog):
    clock = Clock()
    connect = [refused]
    sink = PostgresSink(url, tmp_path / "spill.sqlite", clock=clock, connect_pg=lambda: connect[0]())
    with caplog.at_level(logging.WARNING, "llmgate"):
        for i in range(3):
            sink.write([row(10 * i + j) for j in range(10)])
            clock.t += 0.5
    assert sink.spilled() == 30 and not sink.memory  # acknowledged: committed to the spill file
    assert caplog.text.count("cannot be written") == 1  # logged once per outage
    assert "pg-test-password" not in caplog.text

    connect[0] = lambda: psycopg.connect(url, autocommit=True)
    sink.write([row(99)])
    assert sink.spilled() == 31  # not yet retried: RETRY_EVERY has not passed since the last attempt
    clock.t += request_log_pg.RETRY_EVERY
    sink.write([row(100)])
    assert pg_count(url) == 32 and sink.spilled() == 0
    assert "answers again" in caplog.text and "caught up" in caplog.text
    sink.close()


def test_a_replayed_batch_is_written_once(url, tmp_path):
    """Every row has a uid: a batch whose commit answer was lost, sent again, adds nothing."""
    sink = PostgresSink(url, tmp_path / "spill.sqlite", clock=Clock())
    sink.write([])
    batch = [("uid-1", *row(1)), ("uid-2", *row(2))]
    sink._insert(batch)
    sink._insert(batch)
    assert pg_count(url) == 2
    sink.close()


def test_memory_holds_at_most_MEMORY_ROWS_when_neither_store_takes_rows(url, tmp_path, caplog):
    clock = Clock()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    connect = [refused]
    sink = PostgresSink(url, blocker / "spill.sqlite", clock=clock, connect_pg=lambda: connect[0]())
    batch = MEMORY_ROWS // 2 + 1000
    with caplog.at_level(logging.WARNING, "llmgate"):
        for _ in range(3):
            sink.write([row(i) for i in range(batch)])
    assert len(sink.memory) == MEMORY_ROWS
    assert sink.dropped == 3 * batch - MEMORY_ROWS
    assert caplog.text.count("dropped (counted)") == 1
    assert caplog.text.count("cannot be written either") == 1

    connect[0] = lambda: psycopg.connect(url, autocommit=True)
    clock.t += request_log_pg.RETRY_EVERY
    sink.write([])
    assert not sink.memory and pg_count(url) == MEMORY_ROWS
    sink.close()


def test_values_postgres_cannot_hold_cost_only_their_own_row(url, tmp_path, caplog):
    """A NUL in a client's model name is replaced; a count beyond BIGINT drops that row alone,
    not its batch (which would otherwise spill and fail again for ever)."""
    sink = PostgresSink(url, tmp_path / "spill.sqlite", clock=Clock())
    with caplog.at_level(logging.WARNING, "llmgate"):
        sink.write([row(1, model="a\x00b"), row(2, prompt_tokens=2**70), row(3, completion_tokens=2**40)])
        sink.write([row(4, prompt_tokens=2**70)])
    rows = sink.read(request_log.history, None, None, None, None, None, 10)
    assert sorted((r["model"], r["completion_tokens"]) for r in rows) == [("a\ufffdb", 4), ("m", 2**40)]
    assert sink.refused == 2 and sink.spilled() == 0
    assert caplog.text.count("refuses a row") == 1
    sink.close()


# --- reads: the same answers as from SQLite ---------------------------------------------------


def test_reads_answer_as_sqlite_does(url, tmp_path):
    rows = [row(i) for i in range(40)] + [row(100_000, provider=None, error="client_gone")]
    sqlite = request_log.SqliteSink(tmp_path / "log.sqlite")
    sqlite.write(rows)
    sink = PostgresSink(url, tmp_path / "spill.sqlite", clock=Clock())
    sink.write(rows)
    since = NOW - 60

    def same(query, *args):  # as JSON: the admin API's answer (a Decimal would not serialise)
        assert json.dumps(sink.read(query, *args)) == json.dumps(sqlite.read(query, *args))

    same(request_log.count)
    same(request_log.history, None, None, None, None, None, 1000)
    same(request_log.history, "p", "m", "team", 200, NOW + 5, 3)
    for by in request_log.STATS_BY:
        same(request_log.stats, by, since)
    same(queries.timeline, since, 60.0, 60)
    first = sqlite.read(request_log.history, None, None, None, None, None, 1)[0]["id"]
    pg_first = sink.read(request_log.history, None, None, None, None, None, 1)[0]["id"]
    pg_detail = sink.read(request_log.detail, pg_first)
    assert {**pg_detail, "id": 0} == {**sqlite.read(request_log.detail, first), "id": 0}
    assert pg_detail["request_body"].startswith("in\x00")
    sink.close()
    sqlite.close()


def test_reading_before_any_gateway_made_the_table_is_empty_and_an_unreachable_server_is_unreadable(url):
    assert request_log_pg.read(url, request_log.history, empty=[]) == []
    dead = url.replace(url.rsplit(":", 1)[1].split("/")[0], "1")
    with pytest.raises(request_log.Unreadable) as e:
        request_log_pg.read(dead, request_log.count)
    assert "pg-test-password" not in str(e.value)


def test_safe_url_masks_the_password():
    assert request_log_pg.safe_url("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert request_log_pg.safe_url("postgresql://h/db") == "postgresql://h/db"


def test_the_request_log_writes_through_its_thread_to_postgres(url, tmp_path):
    log = request_log.RequestLog(Path(tmp_path / "spill.sqlite"), database=url)
    assert log.where.startswith("postgresql://llmgate:***@")
    for i in range(5):
        log.add(dict(zip(COLUMNS, row(i), strict=True)))
    log.close()
    assert pg_count(url) == 5
    assert log.read(request_log.count) == 5


def test_an_integer_past_64_bits_costs_its_batch_not_the_writer(tmp_path):
    """An upstream may report any integer as a token count; the SQLite log's writer thread
    survives it (it died of the OverflowError before)."""
    log = request_log.RequestLog(tmp_path / "log.sqlite")
    log.add(dict(zip(COLUMNS, row(1, prompt_tokens=2**70), strict=True)))
    for _ in range(100):  # the writer's first batch (a dead writer never counts it)
        if log.written + log.dropped:
            break
        time.sleep(0.05)
    log.add(dict(zip(COLUMNS, row(2), strict=True)))
    log.close()
    assert log.dropped == 1 and log.read(request_log.count) == 1
