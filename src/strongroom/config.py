"""Settings: one frozen, typed object, parsed once at start-up.

Sources, highest precedence first: explicit overrides (CLI flags), environment variables
``STRONGROOM_*``, secret files named by ``STRONGROOM_<NAME>_FILE`` (for secrets only), the TOML
file ``<home>/strongroom.toml`` (or ``STRONGROOM_CONFIG``), then defaults.

Defaults are the secure embedded set-up: SQLite and local files under ``home``, a sealed local
keyring, signatures required. Backends are chosen by URL from a closed list of schemes (see
``bootstrap``); nothing in configuration names code to import or execute. Anything unsafe is an
``unsafe_*`` field, False by default.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from strongroom.errors import ConfigurationError

ENV_PREFIX: Final = "STRONGROOM_"
CONFIG_FILE_NAME: Final = "strongroom.toml"
_SECRET_FIELDS: Final = ("keyring_passphrase", "server_secret")
_MAX_SECRET_FILE_BYTES: Final = 64 * 1024
MIB: Final = 1024 * 1024


class SignerSettings(BaseModel):
    """A key trusted to sign models whose names match ``models`` (fnmatch patterns)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    public_key_file: Path
    models: tuple[str, ...] = ("*",)

    @field_validator("models")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("a signer needs at least one model pattern")
        for pattern in value:
            if not re.fullmatch(r"[a-z0-9.*?_\[\]-]{1,64}", pattern):
                raise ValueError(f"invalid model pattern {pattern!r}")
            fnmatch.translate(pattern)
        return value


class IssuerSettings(BaseModel):
    """An external OAuth2/OIDC issuer (see ``strongroom.core.identity.tokens.IssuerConfig``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str
    jwks_url: str = ""
    """Where its signing keys are fetched (https only), refreshed on an unknown ``kid``."""
    jwks_file: Path | None = None
    """Or a local JWK Set file, for issuers whose keys are distributed out of band."""
    audiences: tuple[str, ...] = ()
    """This API's identifier in ``aud`` (default: ``public_url``)."""
    algorithms: tuple[str, ...] = ("RS256",)
    subject_prefix: str = ""
    """Prepended to ``sub`` (e.g. ``corp:``); needed when several issuers are trusted."""
    service_subjects: bool = False
    """``sub`` names a service account (client-credentials tokens), not a user."""
    role_claim: tuple[str, ...] = ()
    """Path of a claim listing roles (e.g. ``["realm_access", "roles"]``); empty: roles come
    from Strongroom's own principal store."""
    role_map: dict[str, str] = Field(default_factory=dict)
    leeway_s: int = Field(default=30, ge=0, le=60)
    unsafe_http_jwks: bool = False


class RateSettings(BaseModel):
    """Requests per second sustained, up to ``burst`` at once (see ``core.policy.limits``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_second: float = Field(gt=0, le=1_000_000, allow_inf_nan=False)
    burst: int = Field(ge=1, le=1_000_000)


class QuotaSettings(BaseModel):
    """At most ``limit`` predictions per calendar ``period`` (UTC)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    limit: int = Field(ge=1, le=10**12)
    period: Literal["day", "month"]


