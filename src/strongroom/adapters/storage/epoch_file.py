"""``FileCredentialEpoch``: the credential epoch of one host, an 8-byte counter in a file.

Every worker process of a server maps the same file (``<home>/run/credential-epoch``) and reads
the counter on every request with one memory load (``mmap``, shared with the page cache: about
a tenth of a microsecond, no system call). A credential change bumps it under an exclusive
``fcntl.flock``: read with ``pread``, write the successor with ``pwrite``. Because every process
maps the same page-cache page, a bump that has returned is seen by the next read in every
process of the host; that is what makes revocation effective on the very next request.

Invariants and limits:

* The counter is a little-endian unsigned 64-bit integer at offset 0; a missing or short file
  is created (0600, in a 0700 directory) holding 0. The file is never truncated or replaced
  while in use (a mapping keeps the old inode): a bump refuses a replaced file
  (``StorageError``), so do not delete it under a running server.
* The value is aligned, and the kernel copies such an 8-byte value with one store on the
  64-bit platforms Strongroom runs on; as a guard against a torn read anyway, ``current`` reads
  twice and retries until both agree. Readers compare for inequality, never for order.
* Bumps are serialised by ``flock`` on an open file description of their own, so no bump is
  lost between processes, forked processes or threads. (A lost bump could move the counter
  back to a value some process still has a stale cache for.)
* The bump is not fsynced: after a host crash every worker restarts with an empty cache anyway.
* One host only: processes on other hosts do not see the file. Replicas on several hosts use
  ``epoch_sql.SqlCredentialEpoch`` instead.
* Whoever can write the file can keep caches warm after a revocation; it lives in the
  instance's private directory, which that person could read anyway.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from strongroom.adapters.storage.files import prepare_private_directory
from strongroom.errors import ConfigurationError, StorageError

_FORMAT: Final = struct.Struct("<Q")
_MAX: Final = 2**64 - 1


class FileCredentialEpoch:
    """``CredentialEpoch`` in a file shared by the worker processes of one host."""

    def __init__(self, path: Path) -> None:
        prepare_private_directory(path.parent, "credential epoch directory")
        self._path = path
        fd = self._open()
        try:
            with _exclusive(fd):
                if os.fstat(fd).st_size < _FORMAT.size:
                    os.pwrite(fd, _FORMAT.pack(0), 0)
            info = os.fstat(fd)
            self._identity = (info.st_dev, info.st_ino)
            self._map = mmap.mmap(fd, _FORMAT.size, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)  # the mapping keeps the file

    def _open(self) -> int:
        """A new open file description of the epoch file, checked (regular, not writable by
        others, not a symlink)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self._path, flags, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open the credential epoch file {self._path}") from exc
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            os.close(fd)
            raise ConfigurationError(
                f"{self._path} must be a regular file writable only by its owner",
                hint=f"run: chmod 600 {self._path}",
            )
        return fd

    def current(self) -> int:
        """The counter: loads from the shared mapping (no system call), twice, until stable."""
        while True:
            first: int = _FORMAT.unpack_from(self._map)[0]
            if _FORMAT.unpack_from(self._map)[0] == first:
                return first

    def bump(self) -> None:
        """Add one under an exclusive ``flock`` taken on a fresh open file description, so that
        concurrent bumps of several processes, forked ones included, and threads all count."""
        fd = self._open()
        try:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != self._identity:
                raise StorageError(
                    f"the credential epoch file {self._path} was replaced",
                    hint="restart the server processes",
                )
            with _exclusive(fd):
                value = _FORMAT.unpack(os.pread(fd, _FORMAT.size, 0))[0]
                os.pwrite(fd, _FORMAT.pack((value + 1) & _MAX), 0)
        except OSError as exc:
            raise StorageError("cannot update the credential epoch file") from exc
        finally:
            os.close(fd)

    def close(self) -> None:
        self._map.close()

    def __repr__(self) -> str:
        return f"FileCredentialEpoch({str(self._path)!r})"


@contextmanager
def _exclusive(fd: int) -> Iterator[None]:
    """``flock(LOCK_EX)`` for a block. ``flock`` belongs to the open file description, so each
    bump opens its own: two threads (or forked processes) sharing one descriptor would not
    exclude each other."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
