"""Receiving a ``multipart/form-data`` upload: streamed part by part into a private directory.

A model upload may be gigabytes, so its parts are never held in memory while the body arrives:
each part is written, as it streams in, to its own file in a fresh directory (``mkdtemp``: mode
0700, under ``<home>/uploads``), and the directory is removed when the request ends, whatever
happens.

Invariants:

* Only the parts the route declares (``PartRule``) are accepted, each at most ``repeat`` times
  and at most ``max_bytes`` long (413 as soon as a part crosses its limit); an unknown part, a
  part without a name, or a malformed body is a 400. The guard has already bounded the whole
  body (``max_upload_bytes``) and the time it may take.
* Files in the directory are named by the server (``part-<n>``), never by the client; a part's
  client file name is kept only as text for the route to judge.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from strongroom.entrypoints.http.bodies import MULTIPART, require_media_type
from strongroom.errors import InvalidInputError, TooLargeError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_PARTS: Final = 300
MAX_FILENAME_CHARS: Final = 255
_CONTENT_DISPOSITION: Final = b"content-disposition"


@dataclass(frozen=True, slots=True)
class PartRule:
    max_bytes: int
    repeat: int = 1


@dataclass(frozen=True, slots=True)
class ReceivedPart:
    name: str
    filename: str | None
    path: Path
    size: int

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def read_text(self) -> str:
        try:
            return self.path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError(f"form part {self.name!r} must be UTF-8 text") from None


@contextlib.contextmanager
def upload_directory(root: Path) -> Iterator[Path]:
    """A fresh private directory under ``root`` (made 0700 if missing), removed afterwards."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="upload-", dir=root))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class _Current:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    field_name: bytes = b""
    value: bytes = b""
    part: ReceivedPart | None = None
    handle: IO[bytes] | None = None
    written: int = 0


class _Receiver:
    """The parser's callbacks: one file per part, limits checked on every chunk."""

    def __init__(self, directory: Path, rules: Mapping[str, PartRule]) -> None:
        self.directory = directory
        self.rules = rules
        self.parts: dict[str, list[ReceivedPart]] = {}
        self.count = 0
        self.current = _Current()
        self.ended = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_end": self.end,
        }

    def part_begin(self) -> None:
        self.current = _Current()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.current.field_name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.current.value += data[start:end]

    def header_end(self) -> None:
        current = self.current
        current.headers[current.field_name.strip().lower()] = current.value.strip()
        current.field_name = current.value = b""

    def headers_finished(self) -> None:
        disposition, params = parse_options_header(self.current.headers.get(_CONTENT_DISPOSITION))
        if disposition != b"form-data" or not params.get(b"name"):
            raise InvalidInputError("every form part needs Content-Disposition: form-data; name")
        name = _text(params[b"name"], "a form part name")
        rule = self.rules.get(name)
        if rule is None:
            raise InvalidInputError(f"unknown form part; expected: {', '.join(sorted(self.rules))}")
        received = self.parts.setdefault(name, [])
        self.count += 1
        if len(received) >= rule.repeat or self.count > MAX_PARTS:
            raise InvalidInputError(f"form part {name!r} is given too many times")
        raw_filename = params.get(b"filename")
        filename = None if raw_filename is None else _text(raw_filename, "a file name")
        if filename is not None and len(filename) > MAX_FILENAME_CHARS:
            raise InvalidInputError(f"the file name of part {name!r} is too long")
        path = self.directory / f"part-{self.count}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self.current.handle = os.fdopen(fd, "wb")
        self.current.part = ReceivedPart(name, filename, path, 0)
        received.append(self.current.part)

    def part_data(self, data: bytes, start: int, end: int) -> None:
        current = self.current
        if current.handle is None or current.part is None:
            raise InvalidInputError("malformed multipart body")
        current.written += end - start
        if current.written > self.rules[current.part.name].max_bytes:
            raise TooLargeError(
                f"form part {current.part.name!r} exceeds "
                f"{self.rules[current.part.name].max_bytes} bytes"
            )
        current.handle.write(data[start:end])

    def part_end(self) -> None:
        current = self.current
        if current.handle is None or current.part is None:
            raise InvalidInputError("malformed multipart body")
        current.handle.close()
        current.handle = None
        done = ReceivedPart(
            current.part.name, current.part.filename, current.part.path, current.written
        )
        self.parts[done.name][-1] = done

    def end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self.current.handle is not None:
            self.current.handle.close()


def _text(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{what} must be UTF-8") from None
    if not text.isprintable():
        raise InvalidInputError(f"{what} must not contain control characters")
    return text


async def receive_form(
    request: Request, directory: Path, rules: Mapping[str, PartRule]
) -> dict[str, list[ReceivedPart]]:
    """Stream the request's multipart body into ``directory`` (see the module docstring)."""
    params = require_media_type(request, MULTIPART)
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 70 or not boundary.isascii():  # noqa: PLR2004 - RFC 2046
        raise InvalidInputError("the multipart body needs a valid boundary")
    receiver = _Receiver(directory, rules)
    parser = MultipartParser(boundary.encode("ascii"), receiver.callbacks())
    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except MultipartParseError:
        raise InvalidInputError("malformed multipart body") from None
    finally:
        receiver.close()
    if not receiver.ended:
        raise InvalidInputError("the multipart body is incomplete")
    return receiver.parts
