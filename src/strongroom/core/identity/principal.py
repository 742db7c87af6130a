"""The principal a request acts as: who, with which roles and grants, under which conditions.

An authenticator (API key, JWT, mTLS, password session) turns each request into exactly one
``Principal`` or raises ``AuthenticationError``; ``strongroom.core.policy.rbac.authorize`` then
decides every action from the principal alone, so everything a decision depends on is here.

Invariants (checked on construction, ``InvalidInputError`` otherwise, so that an admin API can
build these objects to validate its input and a store can never hand out a malformed one):

* ``id`` is ``user:<name>`` for users and ``svc:<name>`` for services, matching ``kind``.
* ``roles`` is a frozenset of ``Role``; ``grants`` a tuple of ``Grant`` (role + model-name
  pattern of lower-case letters, digits, ``.``, ``_``, ``-``, ``*`` and ``?``).
* ``networks`` are ``ipaddress`` networks (empty means any source). IPv4-mapped IPv6 networks
  (``::ffff:0:0/96`` and inside) are refused: write them as IPv4, because client addresses in
  that range are compared as IPv4 (see ``strongroom.core.policy.conditions``).
* Every time is timezone-aware.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network
from types import MappingProxyType
from typing import Final

from strongroom.core.registry.model import MODEL_NAME_RE
from strongroom.errors import InvalidInputError

PRINCIPAL_ID_RE: Final = re.compile(r"(user|svc):[A-Za-z0-9][A-Za-z0-9._@+=:|-]{0,127}")
"""``user:alice``, ``svc:scoring``; the name part is what the credential store keys on."""

GRANT_PATTERN_RE: Final = re.compile(r"[a-z0-9._*?-]{1,64}")
"""fnmatch patterns over model names; no ``[...]`` sets, so a pattern is easy to read aloud."""

CREDENTIAL_ID_RE: Final = re.compile(r"[\x21-\x7e]{1,256}")
"""Printable ASCII without spaces: an API key id, a JWT ``jti``, a certificate fingerprint."""

MAX_GRANTS: Final = 256
MAX_NETWORKS: Final = 64
_IPV4_MAPPED: Final = IPv6Network("::ffff:0:0/96")

Network = IPv4Network | IPv6Network


class Role(StrEnum):
    """The five roles of issue 3; what each may do is the table in ``policy.rbac``."""

    ADMIN = "admin"
    MODEL_OWNER = "model-owner"
    DEPLOYER = "deployer"
    PREDICTOR = "predictor"
    AUDITOR = "auditor"


class PrincipalKind(StrEnum):
    USER = "user"
    SERVICE = "service"


class CredentialKind(StrEnum):
    API_KEY = "api_key"
    JWT = "jwt"
    MTLS = "mtls"
    # a session opened by a password (+ TOTP) login
    PASSWORD = "password"  # noqa: S105 - an enum label, not a secret  # nosec B105


_ID_PREFIX: Final = MappingProxyType({PrincipalKind.USER: "user:", PrincipalKind.SERVICE: "svc:"})


def check_principal_id(value: str) -> str:
    """Return ``value`` if it is a well-formed principal id, else raise ``InvalidInputError``."""
    if not isinstance(value, str) or not PRINCIPAL_ID_RE.fullmatch(value):
        raise InvalidInputError(
            f"invalid principal id {value!r}",
            hint="use user:<name> or svc:<name>; name: 1-128 letters, digits or ._@+=:|-",
        )
    return value


def check_grant_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a valid model-name pattern, else raise ``InvalidInputError``."""
    if not isinstance(pattern, str) or not GRANT_PATTERN_RE.fullmatch(pattern):
        raise InvalidInputError(
            f"invalid model pattern {pattern!r}",
            hint="use 1-64 lower-case letters, digits, '.', '_', '-', '*' or '?'",
        )
    return pattern


def _check_aware(name: str, value: datetime | None) -> None:
    if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
        raise InvalidInputError(f"{name} must be a timezone-aware datetime")


@dataclass(frozen=True)
class Grant:
    """``role`` on the models whose names match ``pattern`` (and on no other resource).

    A grant never covers the ``*`` resource ("all models"): only a global role does.
    """

    role: Role
    pattern: str

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            raise InvalidInputError(f"invalid role {self.role!r}")
        check_grant_pattern(self.pattern)

    def covers(self, model: str) -> bool:
        """Whether ``model`` (an exact, valid model name) matches this grant's pattern."""
        return bool(MODEL_NAME_RE.fullmatch(model)) and fnmatch.fnmatchcase(model, self.pattern)


@dataclass(frozen=True)
class CredentialInfo:
    """The credential that authenticated this request; ``expires_at`` None means no expiry."""

    kind: CredentialKind
    id: str
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, CredentialKind):
            raise InvalidInputError(f"invalid credential kind {self.kind!r}")
        if not isinstance(self.id, str) or not CREDENTIAL_ID_RE.fullmatch(self.id):
            raise InvalidInputError("invalid credential id")
        _check_aware("expires_at", self.expires_at)


@dataclass(frozen=True, kw_only=True)
class Principal:
    """Who a request acts as, as the authenticator established it for this one request.

    ``mfa_at`` is when MFA was last completed in this session or token (None: never); services
    cannot do MFA, so theirs is ignored. ``disabled`` principals are denied everything.
    """

    id: str
    kind: PrincipalKind
    credential: CredentialInfo
    roles: frozenset[Role] = frozenset()
    grants: tuple[Grant, ...] = ()
    networks: tuple[Network, ...] = ()
    mfa_at: datetime | None = None
    disabled: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.kind, PrincipalKind):
            raise InvalidInputError(f"invalid principal kind {self.kind!r}")
        if not check_principal_id(self.id).startswith(_ID_PREFIX[self.kind]):
            raise InvalidInputError(f"principal id {self.id!r} does not match kind {self.kind}")
        if not isinstance(self.credential, CredentialInfo):
            raise InvalidInputError("credential must be a CredentialInfo")
        if not isinstance(self.roles, frozenset) or not all(
            isinstance(r, Role) for r in self.roles
        ):
            raise InvalidInputError("roles must be a frozenset of Role")
        if not isinstance(self.grants, tuple) or not all(isinstance(g, Grant) for g in self.grants):
            raise InvalidInputError("grants must be a tuple of Grant")
        if len(self.grants) > MAX_GRANTS:
            raise InvalidInputError(f"a principal may hold at most {MAX_GRANTS} grants")
        _check_networks(self.networks)
        _check_aware("mfa_at", self.mfa_at)
        if not isinstance(self.disabled, bool):
            raise InvalidInputError("disabled must be a bool")


def _check_networks(networks: tuple[Network, ...]) -> None:
    if not isinstance(networks, tuple) or len(networks) > MAX_NETWORKS:
        raise InvalidInputError(f"networks must be a tuple of at most {MAX_NETWORKS} networks")
    for network in networks:
        if not isinstance(network, IPv4Network | IPv6Network):
            raise InvalidInputError(f"invalid network {network!r}")
        if isinstance(network, IPv6Network) and network.subnet_of(_IPV4_MAPPED):
            raise InvalidInputError(
                f"network {network} is IPv4-mapped", hint="write it as an IPv4 network"
            )
