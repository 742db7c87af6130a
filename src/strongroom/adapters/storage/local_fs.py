"""``LocalBlobStore``: the registry's ``BlobStore`` on a local directory.

Layout: ``root/ab/abcdef...`` (a two-character fan-out on the blob id), files ``0600``,
directories ``0700``. The blobs are envelopes (already encrypted), but their sizes and count are
still nobody else's business, and a group- or world-writable root would let another user swap
them, so such a root is refused.

Invariants:

* A blob id must be exactly 32 lower-case hex characters, checked before any path is built, so
  a blob id can never name a path outside ``root`` (no ``..``, no separators, no NUL).
* ``put`` is atomic and durable: it writes a temporary (``.tmp-*``) in the blob's directory with
  ``O_CREAT | O_EXCL``, fsyncs it, renames it over the final name with ``os.replace`` and fsyncs
  the directory. Readers see the old blob or the new one, never a mix; a reader that opened the
  old blob keeps reading the old bytes. A failed write removes its temporary; a crash leaves at
  most a temporary, which ``remove_stale_temporaries`` deletes.
* ``remove_stale_temporaries(older_than)`` removes temporaries last modified before
  ``older_than`` (every one when it is None); a ``put`` whose temporary was removed fails with
  ``StorageError``, it never publishes a partial blob.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from strongroom.adapters.storage.files import fsync_directory, prepare_private_directory
from strongroom.core.registry.ports import BLOB_ID_HEX_LENGTH
from strongroom.errors import (
    InvalidInputError,
    NotFoundError,
    StorageError,
    StrongroomError,
)

TEMP_PREFIX = ".tmp-"
_BLOB_ID_RE = re.compile(f"[0-9a-f]{{{BLOB_ID_HEX_LENGTH}}}")
_FANOUT_RE = re.compile("[0-9a-f]{2}")
_DIR_MODE = 0o700
_FILE_MODE = 0o600


def _check_blob_id(blob_id: str) -> str:
    if not isinstance(blob_id, str) or not _BLOB_ID_RE.fullmatch(blob_id):
        raise InvalidInputError("blob ids are 32 lower-case hexadecimal characters")
    return blob_id


def _mtime(path: Path) -> datetime:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return datetime.max.replace(tzinfo=UTC)  # gone or unreadable: never "stale"


class LocalBlobStore:
    """``BlobStore`` in a directory; see the module docstring for layout and guarantees."""

    def __init__(self, root: Path) -> None:
        self._root = prepare_private_directory(Path(root), "blob store directory")

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, blob_id: str) -> Path:
        _check_blob_id(blob_id)
        return self._root / blob_id[:2] / blob_id

    def put(self, blob_id: str, chunks: Iterable[bytes]) -> int:
        final = self._path(blob_id)
        directory = final.parent
        try:
            self._make_fanout_directory(directory)
            temporary = directory / f"{TEMP_PREFIX}{blob_id}-{secrets.token_hex(8)}"
            fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _FILE_MODE)
        except OSError as exc:
            raise StorageError("cannot write to the blob store") from exc
        try:
            written = self._write_all(fd, chunks)
            temporary.replace(final)  # os.replace: atomic on POSIX
            fsync_directory(directory)
        except BaseException as exc:
            with suppress(FileNotFoundError):
                temporary.unlink()
            if isinstance(exc, StrongroomError) or not isinstance(exc, Exception):
                raise  # our own errors (too large, integrity) and interrupts pass unchanged
            raise StorageError("writing a blob failed; the stored blob is unchanged") from exc
        return written

    def _make_fanout_directory(self, directory: Path) -> None:
        try:
            directory.mkdir(mode=_DIR_MODE)
        except FileExistsError:
            return
        fsync_directory(self._root)

    @staticmethod
    def _write_all(fd: int, chunks: Iterable[bytes]) -> int:
        """Write every chunk to ``fd`` (closing it), fsync, and return the byte count."""
        written = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        return written

    def open(self, blob_id: str) -> AbstractContextManager[BinaryIO]:
        path = self._path(blob_id)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"no blob {blob_id}") from None
        except OSError as exc:
            raise StorageError("cannot read from the blob store") from exc

    def exists(self, blob_id: str) -> bool:
        return self._path(blob_id).is_file()

    def delete(self, blob_id: str) -> None:
        path = self._path(blob_id)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError("cannot delete from the blob store") from exc

    def list_ids(self) -> list[str]:
        """Ids of stored blobs, sorted; temporaries and foreign files are ignored."""
        return sorted(
            path.name
            for path in self._fanout_entries()
            if _BLOB_ID_RE.fullmatch(path.name) and path.name[:2] == path.parent.name
        )

    def modified_at(self, blob_id: str) -> datetime:
        try:
            mtime = self._path(blob_id).stat().st_mtime
        except FileNotFoundError:
            raise NotFoundError(f"no blob {blob_id}") from None
        except OSError as exc:
            raise StorageError("cannot read from the blob store") from exc
        return datetime.fromtimestamp(mtime, UTC)

    def count_temporaries(self) -> int:
        return sum(1 for path in self._fanout_entries() if path.name.startswith(TEMP_PREFIX))

    def remove_stale_temporaries(self, older_than: datetime | None = None) -> int:
        removed = 0
        for path in self._fanout_entries():
            if path.name.startswith(TEMP_PREFIX):
                if older_than is not None and _mtime(path) >= older_than:
                    continue
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise StorageError("cannot clean the blob store") from exc
                removed += 1
        return removed

    def _fanout_entries(self) -> Iterator[Path]:
        """Regular files in the fan-out directories (never following symlinks)."""
        try:
            for directory in sorted(self._root.iterdir()):
                if not _FANOUT_RE.fullmatch(directory.name) or directory.is_symlink():
                    continue
                if directory.is_dir():
                    yield from (
                        p for p in directory.iterdir() if p.is_file() and not p.is_symlink()
                    )
        except OSError as exc:
            raise StorageError("cannot list the blob store") from exc
