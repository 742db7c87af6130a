"""File-system helpers shared by the local stores (blob store, external checkpoint directory)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from strongroom.errors import ConfigurationError, StorageError

PRIVATE_DIR_MODE: Final = 0o700


def fsync_directory(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare_private_directory(root: Path, what: str) -> Path:
    """Create ``root`` (0700) if absent; refuse a non-directory or a group/world-writable one
    (another user could swap its files)."""
    try:
        if not root.exists():
            root.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
            root.chmod(PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask; make it exact
        info = root.stat()
    except OSError as exc:
        raise StorageError(f"cannot create or read the {what}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError(f"{what} {root} is not a directory")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigurationError(
            f"{what} {root} is writable by group or others", hint=f"run: chmod 700 {root}"
        )
    return root
