"""Audit record v1: one audited event, its canonical bytes and its RFC 6962 leaf hash.

``docs/formats/audit-record-v1.md`` is the normative description; this module is its only
implementation. A record is built once, when the writer gives it a sequence number, and stored as
its canonical bytes; everything else (the leaf hash, the Merkle tree, checkpoints) is computed
from those bytes.

Invariants:

* Construction validates every field (``ValueError``/``TypeError`` on a caller bug) and computes
  the canonical bytes once; ``canonical`` never fails afterwards.
* Canonical bytes are RFC 8785 (JCS) JSON of an object with *every* field present (``null`` when
  absent) and ``"v": 1``. The domain is kept small on purpose (ASCII keys, strings of Unicode
  scalar values, integers within +-(2**53 - 1), booleans, null, one flat ``details`` object), so
  that the standard library's sorted, compact ``json.dumps`` *is* RFC 8785 on it: four times
  faster than the ``rfc8785`` package on the request path, and checked against it by the tests.
* ``AuditRecord.from_canonical`` accepts exactly the bytes ``canonical`` produces and nothing
  else: not valid UTF-8, non-canonical spacing, key order or escaping, unknown or missing fields,
  wrong types, out-of-range values or oversize input all raise ``IntegrityError``. A stored record
  that does not parse back is tampering, never "close enough".
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from strongroom.core.audit.merkle import hash_leaf
from strongroom.errors import IntegrityError

RECORD_VERSION: Final = 1
MAX_RECORD_BYTES: Final = 64 * 1024
"""Upper bound on canonical bytes; field limits keep real records far below it."""
MAX_SAFE_INTEGER: Final = 2**53 - 1
"""Largest integer RFC 8785 (I-JSON) represents exactly."""
MAX_TEXT_CHARS: Final = 1024
"""Free-text fields (resource, principal, request id, client address, detail values)."""
MAX_DETAILS: Final = 32
MIN_HMAC_KEY_BYTES: Final = 32

_CODE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
"""Actions and reason codes: dotted lowercase, e.g. ``model.predict``, ``auth.forbidden``."""
_DETAIL_KEY = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_DIGEST = re.compile(r"(?:[a-z0-9-]{1,16}:)?[0-9a-f]{64,128}")
_HEX_HMAC = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{6})Z", re.ASCII)

FIELDS: Final = frozenset(
    {
        "v",
        "seq",
        "time",
        "principal",
        "action",
        "resource",
        "model_version",
        "manifest_digest",
        "outcome",
        "reason",
        "client_address",
        "request_id",
        "input_hmac",
        "latency_us",
        "details",
    }
)
"""The exact key set of a canonical record."""

DetailValue = str | int | bool | None


class Outcome(StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"
    ERROR = "error"


def input_hmac(key: bytes, data: bytes) -> str:
    """Keyed hash of a request input (lowercase hex HMAC-SHA256): what the log keeps instead.

    Keyed, so that someone who reads the log cannot confirm a guessed input (a card number, a
    customer's features) by hashing it; equal inputs still give equal values, for forensics.
    """
    return input_hasher(key)(data)


def input_hasher(key: bytes) -> Callable[[bytes], str]:
    """``input_hmac`` with ``key`` bound: the key schedule is done once, here, and each call
    copies the keyed state (what the request path uses)."""
    if len(key) < MIN_HMAC_KEY_BYTES:
        raise ValueError("the input HMAC key must be at least 32 bytes")
    keyed = hmac.new(key, digestmod="sha256")

    def digest(data: bytes) -> str:
        mac = keyed.copy()
        mac.update(data)
        return mac.hexdigest()

    return digest


def bounded_text(value: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Make untrusted text fit a free-text field: lone surrogates become U+FFFD, and text longer
    than ``max_chars`` is cut and ends with ``…``. Use it on anything a client chose (paths,
    request ids, token subjects), so that a hostile value cannot make auditing, and therefore the
    request, fail. (An empty string stays empty: the caller picks a placeholder.)"""
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
    return value if len(value) <= max_chars else value[: max_chars - 1] + "…"


# --- field checks ---------------------------------------------------------------------------------


def _text(name: str, value: object, *, optional: bool, max_chars: int = MAX_TEXT_CHARS) -> None:
    if value is None and optional:
        return
    if type(value) is not str or not value or len(value) > max_chars:
        raise ValueError(f"{name} must be a non-empty string of at most {max_chars} characters")
    if value.isascii():  # O(1) in CPython; only non-ASCII text can hold a lone surrogate
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} holds a lone surrogate") from exc


