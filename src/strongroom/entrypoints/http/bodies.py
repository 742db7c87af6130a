"""Reading request bodies and query strings into ``schemas`` models, and writing responses.

Invariants:

* A JSON body must say ``Content-Type: application/json`` (a ``charset`` parameter, if any,
  must be UTF-8); anything else is ``UnsupportedMediaTypeError`` (415), decided before the
  body is read.
* A JSON body is strict JSON: UTF-8 without a byte order mark, no ``NaN``/``Infinity`` tokens
  nor numbers too large for a float (``1e400``), no member name given twice in an object
  (pydantic's parser keeps the last one silently, where another parser in front of the server
  might have kept the first) and no NUL character in a string (PostgreSQL cannot store one).
  Each is a 400, from pydantic where it refuses it, else from ``check_strict_json``.
* A body or query string that does not validate is an ``InvalidInputError`` (400) whose message
  lists each failing field's location and pydantic's description of the rule it broke, never
  the value sent: a password in a malformed body must not come back in the error, nor go to
  the audit record's reason.
* Every response body is a ``schemas`` model serialised by pydantic, so the OpenAPI document
  generated from the same models describes exactly what is sent.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from strongroom.errors import InvalidInputError, UnsupportedMediaTypeError

JSON: Final = "application/json"
FORM: Final = "application/x-www-form-urlencoded"
MULTIPART: Final = "multipart/form-data"
MAX_REPORTED_ERRORS: Final = 8
MAX_LOCATION_CHARS: Final = 64
MAX_VERSION_DIGITS: Final = 9

M = TypeVar("M", bound=BaseModel)


def media_type(request: Request) -> tuple[str, dict[str, str]]:
    """The request's ``Content-Type``: lower-cased type and its parameters."""
    header = request.headers.get("content-type", "")
    kind, *params = header.split(";")
    parsed: dict[str, str] = {}
    for param in params:
        key, _, value = param.strip().partition("=")
        parsed[key.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), parsed


def require_media_type(request: Request, expected: str) -> dict[str, str]:
    """Refuse (415) a body that is not of media type ``expected``; its parameters otherwise."""
    kind, params = media_type(request)
    if kind != expected:
        raise UnsupportedMediaTypeError(f"the request body must be {expected}")
    charset = params.get("charset")
    if charset is not None and charset.lower() not in {"utf-8", "utf8"}:
        raise UnsupportedMediaTypeError("the request body must be encoded as UTF-8")
    return params


def _location(part: object) -> str:
    text = str(part)
    if len(text) > MAX_LOCATION_CHARS:
        text = text[: MAX_LOCATION_CHARS - 1] + "…"
    return "".join(c if c.isprintable() else "?" for c in text)


def invalid_input(error: ValidationError, what: str = "request body") -> InvalidInputError:
    """A short, value-free description of a validation failure (see the module docstring)."""
    problems = error.errors(include_url=False, include_input=False, include_context=False)
    described = []
    for problem in problems[:MAX_REPORTED_ERRORS]:
        where = ".".join(_location(p) for p in problem["loc"]) or what
        described.append(f"{where}: {problem['msg']}")
    more = len(problems) - MAX_REPORTED_ERRORS
    if more > 0:
        described.append(f"and {more} more")
    return InvalidInputError(f"invalid {what}: " + "; ".join(described))


class _NotStrictJsonError(Exception):
    """Raised by the parser's hooks; the body is answered 400 without further detail."""


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise _NotStrictJsonError("a JSON object names a member twice")
    return members


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotStrictJsonError("a number is too large")
    return value


def _no_constant(_: str) -> Any:
    raise _NotStrictJsonError("NaN and Infinity are not JSON")


def _holds_nul(document: object) -> bool:
    """Whether a string (or member name) anywhere in ``document`` holds U+0000; iterative,
    as the document may be nested as deeply as the parser allows."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def check_strict_json(body: bytes) -> None:
    """Refuse (400) a body that is not strict JSON (see the module docstring). Admin bodies are
    small (``max_body_bytes``), so a second parse with the standard library, which shows every
    member and every number token, costs microseconds next to pydantic's."""
    try:
        document = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_unique_members,
            parse_float=_finite,
            parse_constant=_no_constant,
        )
    except _NotStrictJsonError as exc:
        raise InvalidInputError(f"invalid request body: {exc}") from None
    except (RecursionError, ValueError):  # ValueError: not UTF-8, or not JSON
        raise InvalidInputError("invalid request body: not valid JSON (UTF-8)") from None
    if b"\\u0000" in body and _holds_nul(document):
        raise InvalidInputError("invalid request body: a string holds a NUL character")


async def read_json(request: Request, model: type[M]) -> M:
    """The body as ``model``: 415 unless it is JSON, 400 unless it validates and is strict
    JSON. Pydantic judges first (its messages name the failing field), then the strict parse
    refuses what pydantic lets through: duplicate member names and NUL characters."""
    require_media_type(request, JSON)
    body = await request.body()
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_input(exc) from None
    check_strict_json(body)
    return parsed


def read_query(request: Request, model: type[M]) -> M:
    """The query string as ``model``; a parameter given twice is refused (400)."""
    items = request.query_params.multi_items()
    values: dict[str, str] = {}
    for key, value in items:
        if key in values:
            raise InvalidInputError(f"query parameter {_location(key)} is given twice")
        values[key] = value
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise invalid_input(exc, "query string") from None


def json_response(
    body: BaseModel,
    status: int = 200,
    headers: dict[str, str] | None = None,
    *,
    exclude_none: bool = False,
) -> Response:
    return Response(
        body.model_dump_json(exclude_none=exclude_none),
        status_code=status,
        media_type=JSON,
        headers=headers,
    )


def no_content() -> Response:
    return Response(status_code=204)


def parse_version(text: str) -> int:
    """A version number from a path: a positive decimal integer without leading zeros."""
    if (
        not text.isascii()
        or not text.isdigit()
        or len(text) > MAX_VERSION_DIGITS
        or text.startswith("0")
    ):
        raise InvalidInputError("the version must be a positive integer")
    return int(text)
