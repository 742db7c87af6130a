"""``DirectoryCheckpointSink``: the audit log's second home for checkpoints, a local directory.

Meant to be a mount that the database's administrators cannot rewrite (another host's NFS
export, a WORM volume, a directory synced off the box); on the same disk as the database it only
protects against mistakes, not insiders, and the settings say so.

Layout: one file per checkpoint, named by its tree size zero-padded to 16 digits (``2**53 - 1``
has 16), so that name order is size order; files ``0600``, the directory ``0700``.

Invariants:

* ``publish`` is atomic, durable and never overwrites: it writes a temporary (``O_EXCL``),
  fsyncs it, then *hard-links* it to the final name (which fails if the name exists, unlike a
  rename) and fsyncs the directory. A reader sees a whole checkpoint or none.
* One text per size. Publishing the same text again is a no-op; a different checkpoint of a
  size already kept is a fork of the log and raises ``IntegrityError`` (the kept file stays).
* Nothing here verifies signatures (``verify_log`` does); a file that is not UTF-8 or is too
  large is returned as it is, so that verification reports it instead of it disappearing.
"""

from __future__ import annotations

import os
import re
import secrets
from contextlib import suppress
from pathlib import Path
from typing import Final

from strongroom.adapters.storage.files import fsync_directory, prepare_private_directory
from strongroom.core.audit.ports import checkpoint_size
from strongroom.core.crypto.notes import MAX_NOTE_BYTES
from strongroom.errors import IntegrityError, StorageError, StrongroomError

SIZE_DIGITS: Final = 16
TEMP_PREFIX: Final = ".tmp-"
_NAME = re.compile(rf"[0-9]{{{SIZE_DIGITS}}}")
_FILE_MODE: Final = 0o600


def _read(path: Path) -> str:
    """A kept file as text: bytes beyond a note's limit and invalid UTF-8 are kept for
    verification to refuse (``surrogateescape`` turns bad bytes into lone surrogates)."""
    with path.open("rb") as handle:
        data = handle.read(MAX_NOTE_BYTES + 1)
    return data.decode("utf-8", "surrogateescape")


class DirectoryCheckpointSink:
    """``CheckpointSink`` in a directory; see the module docstring for layout and guarantees."""

    def __init__(self, root: Path) -> None:
        self._root = prepare_private_directory(Path(root), "checkpoint directory")

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, size: int) -> Path:
        return self._root / f"{size:0{SIZE_DIGITS}d}"

    def publish(self, text: str) -> None:
        final = self._path(checkpoint_size(text))
        data = text.encode("utf-8")
        temporary = self._root / f"{TEMP_PREFIX}{final.name}-{secrets.token_hex(8)}"
        try:
            fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _FILE_MODE)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(temporary, final)
            except FileExistsError:
                self._check_same(final, data)
            else:
                fsync_directory(self._root)
        except StrongroomError:
            raise
        except OSError as exc:
            raise StorageError("cannot write to the checkpoint directory") from exc
        finally:
            with suppress(OSError):
                temporary.unlink()

    @staticmethod
    def _check_same(final: Path, data: bytes) -> None:
        with final.open("rb") as handle:
            kept = handle.read(len(data) + 1)
        if kept != data:
            raise IntegrityError("a different checkpoint of this size is kept: a fork")

    def _names(self) -> list[str]:
        try:
            return sorted(
                entry.name for entry in os.scandir(self._root) if _NAME.fullmatch(entry.name)
            )
        except OSError as exc:
            raise StorageError("cannot read the checkpoint directory") from exc

    def checkpoints(self) -> list[str]:
        try:
            return [_read(self._root / name) for name in self._names()]
        except OSError as exc:
            raise StorageError("cannot read the checkpoint directory") from exc

    def latest(self) -> str | None:
        names = self._names()
        if not names:
            return None
        try:
            return _read(self._root / names[-1])
        except OSError as exc:
            raise StorageError("cannot read the checkpoint directory") from exc
