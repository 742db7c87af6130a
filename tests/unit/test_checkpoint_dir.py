"""DirectoryCheckpointSink beyond the contract: layout, permissions, atomicity, refusals."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.adapters.storage.checkpoint_dir import DirectoryCheckpointSink
from strongroom.core.audit.checkpoint import open_checkpoint
from strongroom.core.audit.ports import checkpoint_size
from strongroom.core.crypto.notes import NoteSigner
from strongroom.errors import ConfigurationError, IntegrityError, StorageError
from strongroom.testing.contracts.audit import ORIGIN, checkpoint_text


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN, os.urandom)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_one_private_file_per_checkpoint_named_by_padded_size(
    tmp_path: Path, signer: NoteSigner
) -> None:
    sink = DirectoryCheckpointSink(tmp_path / "a" / "external")
    text = checkpoint_text(42, signer)
    sink.publish(text)
    assert mode(sink.root) == 0o700
    files = sorted(sink.root.iterdir())
    assert [f.name for f in files] == ["0000000000000042"]
    assert mode(files[0]) == 0o600
    assert files[0].read_text(encoding="utf-8") == text
    assert open_checkpoint(sink.latest() or "", [signer.verifier]).size == 42


def test_name_order_is_size_order_beyond_one_digit(tmp_path: Path, signer: NoteSigner) -> None:
    sink = DirectoryCheckpointSink(tmp_path)
    for size in (10, 9, 100):
        sink.publish(checkpoint_text(size, signer))
    sizes = [open_checkpoint(t, [signer.verifier]).size for t in sink.checkpoints()]
    assert sizes == [9, 10, 100]


def test_a_fork_leaves_the_kept_file_and_no_temporary(tmp_path: Path, signer: NoteSigner) -> None:
    sink = DirectoryCheckpointSink(tmp_path)
    first = checkpoint_text(3, signer)
    sink.publish(first)
    with pytest.raises(IntegrityError):
        sink.publish(checkpoint_text(3, signer, salt=b"\x02"))
    assert [p.name for p in tmp_path.iterdir()] == ["0000000000000003"]
    assert sink.checkpoints() == [first]


def test_a_longer_file_of_the_same_size_is_a_fork(tmp_path: Path, signer: NoteSigner) -> None:
    sink = DirectoryCheckpointSink(tmp_path)
    text = checkpoint_text(3, signer)
    (tmp_path / "0000000000000003").write_text(text + "— witness AAAA\n", encoding="utf-8")
    with pytest.raises(IntegrityError):
        sink.publish(text)


def test_foreign_and_temporary_files_are_ignored(tmp_path: Path, signer: NoteSigner) -> None:
    sink = DirectoryCheckpointSink(tmp_path)
    (tmp_path / ".tmp-0000000000000001-abc").write_text("partial", encoding="utf-8")
    (tmp_path / "README").write_text("hello", encoding="utf-8")
    (tmp_path / "12").write_text("short name", encoding="utf-8")
    assert sink.checkpoints() == []
    text = checkpoint_text(1, signer)
    sink.publish(text)
    assert sink.checkpoints() == [text]


def test_a_damaged_file_is_returned_for_verification_to_refuse(tmp_path: Path) -> None:
    sink = DirectoryCheckpointSink(tmp_path)
    (tmp_path / "0000000000000005").write_bytes(b"origin\n5\n\xff\xfe\n")
    (listed,) = sink.checkpoints()
    assert "\udcff" in listed  # the bad bytes survive as lone surrogates: not valid UTF-8
    with pytest.raises(UnicodeEncodeError):
        listed.encode("utf-8")


def test_a_shared_writable_or_non_directory_root_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigurationError, match="writable"):
        DirectoryCheckpointSink(shared)
    not_dir = tmp_path / "file"
    not_dir.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not a directory"):
        DirectoryCheckpointSink(not_dir)


def test_a_vanished_directory_is_a_storage_error(tmp_path: Path, signer: NoteSigner) -> None:
    sink = DirectoryCheckpointSink(tmp_path / "external")
    sink.root.rmdir()
    with pytest.raises(StorageError):
        sink.checkpoints()
    with pytest.raises(StorageError):
        sink.publish(checkpoint_text(1, signer))


# --- the size line that names a kept file -----------------------------------------------------


@given(st.text(max_size=200))
def test_checkpoint_size_reads_only_a_canonical_second_line(text: str) -> None:
    lines = text.split("\n", 2)
    try:
        size = checkpoint_size(text)
    except ValueError:
        assert len(lines) < 3 or not re.fullmatch(r"0|[1-9][0-9]{0,15}", lines[1])
    else:
        assert len(lines) == 3
        assert str(size) == lines[1]


@given(st.integers(min_value=0, max_value=2**53 - 1), st.text(alphabet="ab/.", min_size=1))
def test_checkpoint_size_round_trips(size: int, origin: str) -> None:
    assert checkpoint_size(f"{origin}\n{size}\nROOT=\n\n— sig\n") == size
