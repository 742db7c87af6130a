"""The composition root: settings -> adapters -> services.

The only module that constructs adapters. Backends come from a closed mapping of URL schemes;
an unknown scheme is a ``ConfigurationError``, and nothing named in configuration is imported or
executed. Optional backends import their client lazily and raise ``MissingExtraError`` naming
the extra to install.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

from strongroom.adapters.identity.jwks import https_jwks_fetcher
from strongroom.adapters.identity.jwt_verifier import JwtVerifier
from strongroom.adapters.identity.passwords import Argon2PasswordHasher
from strongroom.adapters.identity.token_issuer import TokenIssuer
from strongroom.adapters.identity.totp import TotpVerifier
from strongroom.adapters.kms.local_keyring import LocalKeyring
from strongroom.adapters.runtimes.lightgbm import LightGBMRuntime
from strongroom.adapters.runtimes.onnx import OnnxRuntime
from strongroom.adapters.runtimes.skops import SkopsRuntime
from strongroom.adapters.runtimes.xgboost import XGBoostRuntime
from strongroom.adapters.storage.audit_sql import SqlAuditStore
from strongroom.adapters.storage.checkpoint_dir import DirectoryCheckpointSink
from strongroom.adapters.storage.epoch_file import FileCredentialEpoch
from strongroom.adapters.storage.epoch_sql import SqlCredentialEpoch
from strongroom.adapters.storage.identity_sql import SqlIdentityStore
from strongroom.adapters.storage.local_fs import LocalBlobStore
from strongroom.adapters.storage.sql import SqlMetadataStore
from strongroom.config import IssuerSettings, Settings, read_secret_file
from strongroom.core.audit.record import AuditEvent, AuditRecord
from strongroom.core.crypto.certificates import generate_development_certificate
from strongroom.core.crypto.derive import (
    ServerKeys,
    derive_server_keys,
    format_server_secret,
    parse_server_secret,
)
from strongroom.core.crypto.keys import KeyProvider
from strongroom.core.crypto.notes import NoteSigner, NoteVerifier
from strongroom.core.crypto.signature_policy import SignaturePolicy, TrustedSigner
from strongroom.core.identity.ports import CredentialEpoch
from strongroom.core.identity.principal import Role
from strongroom.core.identity.tokens import IssuerConfig, SubjectKind
from strongroom.core.registry.formats import ModelFormat
from strongroom.core.registry.ports import BlobStore, MetadataStore
from strongroom.core.registry.runtime import ModelRuntime
from strongroom.errors import ConfigurationError, InvalidInputError
from strongroom.services.audit import AuditWriter
from strongroom.services.audit_reading import AuditService
from strongroom.services.identity import IdentityService
from strongroom.services.keys import KeyService
from strongroom.services.lifecycle import LifecycleService
from strongroom.services.publishing import RegistryLimits
from strongroom.services.registry import RegistryService

SQL_SCHEMES = frozenset({"sqlite", "postgresql", "postgresql+psycopg", "postgres"})
BLOB_SCHEMES = frozenset({"file"})
KEY_SCHEMES = frozenset({"keyring"})
MIN_PASSPHRASE_LENGTH = 12


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Container:
    settings: Settings
    metadata: MetadataStore
    blobs: BlobStore
    key_provider: KeyProvider
    registry: RegistryService
    lifecycle: LifecycleService
    keys: KeyService
    audit: AuditLog
    """Record admin and CLI actions with ``audit.record(event)``; close it when done."""


def url_scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def _local_path(url: str, schemes: frozenset[str], what: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes:
        raise ConfigurationError(
            f"unsupported {what} URL scheme {parts.scheme!r}",
            hint=f"supported: {', '.join(sorted(schemes))}",
        )
    if parts.netloc not in {"", "localhost"} or parts.query or parts.fragment:
        raise ConfigurationError(f"{what} URL must be a local absolute path, e.g. file:///srv/x")
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise ConfigurationError(f"{what} URL must hold an absolute path")
    return path


def build_metadata_store(settings: Settings) -> MetadataStore:
    if url_scheme(settings.metadata_url) not in SQL_SCHEMES:
        raise ConfigurationError(
            "unsupported metadata_url scheme",
            hint="use sqlite:///path/registry.db or postgresql://user@host/db",
        )
    return SqlMetadataStore(settings.metadata_url)


def artifact_root(settings: Settings) -> Path:
    return _local_path(settings.artifact_url, BLOB_SCHEMES, "artifact_url")


def build_blob_store(settings: Settings) -> BlobStore:
    return LocalBlobStore(artifact_root(settings))


def keyring_path(settings: Settings) -> Path:
    return _local_path(settings.key_provider_url, KEY_SCHEMES, "key_provider_url")


def keyring_passphrase(settings: Settings) -> bytes:
    if settings.keyring_passphrase is not None:
        value = settings.keyring_passphrase.get_secret_value()
    elif settings.keyring_passphrase_file is not None:
        value = read_secret_file(settings.keyring_passphrase_file)
    else:
        raise ConfigurationError(
            "no keyring passphrase configured",
            hint="set STRONGROOM_KEYRING_PASSPHRASE_FILE (preferred) or"
            " STRONGROOM_KEYRING_PASSPHRASE; there is no default",
        )
    if len(value) < MIN_PASSPHRASE_LENGTH:
        raise ConfigurationError(
            f"the keyring passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters"
        )
    return value.encode("utf-8")


def build_key_provider(settings: Settings) -> KeyProvider:
    return LocalKeyring.open(
        keyring_path(settings),
        keyring_passphrase(settings),
        clock=utc_now,
        random_bytes=os.urandom,
    )


def build_runtimes(settings: Settings) -> dict[ModelFormat, ModelRuntime]:
    onnx = OnnxRuntime(intra_op_threads=settings.onnx_intra_op_threads)
    runtimes: list[ModelRuntime] = [onnx, SkopsRuntime(), XGBoostRuntime(), LightGBMRuntime()]
    return {fmt: runtime for runtime in runtimes for fmt in runtime.formats}


def build_signature_policy(settings: Settings) -> SignaturePolicy:
    signers = []
    for signer in settings.signers:
        path = signer.public_key_file
        if not path.is_absolute():
            path = settings.home / path
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read public key of signer {signer.name!r}: {path} ({exc.strerror})"
            ) from exc
        signers.append(TrustedSigner(signer.name, pem, signer.models))
    return SignaturePolicy(tuple(signers), unsafe_allow_unsigned=settings.unsafe_allow_unsigned)


# --- the audit trail ------------------------------------------------------------------------------


def _under_home(settings: Settings, path: Path | None) -> Path:
    if path is None:  # filled by Settings; only a hand-built object lacks it
        raise ConfigurationError("an audit path setting is missing")
    return path if path.is_absolute() else settings.home / path


def build_audit_store(settings: Settings) -> SqlAuditStore:
    if url_scheme(settings.audit_url) not in SQL_SCHEMES:
        raise ConfigurationError(
            "unsupported audit_url scheme",
            hint="use sqlite:///path/registry.db or postgresql://user@host/db",
        )
    return SqlAuditStore(settings.audit_url)


def build_checkpoint_sink(settings: Settings) -> DirectoryCheckpointSink:
    return DirectoryCheckpointSink(_under_home(settings, settings.audit_checkpoint_dir))


def load_audit_signer(settings: Settings) -> NoteSigner:
    path = _under_home(settings, settings.audit_signing_key_file)
    if not path.exists():
        raise ConfigurationError(
            f"no audit checkpoint signing key at {path}",
            hint="run: strongroom audit init (or set audit_signing_key_file)",
        )
    try:
        return NoteSigner.from_skey(read_secret_file(path))
    except InvalidInputError:
        raise ConfigurationError(f"{path} is not an audit checkpoint signing key") from None


def audit_verifiers(settings: Settings) -> tuple[NoteVerifier, ...]:
    """The configured trusted checkpoint keys, or this instance's own when none are set."""
    if not settings.audit_trusted_vkeys:
        return (load_audit_signer(settings).verifier,)
    try:
        return tuple(NoteVerifier.from_vkey(v) for v in settings.audit_trusted_vkeys)
    except InvalidInputError:
        raise ConfigurationError("audit_trusted_vkeys holds a malformed verifier key") from None


