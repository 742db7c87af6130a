"""Shared fixtures.

Tests that need an external resource (PostgreSQL, ``../shared/vectors``) *skip* on a developer
machine that lacks it but *fail* under CI (``CI=true``): a skipped conformance test is not a
passing one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

# Contract suites live in the package (strongroom.testing.contracts); show their failures in full.
pytest.register_assert_rewrite("strongroom.testing.contracts")

REPO_ROOT = Path(__file__).resolve().parent.parent
VECTORS_DIR = Path(
    os.environ.get("STRONGROOM_VECTORS_DIR", REPO_ROOT.parent / "shared" / "vectors")
)
POSTGRES_URL = os.environ.get(
    "STRONGROOM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_resource(what: str) -> None:
    """Fail under CI, skip elsewhere."""
    if in_ci():
        pytest.fail(f"{what} is required when CI=true", pytrace=False)
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    if not (VECTORS_DIR / "README.md").is_file():
        missing_resource(f"third-party test vectors at {VECTORS_DIR}")
    return VECTORS_DIR


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of the real PostgreSQL server; fails under CI when it is unreachable."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        missing_resource(f"PostgreSQL at {POSTGRES_URL} ({type(exc).__name__})")
    return POSTGRES_URL


@pytest.fixture
def postgres_schema_url(postgres_server_url: str) -> Iterator[str]:
    """A SQLAlchemy URL whose connections use a fresh, private schema, dropped afterwards."""
    import psycopg

    schema = f"sr_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = postgres_server_url.replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# --- registry fixtures shared by service, CLI and tamper tests ------------------------------------

N_FEATURES = 6


@dataclass(frozen=True)
class TrainedModel:
    onnx: bytes
    sklearn: Any
    features: Any


@pytest.fixture(scope="session")
def trained_model() -> TrainedModel:
    """A small logistic-regression classifier and its ONNX form (zipmap off: plain arrays)."""
    import numpy as np
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1234)
    features = rng.normal(size=(300, N_FEATURES)).astype(np.float32)
    labels = (features[:, 0] + 0.5 * features[:, 1] > 0).astype(np.int64)
    model = LogisticRegression().fit(features, labels)
    onnx = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    ).SerializeToString()
    return TrainedModel(onnx=bytes(onnx), sklearn=model, features=features)


@dataclass(frozen=True)
class SignerKeys:
    name: str
    private_pem: bytes
    public_pem: bytes


def make_signer(name: str) -> SignerKeys:
    from strongroom.services.signing import generate_signing_key

    private_pem, public_pem = generate_signing_key()
    return SignerKeys(name, private_pem, public_pem)


@pytest.fixture(scope="session")
def signer() -> SignerKeys:
    return make_signer("team-a")


@dataclass
class Harness:
    """A registry wired with chosen adapters, plus handles on them for tampering."""

    registry: Any
    lifecycle: Any
    keys_service: Any
    metadata: Any
    blobs: Any
    key_provider: Any
    signer: SignerKeys

    def publish(self, model: str, files: dict[str, bytes], **kwargs: Any) -> Any:
        from strongroom.core.registry.manifest import ModelCard
        from strongroom.services.publishing import PublishRequest
        from strongroom.services.signing import sign_files

        single = kwargs.pop("single_file", len(files) == 1)
        signed = kwargs.pop("signed", True)
        bundle = (
            sign_files(
                files,
                subject_name=model,
                private_key_pem=self.signer.private_pem,
                single_file=single,
            )
            if signed
            else None
        )
        request = PublishRequest(
            model=model,
            files=files,
            card=ModelCard(owner="tests"),
            actor="test",
            single_file=single,
            signature_bundle=bundle,
            **kwargs,
        )
        return self.registry.publish(request)


def build_harness(
    metadata: Any, blobs: Any, key_provider: Any, signer: SignerKeys, **policy: Any
) -> Harness:
    from strongroom.adapters.runtimes.onnx import OnnxRuntime
    from strongroom.core.crypto.signature_policy import (
        SignaturePolicy,
        TrustedSigner,
    )
    from strongroom.services.keys import KeyService
    from strongroom.services.lifecycle import LifecycleService
    from strongroom.services.registry import RegistryLimits, RegistryService

    patterns = policy.pop("patterns", ("*",))
    runtime = OnnxRuntime()
    registry = RegistryService(
        metadata=metadata,
        blobs=blobs,
        keys=key_provider,
        runtimes=dict.fromkeys(runtime.formats, runtime),
        policy=SignaturePolicy(
            (TrustedSigner(signer.name, signer.public_pem, patterns),), **policy
        ),
        limits=RegistryLimits(
            max_upload_bytes=50 * 1024 * 1024, max_archive_members=100, segment_size=4096
        ),
        clock=lambda: datetime.now(UTC),
        random_bytes=os.urandom,
    )
    return Harness(
        registry=registry,
        lifecycle=LifecycleService(
            metadata=metadata, registry=registry, clock=lambda: datetime.now(UTC)
        ),
        keys_service=KeyService(metadata=metadata, blobs=blobs, keys=key_provider),
        metadata=metadata,
        blobs=blobs,
        key_provider=key_provider,
        signer=signer,
    )


@pytest.fixture
def fake_harness(signer: SignerKeys) -> Harness:
    from strongroom.testing.fake_keys import FakeKeyProvider
    from strongroom.testing.fake_storage import (
        InMemoryBlobStore,
        InMemoryMetadataStore,
    )

    return build_harness(InMemoryMetadataStore(), InMemoryBlobStore(), FakeKeyProvider(), signer)


@pytest.fixture
def real_harness(tmp_path: Path, signer: SignerKeys) -> Iterator[Harness]:
    """SQLite + local blob files + sealed local keyring, all under tmp_path."""
    from strongroom.adapters.kms.local_keyring import LocalKeyring
    from strongroom.adapters.storage.local_fs import LocalBlobStore
    from strongroom.adapters.storage.sql import SqlMetadataStore

    metadata = SqlMetadataStore(f"sqlite:///{tmp_path / 'registry.db'}")
    metadata.migrate()
    keyring = LocalKeyring.create(
        tmp_path / "keyring.json",
        b"test-passphrase-" + secrets.token_hex(8).encode(),
        clock=lambda: datetime.now(UTC),
        random_bytes=os.urandom,
        scrypt_n=2**14,
    )
    yield build_harness(metadata, LocalBlobStore(tmp_path / "blobs"), keyring, signer)
    metadata.close()


# --- the CLI as a user runs it (integration tests) ------------------------------------------------

CLI_SCRYPT_N = "16384"  # the keyring KDF floor; keeps CLI tests fast


def cli(home: Path, *args: str, env: dict[str, str] | None = None, expect: int | None = 0) -> Any:
    """Run ``python -m strongroom`` against ``home``; assert the exit code (unless ``expect``
    is None) and that no traceback was printed."""
    import subprocess
    import sys

    full_env = {
        **os.environ,
        "STRONGROOM_HOME": str(home),
        "STRONGROOM_KEYRING_SCRYPT_N": CLI_SCRYPT_N,
        "COLUMNS": "200",
        **(env or {}),
    }
    full_env.pop("STRONGROOM_KEYRING_PASSPHRASE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "strongroom", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    if expect is not None:
        assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def cli_json(home: Path, *args: str, **kwargs: Any) -> Any:
    import json

    return json.loads(cli(home, "--json", *args, **kwargs).stdout)


@pytest.fixture
def instance(tmp_path: Path, signer: SignerKeys, trained_model: TrainedModel) -> Path:
    """An initialised home trusting ``signer`` for ``fraud*``, with ``model.onnx`` beside it."""
    home = tmp_path / "home"
    result = cli_json(home, "init")
    passphrase = result["generated_passphrase_file"]
    assert passphrase
    assert (Path(passphrase).stat().st_mode & 0o777) == 0o600
    (tmp_path / "signer.pem").write_bytes(signer.private_pem)
    (tmp_path / "signer.pub.pem").write_bytes(signer.public_pem)
    (home / "strongroom.toml").write_text(
        f'keyring_passphrase_file = "{passphrase}"\n\n[[signers]]\nname = "team-a"\n'
        f'public_key_file = "{tmp_path / "signer.pub.pem"}"\nmodels = ["fraud*"]\n'
    )
    (tmp_path / "model.onnx").write_bytes(trained_model.onnx)
    return home


# --- Redis ---------------------------------------------------------------------------------------


@pytest.fixture
def shared_redis() -> Iterator[tuple[str, str]]:
    """The Redis at 127.0.0.1:6379 and a key prefix of this test alone (deleted afterwards)."""
    import redis

    from redis_harness import REDIS_URL

    try:
        with redis.Redis.from_url(REDIS_URL, socket_timeout=3, socket_connect_timeout=3) as client:
            client.ping()
    except (redis.RedisError, OSError) as exc:
        missing_resource(f"Redis at {REDIS_URL} ({type(exc).__name__})")
    prefix = f"strongroom-test:{secrets.token_hex(8)}:"
    yield REDIS_URL, prefix
    with redis.Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Any]:
    """A ``redis_harness.RedisProcess`` of this test alone, always killed afterwards."""
    import shutil

    from redis_harness import RedisProcess

    executable = shutil.which("redis-server")
    if executable is None:
        missing_resource("redis-server on PATH")
        raise AssertionError("unreachable")
    server = RedisProcess(executable, tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.kill()