def _matches(
    name: str, value: object, pattern: re.Pattern[str], *, optional: bool, max_chars: int = 64
) -> None:
    if value is None and optional:
        return
    if type(value) is not str or len(value) > max_chars or not pattern.fullmatch(value):
        raise ValueError(f"{name} has the wrong form")


def _integer(name: str, value: object, *, optional: bool, minimum: int = 0) -> None:
    if value is None and optional:
        return
    if type(value) is not int or not minimum <= value <= MAX_SAFE_INTEGER:
        raise ValueError(f"{name} must be an integer in [{minimum}, 2**53 - 1]")


def _detail_value(value: object) -> None:
    if value is None or type(value) is bool:
        return
    if type(value) is int:
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError("detail integers must be within +-(2**53 - 1)")
        return
    if type(value) is str:
        if len(value) > MAX_TEXT_CHARS:
            raise ValueError("detail strings are at most 1024 characters")
        if not value.isascii():
            value.encode("utf-8")  # lone surrogates: UnicodeEncodeError, a ValueError
        return
    raise TypeError("detail values are str, int, bool or None")


def _details(value: object) -> Mapping[str, DetailValue]:
    if not (type(value) is dict or isinstance(value, Mapping)) or len(value) > MAX_DETAILS:
        raise ValueError(f"details must be a mapping of at most {MAX_DETAILS} entries")
    for key, item in value.items():
        if type(key) is not str or not _DETAIL_KEY.fullmatch(key):
            raise ValueError("detail keys are lowercase identifiers of at most 64 characters")
        _detail_value(item)
    return MappingProxyType(dict(sorted(value.items())))


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with exactly six fractional digits and ``Z``: one spelling per instant.

    (``isoformat`` of a UTC datetime is ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``, four-digit year
    included, so replacing the offset gives exactly that spelling.)"""
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text[:-6] + "Z"


def parse_time(text: str) -> datetime:
    """Inverse of ``format_time``; ``ValueError`` for any other spelling."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError("time must be YYYY-MM-DDTHH:MM:SS.ffffffZ")
    year, month, day, hour, minute, second, micro = map(int, match.groups())
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)
"""Stateless; built once because ``json.dumps`` with options builds a new one per call."""


def _canonical_json(obj: Mapping[str, Any]) -> bytes:
    """RFC 8785 on this module's domain (see the module docstring for why this is exact)."""
    return _ENCODER.encode(obj).encode("utf-8")


