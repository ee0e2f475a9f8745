"""Cooldowns on disk (SQLite, embedded), so a restart does not send requests to accounts that
are known to be out of quota. Writes happen only when a cooldown starts or ends: rare."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS cooldowns (
    provider TEXT NOT NULL,
    account TEXT NOT NULL,
    model TEXT NOT NULL,
    until REAL NOT NULL,
    failures INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (provider, account, model)
)
"""


class StateStore:
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)

    def load(self) -> dict[tuple[str, str, str], Any]:
        from llmgate.request_path.pool import (
            Cooling,  # the value type; pool imports nothing from here
        )

        with self._lock:
            rows = self._db.execute(
                "SELECT provider, account, model, until, failures, reason FROM cooldowns WHERE until > ?",
                (time.time() - 3600,),  # failure counts of recent cooldowns matter for the backoff
            ).fetchall()
        return {(p, a, m): Cooling(until, failures, reason) for p, a, m, until, failures, reason in rows}

    def save(self, key: tuple[str, str, str], c: Any) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO cooldowns VALUES (?, ?, ?, ?, ?, ?)", (*key, c.until, c.failures, c.reason))

    def delete(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._db.execute("DELETE FROM cooldowns WHERE provider = ? AND account = ? AND model = ?", key)

    def close(self) -> None:
        with self._lock:
            self._db.close()
