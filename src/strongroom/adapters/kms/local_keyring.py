"""``LocalKeyring``: KEK versions sealed in one file under an operator passphrase.

The embedded default ``KeyProvider`` (format: ``docs/formats/keyring-v1.md``, which specifies v2
and how v1 is read). The file is JSON: a format tag, the scrypt parameters and one AES-256-GCM
sealed blob holding every KEK version and the minimum decryption version; the AAD binds the tag,
key name and KDF parameters.

Invariants:

* Retiring a version *erases* its key material: the sealed payload keeps only its number,
  ``created_at`` and ``retired_at``, so numbering stays monotonic and versions stay listed, but
  the current file and passphrase no longer hold the retired key (crypto-shredding; older copies
  of the file still do, see the format page). A v1 file, which kept retired keys, is accepted;
  its retired keys are dropped from memory when read and from the file at the next write.
* The file is only ever replaced atomically (temporary file in the same directory, fsync,
  ``os.replace``, fsync of the directory) and is created ``0600`` by ``os.open``; a keyring
  readable by group or others is refused. ``create`` never overwrites an existing file.
* Changes (``rotate``, ``set_min_decryption_version``) re-read the file under an exclusive
  ``flock`` on ``<file>.lock``, so several processes sharing one keyring never lose a version;
  every operation notices a newer file (inode change) and reloads it before use.
* A wrong passphrase and a tampered sealed blob are indistinguishable: ``KeyAccessError``.
  Unknown or retired versions and a foreign key id: ``KeyAccessError``; a wrapped key that does
  not open: ``IntegrityError``. KDF parameters below the floor: ``ConfigurationError``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import rfc8785

from strongroom.adapters.kms.keyring_file import (
    atomic_write,
    exclusive_lock,
    file_stamp,
    read_private_file,
)
from strongroom.core.crypto.keys import DATA_KEY_BYTES, KeyVersionInfo, WrappedKey
from strongroom.core.crypto.sealing import (
    DEFAULT_SCRYPT_N,
    ScryptParams,
    SealingKey,
    check_passphrase,
    key_wrap_aad,
)
from strongroom.core.types import Clock, RandomBytes
from strongroom.errors import (
    ConfigurationError,
    IntegrityError,
    InvalidInputError,
    KeyAccessError,
)

FORMAT_TAG: Final = "strongroom-keyring-v2"
LEGACY_FORMAT_TAG: Final = "strongroom-keyring-v1"
"""Still read (retired keys are dropped on reading), never written."""
KEY_ID_PREFIX: Final = "local:"
MAX_FILE_BYTES: Final = 1024 * 1024
_SEAL_DOMAINS: Final = MappingProxyType(
    {FORMAT_TAG: b"strongroom/keyring/v2\x00", LEGACY_FORMAT_TAG: b"strongroom/keyring/v1\x00"}
)
_KEY_NAME_RE: Final = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
_DOCUMENT_KEYS: Final = frozenset({"format", "key_name", "kdf", "sealed"})
_KDF_KEYS: Final = frozenset({"name", "n", "r", "p", "salt"})
_ACTIVE_ENTRY: Final = frozenset({"version", "created_at", "key"})
_RETIRED_ENTRY: Final = frozenset({"version", "created_at", "retired_at"})


@dataclass(frozen=True, slots=True)
class _Version:
    """One KEK version; ``key`` is ``None`` once retired (erased, not merely hidden)."""

    created_at: datetime
    key: bytes | None = None
    retired_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class _State:
    """Decrypted keyring contents; ``keks`` caches one AES key schedule per *live* version.

    ``legacy`` marks contents read from a v1 file: the next change rewrites it as v2.
    """

    versions: Mapping[int, _Version]
    min_decryption_version: int
    legacy: bool = False
    keks: Mapping[int, SealingKey] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        keks = {v: SealingKey(e.key) for v, e in self.versions.items() if e.key is not None}
        object.__setattr__(self, "keks", keks)

    @property
    def current(self) -> int:
        return max(self.versions)

    def retire_below(self, minimum: int, moment: datetime) -> _State:
        """Erase the key of every version below ``minimum``; ``retired_at`` is set only once."""
        versions = {
            v: e if v >= minimum else _Version(e.created_at, retired_at=e.retired_at or moment)
            for v, e in self.versions.items()
        }
        return _State(versions, max(minimum, self.min_decryption_version))


class LocalKeyring:
    """Opening runs scrypt once (tens of milliseconds); wrap and unwrap then cost microseconds."""

    def __init__(
        self,
        path: Path,
        passphrase: bytes,
        *,
        clock: Clock,
        random_bytes: RandomBytes,
        key_name: str = "default",
    ) -> None:
        check_passphrase(passphrase)
        _check_key_name(key_name)
        raw, stamp = _read_file(path)
        params = _parse_params(raw, key_name)
        self._path = path
        self._key_name = key_name
        self._params = params
        self._sealing = SealingKey.from_passphrase(passphrase, params)
        self._clock = clock
        self._random = random_bytes
        self._lock = threading.Lock()
        self._state, self._stamp = self._unseal(raw), stamp

    @classmethod
    def open(
        cls,
        path: Path,
        passphrase: bytes,
        *,
        clock: Clock,
        random_bytes: RandomBytes,
        key_name: str = "default",
    ) -> LocalKeyring:
        return cls(path, passphrase, clock=clock, random_bytes=random_bytes, key_name=key_name)

    @classmethod
    def create(
        cls,
        path: Path,
        passphrase: bytes,
        *,
        clock: Clock,
        random_bytes: RandomBytes,
        key_name: str = "default",
        scrypt_n: int = DEFAULT_SCRYPT_N,
    ) -> LocalKeyring:
        """Write a new keyring with KEK version 1. ``ConfigurationError`` if ``path`` exists."""
        check_passphrase(passphrase)
        _check_key_name(key_name)
        if path.exists():
            raise ConfigurationError(
                f"a keyring already exists at {path}", hint="refusing to overwrite it"
            )
        params = ScryptParams.generate(random_bytes, n=scrypt_n)
        sealing = SealingKey.from_passphrase(passphrase, params)
        state = _State({1: _Version(_utc(clock()), key=random_bytes(DATA_KEY_BYTES))}, 1)
        document = _seal_document(state, key_name, params, sealing, random_bytes)
        atomic_write(path, document, random_bytes(8).hex(), replace=False)
        # Opening derives the key once more: create runs once per installation.
        return cls(path, passphrase, clock=clock, random_bytes=random_bytes, key_name=key_name)

    # --- KeyProvider ----------------------------------------------------------------------------

    @property
    def key_id(self) -> str:
        return KEY_ID_PREFIX + self._key_name

    def current_version(self) -> int:
        return self._fresh().current

    def wrap(self, data_key: bytes, context: bytes) -> WrappedKey:
        if len(data_key) != DATA_KEY_BYTES:
            raise InvalidInputError(f"data keys are {DATA_KEY_BYTES} bytes")
        state = self._fresh()
        version = state.current
        aad = key_wrap_aad(self.key_id, version, context)
        sealed = state.keks[version].seal(data_key, aad=aad, random_bytes=self._random)
        return WrappedKey(self.key_id, version, sealed)

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        state = self._fresh()
        kek = state.keks.get(wrapped.version) if wrapped.key_id == self.key_id else None
        if kek is None or wrapped.version < state.min_decryption_version:
            raise KeyAccessError
        return kek.open(wrapped.ciphertext, aad=key_wrap_aad(self.key_id, wrapped.version, context))

    def rotate(self) -> KeyVersionInfo:
        def add_version(state: _State) -> _State:
            moment = _utc(self._clock())
            # a no-op on v2 contents; stamps the retired versions of a v1 file being upgraded
            state = state.retire_below(state.min_decryption_version, moment)
            entry = _Version(moment, key=self._random(DATA_KEY_BYTES))
            return _State(
                {**state.versions, state.current + 1: entry}, state.min_decryption_version
            )

        state = self._change(add_version)
        return _info(self.key_id, state, state.current)

    def versions(self) -> list[KeyVersionInfo]:
        state = self._fresh()
        return [_info(self.key_id, state, version) for version in sorted(state.versions)]

    def set_min_decryption_version(self, version: int) -> None:
        """Retire versions below ``version``, erasing their keys from the file.

        A value at or below the current minimum changes nothing, except that it upgrades a v1
        file (re-running the last retirement is how an operator shreds a v1 file's old keys).
        """
        if type(version) is not int or version < 1:
            raise InvalidInputError("minimum decryption version must be a positive integer")

        def retire(state: _State) -> _State:
            if version > state.current:
                raise InvalidInputError(
                    f"cannot retire up to version {version}: current version is {state.current}"
                )
            if version <= state.min_decryption_version and not state.legacy:
                return state
            return state.retire_below(version, _utc(self._clock()))

        self._change(retire)

    # --- state and persistence ------------------------------------------------------------------

    def _fresh(self) -> _State:
        """The in-memory state, reloaded first if another process replaced the file."""
        try:
            stamp = file_stamp(self._path)
        except OSError:
            return self._state
        with self._lock:
            if stamp != self._stamp:
                raw, stamp = _read_file(self._path)
                self._state, self._stamp = self._unseal(raw), stamp
            return self._state

    def _change(self, change: Callable[[_State], _State]) -> _State:
        lock_path = self._path.with_name(self._path.name + ".lock")
        with self._lock, exclusive_lock(lock_path):
            raw, _ = _read_file(self._path)
            current = self._unseal(raw)
            state = change(current)
            if state is not current:
                self._write(state)
            self._state, self._stamp = state, file_stamp(self._path)
            return state

    def _unseal(self, raw: Mapping[str, Any]) -> _State:
        return _parse_payload(self._open_sealed(raw), legacy=raw["format"] == LEGACY_FORMAT_TAG)

    def _open_sealed(self, raw: Mapping[str, Any]) -> bytes:
        """The decrypted payload of a parsed keyring document (v1 or v2)."""
        if _parse_params(raw, self._key_name) != self._params:
            raise KeyAccessError("the keyring file was replaced by another keyring; reopen it")
        sealed = _b64(raw["sealed"], ConfigurationError("keyring sealed blob is not base64"))
        aad = _seal_aad(raw["format"], self._key_name, self._params)
        try:
            return self._sealing.open(sealed, aad=aad)
        except IntegrityError as exc:
            raise KeyAccessError("cannot open the keyring (wrong passphrase?)") from exc

    def _write(self, state: _State) -> None:
        document = _seal_document(state, self._key_name, self._params, self._sealing, self._random)
        atomic_write(self._path, document, self._random(8).hex(), replace=True)


def _seal_aad(format_tag: str, key_name: str, params: ScryptParams) -> bytes:
    """Binds the format tag, key name and KDF parameters to the sealed blob."""
    return _SEAL_DOMAINS[format_tag] + rfc8785.dumps(
        {"format": format_tag, "kdf": _kdf_json(params), "key_name": key_name}
    )


def _entry_json(version: int, entry: _Version) -> dict[str, Any]:
    """A live version carries its ``key``; a retired one only its ``retired_at``."""
    out: dict[str, Any] = {"version": version, "created_at": _iso(entry.created_at)}
    if entry.key is not None:
        out["key"] = base64.b64encode(entry.key).decode("ascii")
    elif entry.retired_at is not None:
        out["retired_at"] = _iso(entry.retired_at)
    else:  # every change goes through ``retire_below``, which stamps retired versions
        raise ValueError(f"retired keyring version {version} has no retirement time")
    return out


def _seal_document(
    state: _State,
    key_name: str,
    params: ScryptParams,
    sealing: SealingKey,
    random_bytes: RandomBytes,
) -> bytes:
    payload = rfc8785.dumps(
        {
            "min_decryption_version": state.min_decryption_version,
            "versions": [_entry_json(v, state.versions[v]) for v in sorted(state.versions)],
        }
    )
    aad = _seal_aad(FORMAT_TAG, key_name, params)
    sealed = sealing.seal(payload, aad=aad, random_bytes=random_bytes)
    document = {
        "format": FORMAT_TAG,
        "key_name": key_name,
        "kdf": _kdf_json(params),
        "sealed": base64.b64encode(sealed).decode("ascii"),
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


# --- file handling ------------------------------------------------------------------------------


def _read_file(path: Path) -> tuple[dict[str, Any], tuple[int, int, int]]:
    """Parse the keyring file after checking it is a private regular file."""
    data, stamp = read_private_file(path, MAX_FILE_BYTES, what="keyring")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"{path} is not a Strongroom keyring") from exc
    if not isinstance(document, dict) or document.get("format") not in _SEAL_DOMAINS:
        raise ConfigurationError(f"{path} is not a Strongroom keyring v1 or v2 file")
    if set(document) != _DOCUMENT_KEYS:
        raise ConfigurationError(f"the keyring {path} is malformed")
    return document, stamp


# --- parsing ------------------------------------------------------------------------------------


def _check_key_name(key_name: str) -> None:
    if not _KEY_NAME_RE.fullmatch(key_name):
        raise ConfigurationError(
            f"invalid keyring key name {key_name!r}",
            hint="use 1-64 lower-case letters, digits, '.', '_' or '-'",
        )


def _kdf_json(params: ScryptParams) -> dict[str, Any]:
    salt = base64.b64encode(params.salt).decode("ascii")
    return {"name": "scrypt", "n": params.n, "r": params.r, "p": params.p, "salt": salt}


def _parse_params(document: Mapping[str, Any], key_name: str) -> ScryptParams:
    if document["key_name"] != key_name:
        raise ConfigurationError(
            f"the keyring holds key {document['key_name']!r}, not {key_name!r}"
        )
    kdf = document["kdf"]
    if not isinstance(kdf, dict) or set(kdf) != _KDF_KEYS or kdf["name"] != "scrypt":
        raise ConfigurationError("the keyring KDF parameters are malformed")
    salt = _b64(kdf["salt"], ConfigurationError("the keyring salt is not base64"))
    return ScryptParams(salt=salt, n=kdf["n"], r=kdf["r"], p=kdf["p"])


def _parse_payload(payload: bytes, *, legacy: bool) -> _State:
    """Strictly parse the sealed contents; any deviation is an ``IntegrityError``.

    v2 entries below the minimum carry ``retired_at`` and no key; v1 entries all carry a key,
    and those below the minimum are dropped here.
    """
    try:
        body = json.loads(payload)
        minimum = body["min_decryption_version"]
        entries = body["versions"]
        versions = {
            e["version"]: _parse_entry(e, retired=not legacy and e["version"] < minimum)
            for e in entries
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError from exc
    well_formed = (
        set(body) == {"min_decryption_version", "versions"}
        and all(type(version) is int for version in versions)
        and sorted(versions) == list(range(1, len(entries) + 1))
        and type(minimum) is int
        and 1 <= minimum <= len(entries)
    )
    if not well_formed:
        raise IntegrityError
    if legacy:
        versions = {v: e if v >= minimum else _Version(e.created_at) for v, e in versions.items()}
    return _State(versions, minimum, legacy=legacy)


def _parse_entry(entry: Mapping[str, Any], *, retired: bool) -> _Version:
    if set(entry) != (_RETIRED_ENTRY if retired else _ACTIVE_ENTRY):
        raise ValueError("unexpected members in a keyring version")
    created = _parse_time(entry["created_at"])
    if retired:
        return _Version(created, retired_at=_parse_time(entry["retired_at"]))
    key = _b64(entry["key"], IntegrityError())
    if len(key) != DATA_KEY_BYTES:
        raise ValueError("keyring keys are 32 bytes")
    return _Version(created, key=key)


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() is None:
        raise ValueError("keyring times carry a UTC offset")
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _b64(text: object, error: Exception) -> bytes:
    if not isinstance(text, str):
        raise error
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise error from exc


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("the clock must return an aware datetime")
    return moment.astimezone(UTC)


def _info(key_id: str, state: _State, version: int) -> KeyVersionInfo:
    entry = state.versions[version]
    return KeyVersionInfo(
        key_id=key_id, version=version, created_at=entry.created_at, retired=entry.key is None
    )
