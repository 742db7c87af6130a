"""``VerifiedArtifact``: the only thing a runtime accepts.

A ``VerifiedArtifact`` holds decrypted model bytes whose digests matched the version's signed
manifest. Runtimes take a ``VerifiedArtifact``, never bytes or paths, so that the type checker
proves there is one path from storage to a loaded model: ``RegistryService.open_verified``.

The constructor demands a capability token that only the registry service holds
(``issue_verified_artifact`` is called from exactly one place, checked by a test), so that a
``VerifiedArtifact`` cannot be made by accident from unverified bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from strongroom.core.registry.formats import ModelFormat


class _IssueToken:
    """Capability held by the registry service; see module docstring."""


_TOKEN = _IssueToken()


@dataclass(frozen=True, slots=True, init=False)
class VerifiedArtifact:
    model: str
    version: int
    manifest_digest: str
    format: ModelFormat
    primary: str
    """Path of the file the runtime loads (the other files are auxiliary)."""
    files: Mapping[str, bytes]
    trusted_types: tuple[str, ...]
    input_schema: Mapping[str, Any]
    signer: str | None
    """Name of the signer the policy matched, or None for an ``unsafe_allow_unsigned`` version."""

    def __init__(
        self,
        token: _IssueToken,
        *,
        model: str,
        version: int,
        manifest_digest: str,
        format: ModelFormat,  # noqa: A002 - the manifest field is called format
        primary: str,
        files: Mapping[str, bytes],
        trusted_types: tuple[str, ...],
        input_schema: Mapping[str, Any],
        signer: str | None,
    ) -> None:
        if token is not _TOKEN:
            raise TypeError("VerifiedArtifact is issued only by RegistryService.open_verified()")
        if primary not in files:
            raise ValueError("primary file missing from artifact")
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "manifest_digest", manifest_digest)
        object.__setattr__(self, "format", format)
        object.__setattr__(self, "primary", primary)
        object.__setattr__(self, "files", MappingProxyType(dict(files)))
        object.__setattr__(self, "trusted_types", trusted_types)
        object.__setattr__(self, "input_schema", MappingProxyType(dict(input_schema)))
        object.__setattr__(self, "signer", signer)

    @property
    def primary_bytes(self) -> bytes:
        return self.files[self.primary]


def issue_verified_artifact(**fields: Any) -> VerifiedArtifact:
    """Mint a ``VerifiedArtifact``. Called only by ``RegistryService.open_verified``."""
    return VerifiedArtifact(_TOKEN, **fields)
