"""Safe, in-memory unpacking of ``.zip``, ``.tar`` and ``.tar.gz`` model uploads.

An uploaded archive is read from memory (``zipfile``/``tarfile`` over ``io.BytesIO``) and never
touches the disk, so there is nothing to extract and no path to escape from. Still, the member
names become the version's file paths (in the signed manifest, and on the disk of whoever later
downloads them), so they are held to the rules an extractor needs:

- a name is a relative POSIX path of printable characters: no leading ``/``, no ``..``
  component, no backslash, no ``:`` (drive letters, NTFS streams), no NUL or control character;
- members are regular files or directories only: symlinks, hardlinks, devices, FIFOs, sparse and
  contiguous files are refused, as are encrypted zip members;
- no two files share a name after normalisation (``a/./b`` is ``a/b``), Unicode NFC
  normalisation and case folding, and no file is also a directory of another file's path;
- every entry, directories included, counts toward ``max_members``; the declared and the
  actually read sizes count toward ``max_total_bytes``; every read is bounded, so a zip bomb
  with lying headers or a gzip stream that inflates forever is stopped at the limit.

Any malformed archive raises ``InvalidInputError``; the specific refusals raise its subclasses
``UnsafeArchiveError`` and ``TooLargeError``.
"""

from __future__ import annotations

import gzip
import io
import stat
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from typing import Protocol

from strongroom.errors import InvalidInputError, TooLargeError, UnsafeArchiveError

_TAR_HEADER_BUDGET = 8 * 1024
"""Tar bytes allowed per entry beyond its data: header, long-name/pax records and padding."""
_TAR_SLACK = 64 * 1024
"""End-of-archive blocks and record padding (tar pads to 10 KiB records)."""
_READ_CHUNK = 64 * 1024
_MAX_NAME_LENGTH = 1024
_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_CENTRAL_HEADER = b"PK\x01\x02"
_ZIP_ENCRYPTED = 0x1
_ZIP_STRONG_ENCRYPTION = 0x40
_ZIP_MALFORMED = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    OSError,
    EOFError,
    ValueError,
    RuntimeError,
    struct.error,
    zlib.error,
    OverflowError,
)
_TAR_MALFORMED = (tarfile.TarError, OSError, EOFError, ValueError, zlib.error, OverflowError)


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def is_archive(filename: str) -> bool:
    """Whether an upload is an archive to unpack, by extension (``.skops`` zips are models)."""
    name = filename.lower()
    return name.endswith((".zip", ".tar", ".tar.gz", ".tgz"))


def unpack_archive(
    filename: str, data: bytes, *, max_total_bytes: int, max_members: int
) -> dict[str, bytes]:
    """Return ``{normalised relative path: bytes}`` for the regular files of an archive."""
    name = filename.lower()
    if name.endswith(".zip"):
        return _unpack_zip(data, max_total_bytes, max_members)
    if name.endswith((".tar.gz", ".tgz")):
        return _unpack_tar(data, max_total_bytes, max_members, gzipped=True)
    if name.endswith(".tar"):
        return _unpack_tar(data, max_total_bytes, max_members, gzipped=False)
    raise InvalidInputError(
        f"{filename[:80]!r} is not a supported archive", hint="use .zip, .tar, .tar.gz or .tgz"
    )


# --- names --------------------------------------------------------------------------------------


def normalise_member_name(raw: str) -> str:
    """Return the normalised relative POSIX path of a member name, or raise UnsafeArchiveError.

    A trailing ``/`` (directory marker) is dropped; the result may be empty only for the
    archive root directory.
    """
    if len(raw) > _MAX_NAME_LENGTH:
        raise UnsafeArchiveError("archive member name is too long")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):  # noqa: PLR2004 - control characters
        raise UnsafeArchiveError("archive member name holds a control or NUL character")
    if "\\" in raw:
        raise UnsafeArchiveError(f"archive member {raw!r} uses a backslash")
    if raw.startswith("/"):
        raise UnsafeArchiveError(f"archive member {raw!r} has an absolute path")
    if ":" in raw:
        raise UnsafeArchiveError(f"archive member {raw!r} has a ':' (drive letter or NTFS stream)")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeArchiveError("archive member name is not valid UTF-8") from None
    parts = [p for p in raw.split("/") if p not in {"", "."}]
    if ".." in parts:
        raise UnsafeArchiveError(f"archive member {raw!r} escapes the archive with '..'")
    return "/".join(parts)


