"""Registry use cases: publish, open verified, promote, roll back, verify, collect garbage.

``RegistryService.open_verified`` is the one path from stored bytes to a model (DESIGN.md
section 3). It trusts nothing the metadata store says on its own: the manifest is re-parsed and
re-hashed, every file is decrypted with the manifest digest in its AAD, every digest is checked,
and the signature policy is evaluated again (a signer removed from the policy stops loading).

Publishing order makes crashes harmless: blobs are written first (encrypted, atomically), the
metadata row last, in one transaction. A crash in between leaves only unreferenced blobs, which
``collect_garbage`` removes; it never leaves a version that cannot be opened.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from strongroom.core.crypto import envelope
from strongroom.core.crypto.keys import KeyProvider
from strongroom.core.crypto.signature_policy import SignaturePolicy
from strongroom.core.registry import schema
from strongroom.core.registry.artifact import VerifiedArtifact, issue_verified_artifact
from strongroom.core.registry.formats import ModelFormat, detect_format
from strongroom.core.registry.manifest import Manifest, ManifestFile, sha256_hex
from strongroom.core.registry.model import (
    ArtifactRecord,
    Stage,
    VersionRecord,
    check_model_name,
)
from strongroom.core.registry.ports import BlobStore, MetadataStore
from strongroom.core.registry.runtime import LoadedModel, ModelRuntime, ModelSignature
from strongroom.core.types import Clock, RandomBytes
from strongroom.errors import (
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    StrongroomError,
    UnsupportedFormatError,
)
from strongroom.services.publishing import (
    PublishRequest,
    RegistryLimits,
    check_auxiliary,
    check_total_size,
    choose_primary,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PublishResult:
    record: VersionRecord
    manifest: Manifest
    signer: str | None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VersionView:
    record: VersionRecord
    manifest: Manifest


@dataclass(frozen=True, slots=True)
class LoadedVersion:
    """A model version opened through ``open_verified`` and loaded by its runtime."""

    name: str
    version: int
    manifest_digest: str
    format: ModelFormat
    model: LoadedModel
    input_schema: schema.InputSchema
    """The signed manifest's input schema, parsed (what every request is validated against)."""


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    """How one file of a version is stored, read from its envelope header (no decryption)."""

    path: str
    blob_id: str
    stored_bytes: int
    plaintext_bytes: int
    key_id: str
    key_version: int
    segment_size: int


DEFAULT_GC_MIN_AGE = timedelta(hours=1)


@dataclass(slots=True)
class GcReport:
    orphan_blobs: list[str] = field(default_factory=list)
    temporaries_removed: int = 0
    too_young: int = 0
    """Unreferenced blobs left alone because they may belong to a publish in flight."""
    dry_run: bool = True


