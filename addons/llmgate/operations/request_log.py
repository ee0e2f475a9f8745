"""The request log: one row per client request, written off the event loop.

In a SQLite file (`SqliteSink`, the default) or in PostgreSQL (`log.database`:
request_log_pg.PostgresSink, which spills to the SQLite file while PostgreSQL is away).

Rows are queued by the addon and written in batches by one thread, so logging never adds to a
request's latency. A full disk, a locked or read-only database costs log warnings (at most one
a minute) and the rows of that batch, never a request. Old rows are deleted after
`log.retention_days`, at start and hourly.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

log = logging.getLogger("llmgate")

COLUMNS = ("ts", "key_id", "inbound", "endpoint", "model", "provider", "account", "upstream_model", "attempts",
           "status", "stream", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens", "cached_tokens",
           "reasoning_tokens", "error", "request_body", "response_body")
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL, key_id TEXT, inbound TEXT, endpoint TEXT, model TEXT,
    provider TEXT, account TEXT, upstream_model TEXT, attempts INTEGER, status INTEGER, stream INTEGER,
    latency_ms REAL, ttft_ms REAL, prompt_tokens INTEGER, completion_tokens INTEGER, cached_tokens INTEGER,
    reasoning_tokens INTEGER, error TEXT, request_body BLOB, response_body BLOB
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
"""
BATCH = 500
FLUSH_EVERY = 0.5  # seconds
PURGE_EVERY = 3600.0
STATS_BY = {"provider": "provider", "model": "model", "key": "key_id", "day": "day"}  # "day": Sql.day
INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


class Sql:
    """The expressions SQLite and PostgreSQL spell differently (a reader's `sql` attribute overrides)."""
    day = "date(ts, 'unixepoch')"
    bucket = "CAST((ts - ?) / ? AS INTEGER)"


def dialect(db: Any) -> type[Sql]:
    return getattr(db, "sql", Sql)


class Unreadable(Exception):
    """The request log's store cannot answer a read (the admin API's 503)."""


def connect(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db


class SqliteSink:
    """The request log in one SQLite file: the writer thread's side and reads from any thread."""

    def __init__(self, path: Path):
        self.path = path
        self._db: sqlite3.Connection | None = None

    @property
    def where(self) -> str:
        return str(self.path)

    def write(self, rows: list[tuple]) -> None:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = connect(self.path)
        if rows:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(INSERT, rows)

    def purge(self, before: float) -> None:
        if self._db is not None:
            self._db.execute("DELETE FROM requests WHERE ts < ?", (before,))

    def reset(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    close = reset

    def read(self, query: Any, *args: Any, empty: Any = None) -> Any:
        if not self.path.exists():
            return empty
        try:
            with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)) as db:
                db.row_factory = sqlite3.Row
                return query(db, *args)
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):  # the writer made the file but not yet its table
                return empty
            raise Unreadable(str(e)) from None
        except sqlite3.Error as e:
            raise Unreadable(str(e)) from None