class _Names:
    """Tracks files and directories so that no two collide after folding."""

    def __init__(self) -> None:
        self._files: set[str] = set()
        self._dirs: set[str] = set()

    def add_file(self, path: str) -> None:
        if not path:
            raise UnsafeArchiveError("archive member has an empty name")
        key = unicodedata.normalize("NFC", path).casefold()
        if key in self._files or key in self._dirs:
            raise UnsafeArchiveError(f"archive member {path!r} collides with another member")
        parents = _parents(key)
        if any(parent in self._files for parent in parents):
            raise UnsafeArchiveError(f"archive member {path!r} lies under a file of the same name")
        self._files.add(key)
        self._dirs.update(parents)


def _parents(key: str) -> list[str]:
    parts = key.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class _Budget:
    """Counts entries and bytes against the limits; raises TooLargeError past either."""

    def __init__(self, max_total_bytes: int, max_members: int) -> None:
        self.max_total_bytes = max_total_bytes
        self.max_members = max_members
        self.members = 0
        self.bytes = 0

    def count_member(self) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise TooLargeError(f"archive holds more than {self.max_members} entries")

    def remaining(self) -> int:
        return self.max_total_bytes - self.bytes

    def read(self, stream: _Reader) -> bytes:
        """Read a member in bounded chunks, stopping one byte past what the budget allows.

        Chunks, not one ``read(remaining)``: buffered readers allocate the requested size up
        front, which a member that declares gigabytes would turn into a memory exhaustion.
        """
        chunks: list[bytes] = []
        while chunk := stream.read(min(_READ_CHUNK, self.remaining() + 1)):
            self.bytes += len(chunk)
            if self.bytes > self.max_total_bytes:
                raise TooLargeError(f"archive contents exceed {self.max_total_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


# --- zip ----------------------------------------------------------------------------------------


def _u16(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 2], "little")


def _central_directory(data: bytes) -> tuple[int, int] | None:
    """Start and size of the central directory, located exactly as ``zipfile`` locates it."""
    if data[-22:-18] == _EOCD and data[-2:] == b"\0\0":
        eocd = len(data) - 22
    else:
        eocd = data.rfind(_EOCD, max(0, len(data) - 22 - 0xFFFF))
        if eocd < 0 or eocd + 22 > len(data):
            return None
    size = int.from_bytes(data[eocd + 12 : eocd + 16], "little")
    start = eocd - size
    locator = eocd - 20
    if locator >= 0 and data[locator : locator + 4] == _EOCD64_LOCATOR:
        record = locator - 56
        if record < 0 or data[record : record + 4] != _EOCD64:
            return None
        size = int.from_bytes(data[record + 40 : record + 48], "little")
        start = record - size
    return (start, size) if start >= 0 else None


def check_zip_entry_count(data: bytes, limit: int) -> None:
    """Raise ``TooLargeError`` if the central directory lists more than ``limit`` entries.

    ``zipfile`` builds a ``ZipInfo`` object for every entry before anyone can count them, so a
    central directory of millions of 46-byte entries would exhaust memory first. This walk only
    counts, and stops one past the limit. A directory it cannot walk is left to ``zipfile``,
    which reads the same bytes and refuses them.
    """
    located = _central_directory(data)
    if located is None:
        return
    pos, end = located[0], min(len(data), located[0] + located[1])
    count = 0
    while pos + 46 <= end and data[pos : pos + 4] == _CENTRAL_HEADER:
        count += 1
        if count > limit:
            raise TooLargeError(f"archive holds more than {limit} entries")
        pos += 46 + _u16(data, pos + 28) + _u16(data, pos + 30) + _u16(data, pos + 32)


