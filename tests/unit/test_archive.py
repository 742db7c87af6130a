"""unpack_archive: in-memory unpacking that refuses traversal, links, collisions and bombs."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import warnings
import zipfile

import pytest

from strongroom.core.registry.archive import (
    check_zip_entry_count,
    is_archive,
    normalise_member_name,
    unpack_archive,
)
from strongroom.errors import InvalidInputError, TooLargeError, UnsafeArchiveError

MIB = 1024 * 1024


def make_zip(members: list[tuple[str, bytes]], *, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on the duplicate names we build on purpose
        with zipfile.ZipFile(buf, "w", compression=method) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return buf.getvalue()


def make_tar(members: list[tarfile.TarInfo | tuple[str, bytes]], *, gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def unpack(filename: str, data: bytes, *, total: int = MIB, members: int = 100) -> dict[str, bytes]:
    return unpack_archive(filename, data, max_total_bytes=total, max_members=members)


GOOD = [("model.onnx", b"\x08\x07onnx"), ("docs/README.md", b"# hi"), ("./cfg/a.json", b"{}")]
EXPECTED = {"model.onnx": b"\x08\x07onnx", "docs/README.md": b"# hi", "cfg/a.json": b"{}"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("m.zip", True),
        ("m.ZIP", True),
        ("m.tar", True),
        ("m.tar.gz", True),
        ("m.tgz", True),
        ("m.skops", False),
        ("m.onnx", False),
        ("m.gz", False),
        ("zip", False),
    ],
)
def test_is_archive_by_extension(name: str, expected: bool) -> None:
    assert is_archive(name) is expected


@pytest.mark.parametrize("filename", ["up.zip", "up.tar", "up.tar.gz", "up.tgz"])
def test_round_trip(filename: str) -> None:
    if filename.endswith(".zip"):
        data = make_zip([*GOOD, ("empty-dir/", b"")])
    else:
        directory = tarfile.TarInfo("empty-dir")
        directory.type = tarfile.DIRTYPE
        data = make_tar([*GOOD, directory], gz=not filename.endswith(".tar"))
    assert unpack(filename, data) == EXPECTED


def test_stored_zip_members_round_trip() -> None:
    assert unpack("u.zip", make_zip(GOOD, method=zipfile.ZIP_STORED)) == EXPECTED


def test_not_an_archive_name() -> None:
    with pytest.raises(InvalidInputError, match="not a supported archive"):
        unpack("m.skops", make_zip(GOOD))


@pytest.mark.parametrize("filename", ["u.zip", "u.tar", "u.tar.gz"])
@pytest.mark.parametrize("data", [b"", b"garbage" * 10, b"PK\x03\x04" + b"\x00" * 40])
def test_garbage_is_invalid_input(filename: str, data: bytes) -> None:
    with pytest.raises(InvalidInputError):
        unpack(filename, data)


def test_extension_and_content_must_agree() -> None:
    with pytest.raises(InvalidInputError):
        unpack("u.tar", make_tar(GOOD, gz=True))
    with pytest.raises(InvalidInputError):
        unpack("u.tar.gz", make_zip(GOOD))


# --- unsafe names -------------------------------------------------------------------------------

UNSAFE_NAMES = [
    "../../evil",
    "a/../../evil",
    "a/b/../../../evil",
    "..",
    "/etc/passwd",
    "//server/share",
    "C:/Windows/evil",
    "c:evil",
    "model.onnx:hidden-stream",
    "a\\..\\evil",
    "new\nline",
]


@pytest.mark.parametrize("bad", UNSAFE_NAMES)
def test_unsafe_names_in_zip(bad: str) -> None:
    with pytest.raises(UnsafeArchiveError):
        unpack("u.zip", make_zip([("ok.txt", b"x"), (bad, b"evil")]))


@pytest.mark.parametrize("bad", [n for n in UNSAFE_NAMES if "\x00" not in n])
@pytest.mark.parametrize("gz", [False, True])
def test_unsafe_names_in_tar(bad: str, gz: bool) -> None:
    with pytest.raises(UnsafeArchiveError):
        unpack("u.tar.gz" if gz else "u.tar", make_tar([("ok.txt", b"x"), (bad, b"evil")], gz=gz))


def test_nul_in_a_zip_name_is_refused() -> None:
    # zipfile truncates names at NUL when writing, so patch the bytes afterwards.
    data = make_zip([("evilX.onnx", b"x")]).replace(b"evilX.onnx", b"evil\x00.onnx")
    with pytest.raises(UnsafeArchiveError, match="NUL"):
        unpack("u.zip", data)


def test_nul_in_a_pax_name_is_refused() -> None:
    member = tarfile.TarInfo("x.onnx")
    member.pax_headers = {"path": "evil\x00.onnx"}
    data = make_tar([member])
    with pytest.raises(UnsafeArchiveError, match="NUL"):
        unpack("u.tar", data)


def test_names_are_normalised() -> None:
    assert normalise_member_name("./a//b/./c") == "a/b/c"
    assert normalise_member_name("dir/") == "dir"
    assert normalise_member_name("./") == ""


def test_lone_surrogate_name_is_refused() -> None:
    with pytest.raises(UnsafeArchiveError, match="UTF-8"):
        normalise_member_name("bad\udcff")


def test_overlong_name_is_refused() -> None:
    with pytest.raises(UnsafeArchiveError, match="too long"):
        unpack("u.zip", make_zip([("a" * 2000, b"x")]))


# --- links, devices and other member types -------------------------------------------------------


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE]
)
def test_tar_links_and_devices_are_refused(kind: bytes) -> None:
    member = tarfile.TarInfo("innocent.onnx")
    member.type = kind
    member.linkname = "/etc/passwd"
    with pytest.raises(UnsafeArchiveError, match="not a regular file"):
        unpack("u.tar", make_tar([("ok.txt", b"x"), member]))


def test_tar_contiguous_type_is_refused() -> None:
    member = tarfile.TarInfo("c.bin")
    member.type = tarfile.CONTTYPE
    with pytest.raises(UnsafeArchiveError):
        unpack("u.tar", make_tar([member]))


@pytest.mark.parametrize("mode", [0o120777, 0o020644, 0o010644, 0o140755])
def test_zip_symlinks_devices_fifos_sockets_are_refused(mode: int) -> None:
    info = zipfile.ZipInfo("link.onnx")
    info.create_system = 3
    info.external_attr = mode << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, b"/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="not a regular file"):
        unpack("u.zip", buf.getvalue())


def test_zip_directory_with_data_is_refused() -> None:
    info = zipfile.ZipInfo("dir/")
    info.external_attr = 0o040755 << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, b"hidden")
    with pytest.raises(UnsafeArchiveError):
        unpack("u.zip", buf.getvalue())


def test_encrypted_zip_members_are_refused() -> None:
    data = bytearray(make_zip([("secret.onnx", b"x" * 10)], method=zipfile.ZIP_STORED))
    # Set general-purpose bit 0 (encrypted) in the local header and the central directory.
    data[6] |= 0x01
    central = data.rindex(b"PK\x01\x02")
    data[central + 8] |= 0x01
    with pytest.raises(UnsafeArchiveError, match="encrypted"):
        unpack("u.zip", bytes(data))


# --- collisions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names",
    [
        ["a.onnx", "a.onnx"],
        ["a.onnx", "./a.onnx"],
        ["dir/a.onnx", "dir//a.onnx"],
        ["Model.onnx", "model.ONNX"],
        ["straße.txt", "STRASSE.txt"],
        ["caf\u00e9.txt", "cafe\u0301.txt"],
        ["a", "a/b"],
        ["a/b", "A"],
    ],
)
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_duplicate_and_colliding_names_are_refused(names: list[str], kind: str) -> None:
    members = [(n, b"x") for n in names]
    data = make_zip(members) if kind == "zip" else make_tar(list(members))
    with pytest.raises(UnsafeArchiveError, match=r"collides|lies under"):
        unpack(f"u.{kind}", data)


# --- limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_too_many_members(kind: str) -> None:
    members = [(f"f{i}.txt", b"x") for i in range(11)]
    data = make_zip(members) if kind == "zip" else make_tar(list(members), gz=kind == "tar.gz")
    assert len(unpack(f"u.{kind}", data, members=11)) == 11
    with pytest.raises(TooLargeError, match="entries"):
        unpack(f"u.{kind}", data, members=10)


def test_directories_count_toward_the_member_limit() -> None:
    data = make_zip([(f"d{i}/", b"") for i in range(5)])
    with pytest.raises(TooLargeError):
        unpack("u.zip", data, members=4)


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_total_size_limit(kind: str) -> None:
    members = [("a.bin", b"a" * 600), ("b.bin", b"b" * 600)]
    data = make_zip(members) if kind == "zip" else make_tar(list(members), gz=kind == "tar.gz")
    assert len(unpack(f"u.{kind}", data, total=1200)) == 2
    with pytest.raises(TooLargeError):
        unpack(f"u.{kind}", data, total=1199)


def _zip_bomb(size: int) -> bytes:
    """A zip with one highly compressible member, streamed so the test never holds it whole."""
    buf = io.BytesIO()
    chunk = b"\x00" * MIB
    with (
        zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf,
        zf.open("bomb.onnx", "w", force_zip64=True) as member,
    ):
        for _ in range(size // MIB):
            member.write(chunk)
    return buf.getvalue()


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    return _zip_bomb(200 * MIB)


def test_zip_bomb_with_honest_headers_is_refused_before_decompression(zip_bomb: bytes) -> None:
    assert len(zip_bomb) < MIB
    with pytest.raises(TooLargeError, match="declares"):
        unpack("u.zip", zip_bomb, total=10 * MIB)


def _patch_sizes(data: bytes, declared: int) -> bytes:
    """Make every header claim ``declared`` bytes (zip64 extras included): a lying zip bomb."""
    out = bytearray(data)
    for sig, size_offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = out.find(sig)
        while pos != -1:
            if out[pos + size_offset : pos + size_offset + 4] != b"\xff\xff\xff\xff":
                out[pos + size_offset : pos + size_offset + 4] = struct.pack("<I", declared)
            pos = out.find(sig, pos + 4)
    extra = out.find(b"\x01\x00\x10\x00")  # zip64 extra field: id 1, 16 bytes (sizes)
    while extra != -1:
        out[extra + 4 : extra + 12] = struct.pack("<Q", declared)
        extra = out.find(b"\x01\x00\x10\x00", extra + 4)
    return bytes(out)


def test_zip_bomb_with_lying_headers_is_stopped(zip_bomb: bytes) -> None:
    lying = _patch_sizes(zip_bomb, 1000)
    with zipfile.ZipFile(io.BytesIO(lying)) as zf:
        assert zf.infolist()[0].file_size == 1000  # the headers do lie
    with pytest.raises(InvalidInputError):
        unpack("u.zip", lying, total=10 * MIB)


def test_tar_gz_bomb_is_stopped_at_the_limit() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("bomb.onnx")
        info.size = 50 * MIB
        tf.addfile(info, io.BytesIO(b"\x00" * info.size))
    data = buf.getvalue()
    assert len(data) < MIB
    with pytest.raises(TooLargeError):
        unpack("u.tar.gz", data, total=MIB)


def test_tar_header_declaring_more_than_the_data_is_refused() -> None:
    data = bytearray(make_tar([("a.bin", b"x" * 10)]))
    header = tarfile.TarInfo("a.bin")
    header.size = 10_000
    raw = header.tobuf(format=tarfile.USTAR_FORMAT)
    data[: len(raw)] = raw
    with pytest.raises(InvalidInputError):
        unpack("u.tar", bytes(data))


def test_pax_header_declaring_gigantic_size_is_stopped() -> None:
    # tarfile reads a pax header's data in one go; the bounded stream stops it at the limit.
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 30 * MIB
    raw = header.tobuf(format=tarfile.USTAR_FORMAT)
    data = gzip.compress(raw + b"\x00" * header.size, compresslevel=1)
    assert len(data) < MIB
    with pytest.raises(TooLargeError, match="stream"):
        unpack("u.tar.gz", data, total=MIB, members=10)


def test_tar_regular_file_with_a_directory_name_is_refused() -> None:
    with pytest.raises(UnsafeArchiveError, match="not a regular file"):
        unpack("u.tar", make_tar([("looks-like-a-dir/", b"data")]))


# --- counting entries before zipfile builds them --------------------------------------------------


def _zip_of(n: int, *, prefix: bytes = b"", comment: bytes = b"") -> bytes:
    buf = io.BytesIO()
    buf.write(prefix)
    with zipfile.ZipFile(buf, "a" if prefix else "w") as zf:
        zf.comment = comment
        for i in range(n):
            zf.writestr(f"f{i}", b"x" * i)
    return buf.getvalue()


@pytest.mark.parametrize(
    "data",
    [_zip_of(12), _zip_of(12, comment=b"c" * 300), _zip_of(12, prefix=b"#!/bin/sh\nexit 0\n")],
    ids=["plain", "comment", "prefixed"],
)
def test_entry_count_is_checked_from_the_central_directory(data: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert len(zf.infolist()) == 12
    check_zip_entry_count(data, 12)
    with pytest.raises(TooLargeError):
        check_zip_entry_count(data, 11)


def test_entry_count_of_a_zip64_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 5)  # forces the zip64 end records
    data = _zip_of(12)
    monkeypatch.undo()
    assert b"PK\x06\x06" in data
    check_zip_entry_count(data, 12)
    with pytest.raises(TooLargeError):
        check_zip_entry_count(data, 11)


def test_too_many_entries_are_refused_before_zipfile_parses_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = _zip_of(50)

    def explode(*args: object, **kwargs: object) -> None:
        raise AssertionError("zipfile must not be reached")

    monkeypatch.setattr(zipfile, "ZipFile", explode)
    with pytest.raises(TooLargeError):
        unpack("u.zip", data, members=49)
