"""``DigestTokens``: authenticating tokens in the API-key format against stored keyed digests.

API keys (``sr_<id>_<secret>``, API-key pepper) and login sessions (``srs_<id>_<secret>``,
session pepper) share one format and one check, ``core.identity.api_keys.verify_api_key``: strict
parsing, ``HMAC-SHA256`` recomputed on every request and compared in constant time, then
revocation and expiry against the clock. What differs is only the prefix, the pepper and where
the record comes from; this class is that check with an ``EpochCache`` in front of the store.

Invariants: the digest is computed for every presented token, an unknown id included (against a
dummy digest), and every refusal is the opaque ``AuthenticationError`` with the reason on
``__cause__``; a cache hit is verified exactly like a miss.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Final

from strongroom.core.identity import api_keys
from strongroom.core.identity.api_keys import StoredApiKey
from strongroom.core.identity.ports import CredentialEpoch, SessionRecord
from strongroom.core.identity.principal import CredentialInfo, CredentialKind, Principal
from strongroom.core.types import Clock
from strongroom.services.identity_cache import EpochCache
from strongroom.services.identity_logins import Refusal, refuse

_DUMMY_DIGEST: Final = bytes(api_keys.DIGEST_LENGTH)

Entry = tuple[StoredApiKey, Principal]


def key_id_hint(token: object, prefix: str) -> str:
    """Where the id sits in a well-formed token: a cache probe only, never trusted (a hit is
    verified by ``verify_api_key``, which parses the whole token strictly)."""
    if not isinstance(token, str) or not token.startswith(prefix + "_"):
        return ""
    start = len(prefix) + 1
    return token[start : start + api_keys.KEY_ID_LENGTH]


def session_credential(session: SessionRecord) -> CredentialInfo:
    return CredentialInfo(
        kind=CredentialKind.PASSWORD, id=session.id, expires_at=session.expires_at
    )


def session_as_key(session: SessionRecord) -> StoredApiKey:
    """A session in the shape the API-key rules verify: same format, digest and checks."""
    return StoredApiKey(
        key_id=session.id,
        digest=session.digest,
        principal_id=session.principal_id,
        created_at=session.created_at,
        expires_at=session.expires_at,
        revoked_at=session.revoked_at,
    )


class DigestTokens:
    """Authenticates ``<prefix>_<id>_<secret>`` tokens whose records ``load(id)`` returns."""

    def __init__(
        self,
        *,
        prefix: str,
        pepper: bytes,
        epoch: CredentialEpoch,
        clock: Clock,
        load: Callable[[str], Entry | None],
    ) -> None:
        self._prefix = prefix
        self._keyed = api_keys.Pepper(pepper)
        self._clock = clock
        self._load = load
        self._cache: EpochCache[str, Entry] = EpochCache(epoch)

    def authenticate(self, token: str) -> Entry:
        """The stored record and principal of a live token, or ``AuthenticationError``."""
        cached = self._cache.peek(key_id_hint(token, self._prefix))
        if cached is not None:
            self._verify(token, cached[0])
            return cached
        key_id, secret = api_keys.parse_api_key(token, prefix=self._prefix)
        entry = self._cache.get(key_id, lambda: self._load(key_id))
        if entry is None:
            # The same work as a known id (one HMAC, one comparison), then the same error.
            digest = self._keyed.digest(key_id, secret)
            hmac.compare_digest(digest, _DUMMY_DIGEST)
            refuse(Refusal.UNKNOWN_CREDENTIAL)
        self._verify(token, entry[0])
        return entry

    def _verify(self, token: str, stored: StoredApiKey) -> None:
        api_keys.verify_api_key(self._keyed, token, stored, self._clock(), prefix=self._prefix)
