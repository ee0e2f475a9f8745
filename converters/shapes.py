"""Untrusted JSON read as the shape the code expects: anything else reads as empty."""

from __future__ import annotations

from typing import Any


def obj(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def arr(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def string(v: Any, default: str = "") -> str:
    return v if isinstance(v, str) else default


def integer(v: Any, default: int = 0) -> int:
    return v if isinstance(v, int) else default
