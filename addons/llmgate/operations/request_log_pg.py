"""The request log in PostgreSQL (`log.database`), shared by every gateway host.

request_log.RequestLog's writer thread hands each batch to `PostgresSink.write`. A batch
PostgreSQL does not take (unreachable, restarting, failing) is committed to a spill table in the
local SQLite file (`log.file`) and replayed, oldest first, once PostgreSQL answers again. Every row
carries a uid (`ON CONFLICT (uid) DO NOTHING`), so a batch whose commit answer was lost, or a
replay cut off between PostgreSQL's commit and the spill's delete, is written once.

A row is *acknowledged* once it is committed to PostgreSQL or to the spill file: a gateway killed
after that loses none (the next start replays the spill). Only when the spill file cannot be
written either are rows held in memory, at most MEMORY_ROWS, then dropped and counted.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Callable
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.abc import Buffer
from psycopg.conninfo import make_conninfo
from psycopg.types.numeric import NumericLoader

from llmgate.addons.redaction import url_passwords
from llmgate.operations.request_log import BATCH, COLUMNS, Unreadable, connect

log = logging.getLogger("llmgate")

# each version's statements, applied once, in order, recorded in llmgate_schema
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    ("CREATE TABLE requests (id BIGSERIAL PRIMARY KEY, uid TEXT UNIQUE, ts DOUBLE PRECISION NOT NULL, "
     "key_id TEXT, inbound TEXT, endpoint TEXT, model TEXT, provider TEXT, account TEXT, upstream_model TEXT, "
     "attempts BIGINT, status BIGINT, stream BIGINT, latency_ms DOUBLE PRECISION, ttft_ms DOUBLE PRECISION, "
     "prompt_tokens BIGINT, completion_tokens BIGINT, cached_tokens BIGINT, reasoning_tokens BIGINT, "
     "error TEXT, request_body BYTEA, response_body BYTEA)",
     "CREATE INDEX requests_ts ON requests (ts)"),
)
MIGRATION_LOCK = 7_596_150_771  # pg_advisory_xact_lock key: hosts starting together migrate one at a time
MEMORY_ROWS = 10_000  # rows held when neither PostgreSQL nor the spill file takes them
RETRY_EVERY = 2.0  # seconds between connection attempts while PostgreSQL is away
# libpq has no query timeout: keepalives and tcp_user_timeout end a connection to a host that
# vanished (network cut, power loss) instead of leaving the writer waiting for ever
LIBPQ = {"connect_timeout": 3, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
         "keepalives_count": 3, "tcp_user_timeout": 30_000}
REPLAY_CHUNKS = 20  # spill chunks (of BATCH rows) replayed per flush, so new rows are not held up long

INSERT = (f"INSERT INTO requests (uid, {', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * (len(COLUMNS) + 1))}) "
          "ON CONFLICT (uid) DO NOTHING")
SPILL_SCHEMA = f"CREATE TABLE IF NOT EXISTS pg_spill (seq INTEGER PRIMARY KEY, uid TEXT NOT NULL, {', '.join(COLUMNS)})"
SPILL_INSERT = f"INSERT INTO pg_spill (uid, {', '.join(COLUMNS)}) VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"


class SchemaTooNew(Exception):
    """The database was migrated by a newer llmgate: this one does not write to it."""


def migrate(conn: psycopg.Connection) -> int:
    """Bring the schema to the newest version; idempotent, and safe when several hosts start at once."""
    with conn.transaction():
        conn.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        conn.execute("CREATE TABLE IF NOT EXISTS llmgate_schema (version INTEGER PRIMARY KEY, "
                     "applied DOUBLE PRECISION NOT NULL)")
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM llmgate_schema").fetchone()
        current = int(row[0]) if row else 0
        if current > len(MIGRATIONS):
            raise SchemaTooNew(f"schema version {current} is newer than this llmgate's {len(MIGRATIONS)}")
        for version in range(current + 1, len(MIGRATIONS) + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO llmgate_schema (version, applied) VALUES (%s, %s)", (version, time.time()))
    return len(MIGRATIONS)


def safe_url(url: str) -> str:
    """The URL with its password masked, for logs, /admin/status and the CLI."""
    parts = urlsplit(url)
    parts = parts._replace(query=re.sub(r"(^|&)(\w*password)=[^&]*", r"\1\2=***", parts.query))  # libpq's too
    if parts.password is None:
        return parts.geturl()
    netloc = parts.netloc.rsplit("@", 1)
    return parts._replace(netloc=f"{parts.username or ''}:***@{netloc[-1]}").geturl()


def _scrub(url: str, error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    for password in url_passwords(url):
        text = text.replace(password, "[redacted]")
    return text


class _Number(NumericLoader):
    """SUM over BIGINT is NUMERIC, which psycopg gives as Decimal: give ints (floats), as SQLite does."""

    def load(self, data: Buffer) -> int | float:  # type: ignore[override]
        value = super().load(data)
        return int(value) if value == value.to_integral_value() else float(value)


class PgReader:
    """A psycopg connection that runs request_log's queries, written with SQLite's ? placeholders."""

    class sql:  # the expressions PostgreSQL spells differently (request_log.Sql)
        day = "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        bucket = "FLOOR((ts - ?) / ?)::INTEGER"

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        conn.adapters.register_loader("numeric", _Number)

    def execute(self, query: str, args: tuple = ()) -> psycopg.Cursor:
        # a filter's NUL as the writer stored it (PostgreSQL's text cannot hold NUL)
        args = tuple(a.replace("\x00", "\ufffd") if isinstance(a, str) else a for a in args)
        return self.conn.execute(query.replace("?", "%s"), args)


def read(url: str, query: Callable[..., Any], *args: Any, empty: Any = None) -> Any:
    """Run one of request_log's read queries on PostgreSQL; Unreadable when it cannot answer."""
    try:
        with psycopg.connect(make_conninfo(url, **LIBPQ)) as conn:
            conn.read_only = True
            return query(PgReader(conn), *args)
    except psycopg.errors.UndefinedTable:
        return empty  # no gateway has created the table yet
    except psycopg.Error as e:
        raise Unreadable(_scrub(url, e)) from None


