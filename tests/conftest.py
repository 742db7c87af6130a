"""Shared fixtures.

Tests that need an external resource (PostgreSQL, ``../shared/vectors``) *skip* on a developer
machine that lacks it but *fail* under CI (``CI=true``): a skipped conformance test is not a
passing one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
VECTORS_DIR = Path(os.environ.get("STRONGROOM_VECTORS_DIR", REPO_ROOT.parent / "shared" / "vectors"))
POSTGRES_URL = os.environ.get("STRONGROOM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


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
        import psycopg  # noqa: PLC0415 - optional extra, imported only when needed

        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        missing_resource(f"PostgreSQL at {POSTGRES_URL} ({type(exc).__name__})")
    return POSTGRES_URL


@pytest.fixture
def postgres_schema_url(postgres_server_url: str) -> Iterator[str]:
    """A SQLAlchemy URL whose connections use a fresh, private schema, dropped afterwards."""
    import psycopg  # noqa: PLC0415

    schema = f"sr_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = postgres_server_url.replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