def _unpack_zip(data: bytes, max_total_bytes: int, max_members: int) -> dict[str, bytes]:
    budget = _Budget(max_total_bytes, max_members)
    check_zip_entry_count(data, max_members)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if len(infos) > max_members:
                raise TooLargeError(f"archive holds more than {max_members} entries")
            if sum(info.file_size for info in infos) > max_total_bytes:
                raise TooLargeError(f"archive declares more than {max_total_bytes} bytes")
            files = _zip_plan(infos, budget)
            out: dict[str, bytes] = {}
            for path, info in files:
                with zf.open(info) as member:
                    out[path] = budget.read(member)
            return out
    except _ZIP_MALFORMED as exc:
        raise InvalidInputError("malformed or unsupported zip archive") from exc


def _zip_plan(infos: list[zipfile.ZipInfo], budget: _Budget) -> list[tuple[str, zipfile.ZipInfo]]:
    """Check every entry before reading any, so a refusal costs no decompression."""
    names = _Names()
    plan: list[tuple[str, zipfile.ZipInfo]] = []
    for info in infos:
        budget.count_member()
        path = normalise_member_name(info.orig_filename)
        if info.flag_bits & (_ZIP_ENCRYPTED | _ZIP_STRONG_ENCRYPTION):
            raise UnsafeArchiveError(f"archive member {path!r} is encrypted")
        kind = stat.S_IFMT(info.external_attr >> 16)
        is_dir = info.orig_filename.endswith("/") or kind == stat.S_IFDIR
        if kind not in {0, stat.S_IFREG, stat.S_IFDIR} or (is_dir and info.file_size):
            raise UnsafeArchiveError(f"archive member {path!r} is not a regular file")
        if not is_dir:
            names.add_file(path)
            plan.append((path, info))
    return plan


# --- tar ----------------------------------------------------------------------------------------


class _BoundedStream(io.RawIOBase):
    """A read-only stream that raises TooLargeError once more than ``limit`` bytes are read.

    tarfile reads pax headers and member data through it in chunks, so a header that declares
    gigabytes, or a gzip stream that inflates forever, is stopped at the limit.
    """

    def __init__(self, source: _Reader, limit: int) -> None:
        super().__init__()
        self._source = source
        self._limit = limit
        self._read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = self._limit + 1 - self._read if size is None or size < 0 else size
        chunk = self._source.read(max(0, min(want, self._limit + 1 - self._read)))
        self._read += len(chunk)
        if self._read > self._limit:
            raise TooLargeError(f"archive stream exceeds {self._limit} bytes")
        return chunk


def _unpack_tar(
    data: bytes, max_total_bytes: int, max_members: int, *, gzipped: bool
) -> dict[str, bytes]:
    budget = _Budget(max_total_bytes, max_members)
    limit = max_total_bytes + (max_members + 1) * _TAR_HEADER_BUDGET + _TAR_SLACK
    source: _Reader = io.BytesIO(data)
    if gzipped:
        source = gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")
    stream = _BoundedStream(source, limit)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tf:
            return _read_tar_members(tf, budget)
    except RecursionError as exc:
        raise InvalidInputError("the tar archive nests its headers too deeply") from exc
    except _TAR_MALFORMED as exc:
        raise InvalidInputError("malformed or unsupported tar archive") from exc


def _read_tar_members(tf: tarfile.TarFile, budget: _Budget) -> dict[str, bytes]:
    names = _Names()
    out: dict[str, bytes] = {}
    for member in tf:
        budget.count_member()
        path = normalise_member_name(member.name)
        if member.type == tarfile.DIRTYPE:
            continue
        regular = member.type in {tarfile.REGTYPE, tarfile.AREGTYPE}
        if not regular or member.sparse is not None or member.name.endswith("/"):
            raise UnsafeArchiveError(f"archive member {path!r} is not a regular file")
        names.add_file(path)
        if member.size > budget.remaining():
            raise TooLargeError(f"archive declares more than {budget.max_total_bytes} bytes")
        extracted = tf.extractfile(member)
        if extracted is None:
            raise UnsafeArchiveError(f"archive member {path!r} has no data")
        data = budget.read(extracted)
        if len(data) != member.size:
            raise InvalidInputError(f"archive member {path!r} is truncated")
        out[path] = data
    return out
