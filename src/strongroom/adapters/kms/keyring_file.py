"""Private, atomic, locked files for the local keyring.

The keyring file is read only if it is a regular file that group and others cannot access, is
only ever replaced atomically (temporary in the same directory created ``0600`` with
``O_EXCL``, fsync, rename or link, fsync of the directory), and changes are serialised across
processes with ``flock`` on a sidecar lock file (the keyring itself is replaced, so it cannot
carry the lock).
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from strongroom.errors import ConfigurationError, StorageError

Stamp = tuple[int, int, int]
"""(inode, mtime ns, size): changes whenever the file is replaced."""


def file_stamp(path: Path) -> Stamp:
    info = path.stat()
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def read_private_file(path: Path, max_bytes: int, *, what: str) -> tuple[bytes, Stamp]:
    """Read a file that must be a regular file of at most ``max_bytes``, mode ``0600``-like."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"no {what} at {path}", hint="create one with `strongroom init`"
        ) from exc
    except OSError as exc:
        raise StorageError(f"cannot read the {what} at {path}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            raise ConfigurationError(f"{path} is not a {what} file")
        if info.st_mode & 0o077:
            raise ConfigurationError(
                f"the {what} {path} is accessible by group or others", hint=f"chmod 600 {path}"
            )
        data = handle.read(max_bytes + 1)
    return data, (info.st_ino, info.st_mtime_ns, info.st_size)


def atomic_write(path: Path, data: bytes, suffix: str, *, replace: bool) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{suffix}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(temporary, flags, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if replace:
                temporary.replace(path)
            else:
                os.link(temporary, path)  # fails if path exists: never overwrites
        finally:
            temporary.unlink(missing_ok=True)
        fsync_directory(path.parent)
    except FileExistsError as exc:
        raise ConfigurationError(f"a keyring already exists at {path}") from exc
    except OSError as exc:
        raise StorageError(f"cannot write the keyring at {path}") from exc


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """``flock`` on a sidecar lock file (the keyring itself is replaced, so not lockable)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
