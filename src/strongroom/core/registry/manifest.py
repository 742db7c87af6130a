"""The version manifest: everything about a model version that must not change once published.

A manifest lists the version's files with their SHA-256 digests and sizes, its format, input
schema, model card, skops trusted types, and the digest of its signature bundle. Its canonical
form is RFC 8785 JSON; its *manifest digest* is the SHA-256 of that form. The digest is bound into
the AAD of every encrypted segment of every file of the version, so editing any manifest field
in the database makes every file of the version fail to decrypt.

Stage, which is meant to change, is deliberately *not* in the manifest.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import rfc8785

from strongroom.core.registry.formats import ModelFormat
from strongroom.core.registry.model import check_model_name
from strongroom.errors import IntegrityError, InvalidInputError

MANIFEST_SCHEMA: Final = "strongroom.manifest/v1"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_MAX_CARD_TEXT = 10_000
_MAX_METRICS = 200


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class ManifestFile:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class ModelCard:
    """Who owns the model and what it is: shown to reviewers, signed into the manifest."""

    owner: str
    description: str = ""
    training_data: str = ""
    metrics: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if not self.owner.strip():
            raise InvalidInputError("model card needs an owner")
        for text in (self.owner, self.description, self.training_data):
            if len(text) > _MAX_CARD_TEXT:
                raise InvalidInputError(f"model card fields are limited to {_MAX_CARD_TEXT} chars")
        metrics = self.metrics or {}
        if len(metrics) > _MAX_METRICS:
            raise InvalidInputError(f"at most {_MAX_METRICS} metrics")
        for name, value in metrics.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise InvalidInputError(f"metric {name!r} must be a number")
            if not math.isfinite(value):
                raise InvalidInputError(f"metric {name!r} must be finite")

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "description": self.description,
            "training_data": self.training_data,
            "metrics": dict(sorted((self.metrics or {}).items())),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelCard:
        unknown = set(raw) - {"owner", "description", "training_data", "metrics"}
        if unknown:
            raise InvalidInputError(f"unknown model card fields: {', '.join(sorted(unknown))}")
        metrics = raw.get("metrics") or {}
        if not isinstance(metrics, Mapping):
            raise InvalidInputError("model card 'metrics' must be an object of numbers")
        texts = {k: raw.get(k, "") for k in ("owner", "description", "training_data")}
        if not all(isinstance(v, str) for v in texts.values()):
            raise InvalidInputError("model card owner, description and training_data are text")
        return cls(metrics=dict(metrics), **texts)


@dataclass(frozen=True, slots=True)
class Manifest:
    model: str
    version: int
    format: ModelFormat
    primary: str
    files: tuple[ManifestFile, ...]
    single_file: bool
    """True when the signature covers one file as model_signing's ``"."`` resource."""
    input_schema: Mapping[str, Any]
    card: ModelCard
    trusted_types: tuple[str, ...]
    signature_sha256: str | None
    """SHA-256 of the signature bundle text; None only for ``unsafe_allow_unsigned`` versions."""
    created_at: str
    created_by: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": MANIFEST_SCHEMA,
            "model": self.model,
            "version": self.version,
            "format": self.format.value,
            "primary": self.primary,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files],
            "single_file": self.single_file,
            "input_schema": dict(self.input_schema),
            "card": self.card.to_dict(),
            "trusted_types": list(self.trusted_types),
            "signature_sha256": self.signature_sha256,
            "created_at": self.created_at,
            "created_by": self.created_by,
        }

    def canonical_bytes(self) -> bytes:
        return bytes(rfc8785.dumps(self.to_dict()))

    def canonical_json(self) -> str:
        return self.canonical_bytes().decode("utf-8")

    def digest(self) -> str:
        return sha256_hex(self.canonical_bytes())

    def file_digests(self) -> dict[str, str]:
        return {f.path: f.sha256 for f in self.files}

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a stored manifest. Anything unexpected is an ``IntegrityError``: the manifest
        was written by Strongroom in canonical form, so a deviation means tampering."""
        try:
            raw = json.loads(text)
            manifest = cls._from_dict(raw)
        except (ValueError, TypeError, KeyError, InvalidInputError) as exc:
            raise IntegrityError from exc
        if manifest.canonical_json() != text:
            raise IntegrityError
        return manifest

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> Manifest:
        if raw["schema"] != MANIFEST_SCHEMA:
            raise ValueError("unknown manifest schema")
        files = tuple(
            ManifestFile(path=str(f["path"]), sha256=str(f["sha256"]), size=int(f["size"]))
            for f in raw["files"]
        )
        if not files or any(not _SHA256_HEX.fullmatch(f.sha256) for f in files):
            raise ValueError("bad file list")
        signature = raw["signature_sha256"]
        if signature is not None and not _SHA256_HEX.fullmatch(str(signature)):
            raise ValueError("bad signature digest")
        return cls(
            model=check_model_name(str(raw["model"])),
            version=int(raw["version"]),
            format=ModelFormat(raw["format"]),
            primary=str(raw["primary"]),
            files=files,
            single_file=bool(raw["single_file"]),
            input_schema=dict(raw["input_schema"]),
            card=ModelCard.from_dict(raw["card"]),
            trusted_types=tuple(str(t) for t in raw["trusted_types"]),
            signature_sha256=signature,
            created_at=str(raw["created_at"]),
            created_by=str(raw["created_by"]),
        )
