"""Request-log reads the console needs beyond llmgate/request_log's (run through AdminApi._read,
in a worker thread), and the config file with its secrets masked."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from typing import Any

import yaml

from llmgate.operations.request_log import COLUMNS, dialect

SECRET_KEY = re.compile(r"key|secret|token|password|authorization|cookie", re.I)
NOT_SECRET = re.compile(r"_(url|urls|file|path)$|^max_|_tokens$", re.I)
MASK = "[redacted]"


def timeline(db: sqlite3.Connection, since: float, step: float, buckets: int) -> list[tuple[int, int, int]]:
    """(requests, errors, tokens) per `step` seconds from `since`, oldest first (SQLite or PostgreSQL)."""
    rows = db.execute(
        f"SELECT {dialect(db).bucket} AS b, COUNT(*), COUNT(error), "
        "COALESCE(SUM(prompt_tokens), 0) + COALESCE(SUM(completion_tokens), 0) FROM requests "
        "WHERE ts >= ? GROUP BY b", (since, step, since)).fetchall()
    by = {b: (n, e, t) for b, n, e, t in rows}
    return [by.get(i, (0, 0, 0)) for i in range(buckets)]


def detail(db: sqlite3.Connection, rid: int) -> dict[str, Any] | None:
    row = db.execute(f"SELECT id, {', '.join(COLUMNS)} FROM requests WHERE id = ?", (rid,)).fetchone()
    return dict(zip(["id", *COLUMNS], row, strict=True)) if row else None


def mask_config(text: str, redact: Callable[[str], str]) -> str:
    """proxy.yaml as written, with every value under a secret-named key (any length) and every
    secret the gateway knows (redaction's list) replaced."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    for value in sorted(set(_secret_values(data)), key=len, reverse=True):  # a whole scalar, block or flow style
        text = re.sub(rf"(?m)(?:(?<=[:\-,\[{{] )|(?<=[\[{{,]))([\"']?){re.escape(value)}\1(?=\s*(#|$|,|\]|\}}))",
                      MASK, text)
    return redact(text)


def _secret_values(node: Any, secret: bool = False) -> list[str]:
    if isinstance(node, dict):
        return [v for k, child in node.items()
                for v in _secret_values(child, secret or (isinstance(k, str) and SECRET_KEY.search(k) is not None
                                                          and not NOT_SECRET.search(k)))]
    if isinstance(node, list):
        return [v for child in node for v in _secret_values(child, secret)]
    return [node] if secret and isinstance(node, str) and node else []
