"""Read what the user asked to push: a file, an archive, or a directory, bounded in size.

Directories are walked without following links (a symlink is refused: it could point anywhere)
and skip what the OpenSSF ``model_signing`` tool skips by default (``.git``, ``.github``,
``.gitignore``, ``.gitattributes``) plus the signature file itself, so that a directory signed by
that tool verifies here unchanged.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from strongroom.errors import InvalidInputError, TooLargeError, UnsafeArchiveError
from strongroom.services.publishing import RegistryLimits, files_from_upload

IGNORED_NAMES = frozenset({".git", ".github", ".gitignore", ".gitattributes"})


def _read_bounded(path: Path, budget: int) -> bytes:
    """Read a regular file without following a symlink swapped in after the directory walk."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeArchiveError(f"{path} is a symbolic link") from None
        raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise InvalidInputError(f"{path} is not a regular file")
        data = handle.read(budget + 1)
    if len(data) > budget:
        raise TooLargeError(f"upload exceeds the limit of {budget} bytes")
    return data


def read_upload(
    path: Path, signature: Path | None, *, max_bytes: int, limits: RegistryLimits
) -> tuple[dict[str, bytes], bool, list[str]]:
    """Return (relative path -> bytes, whether it was a single file, paths left out)."""
    try:
        mode = path.lstat().st_mode
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from None
    if stat.S_ISLNK(mode):
        raise UnsafeArchiveError(f"{path} is a symbolic link; push the real file")
    if stat.S_ISREG(mode):
        files, single = files_from_upload(path.name, _read_bounded(path, max_bytes), limits)
        return files, single, []
    if not stat.S_ISDIR(mode):
        raise InvalidInputError(f"{path} is neither a file nor a directory")
    return _read_directory(path, signature, max_bytes, limits.max_archive_members)


def _read_directory(
    root: Path, signature: Path | None, max_bytes: int, max_files: int
) -> tuple[dict[str, bytes], bool, list[str]]:
    skip = signature.resolve() if signature is not None else None
    files: dict[str, bytes] = {}
    excluded: list[str] = []
    budget = max_bytes
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_NAMES)
        for directory in dirnames:
            if (Path(dirpath) / directory).is_symlink():
                raise UnsafeArchiveError(f"{Path(dirpath) / directory} is a symbolic link")
        for filename in sorted(filenames):
            if filename in IGNORED_NAMES:
                continue
            full = Path(dirpath) / filename
            relative = full.relative_to(root).as_posix()
            if full.is_symlink():
                raise UnsafeArchiveError(f"{relative} is a symbolic link")
            if skip is not None and full.resolve() == skip:
                excluded.append(relative)
                continue
            if len(files) >= max_files:
                raise TooLargeError(f"more than {max_files} files in {root}")
            data = _read_bounded(full, budget)
            budget -= len(data)
            files[relative] = data
    if not files:
        raise InvalidInputError(f"{root} holds no files")
    return files, False, excluded