class LimitSettings(BaseModel):
    """Default rate limits and quotas; ``null`` (TOML: leave out, env: ``none``) disables one.

    Overrides per model and per principal are set through the admin API or ``strongroom
    limits`` and stored in the metadata database."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    principal: RateSettings | None = RateSettings(per_second=1000, burst=2000)
    """Every authenticated request of one principal, whatever the route."""
    model: RateSettings | None = None
    """All principals' predictions on one model together."""
    principal_model: RateSettings | None = None
    """One principal's predictions on one model."""
    address: RateSettings | None = RateSettings(per_second=10, burst=100)
    """Unauthenticated traffic per client address: logins and failed authentications."""
    quota: QuotaSettings | None = None
    """One principal's predictions per day or month."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    home: Path = Path("strongroom-data")
    """Data directory of an embedded instance (registry database, blobs, keyring)."""

    metadata_url: str = ""
    """``sqlite:///path`` (default ``<home>/registry.db``) or ``postgresql://...``."""

    artifact_url: str = ""
    """``file:///path`` (default ``<home>/artifacts``)."""

    key_provider_url: str = ""
    """``keyring:///path`` (default ``<home>/keyring.json``): the sealed local keyring."""

    keyring_passphrase: SecretStr | None = None
    """Seals the local keyring: ``STRONGROOM_KEYRING_PASSPHRASE`` or ``..._FILE``; no default."""

    keyring_passphrase_file: Path | None = None
    """A file holding the keyring passphrase (used when ``keyring_passphrase`` is unset)."""

    keyring_scrypt_n: int = Field(default=2**15, ge=2**14, le=2**20)

    max_upload_bytes: int = Field(default=2048 * MIB, ge=1, le=64 * 1024 * MIB)
    max_archive_members: int = Field(default=1000, ge=1, le=100_000)
    segment_size: int = Field(default=4 * MIB, ge=4096, le=64 * MIB)

    signers: tuple[SignerSettings, ...] = ()
    unsafe_allow_unsigned: bool = False
    """Accept unsigned model versions. Never the default; warned about and recorded per version."""

    onnx_intra_op_threads: int = Field(default=1, ge=1, le=64)

    audit_url: str = ""
    """Where audit records and checkpoints are kept: ``sqlite:///...`` or ``postgresql://...``;
    by default the same database as ``metadata_url``."""

    audit_checkpoint_dir: Path | None = None
    """The *second* home of signed audit checkpoints (default
    ``<home>/audit-checkpoints-external``, which is only fit for development).

    Production must point it elsewhere: a mount that the database's administrators cannot
    rewrite (another host, a WORM volume, a directory shipped off the box). Beside the database
    it catches mistakes, not an insider who truncates the log and its checkpoints together."""

    audit_origin: str = Field(
        default="strongroom.local/audit", pattern=r"^[^\s+\x00-\x1f\x7f]{1,256}$"
    )
    """Name of this audit log in its checkpoints (and of their signing key): a schema-less URL."""

    audit_signing_key_file: Path | None = None
    """The Ed25519 checkpoint signing key (default ``<home>/secrets/audit-checkpoint.key``),
    made by ``strongroom init``; a secret, 0600."""

    audit_trusted_vkeys: tuple[str, ...] = ()
    """Verifier keys (``name+id+key``) trusted for audit checkpoints. Empty: trust this instance's
    own key. Set it to verify on another machine, or to keep trusting a rotated-out key."""

    # --- the server (issue 3) -------------------------------------------------------------------

    server_secret: SecretStr | None = None
    """32+ random bytes (base64url or hex text) from which the server derives, by HKDF with a
    label each, the API-key and session peppers, the audit input-HMAC key, the TOTP sealing key
    and its own token-signing key. ``STRONGROOM_SERVER_SECRET_FILE`` or ``server_secret_file``
    (default ``<home>/secrets/server.key``, made by ``strongroom init``)."""

    server_secret_file: Path | None = None

    host: str = "127.0.0.1"
    """Address to listen on. ``0.0.0.0`` or ``::`` to accept remote clients."""

    port: int = Field(default=8443, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)

    public_url: str = ""
    """The URL clients use (``https://host:port``): the issuer and audience of the server's own
    access tokens. Default ``https://localhost:<port>``."""

    tls_cert_file: Path | None = None
    """PEM certificate chain (default ``<home>/tls/server.crt``, self-signed by ``init``)."""

    tls_key_file: Path | None = None
    """PEM private key of ``tls_cert_file`` (default ``<home>/tls/server.key``)."""

    tls_client_ca_file: Path | None = None
    """PEM CA bundle that client certificates must chain to; setting it enables mTLS."""

    mtls_required: bool = False
    """With ``tls_client_ca_file``: refuse the handshake without a client certificate (else a
    certificate is optional and, when given, must verify)."""

    unsafe_plaintext: bool = False
    """Serve plain HTTP without TLS. Only behind a TLS-terminating proxy on a trusted network;
    warned about at every start and recorded in the audit log."""

    max_body_bytes: int = Field(default=8 * MIB, ge=1024, le=4096 * MIB)
    """Largest request body outside model uploads (413 before it is read)."""

    max_batch_rows: int = Field(default=4096, ge=1, le=1_000_000)
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """A client must send its request line and headers within this time (slowloris)."""

    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """... and its body within this time."""

    keep_alive_timeout_s: float = Field(default=5.0, gt=0, le=300)

    access_token_ttl_s: int = Field(default=300, ge=60, le=3600)
    """Lifetime of the access tokens the server issues (client-credentials grant)."""

    session_ttl_s: int = Field(default=8 * 3600, ge=300, le=24 * 3600)
    """Lifetime of a password (+ TOTP) login session."""

    mfa_max_age_s: int = Field(default=300, ge=30, le=3600)
    """How recent a TOTP step-up must be for promote, rollback, key and credential changes."""

    model_refresh_s: float = Field(default=2.0, ge=0.1, le=3600)
    """How often each worker compares its warm models with the registry's production versions
    (promotions made through this worker's admin API apply at once)."""

    oidc_issuers: tuple[IssuerSettings, ...] = ()
    """External OAuth2/OIDC issuers whose access tokens are accepted."""

    audit_checkpoint_every: int = Field(default=1000, ge=10, le=100_000)
    """Sign and publish a checkpoint after this many records (and at least every minute).
    Fewer checkpoints mean fewer pauses of the writer; more mean a shorter window of records
    an insider could drop before the next external checkpoint."""

    # --- the request guard (issue 4) ------------------------------------------------------------

    rate_limits: LimitSettings = LimitSettings()

    rate_limit_url: str = ""
    """Where rate counters live: empty for this process's memory (exact for one worker only;
    with several workers each counts alone), or ``redis://host:port/db`` / ``rediss://...``
    shared by every worker and replica."""

    rate_limit_prefix: str = Field(default="strongroom:rl:", pattern=r"^[\x21-\x7e]{1,64}$")
    """Prefix of every counter key in Redis (several instances can share one Redis)."""

    rate_limit_timeout_s: float = Field(default=0.25, gt=0, le=10)
    """How long a request waits for the shared counter before the outage policy applies."""

    rate_limit_outage_inference: Literal["closed", "local"] = "closed"
    """When the shared counter cannot be reached: ``closed`` answers predictions 503;
    ``local`` counts them in this process alone (each worker then allows the full limit).
    Admin and authentication requests always get 503: they are never counted locally."""

    network_allow: tuple[str, ...] = ()
    """CIDRs clients may call from (empty: anywhere). Checked before any route runs."""

    network_deny: tuple[str, ...] = ()
    """CIDRs clients may never call from; deny beats allow."""

    trusted_proxies: tuple[str, ...] = ()
    """CIDRs of reverse proxies whose ``Forwarded`` / ``X-Forwarded-For`` headers name the
    client. From any other peer those headers are ignored."""

    max_queue_per_model: int = Field(default=64, ge=1, le=100_000)
    """Predictions in flight per model and worker; beyond it requests are shed (503)."""

    max_concurrent_per_principal: int = Field(default=32, ge=1, le=100_000)
    """Requests in flight per principal and worker; beyond it requests are shed (503)."""

    unsafe_no_request_guard: bool = False
    """Turn off rate limits, quotas, schema validation and load shedding (to measure the guard's
    cost). Network rules stay on. Warned about at every start and recorded in the audit log."""

    @model_validator(mode="after")
    def _fill_urls(self) -> Settings:
        home = self.home.expanduser().resolve()
        defaults = {
            "metadata_url": f"sqlite:///{home / 'registry.db'}",
            "artifact_url": (home / "artifacts").as_uri(),
            "key_provider_url": f"keyring://{home / 'keyring.json'}",
        }
        for name, value in defaults.items():
            if not getattr(self, name):
                object.__setattr__(self, name, value)
        if not self.audit_url:
            object.__setattr__(self, "audit_url", self.metadata_url)
        paths = {
            "audit_checkpoint_dir": home / "audit-checkpoints-external",
            "audit_signing_key_file": home / "secrets" / "audit-checkpoint.key",
            "server_secret_file": home / "secrets" / "server.key",
            "tls_cert_file": home / "tls" / "server.crt",
            "tls_key_file": home / "tls" / "server.key",
        }
        if not self.public_url:
            object.__setattr__(self, "public_url", f"https://localhost:{self.port}")
        if self.mtls_required and self.tls_client_ca_file is None:
            raise ValueError("mtls_required needs tls_client_ca_file")
        if self.unsafe_plaintext and self.tls_client_ca_file is not None:
            raise ValueError("mTLS (tls_client_ca_file) needs TLS: unset unsafe_plaintext")
        for name, path in paths.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, path)
        object.__setattr__(self, "home", home)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files: explicit only
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - replaced by _FILE vars
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            SecretFileSource(settings_cls),
            TomlConfigSettingsSource(settings_cls, toml_file=_config_file()),
        )


