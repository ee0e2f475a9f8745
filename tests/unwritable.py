"""Make a file or folder unwritable even for root (tests run as root, so chmod does not):
`chattr +i` (immutable: no write, rename, create or delete in it). Skips the test where the
sandbox's file system or capabilities do not allow it."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Iterator

import pytest


def _chattr(flag: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True)


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    try:
        r = _chattr("+i", path)
    except FileNotFoundError:
        pytest.skip("no chattr: cannot make a path unwritable for root here")
    if r.returncode:
        pytest.skip(f"chattr +i {path} failed ({r.stderr.strip()}): cannot make it unwritable for root here")
    try:
        yield
    finally:
        _chattr("-i", path)
