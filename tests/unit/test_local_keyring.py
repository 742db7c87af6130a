"""LocalKeyring: the file, its permissions, the passphrase, persistence and sharing one file,
retirement as erasure of key material, and reading v1 files.

The port semantics (wrap, unwrap, rotate, retire) are in tests/contract/test_key_providers.py.
v1 files are written here from the format page (docs/formats/keyring-v1.md), independently of
the module, with keys generated at test time.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.adapters.kms.local_keyring import (
    FORMAT_TAG,
    LEGACY_FORMAT_TAG,
    LocalKeyring,
    _parse_payload,
)
from strongroom.core.crypto.keys import WrappedKey
from strongroom.core.crypto.sealing import (
    DEFAULT_SCRYPT_N,
    MIN_SCRYPT_N,
    ScryptParams,
    SealingKey,
    key_wrap_aad,
)
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


# --- retirement erases key material -------------------------------------------------------------


def seal_domain(format_tag: str) -> bytes:
    version = "v1" if format_tag == LEGACY_FORMAT_TAG else "v2"
    return f"strongroom/keyring/{version}".encode() + b"\x00"


def sealing_of(path: Path, passphrase: bytes) -> tuple[SealingKey, dict[str, Any]]:
    document = read_document(path)
    kdf = document["kdf"]
    params = ScryptParams(salt=base64.b64decode(kdf["salt"]), n=kdf["n"], r=kdf["r"], p=kdf["p"])
    return SealingKey.from_passphrase(passphrase, params), document


def seal_aad(format_tag: str, document: dict[str, Any]) -> bytes:
    header = {"format": format_tag, "kdf": document["kdf"], "key_name": document["key_name"]}
    return seal_domain(format_tag) + rfc8785.dumps(header)


def decrypt_payload(path: Path, passphrase: bytes) -> dict[str, Any]:
    """The sealed payload, opened through the keyring's own open path."""
    reader = reopen(path, passphrase)
    payload: dict[str, Any] = json.loads(reader._open_sealed(read_document(path)))
    return payload


def write_sealed(
    path: Path, passphrase: bytes, payload: dict[str, Any], format_tag: str = FORMAT_TAG
) -> None:
    """Seal ``payload`` into ``path`` as the format page says (what an editor with the
    passphrase could do)."""
    sealing, document = sealing_of(path, passphrase)
    document["format"] = format_tag
    sealed = sealing.seal(
        rfc8785.dumps(payload), aad=seal_aad(format_tag, document), random_bytes=os.urandom
    )
    document["sealed"] = base64.b64encode(sealed).decode()
    write_document(path, document)


def test_retiring_erases_the_key_from_the_sealed_file(
    keyring: LocalKeyring, path: Path, passphrase: bytes
) -> None:
    keyring.rotate()
    keyring.rotate()
    before = decrypt_payload(path, passphrase)
    old_keys = [base64.b64decode(entry["key"]) for entry in before["versions"][:2]]
    keyring.set_min_decryption_version(3)
    after = decrypt_payload(path, passphrase)
    assert after["min_decryption_version"] == 3
    assert [sorted(entry) for entry in after["versions"]] == [
        ["created_at", "retired_at", "version"],
        ["created_at", "retired_at", "version"],
        ["created_at", "key", "version"],
    ]
    assert [e["created_at"] for e in after["versions"]] == [
        e["created_at"] for e in before["versions"]
    ]
    text = json.dumps(after).encode()
    for old in old_keys:
        assert old not in text
        assert base64.b64encode(old) not in text
    assert after["versions"][2]["key"] == before["versions"][2]["key"]


def test_retired_at_comes_from_the_clock_and_is_kept(path: Path, passphrase: bytes) -> None:
    clock = Clock()
    keyring = LocalKeyring.create(
        path, passphrase, clock=clock, random_bytes=os.urandom, scrypt_n=MIN_SCRYPT_N
    )
    keyring.rotate()
    keyring.set_min_decryption_version(2)
    retired_at = START + timedelta(minutes=3)
    assert decrypt_payload(path, passphrase)["versions"][0]["retired_at"] == (
        retired_at.isoformat().replace("+00:00", "Z")
    )
    keyring.rotate()
    keyring.set_min_decryption_version(3)
    versions = decrypt_payload(path, passphrase)["versions"]
    assert versions[0]["retired_at"] == retired_at.isoformat().replace("+00:00", "Z")
    assert versions[1]["retired_at"] != versions[0]["retired_at"]


def test_an_edited_file_cannot_bring_a_retired_version_back(
    keyring: LocalKeyring, path: Path, passphrase: bytes
) -> None:
    """Even with the passphrase, lowering the minimum leaves a version with no key: refused."""
    keyring.rotate()
    keyring.set_min_decryption_version(2)
    payload = decrypt_payload(path, passphrase)
    payload["min_decryption_version"] = 1
    write_sealed(path, passphrase, payload)
    with pytest.raises(IntegrityError):
        reopen(path, passphrase)


@pytest.mark.parametrize(
    "edit",
    [
        lambda entries: entries[0].update(key=base64.b64encode(b"k" * 32).decode()),
        lambda entries: entries[0].pop("retired_at"),
        lambda entries: entries[1].update(retired_at=entries[1]["created_at"]),
        lambda entries: entries[0].update(retired_at="yesterday"),
        lambda entries: entries[0].update(retired_at="2026-01-01T00:00:00"),
    ],
)
def test_retired_and_live_entries_are_parsed_strictly(
    keyring: LocalKeyring, path: Path, passphrase: bytes, edit: Any
) -> None:
    keyring.rotate()
    keyring.set_min_decryption_version(2)
    payload = decrypt_payload(path, passphrase)
    edit(payload["versions"])
    write_sealed(path, passphrase, payload)
    with pytest.raises(IntegrityError):
        reopen(path, passphrase)