class AuditLog:
    """This process's audit trail, built on first use and shared by its threads.

    Nothing is opened until needed: ``service().verify()`` needs only the store, the sink and the
    trusted keys (an auditor's machine has no signing key); the first ``record`` starts the writer,
    which resumes and checks the log first (``IntegrityError`` if it was tampered with).
    ``close`` writes a last checkpoint: call it before the process ends.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._store: SqlAuditStore | None = None
        self._sink: DirectoryCheckpointSink | None = None
        self._writer: AuditWriter | None = None

    def _parts(self) -> tuple[SqlAuditStore, DirectoryCheckpointSink]:
        with self._lock:
            if self._store is None:
                self._store = build_audit_store(self._settings)
            if self._sink is None:
                self._sink = build_checkpoint_sink(self._settings)
            return self._store, self._sink

    def writer(self) -> AuditWriter:
        store, sink = self._parts()
        with self._lock:
            if self._writer is None:
                settings = self._settings
                try:
                    writer = AuditWriter(
                        store,
                        sink,
                        load_audit_signer(settings),
                        settings.audit_origin,
                        utc_now,
                        verifiers=audit_verifiers(settings),
                        checkpoint_every=settings.audit_checkpoint_every,
                        max_unpublished=max(10_000, 10 * settings.audit_checkpoint_every),
                    )
                except ValueError as exc:
                    raise ConfigurationError(
                        "the audit signing key is not among audit_trusted_vkeys"
                    ) from exc
                writer.start()
                self._writer = writer
            return self._writer

    def record(self, event: AuditEvent) -> AuditRecord:
        """Make ``event`` durable; ``AuditUnavailableError`` (fail closed) if it cannot be."""
        return self.writer().record(event)

    def service(self) -> AuditService:
        store, sink = self._parts()
        return AuditService(
            store,
            sink,
            audit_verifiers(self._settings),
            self._settings.audit_origin,
            recorder=self.record,
            clock=utc_now,
        )

    def close(self) -> None:
        with self._lock:
            writer, store = self._writer, self._store
            self._writer = self._store = None
        if writer is not None:
            writer.close()
        if store is not None:
            store.close()


def initialise_audit(settings: Settings) -> Path:
    """Create what the audit trail needs, keeping what exists (so it also upgrades an instance
    made before the audit trail): the checkpoint signing key (Ed25519, 0600, never overwritten),
    the external checkpoint directory (0700) and the audit tables. Returns the key's path."""
    key = _under_home(settings, settings.audit_signing_key_file)
    key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not key.exists():
        signer = NoteSigner.generate(settings.audit_origin, os.urandom)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(signer.to_skey() + "\n")
    build_checkpoint_sink(settings)
    store = build_audit_store(settings)
    try:
        store.migrate()
    finally:
        store.close()
    return key


