"""LocalKeyring: the file, its permissions, the passphrase, persistence and sharing one file.

The port semantics (wrap, unwrap, rotate, retire) are in tests/contract/test_key_providers.py.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from strongroom.adapters.kms.local_keyring import FORMAT_TAG, LocalKeyring
from strongroom.core.crypto.sealing import DEFAULT_SCRYPT_N, MIN_SCRYPT_N
from strongroom.errors import ConfigurationError, IntegrityError, InvalidInputError, KeyAccessError

CONTEXT = b"context"
START = datetime(2026, 5, 9, 7, 0, 0, 123456, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def passphrase() -> bytes:
    return b"unit-test-passphrase-" + os.urandom(6).hex().encode()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "keyring.json"


def create(path: Path, passphrase: bytes, **options: Any) -> LocalKeyring:
    options.setdefault("scrypt_n", MIN_SCRYPT_N)
    return LocalKeyring.create(path, passphrase, clock=Clock(), random_bytes=os.urandom, **options)


def reopen(path: Path, passphrase: bytes, **options: Any) -> LocalKeyring:
    return LocalKeyring.open(path, passphrase, clock=Clock(), random_bytes=os.urandom, **options)


@pytest.fixture
def keyring(path: Path, passphrase: bytes) -> LocalKeyring:
    return create(path, passphrase)


def read_document(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return document


def write_document(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document), "utf-8")


# --- the file -----------------------------------------------------------------------------------


def test_created_file_is_private_and_self_describing(keyring: LocalKeyring, path: Path) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = read_document(path)
    assert document["format"] == FORMAT_TAG
    assert document["key_name"] == "default"
    assert document["kdf"] | {"salt": None} == {
        "name": "scrypt", "n": MIN_SCRYPT_N, "r": 8, "p": 1, "salt": None,
    }  # fmt: skip
    assert len(base64.b64decode(document["kdf"]["salt"])) == 16
    assert keyring.key_id == "local:default"


def test_file_is_private_whatever_the_umask(tmp_path: Path, passphrase: bytes) -> None:
    previous = os.umask(0)
    try:
        create(tmp_path / "k.json", passphrase)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "k.json").stat().st_mode) == 0o600


def test_default_kdf_cost_is_recorded(path: Path, passphrase: bytes) -> None:
    create(path, passphrase, scrypt_n=DEFAULT_SCRYPT_N)
    assert read_document(path)["kdf"]["n"] == 2**15


def test_create_never_overwrites(path: Path, passphrase: bytes) -> None:
    path.write_bytes(b"precious")
    with pytest.raises(ConfigurationError):
        create(path, passphrase)
    assert path.read_bytes() == b"precious"


def test_create_over_an_existing_keyring_keeps_it(keyring: LocalKeyring, path: Path) -> None:
    before = path.read_bytes()
    with pytest.raises(ConfigurationError):
        create(path, b"another-passphrase-123")
    assert path.read_bytes() == before


def test_no_temporaries_are_left(keyring: LocalKeyring, path: Path) -> None:
    keyring.rotate()
    keyring.set_min_decryption_version(2)
    assert sorted(p.name for p in path.parent.iterdir()) == ["keyring.json", "keyring.json.lock"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o610])
def test_a_keyring_open_to_others_is_refused(
    keyring: LocalKeyring, path: Path, passphrase: bytes, mode: int
) -> None:
    path.chmod(mode)
    with pytest.raises(ConfigurationError) as caught:
        reopen(path, passphrase)
    assert caught.value.hint == f"chmod 600 {path}"


def test_missing_file(path: Path, passphrase: bytes) -> None:
    with pytest.raises(ConfigurationError):
        reopen(path, passphrase)


@pytest.mark.parametrize(
    "content", [b"", b"not json", b"[]", b'{"format": "other"}', b"\xff\xfe", b'"x"']
)
def test_not_a_keyring(path: Path, passphrase: bytes, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(ConfigurationError):
        reopen(path, passphrase)


# --- passphrase and KDF -------------------------------------------------------------------------


def test_wrong_passphrase(keyring: LocalKeyring, path: Path) -> None:
    with pytest.raises(KeyAccessError):
        reopen(path, b"wrong-passphrase-0000")


@pytest.mark.parametrize("weak", [b"", b"short", b"x" * 11])
def test_short_passphrases_are_refused(path: Path, weak: bytes) -> None:
    with pytest.raises(ConfigurationError):
        create(path, weak)
    assert not path.exists()


def test_short_passphrase_on_open(keyring: LocalKeyring, path: Path) -> None:
    with pytest.raises(ConfigurationError):
        reopen(path, b"")


@pytest.mark.parametrize("n", [2**13, 2**10, 3 * 2**13, 2**21])
def test_kdf_cost_outside_the_bounds_is_refused_on_create(
    path: Path, passphrase: bytes, n: int
) -> None:
    with pytest.raises(ConfigurationError):
        create(path, passphrase, scrypt_n=n)


@pytest.mark.parametrize(
    "kdf",
    [
        {"n": 2**13},
        {"n": 1},
        {"r": 1},
        {"p": 0},
        {"n": "16384"},
        {"n": True},
        {"salt": "c2hvcnQ="},
        {"salt": "!!"},
        {"name": "pbkdf2"},
    ],
)
def test_weak_or_malformed_kdf_in_the_file_is_refused(
    keyring: LocalKeyring, path: Path, passphrase: bytes, kdf: dict[str, Any]
) -> None:
    document = read_document(path)
    document["kdf"].update(kdf)
    write_document(path, document)
    with pytest.raises(ConfigurationError):
        reopen(path, passphrase)


def test_kdf_parameters_are_bound_to_the_sealed_blob(
    keyring: LocalKeyring, path: Path, passphrase: bytes
) -> None:
    """A stronger but different cost in the file does not open (it is in the AAD)."""
    document = read_document(path)
    document["kdf"]["p"] = 2
    write_document(path, document)
    with pytest.raises(KeyAccessError):
        reopen(path, passphrase)


def test_tampered_sealed_blob(keyring: LocalKeyring, path: Path, passphrase: bytes) -> None:
    document = read_document(path)
    sealed = bytearray(base64.b64decode(document["sealed"]))
    sealed[len(sealed) // 2] ^= 1
    document["sealed"] = base64.b64encode(bytes(sealed)).decode()
    write_document(path, document)
    with pytest.raises(KeyAccessError):
        reopen(path, passphrase)


def test_key_name(tmp_path: Path, passphrase: bytes) -> None:
    named = create(tmp_path / "k.json", passphrase, key_name="payments")
    assert named.key_id == "local:payments"
    with pytest.raises(ConfigurationError):
        reopen(tmp_path / "k.json", passphrase)
    assert reopen(tmp_path / "k.json", passphrase, key_name="payments").key_id == named.key_id


@pytest.mark.parametrize("name", ["", "Upper", "a/b", "-x", "x" * 65, "spa ce"])
def test_invalid_key_names(path: Path, passphrase: bytes, name: str) -> None:
    with pytest.raises(ConfigurationError):
        create(path, passphrase, key_name=name)


def test_a_naive_clock_is_refused(path: Path, passphrase: bytes) -> None:
    with pytest.raises(ValueError, match="aware"):
        LocalKeyring.create(
            path,
            passphrase,
            clock=lambda: datetime(2026, 1, 1),  # noqa: DTZ001 - the point of the test
            random_bytes=os.urandom,
            scrypt_n=MIN_SCRYPT_N,
        )


# --- persistence --------------------------------------------------------------------------------


def test_keys_survive_reopening(keyring: LocalKeyring, path: Path, passphrase: bytes) -> None:
    key = os.urandom(32)
    wrapped = keyring.wrap(key, CONTEXT)
    assert reopen(path, passphrase).unwrap(wrapped, CONTEXT) == key


def test_rotation_and_retirement_persist(
    keyring: LocalKeyring, path: Path, passphrase: bytes
) -> None:
    old = keyring.wrap(os.urandom(32), CONTEXT)
    keyring.rotate()
    keyring.set_min_decryption_version(2)
    again = reopen(path, passphrase)
    assert again.current_version() == 2
    assert again.versions() == keyring.versions()
    assert [v.retired for v in again.versions()] == [True, False]
    with pytest.raises(KeyAccessError):
        again.unwrap(old, CONTEXT)


def test_creation_times_come_from_the_clock(path: Path, passphrase: bytes) -> None:
    clock = Clock()
    keyring = LocalKeyring.create(
        path, passphrase, clock=clock, random_bytes=os.urandom, scrypt_n=MIN_SCRYPT_N
    )
    keyring.rotate()
    times = [v.created_at for v in reopen(path, passphrase).versions()]
    assert times == [START + timedelta(minutes=1), START + timedelta(minutes=2)]
    assert all(t.tzinfo == UTC for t in times)


def test_other_time_zones_are_stored_as_utc(path: Path, passphrase: bytes) -> None:
    moment = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    LocalKeyring.create(
        path, passphrase, clock=lambda: moment, random_bytes=os.urandom, scrypt_n=MIN_SCRYPT_N
    )
    (info,) = reopen(path, passphrase).versions()
    assert info.created_at == moment
    assert info.created_at.utcoffset() == timedelta(0)


def test_retiring_twice_or_lower_does_not_rewrite(keyring: LocalKeyring, path: Path) -> None:
    keyring.rotate()
    keyring.set_min_decryption_version(2)
    before = path.read_bytes()
    keyring.set_min_decryption_version(2)
    keyring.set_min_decryption_version(1)
    assert path.read_bytes() == before


def test_refused_minimum_does_not_touch_the_file(keyring: LocalKeyring, path: Path) -> None:
    before = path.read_bytes()
    with pytest.raises(InvalidInputError):
        keyring.set_min_decryption_version(2)
    assert path.read_bytes() == before


# --- sharing one file ---------------------------------------------------------------------------


def test_two_processes_never_lose_a_version(
    keyring: LocalKeyring, path: Path, passphrase: bytes
) -> None:
    """Two open handles stand for two processes: each rotation re-reads the file first."""
    other = reopen(path, passphrase)
    key = os.urandom(32)
    keyring.rotate()
    wrapped = keyring.wrap(key, CONTEXT)
    assert (wrapped.version, other.current_version()) == (2, 2)
    assert other.rotate().version == 3
    assert keyring.current_version() == 3
    assert reopen(path, passphrase).unwrap(wrapped, CONTEXT) == key
    assert other.unwrap(wrapped, CONTEXT) == key


def test_retirement_is_seen_by_other_handles(
    keyring: LocalKeyring, path: Path, passphrase: bytes
) -> None:
    other = reopen(path, passphrase)
    old = other.wrap(os.urandom(32), CONTEXT)
    keyring.rotate()
    keyring.set_min_decryption_version(2)
    with pytest.raises(KeyAccessError):
        other.unwrap(old, CONTEXT)


def test_a_replaced_keyring_is_refused_by_open_handles(
    keyring: LocalKeyring, path: Path, passphrase: bytes, tmp_path: Path
) -> None:
    create(tmp_path / "new.json", passphrase)
    (tmp_path / "new.json").replace(path)
    with pytest.raises(KeyAccessError):
        keyring.current_version()


def test_unwrap_refuses_altered_key_with_integrity_error(keyring: LocalKeyring) -> None:
    wrapped = keyring.wrap(os.urandom(32), CONTEXT)
    with pytest.raises(IntegrityError):
        keyring.unwrap(wrapped, CONTEXT + b"!")