# --- reading v1 files ---------------------------------------------------------------------------


def write_v1_keyring(path: Path, passphrase: bytes, keys: list[bytes], minimum: int) -> None:
    """A v1 keyring as v1 wrote it: every version keeps its key, retired or not."""
    create(path, passphrase)  # for the KDF parameters and a private file
    created = "2026-01-01T00:00:00Z"
    versions = [
        {"version": v, "key": base64.b64encode(k).decode(), "created_at": created}
        for v, k in enumerate(keys, start=1)
    ]
    payload = {"min_decryption_version": minimum, "versions": versions}
    write_sealed(path, passphrase, payload, LEGACY_FORMAT_TAG)


def wrap_with(kek: bytes, version: int, key: bytes) -> WrappedKey:
    aad = key_wrap_aad("local:default", version, CONTEXT)
    return WrappedKey(
        "local:default", version, SealingKey(kek).seal(key, aad=aad, random_bytes=os.urandom)
    )


@pytest.fixture
def v1_keys(path: Path, passphrase: bytes) -> list[bytes]:
    keys = [os.urandom(32) for _ in range(3)]
    write_v1_keyring(path, passphrase, keys, minimum=2)
    return keys


def test_v1_file_opens_without_its_retired_keys(
    v1_keys: list[bytes], path: Path, passphrase: bytes
) -> None:
    before = path.read_bytes()
    keyring = reopen(path, passphrase)
    assert [(v.version, v.retired) for v in keyring.versions()] == [
        (1, True), (2, False), (3, False),
    ]  # fmt: skip
    data_key = os.urandom(32)
    assert keyring.unwrap(wrap_with(v1_keys[1], 2, data_key), CONTEXT) == data_key
    with pytest.raises(KeyAccessError):
        keyring.unwrap(wrap_with(v1_keys[0], 1, data_key), CONTEXT)
    keyring._state = dataclasses.replace(keyring._state, min_decryption_version=1)
    with pytest.raises(KeyAccessError):
        keyring.unwrap(wrap_with(v1_keys[0], 1, data_key), CONTEXT)
    assert path.read_bytes() == before  # reading never writes


@pytest.mark.parametrize("write", ["rotate", "retire again", "retire further"])
def test_the_next_write_upgrades_a_v1_file_and_erases_retired_keys(
    v1_keys: list[bytes], path: Path, passphrase: bytes, write: str
) -> None:
    keyring = reopen(path, passphrase)
    wrapped = wrap_with(v1_keys[2], 3, data_key := os.urandom(32))
    if write == "rotate":
        keyring.rotate()
    else:
        keyring.set_min_decryption_version(2 if write == "retire again" else 3)
    assert read_document(path)["format"] == FORMAT_TAG == "strongroom-keyring-v2"
    payload = decrypt_payload(path, passphrase)
    retired = 3 if write == "retire further" else 2
    text = json.dumps(payload).encode()
    for version, key in enumerate(v1_keys, start=1):
        assert (base64.b64encode(key) in text) is (version >= retired)
        assert ("key" in payload["versions"][version - 1]) is (version >= retired)
    assert all("retired_at" in e for e in payload["versions"][: retired - 1])
    assert reopen(path, passphrase).unwrap(wrapped, CONTEXT) == data_key


def test_a_v2_file_relabelled_v1_does_not_open(
    keyring: LocalKeyring, path: Path, passphrase: bytes
) -> None:
    """The format tag is in the sealing AAD: no downgrade by editing the label."""
    document = read_document(path)
    document["format"] = LEGACY_FORMAT_TAG
    write_document(path, document)
    with pytest.raises(KeyAccessError):
        reopen(path, passphrase)


def test_a_v1_payload_labelled_v2_is_refused(path: Path, passphrase: bytes) -> None:
    """A v2 reader never accepts retained keys below the minimum."""
    write_v1_keyring(path, passphrase, [os.urandom(32), os.urandom(32)], minimum=2)
    sealing, document = sealing_of(path, passphrase)
    sealed = base64.b64decode(document["sealed"])
    payload = json.loads(sealing.open(sealed, aad=seal_aad(LEGACY_FORMAT_TAG, document)))
    assert all("key" in entry for entry in payload["versions"])
    write_sealed(path, passphrase, payload, FORMAT_TAG)
    with pytest.raises(IntegrityError):
        reopen(path, passphrase)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(
        _JSON,
        st.fixed_dictionaries(
            {"min_decryption_version": _JSON, "versions": st.lists(_JSON, max_size=4)}
        ),
    ),
    legacy=st.booleans(),
)
def test_payload_parser_only_ever_raises_integrity_error(body: Any, legacy: bool) -> None:
    try:
        state = _parse_payload(json.dumps(body).encode(), legacy=legacy)
    except IntegrityError:
        return
    assert 1 <= state.min_decryption_version <= state.current


@given(raw=st.binary(max_size=64))
def test_payload_parser_refuses_arbitrary_bytes(raw: bytes) -> None:
    try:
        _parse_payload(raw, legacy=False)
    except IntegrityError:
        return
    pytest.fail("arbitrary bytes parsed as a keyring payload")