class RegistryService:
    def __init__(
        self,
        *,
        metadata: MetadataStore,
        blobs: BlobStore,
        keys: KeyProvider,
        runtimes: Mapping[ModelFormat, ModelRuntime],
        policy: SignaturePolicy,
        limits: RegistryLimits,
        clock: Clock,
        random_bytes: RandomBytes,
    ) -> None:
        self._metadata = metadata
        self._blobs = blobs
        self._keys = keys
        self._runtimes = runtimes
        self._policy = policy
        self._limits = limits
        self._clock = clock
        self._random = random_bytes

    @property
    def limits(self) -> RegistryLimits:
        return self._limits

    # --- publish ------------------------------------------------------------------------------

    def publish(self, request: PublishRequest) -> PublishResult:
        model = check_model_name(request.model)
        files = dict(request.files)
        check_total_size(files, self._limits)
        primary = choose_primary(files, request.primary)
        fmt = detect_format(primary, files[primary], request.declared_format)
        check_auxiliary(files, primary)
        digests = {path: sha256_hex(data) for path, data in files.items()}
        signer = self._policy.check(model, request.signature_bundle, digests)
        warnings = self._unsigned_warnings(model, signer)
        runtime = self._runtime(fmt)
        signature = runtime.validate(fmt, files[primary], request.trusted_types)
        input_schema = self._input_schema(signature, request)
        version = self._metadata.next_version(model)
        created_at = self._clock()
        manifest = Manifest(
            model=model,
            version=version,
            format=fmt,
            primary=primary,
            files=tuple(
                ManifestFile(path=p, sha256=digests[p], size=len(files[p])) for p in sorted(files)
            ),
            single_file=request.single_file and len(files) == 1,
            input_schema=input_schema,
            card=request.card,
            trusted_types=tuple(sorted(set(request.trusted_types))),
            signature_sha256=(
                sha256_hex(request.signature_bundle.encode("utf-8"))
                if request.signature_bundle is not None
                else None
            ),
            created_at=created_at.isoformat(),
            created_by=request.actor,
        )
        record = self._store(manifest, files, request.signature_bundle, created_at)
        return PublishResult(record=record, manifest=manifest, signer=signer, warnings=warnings)

    def _unsigned_warnings(self, model: str, signer: str | None) -> tuple[str, ...]:
        if signer is not None:
            return ()
        message = (
            f"model {model!r} published WITHOUT a signature because unsafe_allow_unsigned is "
            "enabled; the manifest records it as unsigned"
        )
        log.warning(message)
        return (message,)

    def _runtime(self, fmt: ModelFormat) -> ModelRuntime:
        runtime = self._runtimes.get(fmt)
        if runtime is None:
            raise UnsupportedFormatError(f"no runtime is configured for format {fmt.value!r}")
        return runtime

    @staticmethod
    def _input_schema(signature: ModelSignature, request: PublishRequest) -> dict[str, Any]:
        if request.input_schema_json is None:
            return schema.infer_schema(signature, request.reference_csv).to_dict()
        given = schema.schema_from_json(request.input_schema_json)
        given.check_signature(signature)
        return given.to_dict()

    def _store(
        self,
        manifest: Manifest,
        files: Mapping[str, bytes],
        bundle: str | None,
        created_at: datetime,
    ) -> VersionRecord:
        """Write every file's envelope, then commit the version; undo the blobs on failure."""
        digest = manifest.digest()
        written: list[str] = []
        artifacts: list[ArtifactRecord] = []
        try:
            for entry in manifest.files:
                blob_id = self._random(16).hex()
                context = self._context(manifest, entry.path, digest)
                self._blobs.put(
                    blob_id,
                    envelope.encrypt(
                        files[entry.path],
                        keys=self._keys,
                        context=context,
                        random_bytes=self._random,
                        segment_size=self._limits.segment_size,
                    ),
                )
                written.append(blob_id)
                key_version = self._check_still_unwraps(blob_id, context)
                artifacts.append(
                    ArtifactRecord(entry.path, blob_id, entry.size, entry.sha256, key_version)
                )
            record = VersionRecord(
                model=manifest.model,
                version=manifest.version,
                stage=Stage.NONE,
                manifest_json=manifest.canonical_json(),
                manifest_digest=digest,
                signature_bundle=bundle,
                created_at=created_at,
                created_by=manifest.created_by,
                artifacts=tuple(artifacts),
            )
            self._metadata.add_version(record)
        except BaseException:
            for blob_id in written:
                self._blobs.delete(blob_id)
            raise
        return record

    def _check_still_unwraps(self, blob_id: str, context: envelope.EnvelopeContext) -> int:
        """Return the KEK version recorded in the written header, after checking it still
        unwraps: a key retirement that raced this publish makes the publish fail cleanly
        instead of committing a version nobody can decrypt."""
        with self._blobs.open(blob_id) as source:
            wrapped = envelope.read_header(source).wrapped_key
        self._keys.unwrap(wrapped, context.to_bytes())
        return wrapped.version

    @staticmethod
    def _context(manifest: Manifest, path: str, digest: str) -> envelope.EnvelopeContext:
        return envelope.EnvelopeContext(
            model=manifest.model, version=manifest.version, path=path, manifest_digest=digest
        )

    # --- the one path from bytes to a model -----------------------------------------------------

    def open_verified(self, model: str, version: int | None = None) -> VerifiedArtifact:
        """Decrypt, check every digest against the manifest, re-check the signature policy."""
        record = self._metadata.get_version(model, self._resolve(model, version))
        manifest = self.verified_manifest(record)
        signer = self._policy.check(model, record.signature_bundle, manifest.file_digests())
        files = {
            artifact.path: self._open_file(manifest, artifact) for artifact in record.artifacts
        }
        return issue_verified_artifact(
            model=manifest.model,
            version=manifest.version,
            manifest_digest=record.manifest_digest,
            format=manifest.format,
            primary=manifest.primary,
            files=files,
            trusted_types=manifest.trusted_types,
            input_schema=manifest.input_schema,
            signer=signer,
        )

    @staticmethod
    def verified_manifest(record: VersionRecord) -> Manifest:
        """Parse the stored manifest and cross-check every indexed column against it
        (all but ``stage``, which changes by design, and ``key_version``, a rotation index)."""
        manifest = Manifest.from_json(record.manifest_json)
        by_path = {f.path: f for f in manifest.files}
        consistent = (
            manifest.model == record.model
            and manifest.version == record.version
            and manifest.digest() == record.manifest_digest
            and manifest.created_by == record.created_by
            and manifest.created_at == record.created_at.isoformat()
            and set(by_path) == {a.path for a in record.artifacts}
            and all(
                by_path[a.path].sha256 == a.sha256 and by_path[a.path].size == a.size
                for a in record.artifacts
            )
        )
        bundle = record.signature_bundle
        signature_digest = sha256_hex(bundle.encode("utf-8")) if bundle is not None else None
        if not consistent or signature_digest != manifest.signature_sha256:
            raise IntegrityError
        return manifest

    def _open_file(self, manifest: Manifest, artifact: ArtifactRecord) -> bytes:
        """Decrypt one file and check it against the manifest.

        ``artifact.key_version`` is deliberately not compared with the header: it is an index
        for rotation, not a security field (the KEK version is authenticated by the wrapping
        AEAD), and rotation updates the blob before the index, so a strict comparison would
        fail every load of a version while its keys are being re-wrapped.
        """
        context = self._context(manifest, artifact.path, manifest.digest())
        try:
            with self._blobs.open(artifact.blob_id) as source:
                data, digest = envelope.decrypt_and_hash(source, keys=self._keys, context=context)
        except (NotFoundError, InvalidInputError) as exc:
            # A missing blob or a blob id the store refuses: the metadata was altered.
            raise IntegrityError from exc
        if digest != artifact.sha256 or len(data) != artifact.size:
            raise IntegrityError
        return data

    def _resolve(self, model: str, version: int | None) -> int:
        if version is not None:
            return version
        production = self._metadata.production_version(check_model_name(model))
        if production is None:
            self._metadata.list_versions(model)  # NotFoundError names an unknown model
            raise NotFoundError(f"model {model!r} has no production version")
        return production

    def load_model(self, model: str, version: int | None = None) -> LoadedModel:
        """Open a version through ``open_verified`` and hand it to its format's runtime."""
        return self.load_version(model, version).model

    def load_version(self, model: str, version: int | None = None) -> LoadedVersion:
        """Like ``load_model``, keeping which version and manifest the model came from."""
        artifact = self.open_verified(model, version)
        try:
            input_schema = schema.InputSchema.from_dict(artifact.input_schema)
        except InvalidInputError as exc:  # publish wrote a valid one: the manifest is not ours
            log.error(  # noqa: TRY400 - the reason is enough; a traceback adds nothing
                "%s version %d: bad input schema in the manifest: %s",
                artifact.model,
                artifact.version,
                exc,
            )
            raise IntegrityError from exc
        loaded = self._runtime(artifact.format).load(artifact)
        return LoadedVersion(
            name=artifact.model,
            version=artifact.version,
            manifest_digest=artifact.manifest_digest,
            format=artifact.format,
            model=loaded,
            input_schema=input_schema,
        )

    def stage_of(self, model: str, version: int) -> Stage:
        """The stage of one version (``NotFoundError`` if it does not exist)."""
        return self._metadata.get_version(check_model_name(model), version).stage

    def production_version(self, model: str) -> int | None:
        """The version in production, or None (also for an unknown model)."""
        return self._metadata.production_version(check_model_name(model))

    # --- reading --------------------------------------------------------------------------------

    def describe_storage(self, model: str, version: int) -> list[StoredArtifact]:
        record = self._metadata.get_version(check_model_name(model), version)
        stored = []
        for artifact in record.artifacts:
            with self._blobs.open(artifact.blob_id) as source:
                header = envelope.read_header(source)
                size = source.seek(0, 2)
            stored.append(
                StoredArtifact(
                    path=artifact.path,
                    blob_id=artifact.blob_id,
                    stored_bytes=size,
                    plaintext_bytes=artifact.size,
                    key_id=header.wrapped_key.key_id,
                    key_version=header.wrapped_key.version,
                    segment_size=header.segment_size,
                )
            )
        return stored

    def list_models(self) -> list[str]:
        return self._metadata.list_models()

    def list_versions(self, model: str) -> list[VersionView]:
        return [
            VersionView(record=r, manifest=self.verified_manifest(r))
            for r in self._metadata.list_versions(check_model_name(model))
        ]

    def show(self, model: str, version: int | None = None) -> VersionView:
        record = self._metadata.get_version(model, self._resolve(model, version))
        return VersionView(record=record, manifest=self.verified_manifest(record))

    def export_signature(self, model: str, version: int) -> str:
        record = self._metadata.get_version(check_model_name(model), version)
        self.verified_manifest(record)
        if record.signature_bundle is None:
            raise NotFoundError(f"{model} v{version} is unsigned")
        return record.signature_bundle

    # --- maintenance ----------------------------------------------------------------------------

    def verify_all(self) -> Iterator[tuple[str, int, StrongroomError | None]]:
        """Open every version; yields ``(model, version, error or None)``."""
        for model in self._metadata.list_models():
            for record in self._metadata.list_versions(model):
                try:
                    self.open_verified(model, record.version)
                except StrongroomError as exc:  # report every failure and keep going
                    yield model, record.version, exc
                else:
                    yield model, record.version, None

    def collect_garbage(
        self, *, dry_run: bool = True, min_age: timedelta = DEFAULT_GC_MIN_AGE
    ) -> GcReport:
        """Remove blobs no version references, and temporaries of interrupted writes.

        Only blobs and temporaries last written more than ``min_age`` ago are touched: a
        publish writes its blobs before its metadata, so a younger unreferenced blob may belong
        to a publish still in flight.
        """
        if min_age < timedelta(0):
            raise InvalidInputError("the minimum age cannot be negative")
        cutoff = self._clock() - min_age
        referenced = {artifact.blob_id for _, _, artifact in self._metadata.iter_artifacts()}
        report = GcReport(dry_run=dry_run)
        for blob_id in self._blobs.list_ids():
            if blob_id in referenced:
                continue
            if self._blobs.modified_at(blob_id) > cutoff:
                report.too_young += 1
                continue
            report.orphan_blobs.append(blob_id)
            if not dry_run:
                self._blobs.delete(blob_id)
        if not dry_run:
            report.temporaries_removed = self._blobs.remove_stale_temporaries(older_than=cutoff)
        return report
