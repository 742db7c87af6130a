"""Property tests for the two upload parsers: detect_format and unpack_archive.

Whatever the bytes and names, they raise only the documented errors, and what they accept is
consistent: a detected format agrees with the extension, an unpacked archive holds exactly the
safe members it was built from.
"""

from __future__ import annotations

import io
import tarfile
import unicodedata
import warnings
import zipfile

from hypothesis import example, given
from hypothesis import strategies as st

from strongroom.core.registry.archive import check_zip_entry_count, unpack_archive
from strongroom.core.registry.formats import ACCEPTED_EXTENSIONS, ModelFormat, detect_format
from strongroom.errors import (
    InvalidInputError,
    TooLargeError,
    UnsafeArchiveError,
    UnsupportedFormatError,
)

EXTENSIONS = [*ACCEPTED_EXTENSIONS, "pkl", "joblib", "pt", "npy", "zip", "gz", "", "ONNX", "Json"]
MAGICS = [b"\x08", b"{", b"{L", b"tree\nversion=v", b"PK\x03\x04", b"\x80\x04", b"x\x9c", b"BZh"]

names = st.builds(
    lambda stem, ext: f"{stem}.{ext}" if ext else stem,
    st.text(min_size=0, max_size=12),
    st.sampled_from(EXTENSIONS),
)
model_bytes = st.one_of(
    st.binary(max_size=512),
    st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGICS), st.binary(max_size=256)),
)


@given(names, model_bytes, st.none() | st.sampled_from(list(ModelFormat)))
@example("m.json", b'{"learner": {}}', None)
@example("m.ubj", b"{i\x07learner{}}", None)
@example("m.txt", b"tree\nversion=v4\n", None)
@example("m.onnx", b"\x08\x07\x3a\x00", None)
def test_detect_format_refuses_cleanly_or_agrees_with_the_name(
    filename: str, data: bytes, declared: ModelFormat | None
) -> None:
    try:
        fmt = detect_format(filename, data, declared)
    except UnsupportedFormatError:
        return
    ext = filename.rsplit(".", 1)[-1].lower()
    assert ACCEPTED_EXTENSIONS[ext] is fmt
    assert declared in {None, fmt}


ARCHIVE_NAMES = ["u.zip", "u.tar", "u.tar.gz", "u.tgz"]
ARCHIVE_ERRORS = (UnsafeArchiveError, TooLargeError, InvalidInputError)


@given(st.sampled_from(ARCHIVE_NAMES), st.binary(max_size=2048))
def test_unpack_random_bytes_raises_only_archive_errors(filename: str, data: bytes) -> None:
    try:
        files = unpack_archive(filename, data, max_total_bytes=4096, max_members=8)
    except ARCHIVE_ERRORS:
        return
    assert sum(map(len, files.values())) <= 4096


member_names = st.lists(
    st.text(alphabet=st.sampled_from("ab./\\:C\x00é"), min_size=1, max_size=8),
    min_size=1,
    max_size=5,
)


def _build(kind: str, members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    if kind == "zip":
        with (
            warnings.catch_warnings(),  # duplicate names are built on purpose
            zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf,
        ):
            warnings.simplefilter("ignore")
            for name, data in members:
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
        return buf.getvalue()
    with tarfile.open(
        fileobj=buf, mode="w:gz" if kind == "tgz" else "w", format=tarfile.PAX_FORMAT
    ) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _safe_and_distinct(names: list[str]) -> bool:
    paths = []
    for name in names:
        if name.startswith("/") or "\\" in name or "\x00" in name or name.endswith("/"):
            return False
        if ":" in name:
            return False
        parts = [p for p in name.split("/") if p not in {"", "."}]
        if not parts or ".." in parts:
            return False
        paths.append(unicodedata.normalize("NFC", "/".join(parts)).casefold())
    prefixes = {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
    return len(set(paths)) == len(paths) and not prefixes & set(paths)


@given(st.sampled_from(["zip", "tar", "tgz"]), member_names, st.binary(max_size=64))
def test_built_archives_unpack_exactly_when_their_names_are_safe(
    kind: str, names: list[str], payload: bytes
) -> None:
    # NUL and a trailing "/" mean different things to zipfile and tarfile writers (truncation,
    # directory marker, stripped pax path); unit tests cover them, so keep them out of names here.
    cleaned = [name.replace("\x00", "x").rstrip("/") or "x" for name in names]
    members = [(name, payload + name.encode()) for name in cleaned]
    filename = {"zip": "u.zip", "tar": "u.tar", "tgz": "u.tgz"}[kind]
    data = _build(kind, members)
    try:
        files = unpack_archive(filename, data, max_total_bytes=1 << 20, max_members=100)
    except UnsafeArchiveError:
        assert not _safe_and_distinct([name for name, _ in members])
        return
    assert _safe_and_distinct([name for name, _ in members])
    expected = {"/".join(p for p in n.split("/") if p not in {"", "."}): d for n, d in members}
    assert files == expected


@given(
    st.sampled_from(["zip", "tar", "tgz"]),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(min_value=0),
)
def test_mutated_archives_raise_only_archive_errors(
    kind: str, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(_build(kind, [("a/model.onnx", b"\x08" * 300), ("b.txt", b"hello" * 50)]))
    for position, value in flips:
        data[position % len(data)] = value
    data = data[: len(data) - cut % 64]
    filename = {"zip": "u.zip", "tar": "u.tar", "tgz": "u.tgz"}[kind]
    try:
        files = unpack_archive(filename, bytes(data), max_total_bytes=2000, max_members=4)
    except ARCHIVE_ERRORS:
        return
    assert len(files) <= 4
    assert sum(map(len, files.values())) <= 2000


@given(
    st.integers(min_value=0, max_value=12),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
    st.integers(min_value=0, max_value=20),
)
def test_entry_count_bounds_what_zipfile_builds(
    n: int, flips: list[tuple[int, int]], limit: int
) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(n):
            zf.writestr(f"m{i}", b"data")
    data = bytearray(buf.getvalue())
    for position, value in flips:
        data[position % len(data)] = value
    try:
        check_zip_entry_count(bytes(data), limit)
    except TooLargeError:
        return
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
            count = len(zf.infolist())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):
        return
    assert count <= limit
