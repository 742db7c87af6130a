"""Property tests of envelope v1: the header parser only ever raises IntegrityError, round trips
hold for any plaintext and segment size, and damaged blobs never open."""

from __future__ import annotations

import hashlib
import io
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.core.crypto import envelope
from strongroom.core.crypto.envelope import EnvelopeContext
from strongroom.errors import IntegrityError, KeyAccessError
from strongroom.testing.fake_keys import FakeKeyProvider

SEG = envelope.MIN_SEGMENT_SIZE
CONTEXT = EnvelopeContext(model="m", version=1, path="p", manifest_digest="d")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PARSER_SETTINGS = settings(SETTINGS, max_examples=500)


@pytest.fixture(scope="module")
def keys() -> FakeKeyProvider:
    """One provider per module (hypothesis runs each test body many times)."""
    return FakeKeyProvider()


@pytest.fixture(scope="module")
def sample(keys: FakeKeyProvider) -> tuple[bytes, int]:
    """A valid blob of three segments and its header length."""
    blob = seal(keys, b"sample plaintext " * 300)
    return blob, envelope.read_header(io.BytesIO(blob)).header_length


def seal(keys: FakeKeyProvider, plaintext: bytes, segment_size: int = SEG) -> bytes:
    chunks = envelope.encrypt(
        plaintext, keys=keys, context=CONTEXT, random_bytes=os.urandom, segment_size=segment_size
    )
    return b"".join(chunks)


def parse_or_integrity_error(data: bytes) -> None:
    try:
        header = envelope.read_header(io.BytesIO(data))
    except IntegrityError:
        return
    assert header.header_length <= len(data)
    assert header.to_bytes() == data[: header.header_length]


@PARSER_SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_integrity_error(data: bytes) -> None:
    parse_or_integrity_error(data)


@PARSER_SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_after_the_magic(data: bytes) -> None:
    parse_or_integrity_error(envelope.MAGIC + data)


@PARSER_SETTINGS
@given(
    segment_size=st.integers(min_value=0, max_value=2**32 - 1),
    key_id=st.binary(max_size=40),
    kek_version=st.integers(min_value=0, max_value=2**32 - 1),
    wrapped=st.binary(max_size=80),
    declared=st.tuples(st.integers(0, 2**16 - 1), st.integers(0, 2**16 - 1)),
    tail=st.binary(max_size=20),
)
def test_structured_headers_never_raise_anything_but_integrity_error(
    segment_size: int,
    key_id: bytes,
    kek_version: int,
    wrapped: bytes,
    declared: tuple[int, int],
    tail: bytes,
) -> None:
    """Plausible headers with arbitrary field values and lengths that may lie."""
    key_id_length, wrapped_length = declared
    data = b"".join(
        (
            envelope.MAGIC,
            struct.pack(">HI", 1, segment_size),
            b"\0" * 7,
            struct.pack(">H", key_id_length if key_id_length % 3 else len(key_id)),
            key_id,
            struct.pack(">I", kek_version),
            struct.pack(">H", wrapped_length if wrapped_length % 3 else len(wrapped)),
            wrapped,
            tail,
        )
    )
    parse_or_integrity_error(data)


@PARSER_SETTINGS
@given(st.data())
def test_edited_valid_headers_parse_or_fail_cleanly(
    sample: tuple[bytes, int], data: st.DataObject
) -> None:
    blob, header_length = sample
    header = bytearray(blob[:header_length])
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(header) - 1))
        header[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(header)))
    parse_or_integrity_error(bytes(header[:cut]))


@SETTINGS
@given(
    plaintext=st.binary(max_size=3 * SEG + 50),
    segment_size=st.sampled_from([SEG, SEG + 1, 2 * SEG, 3 * SEG - 7]),
)
def test_round_trip(keys: FakeKeyProvider, plaintext: bytes, segment_size: int) -> None:
    blob = seal(keys, plaintext, segment_size)
    streamed = b"".join(envelope.decrypt(io.BytesIO(blob), keys=keys, context=CONTEXT))
    whole, digest = envelope.decrypt_and_hash(io.BytesIO(blob), keys=keys, context=CONTEXT)
    assert streamed == whole == plaintext
    assert digest == hashlib.sha256(plaintext).hexdigest()


@SETTINGS
@given(body=st.binary(max_size=2 * (SEG + 16) + 40))
def test_random_bodies_never_open(
    keys: FakeKeyProvider, sample: tuple[bytes, int], body: bytes
) -> None:
    blob, header_length = sample
    try:
        envelope.decrypt_and_hash(
            io.BytesIO(blob[:header_length] + body), keys=keys, context=CONTEXT
        )
    except IntegrityError:
        return
    raise AssertionError("a random body opened")


@SETTINGS
@given(st.data())
def test_edited_blobs_never_open(
    keys: FakeKeyProvider, sample: tuple[bytes, int], data: st.DataObject
) -> None:
    blob = bytearray(sample[0])
    index = data.draw(st.integers(0, len(blob) - 1))
    blob[index] ^= data.draw(st.integers(1, 255))
    try:
        envelope.decrypt_and_hash(io.BytesIO(bytes(blob)), keys=keys, context=CONTEXT)
    except (IntegrityError, KeyAccessError):
        return
    raise AssertionError("an edited blob opened")
