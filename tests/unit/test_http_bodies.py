"""Request bodies: validation messages that never echo values, and the streaming form reader."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.requests import Request

from strongroom.entrypoints.http import schemas
from strongroom.entrypoints.http.bodies import invalid_input, parse_version, read_json
from strongroom.entrypoints.http.uploads import PartRule, receive_form, upload_directory
from strongroom.errors import InvalidInputError, TooLargeError, UnsupportedMediaTypeError

BOUNDARY = "b0undary"
SECRET = "hunter2-secret-value"


def _request(body: bytes, content_type: str, chunk: int = 7) -> Request:
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-type", content_type.encode())],
    }
    return Request(scope, receive)


def _validation_error(body: str) -> ValidationError:
    try:
        schemas.LoginRequest.model_validate_json(body)
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")


def test_messages_name_fields_but_never_values() -> None:
    error = invalid_input(_validation_error(f'{{"user": "{SECRET}!", "password": 5}}'))
    assert "user: String should match pattern" in str(error)
    assert "password: Input should be a valid string" in str(error)
    assert SECRET not in str(error)


def test_messages_are_bounded() -> None:
    members = ", ".join(f'"{"k" * 200}{i}": 1' for i in range(20))
    message = str(invalid_input(_validation_error(f'{{"user": "a", {members}}}')))
    assert "and " in message  # only the first errors are listed
    assert "k" * 100 not in message  # long keys are cut
    assert len(message) < 1500
    control = str(invalid_input(_validation_error('{"user": "a", "\\u0007bell": 1}')))
    assert "\x07" not in control


def test_json_needs_its_media_type() -> None:
    with pytest.raises(UnsupportedMediaTypeError):
        asyncio.run(read_json(_request(b"{}", "text/plain"), schemas.StepUpRequest))
    parsed = asyncio.run(
        read_json(
            _request(b'{"totp": "123456"}', "application/json; charset=UTF-8"),
            schemas.StepUpRequest,
        )
    )
    assert parsed.totp == "123456"


@pytest.mark.parametrize("text", ["0", "01", "-1", "1e3", "\uff11", "1234567890", ""])
def test_versions_are_plain_positive_integers(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_version(text)
    assert parse_version("42") == 42


def _form(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


RULES = {"artifact": PartRule(100), "note": PartRule(10, repeat=2)}
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def _receive(tmp_path: Path, body: bytes, content_type: str = MULTIPART) -> Any:
    with upload_directory(tmp_path / "uploads") as directory:
        parts = asyncio.run(receive_form(_request(body, content_type), directory, RULES))
        read = {
            name: [(p.filename, p.read_bytes(), p.path.name) for p in received]
            for name, received in parts.items()
        }
    assert list((tmp_path / "uploads").iterdir()) == []  # removed afterwards
    return read


def test_parts_stream_to_server_named_files(tmp_path: Path) -> None:
    body = _form(
        ("artifact", "../../etc/model.onnx", b"\x00\x01" * 40),
        ("note", None, b"a"),
        ("note", None, b"b"),
    )
    read = _receive(tmp_path, body)
    assert read["artifact"] == [("../../etc/model.onnx", b"\x00\x01" * 40, "part-1")]
    assert [data for _, data, _ in read["note"]] == [b"a", b"b"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (_form(("artifact", "m", b"x" * 101)), TooLargeError),
        (_form(("other", None, b"x")), InvalidInputError),
        (_form(("artifact", "m", b"x"), ("artifact", "m", b"y")), InvalidInputError),
        (
            _form(("note", None, b"1"), ("note", None, b"2"), ("note", None, b"3")),
            InvalidInputError,
        ),
        (_form(("artifact", "m", b"x"))[:-8], InvalidInputError),
        (b"--nope\r\n\r\n", InvalidInputError),
    ],
)
def test_malformed_or_oversized_forms_are_refused(
    tmp_path: Path, body: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        _receive(tmp_path, body)
    assert list((tmp_path / "uploads").iterdir()) == []


def test_forms_need_their_media_type(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedMediaTypeError):
        _receive(tmp_path, b"{}", "application/json")
    with pytest.raises(InvalidInputError):
        _receive(tmp_path, b"", "multipart/form-data")
