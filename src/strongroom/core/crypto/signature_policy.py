"""Per-registry signature policy: which signer keys may sign which model names.

A policy is a closed list of trusted signers, each a P-256 public key allowed to sign the models
whose names match its fnmatch patterns (case-sensitive, ``fnmatchcase``). ``SignaturePolicy.check``
is the one decision a publish or load makes about a signature.

Invariants:

* Deny by default: no bundle, an unknown key, a key whose patterns do not cover the model, or
  files that differ from the signed ones all raise ``SignatureError`` (opaque; the reason is on
  ``__cause__``). Only ``unsafe_allow_unsigned`` lets an *absent* bundle through, and a bundle
  that is present must verify even then.
* Signer names and key fingerprints are unique within a policy, so the bundle's key hint names at
  most one signer. Keys are stored as canonical SPKI PEM.
* Pure: the caller hashes the files and decides whether the upload was a single file; the caller
  (not this module) warns and audits when ``unsafe_allow_unsigned`` admits an unsigned model.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from strongroom.core.crypto._primitives import public_key_fingerprint, public_pem_normalized
from strongroom.core.crypto.signing import (
    SignatureDetail,
    check_files_match,
    verify_bundle,
)
from strongroom.errors import ConfigurationError, InvalidInputError, SignatureError

# Same rules as ``config.SignerSettings``, so a policy built from settings never fails here.
SIGNER_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MODEL_PATTERN: Final = re.compile(r"[a-z0-9.*?_\[\]-]{1,64}")


@dataclass(frozen=True)
class TrustedSigner:
    """A public key trusted to sign the models whose names match one of ``model_patterns``."""

    name: str
    public_key_pem: bytes
    model_patterns: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not SIGNER_NAME.fullmatch(self.name):
            raise ConfigurationError(f"invalid signer name {self.name!r}")
        patterns = self.model_patterns
        if not isinstance(patterns, tuple) or not patterns:
            raise ConfigurationError(f"signer {self.name!r} needs at least one model pattern")
        for pattern in patterns:
            if not isinstance(pattern, str) or not MODEL_PATTERN.fullmatch(pattern):
                raise ConfigurationError(f"signer {self.name!r}: invalid model pattern {pattern!r}")
        try:
            canonical = public_pem_normalized(self.public_key_pem)
        except InvalidInputError as exc:
            raise ConfigurationError(
                f"signer {self.name!r}: public key is not an ECDSA P-256 PEM key"
            ) from exc
        object.__setattr__(self, "public_key_pem", canonical)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the SPKI PEM: the ``publicKey.hint`` of the bundles this key signs."""
        return public_key_fingerprint(self.public_key_pem)

    def covers(self, model: str) -> bool:
        """Whether this signer may sign ``model`` (a pattern match, not a verification)."""
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.model_patterns)


@dataclass(frozen=True)
class SignaturePolicy:
    """The trusted signers of one registry, and whether unsigned models are (unsafely) allowed."""

    signers: tuple[TrustedSigner, ...]
    unsafe_allow_unsigned: bool = False

    def __post_init__(self) -> None:
        names: set[str] = set()
        fingerprints: dict[str, str] = {}
        for signer in self.signers:
            if not isinstance(signer, TrustedSigner):
                raise ConfigurationError("signers must be TrustedSigner objects")
            if signer.name in names:
                raise ConfigurationError(f"signer {signer.name!r} is listed twice")
            names.add(signer.name)
            other = fingerprints.setdefault(signer.fingerprint, signer.name)
            if other != signer.name:
                raise ConfigurationError(f"signers {other!r} and {signer.name!r} share a key")

    def check(self, model: str, bundle_json: str | None, files: Mapping[str, str]) -> str | None:
        """Return the name of the signer allowed to sign ``model`` whose bundle covers ``files``.

        ``files`` maps each relative POSIX path to its SHA-256 hex. Returns None only for an
        absent bundle under ``unsafe_allow_unsigned``; every other failure is ``SignatureError``.
        """
        if bundle_json is None:
            if self.unsafe_allow_unsigned:
                return None
            raise SignatureError("model is unsigned and the signature policy requires a signature")
        signer_name, statement = verify_bundle(
            bundle_json, {s.name: s.public_key_pem for s in self.signers}
        )
        signer = next(s for s in self.signers if s.name == signer_name)
        if not signer.covers(model):
            detail = f"signer {signer_name!r} may not sign model {model!r}"
            raise SignatureError from SignatureDetail(detail)
        if not subject_names_model(statement.subject_name, model):
            detail = f"signature subject {statement.subject_name!r} is not model {model!r}"
            raise SignatureError from SignatureDetail(detail)
        check_files_match(statement, files)
        return signer_name


SUBJECT_SUFFIXES: Final = (
    ".onnx",
    ".skops",
    ".ubj",
    ".json",
    ".txt",
    ".zip",
    ".tar",
    ".tar.gz",
    ".tgz",
)
"""A subject may name the model as a file: ``fraud.onnx`` signs model ``fraud``."""


def subject_names_model(subject: str, model: str) -> bool:
    """Whether a signed subject names ``model``: the model name itself (a signed directory
    named after the model) or the model name plus a model-file suffix (a signed file).

    Binding the subject stops a bundle signed for one model from being replayed for another
    model that the same signer may sign (``model_signing`` signs the directory or file name as
    the subject but never checks it).
    """
    return subject == model or any(subject == model + suffix for suffix in SUBJECT_SUFFIXES)