class RequestLog:
    def __init__(self, path: str | Path, retention_days: float = 30.0, database: str | None = None):
        self.path = Path(path).expanduser()
        self.retention = retention_days * 86400
        self.database = database
        if database:
            from llmgate.operations.request_log_pg import PostgresSink  # psycopg only when asked for

            self.sink: SqliteSink | PostgresSink = PostgresSink(database, self.path)
        else:
            self.sink = SqliteSink(self.path)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=100_000)
        self._warned_at = 0.0
        self.written = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="llmgate-request-log", daemon=True)
        self._thread.start()

    # --- writing (event loop: add; the thread: the rest) --------------------

    def add(self, row: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.dropped += 1
            self._warn("request log queue full: rows dropped")

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _warn(self, message: str) -> None:
        if time.monotonic() - self._warned_at > 60:
            self._warned_at = time.monotonic()
            log.warning("%s (%s)", message, self.sink.where)

    def _run(self) -> None:
        last_purge = 0.0
        stop = False
        while not stop:
            rows: list[dict[str, Any]] = []
            try:
                item = self._queue.get(timeout=FLUSH_EVERY)
                # then let rows gather without waiting on the queue: a writer woken by every row
                # (and a commit per row) cost a sixth of the gateway's throughput
                if item is not None:
                    time.sleep(FLUSH_EVERY)
                while True:
                    if item is None:
                        stop = True
                        break
                    rows.append(item)
                    if len(rows) >= BATCH:
                        break
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            try:
                # called with no rows too: the PostgreSQL sink catches up with its spill then
                self.sink.write([tuple(r.get(c) for c in COLUMNS) for r in rows])
                self.written += len(rows)
                if time.monotonic() - last_purge > PURGE_EVERY:
                    last_purge = time.monotonic()
                    self.sink.purge(time.time() - self.retention)
            except (sqlite3.Error, OSError, OverflowError) as e:  # Overflow: an integer past SQLite's 64 bits
                self.dropped += len(rows)
                self._warn(f"request log write failed, {len(rows)} row(s) lost: {e}")
                self.sink.reset()
        self.sink.close()

    # --- reading (for the admin API and the CLI, run in a worker thread) ------------

    @property
    def where(self) -> str:
        """The file, or the database URL with its password masked."""
        return self.sink.where

    def read(self, query: Any, *args: Any, empty: Any = None) -> Any:
        """query(db, *args) on the store (Unreadable when it cannot answer); `empty` before any row."""
        return self.sink.read(query, *args, empty=empty)


def history(db: sqlite3.Connection, provider: str | None = None, model: str | None = None, key: str | None = None,
            status: int | None = None, since: float | None = None, limit: int = 50) -> list[dict[str, Any]]:
    where, args = _filters(provider, model, key, status, since)
    cols = ", ".join(["id", *COLUMNS[:-2]])
    rows = db.execute(f"SELECT {cols} FROM requests{where} ORDER BY ts DESC, id DESC LIMIT ?",
                      (*args, max(1, min(limit, 1000)))).fetchall()
    return [dict(zip(["id", *COLUMNS[:-2]], r, strict=True)) for r in rows]


def detail(db: sqlite3.Connection, rid: int) -> dict[str, Any] | None:
    """One row with its bodies (text; null when log.capture_bodies was off)."""
    row = db.execute(f"SELECT id, {', '.join(COLUMNS)} FROM requests WHERE id = ?", (rid,)).fetchone()
    if row is None:
        return None
    out = dict(zip(["id", *COLUMNS], row, strict=True))
    for k in ("request_body", "response_body"):
        if out[k] is not None:
            out[k] = bytes(out[k]).decode("utf-8", "replace")
    return out


def stats(db: sqlite3.Connection, by: str, since: float | None = None) -> list[dict[str, Any]]:
    group = dialect(db).day if by == "day" else STATS_BY[by]
    where, args = _filters(since=since)
    rows = db.execute(
        f"SELECT {group} AS k, COUNT(*), COUNT(error), COALESCE(SUM(prompt_tokens), 0), "
        f"COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(reasoning_tokens), 0), "
        f"AVG(latency_ms) FROM requests{where} GROUP BY k ORDER BY COUNT(*) DESC", args).fetchall()
    names = ("key", "requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
             "avg_latency_ms")
    return [dict(zip(names, (r[0] if r[0] is not None else "-", *r[1:]), strict=True)) for r in rows]


def count(db: sqlite3.Connection) -> int:
    return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]


def _filters(provider: str | None = None, model: str | None = None, key: str | None = None,
             status: int | None = None, since: float | None = None) -> tuple[str, tuple]:
    clauses: list[str] = []
    args: list[Any] = []
    for col, value in (("provider", provider), ("model", model), ("key_id", key), ("status", status)):
        if value is not None:
            clauses.append(f"{col} = ?")
            args.append(value)
    if since is not None:
        clauses.append("ts >= ?")
        args.append(since)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)