# --- the server secret ----------------------------------------------------------------------------


def server_keys(settings: Settings) -> ServerKeys:
    """The keys derived from the server secret (setting, ``*_FILE`` or ``server_secret_file``)."""
    if settings.server_secret is not None:
        text = settings.server_secret.get_secret_value()
    else:
        path = _under_home(settings, settings.server_secret_file)
        if not path.exists():
            raise ConfigurationError(
                f"no server secret at {path}",
                hint="run: strongroom init (or set STRONGROOM_SERVER_SECRET_FILE)",
            )
        if path.stat().st_mode & 0o077:
            raise ConfigurationError(
                f"{path} is readable by other users", hint=f"run: chmod 600 {path}"
            )
        text = read_secret_file(path)
    return derive_server_keys(parse_server_secret(text))


def initialise_server_secret(settings: Settings) -> Path | None:
    """Write a fresh server secret (0600, never overwritten) unless one is configured or exists;
    returns the path written, or None."""
    if settings.server_secret is not None:
        return None
    path = _under_home(settings, settings.server_secret_file)
    if path.exists():
        return None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(format_server_secret(os.urandom(32)) + "\n")
    return path


def build_container(settings: Settings) -> Container:
    metadata = build_metadata_store(settings)
    blobs = build_blob_store(settings)
    keys = build_key_provider(settings)
    registry = RegistryService(
        metadata=metadata,
        blobs=blobs,
        keys=keys,
        runtimes=build_runtimes(settings),
        policy=build_signature_policy(settings),
        limits=RegistryLimits(
            max_upload_bytes=settings.max_upload_bytes,
            max_archive_members=settings.max_archive_members,
            segment_size=settings.segment_size,
        ),
        clock=utc_now,
        random_bytes=os.urandom,
    )
    return Container(
        settings=settings,
        metadata=metadata,
        blobs=blobs,
        key_provider=keys,
        registry=registry,
        lifecycle=LifecycleService(metadata=metadata, registry=registry, clock=utc_now),
        keys=KeyService(metadata=metadata, blobs=blobs, keys=keys),
        audit=AuditLog(settings),
    )


