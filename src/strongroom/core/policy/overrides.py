"""Per-model and per-principal overrides of the request guard's defaults, and their store port.

Defaults come from settings; an operator overrides them for one model or one principal through
the admin API or the CLI (audited, step-up). An override names only what it changes: a field
left unset falls back to the default.

For a **principal**: ``rate`` (all its requests), ``model_rate`` (its requests to any one
model), ``quota`` (its requests per day or month), ``max_concurrent`` (its requests in flight
on one worker) and ``deny_networks`` (CIDRs it may never call from, on top of the global
lists and of its own allow list, ``Principal.networks``).

For a **model**: ``rate`` (all principals' predictions together), ``model_rate`` (each
principal's predictions on this model), ``quota`` (each principal's predictions per period on
this model) and ``max_concurrent`` (its queue bound: predictions in flight on one worker).

Invariants: the canonical dict form (``to_dict``) has a fixed key order and leaves unset fields
out; ``from_dict`` is strict (unknown keys, wrong types, out-of-range values raise
``InvalidInputError`` naming the field) and round-trips ``to_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Protocol

from strongroom.core.identity.principal import PRINCIPAL_ID_RE
from strongroom.core.policy.limits import Quota, QuotaPeriod, Rate
from strongroom.core.policy.network import parse_networks
from strongroom.core.registry.model import MODEL_NAME_RE
from strongroom.errors import InvalidInputError

MAX_CONCURRENT: Final = 100_000
MAX_DENY_NETWORKS: Final = 256
_POLICY_KEYS: Final = frozenset({"rate", "model_rate", "quota", "max_concurrent", "deny_networks"})
_RATE_KEYS: Final = frozenset({"per_second", "burst"})
_QUOTA_KEYS: Final = frozenset({"limit", "period"})


class SubjectKind(StrEnum):
    PRINCIPAL = "principal"
    MODEL = "model"


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """What one override changes; None (or empty) means "the default"."""

    rate: Rate | None = None
    model_rate: Rate | None = None
    quota: Quota | None = None
    max_concurrent: int | None = None
    deny_networks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("rate", "model_rate"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Rate):
                raise InvalidInputError(f"{name} must be a Rate")
        if self.quota is not None and not isinstance(self.quota, Quota):
            raise InvalidInputError("quota must be a Quota")
        limit = self.max_concurrent
        if limit is not None and (type(limit) is not int or not 1 <= limit <= MAX_CONCURRENT):
            raise InvalidInputError(f"max_concurrent is an integer from 1 to {MAX_CONCURRENT}")
        object.__setattr__(self, "deny_networks", _networks(self.deny_networks))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("rate", "model_rate"):
            rate: Rate | None = getattr(self, name)
            if rate is not None:
                out[name] = {"per_second": rate.per_second, "burst": rate.burst}
        if self.quota is not None:
            out["quota"] = {"limit": self.quota.limit, "period": self.quota.period.value}
        if self.max_concurrent is not None:
            out["max_concurrent"] = self.max_concurrent
        if self.deny_networks:
            out["deny_networks"] = list(self.deny_networks)
        return out

    @classmethod
    def from_dict(cls, data: object) -> GuardPolicy:
        document = _mapping(data, "a guard policy", _POLICY_KEYS)
        return cls(
            rate=_rate(document.get("rate"), "rate"),
            model_rate=_rate(document.get("model_rate"), "model_rate"),
            quota=_quota(document.get("quota")),
            max_concurrent=document.get("max_concurrent"),
            deny_networks=tuple(_list(document.get("deny_networks", ()), "deny_networks")),
        )


def _mapping(data: object, what: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"{what} must be an object")
    unknown = set(data) - allowed
    if unknown:
        raise InvalidInputError(f"{what} has unknown keys: {', '.join(sorted(map(str, unknown)))}")
    return data


def _list(value: object, what: str) -> Sequence[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidInputError(f"{what} must be a list")
    return value


def _rate(value: object, what: str) -> Rate | None:
    if value is None:
        return None
    document = _mapping(value, what, _RATE_KEYS)
    if set(document) != _RATE_KEYS:
        raise InvalidInputError(f"{what} needs per_second and burst")
    return Rate(per_second=document["per_second"], burst=document["burst"])


def _quota(value: object) -> Quota | None:
    if value is None:
        return None
    document = _mapping(value, "quota", _QUOTA_KEYS)
    if set(document) != _QUOTA_KEYS:
        raise InvalidInputError("quota needs limit and period")
    try:
        period = QuotaPeriod(document["period"])
    except ValueError:
        raise InvalidInputError("quota period is 'day' or 'month'") from None
    return Quota(limit=document["limit"], period=period)


def _networks(values: object) -> tuple[str, ...]:
    items = _list(values, "deny_networks")
    if len(items) > MAX_DENY_NETWORKS:
        raise InvalidInputError(f"at most {MAX_DENY_NETWORKS} deny_networks")
    canonical = []
    for item in items:
        if not isinstance(item, str) or not item.isascii() or len(item) > 64:  # noqa: PLR2004
            raise InvalidInputError("deny_networks holds CIDR strings")
        (network,) = parse_networks((item,))
        canonical.append(str(network))
    return tuple(sorted(set(canonical)))


@dataclass(frozen=True, slots=True)
class GuardOverride:
    """One stored override: whose, what, and who set it when."""

    kind: SubjectKind
    subject: str
    policy: GuardPolicy
    updated_at: datetime
    updated_by: str

    def __post_init__(self) -> None:
        if not isinstance(self.kind, SubjectKind):
            raise InvalidInputError("kind must be 'principal' or 'model'")
        check_subject(self.kind, self.subject)
        if self.updated_at.utcoffset() is None:
            raise InvalidInputError("updated_at must be timezone-aware")


def check_subject(kind: SubjectKind, subject: object) -> str:
    """A principal id (``user:...``, ``svc:...``) or a model name, by ``kind``."""
    pattern = PRINCIPAL_ID_RE if kind is SubjectKind.PRINCIPAL else MODEL_NAME_RE
    if not isinstance(subject, str) or not pattern.fullmatch(subject):
        raise InvalidInputError(f"the subject must be a valid {kind.value} name")
    return subject


class GuardOverrideStore(Protocol):
    """Where overrides live (the metadata database, shared by every worker and replica).

    ``put`` inserts or replaces the override of (kind, subject); ``delete`` raises
    ``NotFoundError`` when there is none; failures are ``StorageError``; a malformed stored row
    is ``IntegrityError``.
    """

    def list_overrides(self) -> list[GuardOverride]: ...

    def put_override(self, override: GuardOverride) -> None: ...

    def delete_override(self, kind: SubjectKind, subject: str) -> None: ...
