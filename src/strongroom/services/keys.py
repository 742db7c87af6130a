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
from strongroom.core.registry.model import ArtifactRecord
from strongroom.core.registry.ports import BlobStore, MetadataStore
from strongroom.errors import ConflictError, InvalidInputError, StrongroomError
from strongroom.services.registry import RegistryService


@dataclass(frozen=True, slots=True)
class RewrapFailure:
    model: str
    version: int
    path: str
    code: str


@dataclass(frozen=True, slots=True)
class RotationReport:
    new_version: KeyVersionInfo
    rewrapped: int
    already_current: int
    retired_below: int | None
    failures: tuple[RewrapFailure, ...] = ()
    retire_refused: str | None = None
    """Why older versions were not retired although asked (e.g. a write in flight)."""


@dataclass(frozen=True, slots=True)
class KeyUsage:
    info: KeyVersionInfo
    artifacts: int


class KeyService:
    def __init__(self, *, metadata: MetadataStore, blobs: BlobStore, keys: KeyProvider) -> None:
        self._metadata = metadata
        self._blobs = blobs
        self._keys = keys

    @property
    def key_id(self) -> str:
        return self._keys.key_id

    def usage(self) -> list[KeyUsage]:
        """KEK versions with the number of artifacts the metadata index says each one wraps."""
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
        """New KEK version, every data key re-wrapped; older versions retired on request and
        only when every artifact was re-wrapped."""
        new = self._keys.rotate()
        rewrapped, current, failures = self.rewrap_all(on_progress=on_progress)
        retired, refused = None, None
        if retire_old and failures:
            refused = "some data keys could not be re-wrapped"
        elif retire_old:
            try:
                self.retire_below(new.version)
                retired = new.version
            except ConflictError as exc:
                refused = exc.message
        return RotationReport(new, rewrapped, current, retired, tuple(failures), refused)

    def rewrap_all(
        self, *, on_progress: Callable[[int, int], None] | None = None
    ) -> tuple[int, int, list[RewrapFailure]]:
        """Re-wrap every data key not under the current KEK version.

        Returns (re-wrapped, already current, failures). One artifact that cannot be re-wrapped
        (tampered, missing) is reported and skipped; it never stops the others.
        """
        target = self._keys.current_version()
        work = list(self._metadata.iter_artifacts())
        rewrapped = skipped = 0
        failures: list[RewrapFailure] = []
        for index, (model, version, artifact) in enumerate(work, start=1):
            try:
                if self._rewrap_one(model, version, artifact, target):
                    rewrapped += 1
                else:
                    skipped += 1
            except StrongroomError as exc:
                failures.append(RewrapFailure(model, version, artifact.path, exc.code))
            if on_progress is not None:
                on_progress(index, len(work))
        return rewrapped, skipped, failures

    def _rewrap_one(self, model: str, version: int, artifact: ArtifactRecord, target: int) -> bool:
        record = self._metadata.get_version(model, version)
        manifest = RegistryService.verified_manifest(record)
        context = envelope.EnvelopeContext(
            model=model, version=version, path=artifact.path, manifest_digest=manifest.digest()
        )
        with self._blobs.open(artifact.blob_id) as source:
            header = envelope.read_header(source)
            changed = header.wrapped_key.version != target
            if changed:
                source.seek(0)
                self._blobs.put(
                    artifact.blob_id, envelope.rewrap(source, keys=self._keys, context=context)
                )
        if artifact.key_version != target:
            self._metadata.set_artifact_key_version(artifact.blob_id, target)
        return changed

    def retire_below(self, version: int) -> None:
        """Retire KEK versions below ``version`` once no stored blob depends on them.

        Decided from the envelope headers of *every* blob in the store (referenced or not, the
        metadata index may lag), and refused while a write is in flight: a publish racing the
        retirement either is seen here or fails its own post-write check, never strands a blob.
        """
        if version > self._keys.current_version():
            raise InvalidInputError("cannot retire the current key version or a future one")
        if self._blobs.count_temporaries():
            raise ConflictError(
                "a write to the blob store is in progress or was interrupted",
                hint="retry when no publish or rotation is running; 'strongroom registry gc"
                " --apply' removes temporaries left by a crash",
            )
        still_used = sorted(
            {v for v in (self._header_version(b) for b in self._blobs.list_ids()) if v < version}
        )
        if still_used:
            raise ConflictError(
                f"stored blobs still use key versions {still_used}",
                hint="run 'strongroom keys rotate' first; unreferenced blobs left by a crashed"
                " publish are removed by 'strongroom registry gc --apply'",
            )
        self._keys.set_min_decryption_version(version)

    def _header_version(self, blob_id: str) -> int:
        with self._blobs.open(blob_id) as source:
            return envelope.read_header(source).wrapped_key.version