class SecretFileSource(PydanticBaseSettingsSource):
    """Reads ``STRONGROOM_<SECRET>_FILE`` paths (Kubernetes/Docker secrets) for secret fields."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # noqa: ARG002
        path = os.environ.get(f"{ENV_PREFIX}{field_name.upper()}_FILE")
        if field_name not in _SECRET_FIELDS or not path:
            return None, field_name, False
        return read_secret_file(Path(path)), field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in _SECRET_FIELDS:
            value, key, _ = self.get_field_value(None, name)
            if value is not None:
                values[key] = value
        return values


def read_secret_file(path: Path) -> str:
    try:
        data = path.read_bytes()[: _MAX_SECRET_FILE_BYTES + 1]
    except OSError as exc:
        raise ConfigurationError(f"cannot read secret file {path}: {exc.strerror}") from exc
    if len(data) > _MAX_SECRET_FILE_BYTES:
        raise ConfigurationError(f"secret file {path} is too large")
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigurationError(f"secret file {path} is not UTF-8 text") from None


def _config_file(home: Path | None = None) -> Path | None:
    explicit = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigurationError(f"configuration file {path} does not exist")
        return path
    if home is None:
        home = Path(os.environ.get(f"{ENV_PREFIX}HOME", "strongroom-data"))
    candidate = home / CONFIG_FILE_NAME
    return candidate if candidate.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Parse settings once; every validation problem becomes one clear ``ConfigurationError``.

    ``overrides`` (CLI flags) win over everything; a ``home`` override also decides which
    ``strongroom.toml`` is read.
    """
    from pydantic import ValidationError  # noqa: PLC0415 - keep the import next to its use

    given = {k: v for k, v in overrides.items() if v is not None}
    toml_file = _config_file(Path(given["home"]) if "home" in given else None)

    class _Bound(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003
            file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                env_settings,
                SecretFileSource(settings_cls),
                TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
            )

    try:
        return _Bound(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None
