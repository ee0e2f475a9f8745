"""The request log: one SQLite row per client request, written off the event loop.

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
STATS_BY = {"provider": "provider", "model": "model", "key": "key_id", "day": "date(ts, 'unixepoch')"}


def connect(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db


class RequestLog:
    def __init__(self, path: str | Path, retention_days: float = 30.0):
        self.path = Path(path).expanduser()
        self.retention = retention_days * 86400
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
            log.warning("%s (%s)", message, self.path)

    def _run(self) -> None:
        db = None
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
                if db is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    db = connect(self.path)
                if rows:
                    with db:
                        db.execute("BEGIN")
                        db.executemany(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES "
                                       f"({', '.join('?' * len(COLUMNS))})",
                                       [tuple(r.get(c) for c in COLUMNS) for r in rows])
                    self.written += len(rows)
                if time.monotonic() - last_purge > PURGE_EVERY:
                    last_purge = time.monotonic()
                    db.execute("DELETE FROM requests WHERE ts < ?", (time.time() - self.retention,))
            except (sqlite3.Error, OSError) as e:
                self.dropped += len(rows)
                self._warn(f"request log write failed, {len(rows)} row(s) lost: {e}")
                if db is not None:
                    try:
                        db.close()
                    except sqlite3.Error:
                        pass
                    db = None
        if db is not None:
            db.close()

    # --- reading (for the admin API, run in a worker thread) -------------------

    def _read(self) -> sqlite3.Connection:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
        db.row_factory = sqlite3.Row
        return db


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
    group = STATS_BY[by]
    where, args = _filters(since=since)
    rows = db.execute(
        f"SELECT {group} AS k, COUNT(*), SUM(error IS NOT NULL), COALESCE(SUM(prompt_tokens), 0), "
        f"COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(reasoning_tokens), 0), "
        f"AVG(latency_ms) FROM requests{where} GROUP BY k ORDER BY COUNT(*) DESC", args).fetchall()
    names = ("key", "requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
             "avg_latency_ms")
    return [dict(zip(names, (r[0] if r[0] is not None else "-", *r[1:]), strict=True)) for r in rows]


def count(db: sqlite3.Connection) -> int:
    return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]


def _filters(provider: str | None = None, model: str | None = None, key: str | None = None,
             status: int | None = None, since: float | None = None) -> tuple[str, tuple]:
    clauses, args = [], []
    for col, value in (("provider", provider), ("model", model), ("key_id", key), ("status", status)):
        if value is not None:
            clauses.append(f"{col} = ?")
            args.append(value)
    if since is not None:
        clauses.append("ts >= ?")
        args.append(since)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)