class PostgresSink:
    """The writer thread's side: batches into PostgreSQL, else into the spill file, else memory."""

    def __init__(self, url: str, spill: Path, clock: Callable[[], float] = time.monotonic,
                 connect_pg: Callable[[], psycopg.Connection] | None = None):
        self.url = url
        self.spill_path = spill
        self.clock = clock
        self._connect_pg = connect_pg or (lambda: psycopg.connect(make_conninfo(url, **LIBPQ), autocommit=True))
        self._conn: psycopg.Connection | None = None
        self._spill: sqlite3.Connection | None = None
        self._spilled: int | None = None  # rows in the spill table (None: not looked yet)
        self.memory: deque[tuple] = deque()
        self.dropped = 0
        self.refused = 0  # rows PostgreSQL would not take (a value out of its types' range)
        self._spill_failed = False
        self._down_since: float | None = None
        self._retry_at = 0.0

    @property
    def where(self) -> str:
        return safe_url(self.url)

    def write(self, rows: list[tuple]) -> None:
        # PostgreSQL's text cannot hold NUL, which a client's model name may carry
        batch = [(uuid.uuid4().hex, *(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in r))
                 for r in rows]
        if self._up():
            try:
                self._catch_up()
                self._insert(batch)
                return
            except psycopg.Error as e:
                self._went_down(e)
        self._keep(batch)

    def purge(self, before: float) -> None:
        try:
            if self._up() and self._conn is not None:
                self._conn.execute("DELETE FROM requests WHERE ts < %s", (before,))
        except psycopg.Error as e:
            self._went_down(e)
        if self._spilled:  # the spill holds no more than the SQLite log would
            try:
                self._spill_db().execute("DELETE FROM pg_spill WHERE ts < ?", (before,))
            except (sqlite3.Error, OSError):
                pass

    def reset(self) -> None:
        """After an error the writer did not expect: start both connections afresh."""
        self.close()

    def close(self) -> None:
        if self.memory:
            self._keep([])
        for conn in (self._conn, self._spill):
            try:
                if conn is not None:
                    conn.close()
            except (psycopg.Error, sqlite3.Error):
                pass
        self._conn = self._spill = None

    def read(self, query: Callable[..., Any], *args: Any, empty: Any = None) -> Any:
        return read(self.url, query, *args, empty=empty)

    # --- PostgreSQL --------------------------------------------------------------

    def _up(self) -> bool:
        if self._conn is not None and not self._conn.closed:
            return True
        if self.clock() < self._retry_at:
            return False
        try:
            conn = self._connect_pg()
            migrate(conn)
        except (psycopg.Error, SchemaTooNew) as e:
            self._went_down(e)
            return False
        self._conn = conn
        if self._down_since is not None:
            log.warning("request log: PostgreSQL at %s answers again after %.0f s; catching up (%d row(s) "
                        "dropped so far)", self.where, self.clock() - self._down_since, self.dropped)
            self._down_since = None
        return True

    def _went_down(self, error: BaseException) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None
        self._retry_at = self.clock() + RETRY_EVERY
        if self._down_since is None:
            self._down_since = self.clock()
            log.warning("request log: PostgreSQL at %s cannot be written (%s): rows go to %s until it answers",
                        self.where, _scrub(self.url, error), self.spill_path)

    def _insert(self, batch: list[tuple]) -> None:
        if not batch:
            return
        assert self._conn is not None
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.executemany(INSERT, batch)
        except (psycopg.DataError, psycopg.IntegrityError):  # a row refused must not hold back (or spill) the rest
            self._insert_each(batch)

    def _insert_each(self, batch: list[tuple]) -> None:
        assert self._conn is not None
        with self._conn.cursor() as cur:
            for row in batch:
                try:
                    with self._conn.transaction():
                        cur.execute(INSERT, row)
                except (psycopg.DataError, psycopg.IntegrityError) as e:
                    if not self.refused:
                        log.warning("request log: PostgreSQL refuses a row (%s): such rows are dropped (counted)",
                                    _scrub(self.url, e))
                    self.refused += 1

    def _catch_up(self) -> None:
        """Rows held in memory, then spilled ones (a bounded number per call), into PostgreSQL."""
        while self.memory:
            chunk = list(islice(self.memory, BATCH))
            self._insert(chunk)
            for _ in chunk:  # removed only once PostgreSQL has them
                self.memory.popleft()
        if self._spilled == 0:
            return
        replayed = 0
        try:
            db = self._spill_db()
            for _ in range(REPLAY_CHUNKS):
                chunk = db.execute(f"SELECT seq, uid, {', '.join(COLUMNS)} FROM pg_spill ORDER BY seq LIMIT ?",
                                   (BATCH,)).fetchall()
                if not chunk:
                    break
                self._insert([tuple(r[1:]) for r in chunk])
                db.execute("DELETE FROM pg_spill WHERE seq <= ?", (chunk[-1][0],))
                replayed += len(chunk)
            self._spilled = db.execute("SELECT COUNT(*) FROM pg_spill").fetchone()[0]
        except (sqlite3.Error, OSError) as e:
            log.warning("request log: the spill file %s cannot be read (%s)", self.spill_path, e)
            self._spilled = 0
        if replayed and not self._spilled:
            log.warning("request log: PostgreSQL caught up (spilled rows written)")

    # --- the spill file and memory ------------------------------------------------

    def _spill_db(self) -> sqlite3.Connection:
        if self._spill is None:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            db = connect(self.spill_path)
            db.execute("PRAGMA synchronous=FULL")  # a spilled row is acknowledged: it must survive
            db.execute(SPILL_SCHEMA)
            self._spill = db
        return self._spill

    def _keep(self, batch: list[tuple]) -> None:
        """Commit the rows held in memory and this batch to the spill file, else hold the batch."""
        held = [*self.memory, *batch]
        try:
            db = self._spill_db()
            with db:
                db.execute("BEGIN")
                db.executemany(SPILL_INSERT, held)
        except (sqlite3.Error, OSError, OverflowError) as e:  # Overflow: an integer past SQLite's 64 bits
            self._spill_unwritable(e)
            self._hold(batch)
            return
        self.memory.clear()
        self._spilled = (self._spilled or 0) + len(held)
        self._spill_failed = False

    def _spill_unwritable(self, error: Exception) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        if not self._spill_failed:
            self._spill_failed = True
            log.warning("request log: %s cannot be written either (%s): up to %d rows wait in memory, "
                        "more are dropped", self.spill_path, error, MEMORY_ROWS)

    def _hold(self, batch: list[tuple]) -> None:
        room = max(MEMORY_ROWS - len(self.memory), 0)
        self.memory.extend(batch[:room])
        if len(batch) > room:
            if not self.dropped:
                log.warning("request log: %d rows held in memory: further rows are dropped (counted) until "
                            "PostgreSQL or %s takes them", MEMORY_ROWS, self.spill_path)
            self.dropped += len(batch) - room

    def spilled(self) -> int:
        """Rows waiting in the spill file."""
        try:
            with closing(sqlite3.connect(self.spill_path)) as db:
                return db.execute("SELECT COUNT(*) FROM pg_spill").fetchone()[0]
        except sqlite3.Error:
            return 0