# --- the record -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """What happened, before the writer gives it a place in the log.

    The request path builds and validates this (so a bad field fails there, not in the writer's
    batch); the writer turns it into a record with ``sequenced(seq)``.
    """

    time: datetime
    """When the event happened: an aware datetime, stored in UTC with microseconds."""
    principal: str | None
    """Who: ``apikey:<id>``, ``user:<name>``, ``service:<name>``; ``None`` if anonymous."""
    action: str
    """What: a dotted code such as ``model.predict``, ``model.promote``, ``auth.login``."""
    resource: str
    """On what: e.g. ``model:fraud``, ``principal:alice``, ``/v2/models/fraud/infer``."""
    outcome: Outcome
    request_id: str
    reason: str | None = None
    """Stable reason code for the outcome (``auth.forbidden``), mostly for denied and error."""
    model_version: int | None = None
    manifest_digest: str | None = None
    client_address: str | None = None
    input_hmac: str | None = None
    """``input_hmac(key, body)`` of the request input; the input itself is never logged."""
    latency_us: int | None = None
    details: Mapping[str, DetailValue] = field(default_factory=dict, hash=False)
    """Small, flat extra facts for admin actions (``from_stage``, ``to_stage``, ...)."""

    def __post_init__(self) -> None:
        _validate_event(self)

    def sequenced(self, seq: int) -> AuditRecord:
        """The record of this event at position ``seq`` of the log.

        The writer calls this once per record on its hot path, so the already-validated fields
        are copied as they are; only ``seq`` is checked and the canonical bytes computed.
        """
        record: AuditRecord = object.__new__(AuditRecord)
        for name in _EVENT_FIELDS:
            object.__setattr__(record, name, getattr(self, name))
        object.__setattr__(record, "seq", seq)
        _seal(record)
        return record


def _validate_event(event: AuditEvent) -> None:
    if not isinstance(event.time, datetime) or event.time.utcoffset() is None:
        raise ValueError("time must be an aware datetime")
    object.__setattr__(event, "time", event.time.astimezone(UTC))
    object.__setattr__(event, "outcome", Outcome(event.outcome))
    _text("principal", event.principal, optional=True, max_chars=256)
    _matches("action", event.action, _CODE, optional=False)
    _text("resource", event.resource, optional=False)
    _matches("reason", event.reason, _CODE, optional=True)
    _integer("model_version", event.model_version, optional=True)
    _matches("manifest_digest", event.manifest_digest, _DIGEST, optional=True, max_chars=160)
    _text("client_address", event.client_address, optional=True, max_chars=128)
    _text("request_id", event.request_id, optional=False, max_chars=128)
    _matches("input_hmac", event.input_hmac, _HEX_HMAC, optional=True)
    _integer("latency_us", event.latency_us, optional=True)
    object.__setattr__(event, "details", _details(event.details))


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord(AuditEvent):
    """An event at its place ``seq`` (0, 1, 2, ... without gaps) in the audit log."""

    seq: int
    _canonical: bytes = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        _validate_event(self)
        _seal(self)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON object whose RFC 8785 form is the canonical record (``"v": 1`` included)."""
        return {
            "v": RECORD_VERSION,
            "seq": self.seq,
            "time": format_time(self.time),
            "principal": self.principal,
            "action": self.action,
            "resource": self.resource,
            "model_version": self.model_version,
            "manifest_digest": self.manifest_digest,
            "outcome": str(self.outcome),
            "reason": self.reason,
            "client_address": self.client_address,
            "request_id": self.request_id,
            "input_hmac": self.input_hmac,
            "latency_us": self.latency_us,
            "details": dict(self.details),
        }

    @property
    def canonical(self) -> bytes:
        """The bytes to store, hash and export: RFC 8785 JSON, UTF-8, no trailing newline."""
        return self._canonical

    def leaf_hash(self) -> bytes:
        return hash_leaf(self._canonical)

    @classmethod
    def from_canonical(cls, data: bytes) -> AuditRecord:
        """Parse stored bytes; ``IntegrityError`` unless they are exactly a canonical record."""
        if not isinstance(data, bytes) or len(data) > MAX_RECORD_BYTES:
            raise IntegrityError
        try:
            obj = _DECODER.decode(data.decode("utf-8"))
            record = _from_json_dict(obj)
        except (ValueError, TypeError, RecursionError) as exc:
            raise IntegrityError from exc
        if not hmac.compare_digest(record.canonical, data):
            raise IntegrityError
        return record


def _seal(record: AuditRecord) -> None:
    """Check ``seq`` and compute the canonical bytes: the last step of building a record."""
    _integer("seq", record.seq, optional=False)
    object.__setattr__(record, "_canonical", _canonical_json(record.to_json_dict()))


_EVENT_FIELDS: Final = tuple(name for name in AuditEvent.__dataclass_fields__)


def _refuse(token: str) -> None:
    raise ValueError(f"{token!r} has no place in a record")


_DECODER: Final = json.JSONDecoder(parse_constant=_refuse, parse_float=_refuse)
"""Stateless: floats, NaN and infinities are refused while parsing."""


def _from_json_dict(obj: object) -> AuditRecord:
    if type(obj) is not dict or obj.keys() != FIELDS:
        raise ValueError("a record has exactly the v1 fields")
    if type(obj["v"]) is not int or obj["v"] != RECORD_VERSION or type(obj["time"]) is not str:
        raise ValueError("not a v1 record")
    if type(obj["outcome"]) is not str:
        raise TypeError("outcome is a string")
    return AuditRecord(
        seq=obj["seq"],
        time=parse_time(obj["time"]),
        principal=obj["principal"],
        action=obj["action"],
        resource=obj["resource"],
        outcome=Outcome(obj["outcome"]),
        request_id=obj["request_id"],
        reason=obj["reason"],
        model_version=obj["model_version"],
        manifest_digest=obj["manifest_digest"],
        client_address=obj["client_address"],
        input_hmac=obj["input_hmac"],
        latency_us=obj["latency_us"],
        details=obj["details"],
    )


def leaf_hash(record: AuditRecord) -> bytes:
    """RFC 6962 leaf hash of a record: ``SHA-256(0x00 || canonical bytes)``."""
    return record.leaf_hash()
