"""API keys: format, strict parsing (hypothesis), keyed digest, verification, rotation and
revocation. Keys and peppers are generated at test time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random
import re
import string
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.core.identity import api_keys
from strongroom.core.identity.api_keys import (
    ApiKeyReason,
    StoredApiKey,
    api_key_digest,
    api_key_record,
    new_api_key,
    parse_api_key,
    refusal_reason,
    revoke_api_key,
    rotate_api_key,
    verify_api_key,
)
from strongroom.core.types import RandomBytes
from strongroom.errors import AuthenticationError, ConfigurationError, InvalidInputError

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
TOKEN_RE = re.compile(r"sr_[a-z2-7]{12}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def pepper() -> bytes:
    return os.urandom(32)


def seeded(seed: str) -> RandomBytes:
    """A deterministic byte source for tests only (the seed string is documented here)."""
    rng = random.Random(seed)
    return rng.randbytes


def issue(pepper: bytes, expires_at: datetime | None = None) -> tuple[str, StoredApiKey]:
    key = new_api_key(os.urandom)
    record = api_key_record(
        key, pepper=pepper, principal_id="svc:scoring", created_at=NOW, expires_at=expires_at
    )
    return key.token, record


def reason(excinfo: pytest.ExceptionInfo[AuthenticationError]) -> ApiKeyReason | None:
    assert str(excinfo.value) == "authentication failed"
    assert excinfo.value.code == "auth.unauthenticated"
    return refusal_reason(excinfo.value)


# --- format ----------------------------------------------------------------------------------


def test_new_key_format_and_round_trip() -> None:
    key = new_api_key(os.urandom)
    assert TOKEN_RE.fullmatch(key.token)
    assert parse_api_key(key.token) == (key.key_id, key.secret)
    assert len(base64.urlsafe_b64decode(key.secret + "=")) == 32


def test_known_answers_from_fixed_bytes() -> None:
    zeros = new_api_key(bytes)  # n zero bytes
    assert zeros.token == "sr_" + "a" * 12 + "_" + "A" * 43
    ones = new_api_key(lambda n: b"\xff" * n)
    assert ones.key_id == "7" * 12  # base32 index 31
    assert ones.secret == "_" * 42 + "8"  # last: 1111 + 00 padding = 60 = "8"
    assert parse_api_key(ones.token) == ("7" * 12, "_" * 42 + "8")


def test_key_id_comes_first_from_8_bytes_then_secret_from_32() -> None:
    requests: list[int] = []

    def source(n: int) -> bytes:
        requests.append(n)
        return os.urandom(n)

    new_api_key(source)
    assert requests == [8, 32]


def test_keys_differ_and_repr_hides_the_secret() -> None:
    keys = [new_api_key(seeded(f"strongroom-test-api-key-{i}")) for i in range(50)]
    assert len({k.key_id for k in keys}) == 50
    assert len({k.secret for k in keys}) == 50
    assert all(k.secret not in repr(k) for k in keys)


def test_custom_prefix() -> None:
    key = new_api_key(os.urandom, prefix="acme2")
    assert key.token.startswith("acme2_")
    assert parse_api_key(key.token, prefix="acme2") == (key.key_id, key.secret)
    with pytest.raises(AuthenticationError):
        parse_api_key(key.token)


@pytest.mark.parametrize("prefix", ["", "SR", "s_r", "1sr", "a" * 17, "sr-"])
def test_invalid_prefix_is_a_configuration_error(prefix: str) -> None:
    with pytest.raises(ConfigurationError):
        new_api_key(os.urandom, prefix=prefix)


@pytest.mark.parametrize("wrong", [7, 33, 0])
def test_short_random_source_is_refused(wrong: int) -> None:
    with pytest.raises(ConfigurationError):
        new_api_key(lambda n: os.urandom(wrong if n == 32 else n))


# --- parsing ---------------------------------------------------------------------------------


def _valid() -> str:
    return new_api_key(seeded("strongroom-test-parse")).token


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sr_",
        "Bearer " + "x" * 50,
        _valid() + "\n",
        " " + _valid(),
        _valid()[:-1],
        _valid() + "A",
        "SR" + _valid()[2:],
        "xx" + _valid()[2:],
        _valid().replace("_", "-", 1),
        _valid()[:3] + _valid()[3:15].upper() + _valid()[15:],
        _valid()[:3] + "0" + _valid()[4:],  # '0' is not base32
        _valid()[:16] + "=" + _valid()[17:],
        _valid()[:16] + "+" + _valid()[17:],
        _valid()[:-1] + "B",  # non-canonical last character (pad bits set)
        _valid()[:16] + "é" + _valid()[17:],
        _valid()[:16] + "\uff21" + _valid()[17:],  # fullwidth A
        "sr_" + "a" * 12 + "_" + "A" * 42 + "\x00",
        "x" * 10_000,
    ],
)
def test_malformed_keys_are_refused_opaquely(text: str) -> None:
    with pytest.raises(AuthenticationError) as excinfo:
        parse_api_key(text)
    assert reason(excinfo) is ApiKeyReason.MALFORMED


def test_non_string_is_refused() -> None:
    with pytest.raises(AuthenticationError):
        parse_api_key(b"sr_x")  # type: ignore[arg-type]


@settings(max_examples=500)
@given(st.text(max_size=120))
def test_parser_accepts_only_exact_tokens(text: str) -> None:
    try:
        key_id, secret = parse_api_key(text)
    except AuthenticationError:
        return
    assert f"sr_{key_id}_{secret}" == text
    assert TOKEN_RE.fullmatch(text)


@settings(max_examples=500)
@given(st.integers(0, 57), st.sampled_from(string.printable + "é\u00a0"))
def test_parser_on_single_character_edits(position: int, char: str) -> None:
    """Every one-character edit of a valid key either fails to parse or parses canonically."""
    token = _valid()
    edited = token[:position] + char + token[position + 1 :]
    try:
        key_id, secret = parse_api_key(edited)
    except AuthenticationError:
        return
    assert f"sr_{key_id}_{secret}" == edited
    assert base64.urlsafe_b64encode(base64.urlsafe_b64decode(secret + "=")).rstrip(b"=") == (
        secret.encode()
    )


@settings(max_examples=200)
@given(st.binary(min_size=8, max_size=8), st.binary(min_size=32, max_size=32))
def test_every_issued_key_parses(id_bytes: bytes, secret_bytes: bytes) -> None:
    chunks = iter([id_bytes, secret_bytes])
    key = new_api_key(lambda n: next(chunks))
    assert parse_api_key(key.token) == (key.key_id, key.secret)


# --- digest ----------------------------------------------------------------------------------


def test_digest_is_hmac_sha256_over_domain_id_and_secret(pepper: bytes) -> None:
    key = new_api_key(os.urandom)
    message = b"strongroom/api-key/v1\x00" + key.key_id.encode() + key.secret.encode()
    expected = hmac.new(pepper, message, hashlib.sha256).digest()
    assert api_key_digest(pepper, key.key_id, key.secret) == expected
    other_pepper = bytes(b ^ 1 for b in pepper)
    assert api_key_digest(other_pepper, key.key_id, key.secret) != expected


@pytest.mark.parametrize("size", [0, 16, 31])
def test_short_pepper_is_a_configuration_error(size: int) -> None:
    key = new_api_key(os.urandom)
    with pytest.raises(ConfigurationError):
        api_key_digest(os.urandom(size), key.key_id, key.secret)
    with pytest.raises(ConfigurationError):
        verify_api_key(os.urandom(size), key.token, _record_for(key), NOW)


def _record_for(key: api_keys.IssuedApiKey) -> StoredApiKey:
    return api_key_record(key, pepper=b"p" * 32, principal_id="user:a", created_at=NOW)


def test_digest_refuses_malformed_parts(pepper: bytes) -> None:
    with pytest.raises(InvalidInputError):
        api_key_digest(pepper, "short", "A" * 43)
    with pytest.raises(InvalidInputError):
        api_key_digest(pepper, "a" * 12, "A" * 42 + "B")


# --- verification ----------------------------------------------------------------------------


def test_valid_key_verifies(pepper: bytes) -> None:
    token, record = issue(pepper)
    verify_api_key(pepper, token, record, NOW)
    verify_api_key(pepper, token, record, NOW + timedelta(days=3650))


def test_verification_compares_in_constant_time(
    pepper: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, record = issue(pepper)
    seen: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    verify_api_key(pepper, token, record, NOW)
    assert (record.digest, record.digest) in seen


def test_wrong_secret_is_refused(pepper: bytes) -> None:
    token, record = issue(pepper)
    other, _ = issue(pepper)
    forged = token[:16] + other[16:]  # same id, another valid secret
    with pytest.raises(AuthenticationError) as excinfo:
        verify_api_key(pepper, forged, record, NOW)
    assert reason(excinfo) is ApiKeyReason.DIGEST_MISMATCH


def test_wrong_key_id_is_refused(pepper: bytes) -> None:
    token, record = issue(pepper)
    other, _ = issue(pepper)
    with pytest.raises(AuthenticationError) as excinfo:
        verify_api_key(pepper, other, record, NOW)
    assert reason(excinfo) is ApiKeyReason.WRONG_KEY_ID
    swapped = other[:16] + token[16:]  # another id, this key's secret
    with pytest.raises(AuthenticationError):
        verify_api_key(pepper, swapped, record, NOW)


def test_wrong_pepper_is_refused(pepper: bytes) -> None:
    token, record = issue(pepper)
    with pytest.raises(AuthenticationError) as excinfo:
        verify_api_key(os.urandom(32), token, record, NOW)
    assert reason(excinfo) is ApiKeyReason.DIGEST_MISMATCH


def test_expired_exactly_now_is_refused(pepper: bytes) -> None:
    token, record = issue(pepper, expires_at=NOW + timedelta(hours=1))
    verify_api_key(pepper, token, record, NOW + timedelta(minutes=59, seconds=59))
    with pytest.raises(AuthenticationError) as excinfo:
        verify_api_key(pepper, token, record, NOW + timedelta(hours=1))
    assert reason(excinfo) is ApiKeyReason.EXPIRED


def test_revoked_is_refused_at_once_even_if_revoked_at_is_in_the_future(pepper: bytes) -> None:
    token, record = issue(pepper)
    revoked = revoke_api_key(record, NOW + timedelta(minutes=1))
    with pytest.raises(AuthenticationError) as excinfo:
        verify_api_key(pepper, token, revoked, NOW)
    assert reason(excinfo) is ApiKeyReason.REVOKED


def test_revocation_keeps_the_first_time(pepper: bytes) -> None:
    _, record = issue(pepper)
    first = revoke_api_key(record, NOW)
    assert first.revoked_at == NOW
    assert revoke_api_key(first, NOW + timedelta(days=1)).revoked_at == NOW


def test_wrong_secret_is_reported_before_revocation(pepper: bytes) -> None:
    token, record = issue(pepper)
    with pytest.raises(AuthenticationError) as excinfo:
        verify_api_key(
            pepper,
            token[:-2] + ("AA" if token[-2:] != "AA" else "AE"),
            revoke_api_key(record, NOW),
            NOW,
        )
    assert reason(excinfo) is ApiKeyReason.DIGEST_MISMATCH


def test_malformed_presented_key_is_refused(pepper: bytes) -> None:
    _, record = issue(pepper)
    with pytest.raises(AuthenticationError) as excinfo:
        verify_api_key(pepper, "sr_nope", record, NOW)
    assert reason(excinfo) is ApiKeyReason.MALFORMED


def test_naive_now_is_refused(pepper: bytes) -> None:
    token, record = issue(pepper)
    with pytest.raises(InvalidInputError):
        verify_api_key(pepper, token, record, datetime(2025, 1, 1))  # noqa: DTZ001 - on purpose


# --- records ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"key_id": "A" * 12},
        {"key_id": "a" * 13},
        {"digest": b"x" * 31},
        {"digest": "x" * 32},
        {"principal_id": "scoring"},
        {"created_at": datetime(2025, 1, 1)},  # noqa: DTZ001 - naive on purpose
        {"expires_at": NOW - timedelta(seconds=1)},
        {"revoked_at": datetime(2025, 1, 1)},  # noqa: DTZ001 - naive on purpose
    ],
)
def test_stored_record_validation(changes: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "key_id": "a" * 12,
        "digest": b"d" * 32,
        "principal_id": "svc:scoring",
        "created_at": NOW,
    }
    fields.update(changes)
    with pytest.raises(InvalidInputError):
        StoredApiKey(**fields)  # type: ignore[arg-type]


def test_record_must_expire_after_creation(pepper: bytes) -> None:
    with pytest.raises(InvalidInputError):
        api_key_record(
            new_api_key(os.urandom),
            pepper=pepper,
            principal_id="svc:a",
            created_at=NOW,
            expires_at=NOW,
        )


def test_record_repr_hides_the_digest(pepper: bytes) -> None:
    _, record = issue(pepper)
    assert record.digest.hex() not in repr(record)
    assert repr(record.digest) not in repr(record)


# --- rotation --------------------------------------------------------------------------------


def test_rotation_without_grace_ends_the_old_key_now(pepper: bytes) -> None:
    old_token, old = issue(pepper)
    later = NOW + timedelta(days=10)
    rotation = rotate_api_key(old, random_bytes=os.urandom, pepper=pepper, now=later)
    assert rotation.old_record.expires_at == later
    assert rotation.new_record.principal_id == old.principal_id
    assert rotation.new_record.created_at == later
    assert rotation.new_record.key_id == rotation.issued.key_id != old.key_id
    verify_api_key(pepper, rotation.issued.token, rotation.new_record, later)
    with pytest.raises(AuthenticationError) as excinfo:
        verify_api_key(pepper, old_token, rotation.old_record, later)
    assert reason(excinfo) is ApiKeyReason.EXPIRED


def test_rotation_with_grace(pepper: bytes) -> None:
    old_token, old = issue(pepper)
    grace = timedelta(hours=1)
    rotation = rotate_api_key(old, random_bytes=os.urandom, pepper=pepper, now=NOW, grace=grace)
    verify_api_key(pepper, old_token, rotation.old_record, NOW + grace - timedelta(seconds=1))
    with pytest.raises(AuthenticationError):
        verify_api_key(pepper, old_token, rotation.old_record, NOW + grace)


def test_rotation_keeps_an_earlier_expiry_and_sets_the_new_one(pepper: bytes) -> None:
    _, old = issue(pepper, expires_at=NOW + timedelta(minutes=5))
    new_expiry = NOW + timedelta(days=90)
    rotation = rotate_api_key(
        old,
        random_bytes=os.urandom,
        pepper=pepper,
        now=NOW,
        grace=timedelta(days=1),
        expires_at=new_expiry,
    )
    assert rotation.old_record.expires_at == NOW + timedelta(minutes=5)
    assert rotation.new_record.expires_at == new_expiry


def test_rotation_leaves_a_revoked_key_revoked(pepper: bytes) -> None:
    old_token, old = issue(pepper)
    revoked = revoke_api_key(old, NOW)
    rotation = rotate_api_key(
        revoked, random_bytes=os.urandom, pepper=pepper, now=NOW, grace=timedelta(hours=1)
    )
    assert rotation.old_record.revoked_at == NOW
    with pytest.raises(AuthenticationError):
        verify_api_key(pepper, old_token, rotation.old_record, NOW)


@pytest.mark.parametrize("grace", [timedelta(seconds=-1), timedelta(days=31)])
def test_rotation_grace_is_bounded(pepper: bytes, grace: timedelta) -> None:
    _, old = issue(pepper)
    with pytest.raises(InvalidInputError):
        rotate_api_key(old, random_bytes=os.urandom, pepper=pepper, now=NOW, grace=grace)


def test_rotation_before_creation_is_refused(pepper: bytes) -> None:
    _, old = issue(pepper)
    with pytest.raises(InvalidInputError):
        rotate_api_key(old, random_bytes=os.urandom, pepper=pepper, now=NOW - timedelta(seconds=1))


_B64URL = string.ascii_letters + string.digits + "-_"


@given(text=st.text(alphabet=_B64URL, min_size=43, max_size=43))
def test_secret_pattern_is_exactly_the_canonical_base64url_of_32_bytes(text: str) -> None:
    """The pattern ``parse_api_key`` relies on agrees with a decode/encode round trip."""
    raw = base64.urlsafe_b64decode(text + "=")
    canonical = len(raw) == 32 and base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == text
    assert (api_keys.SECRET_RE.fullmatch(text) is not None) == canonical


def test_a_prepared_pepper_gives_the_same_digests_and_decisions() -> None:
    pepper = os.urandom(32)
    issued = new_api_key(os.urandom)
    prepared = api_keys.Pepper(pepper)
    assert prepared.digest(issued.key_id, issued.secret) == api_key_digest(
        pepper, issued.key_id, issued.secret
    )
    assert "secret" in repr(prepared)
    assert pepper.hex() not in repr(prepared)
    with pytest.raises(ConfigurationError):
        api_keys.Pepper(b"short")
