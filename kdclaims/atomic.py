"""Atomic, durable file writes: the one writer every module uses (cache entries, checkpoints,
evaluations, reports, imported archives).

A file is written to a temporary name in the same directory, flushed and fsynced, renamed over
the target, and the directory is fsynced, so a reader sees the old file or the new one, never a
torn one, even after a crash or power loss.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_dir(directory: Path | str) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: Path | str, write: Callable[[str], None], tmp_prefix: str = ".",
                     mode: int | None = None) -> None:
    """Create ``path`` atomically: ``write(tmp_path)`` fills a temporary file beside it, which is
    fsynced and renamed over ``path``. ``mode`` sets the permission bits (default: umask's)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_bytes_atomically(path: Path | str, data: bytes, tmp_prefix: str = ".", mode: int | None = None) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
    write_atomically(path, write, tmp_prefix, mode)


def write_text_atomically(path: Path | str, text: str, tmp_prefix: str = ".", mode: int | None = None) -> None:
    write_bytes_atomically(path, text.encode("utf-8"), tmp_prefix, mode)
