"""Make a file or folder unwritable even for root (tests run as root, so chmod does not):
`chattr +i` (immutable: no write, rename, create or delete in it). Skips the test where the
sandbox's file system or capabilities do not allow it."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

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


@contextlib.contextmanager
def small_disk(folder: Path) -> Iterator[None]:
    """`folder` as a 64 KiB tmpfs: `fill` it and writes fail with ENOSPC (empty files still work)."""
    folder.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(folder)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a small tmpfs ({r.stderr.strip()}): no real full disk here")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(path: Path) -> None:
    """Write `path` until its file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
