"""Key-encryption-key rotation.

``rotate`` creates a new KEK version and re-wraps every stored data key with it. Bodies are never
re-encrypted and no plaintext is produced: ``envelope.rewrap`` rewrites the header and copies the
ciphertext verbatim, and the blob store replaces the blob atomically. The operation is
idempotent: after a crash, running it again re-wraps whatever still uses an older version (the
envelope header, not the metadata index, is the source of truth).

``retire_below`` sets the key provider's minimum decryption version, after checking that no
stored artifact still depends on an older version, so that retiring can never strand a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from strongroom.core.crypto import envelope
from strongroom.core.crypto.keys import KeyProvider, KeyVersionInfo
from strongroom.core.registry.ports import BlobStore, MetadataStore
from strongroom.errors import ConflictError, InvalidInputError
from strongroom.services.registry import RegistryService


@dataclass(frozen=True, slots=True)
class RotationReport:
    new_version: KeyVersionInfo
    rewrapped: int
    already_current: int
    retired_below: int | None


@dataclass(frozen=True, slots=True)
class KeyUsage:
    info: KeyVersionInfo
    artifacts: int


class KeyService:
    def __init__(self, *, metadata: MetadataStore, blobs: BlobStore, keys: KeyProvider) -> None:
        self._metadata = metadata
        self._blobs = blobs
        self._keys = keys

    def list(self) -> list[KeyUsage]:
        counts: dict[int, int] = {}
        for _, _, artifact in self._metadata.iter_artifacts():
            counts[artifact.key_version] = counts.get(artifact.key_version, 0) + 1
        return [KeyUsage(info, counts.get(info.version, 0)) for info in self._keys.versions()]

    def rotate(
        self,
        *,
        retire_old: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> RotationReport:
        new = self._keys.rotate()
        rewrapped, current = self.rewrap_all(on_progress=on_progress)
        retired = None
        if retire_old:
            self.retire_below(new.version)
            retired = new.version
        return RotationReport(new, rewrapped, current, retired)

    def rewrap_all(
        self, *, on_progress: Callable[[int, int], None] | None = None
    ) -> tuple[int, int]:
        """Re-wrap every data key not under the current KEK version; returns (done, skipped)."""
        target = self._keys.current_version()
        work = list(self._metadata.iter_artifacts())
        rewrapped = skipped = 0
        for index, (model, version, artifact) in enumerate(work, start=1):
            record = self._metadata.get_version(model, version)
            manifest = RegistryService.verified_manifest(record)
            context = envelope.EnvelopeContext(
                model=model, version=version, path=artifact.path, manifest_digest=manifest.digest()
            )
            with self._blobs.open(artifact.blob_id) as source:
                header = envelope.read_header(source)
                if header.wrapped_key.version == target:
                    skipped += 1
                else:
                    source.seek(0)
                    self._blobs.put(
                        artifact.blob_id, envelope.rewrap(source, keys=self._keys, context=context)
                    )
                    rewrapped += 1
            if artifact.key_version != target:
                self._metadata.set_artifact_key_version(artifact.blob_id, target)
            if on_progress is not None:
                on_progress(index, len(work))
        return rewrapped, skipped

    def retire_below(self, version: int) -> None:
        if version > self._keys.current_version():
            raise InvalidInputError("cannot retire the current key version or a future one")
        still_used = sorted(
            {
                a.key_version
                for _, _, a in self._metadata.iter_artifacts()
                if a.key_version < version
            }
        )
        if still_used:
            raise ConflictError(
                f"artifacts still use key versions {still_used}",
                hint="run 'strongroom keys rotate' first so every data key is re-wrapped",
            )
        self._keys.set_min_decryption_version(version)
