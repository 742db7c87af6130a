"""The BlobStore contract on every implementation: in-memory fake and local files."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.adapters.storage.local_fs import LocalBlobStore
from strongroom.core.registry.ports import BlobStore
from strongroom.testing.contracts.storage import BlobStoreContract
from strongroom.testing.fake_storage import InMemoryBlobStore


class TestInMemoryBlobStore(BlobStoreContract):
    @pytest.fixture
    def blob_store(self) -> BlobStore:
        return InMemoryBlobStore()


class TestLocalBlobStore(BlobStoreContract):
    @pytest.fixture
    def blob_store(self, tmp_path: Path) -> BlobStore:
        return LocalBlobStore(tmp_path / "blobs")
