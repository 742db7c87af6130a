"""The MetadataStore contract on every implementation: in-memory fake, SQLite, PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.adapters.storage.sql import SqlMetadataStore
from strongroom.core.registry.ports import MetadataStore
from strongroom.testing.contracts.storage import MetadataStoreContract
from strongroom.testing.fake_storage import InMemoryMetadataStore


class TestInMemoryMetadataStore(MetadataStoreContract):
    @pytest.fixture
    def metadata_store(self) -> MetadataStore:
        return InMemoryMetadataStore()


class TestSqliteMetadataStore(MetadataStoreContract):
    @pytest.fixture
    def metadata_store(self, tmp_path: Path) -> Iterator[MetadataStore]:
        store = SqlMetadataStore(f"sqlite:///{tmp_path / 'registry.db'}")
        store.migrate()
        yield store
        store.close()


@pytest.mark.postgres
class TestPostgresMetadataStore(MetadataStoreContract):
    @pytest.fixture
    def metadata_store(self, postgres_schema_url: str) -> Iterator[MetadataStore]:
        store = SqlMetadataStore(postgres_schema_url)
        store.migrate()
        yield store
        store.close()
