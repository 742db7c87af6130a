"""LocalBlobStore beyond the contract: layout, permissions, temporaries and crash safety."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.adapters.storage.local_fs import TEMP_PREFIX, LocalBlobStore
from strongroom.errors import ConfigurationError, StorageError
from strongroom.testing.contracts.storage import blob_id_for, failing_chunks

BLOB = blob_id_for("local")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def temporaries(root: Path) -> list[Path]:
    return sorted(root.glob(f"*/{TEMP_PREFIX}*"))


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_root_is_created_private(tmp_path: Path, permissive_umask: None) -> None:
    root = tmp_path / "a" / "b" / "blobs"
    LocalBlobStore(root)
    assert root.is_dir()
    assert mode(root) == 0o700


@pytest.mark.parametrize("shared", [0o770, 0o702, 0o777])
def test_shared_writable_root_is_refused(tmp_path: Path, shared: int) -> None:
    root = tmp_path / "blobs"
    root.mkdir()
    root.chmod(shared)
    with pytest.raises(ConfigurationError):
        LocalBlobStore(root)


def test_existing_private_root_is_accepted(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    root.mkdir(mode=0o750)
    root.chmod(0o750)
    assert LocalBlobStore(root).root == root


def test_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    root.write_bytes(b"")
    with pytest.raises(ConfigurationError):
        LocalBlobStore(root)


def test_layout_and_permissions(store: LocalBlobStore, permissive_umask: None) -> None:
    store.put(BLOB, [b"sealed envelope"])
    path = store.root / BLOB[:2] / BLOB
    assert path.read_bytes() == b"sealed envelope"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert sorted(p.name for p in store.root.iterdir()) == [BLOB[:2]]


def test_put_writes_a_private_temporary_then_renames(store: LocalBlobStore) -> None:
    seen: list[tuple[str, int]] = []

    def chunks() -> Iterator[bytes]:
        yield b"first"
        seen.extend((p.name, mode(p)) for p in temporaries(store.root))
        assert not (store.root / BLOB[:2] / BLOB).exists()
        yield b"second"

    assert store.put(BLOB, chunks()) == len(b"firstsecond")
    assert len(seen) == 1
    assert seen[0][0].startswith(TEMP_PREFIX)
    assert seen[0][1] == 0o600
    assert temporaries(store.root) == []


def test_interrupted_write_leaves_no_blob_and_no_temporary(store: LocalBlobStore) -> None:
    with pytest.raises(StorageError):
        store.put(BLOB, failing_chunks(RuntimeError("producer died"), head=b"x" * 100_000))
    assert not store.exists(BLOB)
    assert temporaries(store.root) == []
    assert store.list_ids() == []


def test_interrupted_write_keeps_the_old_blob(store: LocalBlobStore) -> None:
    store.put(BLOB, [b"old"])
    with pytest.raises(KeyboardInterrupt):
        store.put(BLOB, failing_chunks(KeyboardInterrupt()))
    with pytest.raises(StorageError):
        store.put(BLOB, failing_chunks(RuntimeError("producer died")))
    assert (store.root / BLOB[:2] / BLOB).read_bytes() == b"old"
    assert temporaries(store.root) == []


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_disk_errors_are_storage_errors(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    store.put(BLOB, [b"old"])

    def broken(*args: object) -> None:
        raise OSError("I/O error")

    if failing == "fsync":
        monkeypatch.setattr(os, "fsync", broken)
    else:
        monkeypatch.setattr(Path, "replace", broken)
    with pytest.raises(StorageError):
        store.put(BLOB, [b"new"])
    monkeypatch.undo()
    assert (store.root / BLOB[:2] / BLOB).read_bytes() == b"old"
    assert temporaries(store.root) == []


def test_stale_temporaries_are_removed_and_counted(store: LocalBlobStore) -> None:
    store.put(BLOB, [b"kept"])
    other = blob_id_for("other")
    (store.root / other[:2]).mkdir(exist_ok=True)
    stale = [
        store.root / BLOB[:2] / f"{TEMP_PREFIX}{BLOB}-dead",
        store.root / other[:2] / f"{TEMP_PREFIX}{other}-dead",
    ]
    for path in stale:
        path.write_bytes(b"half a blob")
    assert store.list_ids() == [BLOB]
    assert store.remove_stale_temporaries() == len(stale)
    assert temporaries(store.root) == []
    assert store.list_ids() == [BLOB]
    assert store.remove_stale_temporaries() == 0


def test_list_ids_ignores_foreign_files(store: LocalBlobStore) -> None:
    store.put(BLOB, [b"real"])
    misplaced = blob_id_for("misplaced")
    wrong_dir = "00" if misplaced[:2] != "00" else "11"
    (store.root / wrong_dir).mkdir(exist_ok=True)
    (store.root / wrong_dir / misplaced).write_bytes(b"")
    (store.root / "notes.txt").write_bytes(b"")
    (store.root / "zz").mkdir()
    (store.root / "zz" / ("z" * 32)).write_bytes(b"")
    (store.root / BLOB[:2] / "README").write_bytes(b"")
    linked = blob_id_for("link")
    (store.root / linked[:2]).mkdir(exist_ok=True)
    (store.root / linked[:2] / linked).symlink_to(store.root / BLOB[:2] / BLOB)
    assert store.list_ids() == [BLOB]


def test_opened_file_is_closed_after_use(store: LocalBlobStore) -> None:
    store.put(BLOB, [b"abc"])
    with store.open(BLOB) as source:
        assert source.read() == b"abc"
    assert source.closed


def test_temporaries_are_counted_and_removed_only_when_old(tmp_path):
    import os
    from datetime import UTC, datetime, timedelta

    from strongroom.adapters.storage.local_fs import TEMP_PREFIX, LocalBlobStore

    store = LocalBlobStore(tmp_path / "blobs")
    store.put("ab" * 16, [b"x"])
    crashed = tmp_path / "blobs" / "ab" / f"{TEMP_PREFIX}{'ab' * 16}-dead"
    crashed.write_bytes(b"half-written envelope")
    assert store.count_temporaries() == 1
    assert store.list_ids() == ["ab" * 16]

    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    assert store.remove_stale_temporaries(older_than=an_hour_ago) == 0, "fresh: maybe in flight"
    assert crashed.exists()
    old = (an_hour_ago - timedelta(minutes=5)).timestamp()
    os.utime(crashed, (old, old))
    assert store.remove_stale_temporaries(older_than=an_hour_ago) == 1
    assert not crashed.exists()
    assert store.count_temporaries() == 0