@dataclass(frozen=True, slots=True)
class InitResult:
    home: Path
    keyring: Path
    generated_passphrase_file: Path | None


def initialise(settings: Settings) -> InitResult:
    """Create an embedded instance: data directory, sealed keyring, database schema, blob store,
    and the audit trail's checkpoint signing key and external checkpoint directory.

    Refuses to overwrite an existing keyring. When no passphrase is configured, generates one into
    ``<home>/secrets/keyring-passphrase`` (0600) for development and says so; production
    deployments supply their own through ``STRONGROOM_KEYRING_PASSPHRASE_FILE``.
    """
    home = settings.home
    if keyring_path(settings).exists():
        raise ConfigurationError(
            f"{home} is already initialised (its keyring exists)",
            hint="use another --home, or keep using this instance",
        )
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    generated = None
    if settings.keyring_passphrase is None and settings.keyring_passphrase_file is None:
        generated = home / "secrets" / "keyring-passphrase"
        generated.parent.mkdir(mode=0o700, exist_ok=True)
        if not generated.exists():  # else: left by an init that failed before the keyring
            fd = os.open(generated, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
        settings = settings.model_copy(update={"keyring_passphrase_file": generated})
    path = keyring_path(settings)
    LocalKeyring.create(
        path,
        keyring_passphrase(settings),
        clock=utc_now,
        random_bytes=os.urandom,
        scrypt_n=settings.keyring_scrypt_n,
    )
    build_metadata_store(settings).migrate()
    initialise_audit(settings)
    initialise_server_secret(settings)
    initialise_tls(settings)
    database = home / "registry.db"
    if database.exists():  # SQLite creates it with the umask; the registry keeps files 0600
        database.chmod(0o600)
    build_blob_store(settings)
    return InitResult(home=home, keyring=path, generated_passphrase_file=generated)


# --- the TLS certificate --------------------------------------------------------------------------


def default_tls_paths(settings: Settings) -> tuple[Path, Path]:
    """Where ``init`` puts the development certificate and key: ``<home>/tls/server.{crt,key}``."""
    tls = settings.home / "tls"
    return tls / "server.crt", tls / "server.key"


def initialise_tls(settings: Settings) -> Path | None:
    """Write a self-signed development certificate and its key (0600) when the default paths are
    in use and neither file exists; returns the certificate's path, or None.

    Never overwrites: an operator's certificate, or a half-written pair, is left for a human.
    The key is written first with ``O_EXCL``, so a concurrent ``init`` cannot interleave.
    """
    cert_path, key_path = default_tls_paths(settings)
    if (settings.tls_cert_file, settings.tls_key_file) != (cert_path, key_path):
        return None
    if cert_path.exists() or key_path.exists():
        return None
    cert_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    dev = generate_development_certificate(utc_now, os.urandom)
    for path, data, mode in ((key_path, dev.key_pem, 0o600), (cert_path, dev.cert_pem, 0o644)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    return cert_path


# --- bearer tokens --------------------------------------------------------------------------------


def build_token_issuer(settings: Settings, keys: ServerKeys) -> TokenIssuer:
    """The server's own issuer of short-lived access tokens (client-credentials grant)."""
    return TokenIssuer(
        issuer=settings.public_url,
        audience=settings.public_url,
        private_key=keys.token_signing_seed,
        clock=utc_now,
        random_bytes=os.urandom,
        ttl=timedelta(seconds=settings.access_token_ttl_s),
        unsafe_http=settings.public_url.startswith("http://"),
    )


def _issuer_config(settings: Settings, issuer: IssuerSettings) -> IssuerConfig:
    jwks = None
    if issuer.jwks_file is not None:
        path = (
            issuer.jwks_file if issuer.jwks_file.is_absolute() else settings.home / issuer.jwks_file
        )
        try:
            jwks = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read the JWK Set of {issuer.issuer}: {path}") from exc
    try:
        role_map = {name: Role(role) for name, role in issuer.role_map.items()}
    except ValueError as exc:
        raise ConfigurationError(f"role_map of {issuer.issuer} names an unknown role") from exc
    return IssuerConfig(
        issuer=issuer.issuer,
        audiences=issuer.audiences or (settings.public_url,),
        algorithms=issuer.algorithms,
        jwks_url=issuer.jwks_url or None,
        jwks=jwks,
        leeway=timedelta(seconds=issuer.leeway_s),
        subject_kind=SubjectKind.SERVICE if issuer.service_subjects else SubjectKind.AUTO,
        subject_prefix=issuer.subject_prefix,
        role_claim=issuer.role_claim,
        role_map=role_map,
        unsafe_http_jwks=issuer.unsafe_http_jwks,
    )


def build_bearer_verifier(settings: Settings, issuer: TokenIssuer) -> JwtVerifier:
    """Verifies the server's own access tokens and those of every configured OIDC issuer."""
    configs = [
        issuer.issuer_config(),
        *(_issuer_config(settings, i) for i in settings.oidc_issuers),
    ]
    urls = [c.jwks_url for c in configs if c.jwks_url]
    fetch = https_jwks_fetcher(
        allowed_urls=urls, allow_http=any(c.unsafe_http_jwks for c in configs if c.jwks_url)
    )
    return JwtVerifier(configs, fetch_jwks=fetch, clock=utc_now)


def roles_from_token_issuers(settings: Settings) -> frozenset[str]:
    """External issuers whose tokens carry roles (``role_claim``). The server's own tokens
    are not among them: their roles are read from the principal store on every request, so
    removing a role (or disabling the service) applies to tokens already issued at once."""
    return frozenset(i.issuer for i in settings.oidc_issuers if i.role_claim)


def identity_store_is_remote(settings: Settings) -> bool:
    return url_scheme(settings.metadata_url) != "sqlite"


# --- identity and access --------------------------------------------------------------------------


def credential_epoch_path(settings: Settings) -> Path:
    """The file epoch shared by the worker processes of an embedded (SQLite) instance."""
    return settings.home / "run" / "credential-epoch"


def build_credential_epoch(settings: Settings) -> CredentialEpoch:
    """A file on one host for SQLite; the database itself for PostgreSQL (several hosts)."""
    if url_scheme(settings.metadata_url) == "sqlite":
        return FileCredentialEpoch(credential_epoch_path(settings))
    return SqlCredentialEpoch(settings.metadata_url)


def build_identity_store(settings: Settings) -> SqlIdentityStore:
    if url_scheme(settings.metadata_url) not in SQL_SCHEMES:
        raise ConfigurationError(
            "unsupported metadata_url scheme",
            hint="use sqlite:///path/registry.db or postgresql://user@host/db",
        )
    return SqlIdentityStore(settings.metadata_url)


def build_identity_service(settings: Settings, keys: ServerKeys) -> IdentityService:
    """Principals and credentials in the metadata database, Argon2id passwords, RFC 6238 TOTP."""
    return IdentityService(
        build_identity_store(settings),
        Argon2PasswordHasher(),
        TotpVerifier(utc_now),
        keys,
        build_credential_epoch(settings),
        utc_now,
        os.urandom,
    )


def initialise_identity(settings: Settings) -> None:
    """Create or upgrade the identity tables (migration 0003, in the registry's one stream, which
    ``initialise`` runs too) and, for SQLite, the credential epoch file under ``<home>/run``."""
    store = build_identity_store(settings)
    try:
        store.migrate()
    finally:
        store.close()
    if url_scheme(settings.metadata_url) == "sqlite":
        FileCredentialEpoch(credential_epoch_path(settings)).close()


def create_admin(service: IdentityService, user_name: str, password: str) -> tuple[str, str]:
    """Create ``user:<user_name>`` with the admin role, its password and a TOTP enrolment;
    returns ``(totp secret, provisioning uri)`` to show once. The enrolment is confirmed by the
    first login (or step-up) with a valid code."""
    user_id = user_name if user_name.startswith("user:") else f"user:{user_name}"
    service.create_principal(user_id, roles=(Role.ADMIN,), description="created by init")
    service.set_password(user_id, password)
    secret, uri = service.enroll_totp(user_id)
    return secret, uri
