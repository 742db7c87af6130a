"""Envelope format v1: round trips, layout, and every way a blob can be damaged or moved."""

from __future__ import annotations

import array
import dataclasses
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from strongroom.core.crypto import envelope
from strongroom.core.crypto.envelope import EnvelopeContext
from strongroom.core.crypto.keys import KeyProvider, KeyVersionInfo, WrappedKey
from strongroom.errors import (
    IntegrityError,
    InvalidInputError,
    KeyAccessError,
)
from strongroom.testing.fake_keys import FakeKeyProvider

SEG = envelope.MIN_SEGMENT_SIZE
STRIDE = SEG + envelope.TAG_BYTES
CONTEXT = EnvelopeContext(
    model="fraud", version=3, path="model.onnx", manifest_digest="sha256:" + "ab" * 32
)
REFUSED = (IntegrityError, KeyAccessError)


@pytest.fixture
def keys() -> FakeKeyProvider:
    return FakeKeyProvider()


def seal(
    plaintext: bytes,
    keys: KeyProvider,
    context: EnvelopeContext = CONTEXT,
    segment_size: int = SEG,
) -> bytes:
    return b"".join(
        envelope.encrypt(
            plaintext,
            keys=keys,
            context=context,
            random_bytes=os.urandom,
            segment_size=segment_size,
        )
    )


class Unseekable(io.RawIOBase):
    """A stream that cannot seek and returns short reads, like a socket or a pipe."""

    def __init__(self, data: bytes, chunk: int = 1000) -> None:
        self._data = io.BytesIO(data)
        self._chunk = chunk

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        piece = self._data.read(min(len(buffer), self._chunk))
        buffer[: len(piece)] = piece
        return len(piece)


def as_stream(data: bytes) -> BinaryIO:
    return Unseekable(data)  # type: ignore[return-value]


def open_all(blob: bytes, keys: KeyProvider, context: EnvelopeContext = CONTEXT) -> bytes:
    """Open a blob the three ways; they must agree, then return the plaintext."""
    streamed = b"".join(envelope.decrypt(io.BytesIO(blob), keys=keys, context=context))
    sized, digest = envelope.decrypt_and_hash(io.BytesIO(blob), keys=keys, context=context)
    unsized, digest2 = envelope.decrypt_and_hash(as_stream(blob), keys=keys, context=context)
    assert streamed == sized == unsized
    assert digest == digest2 == hashlib.sha256(streamed).hexdigest()
    return streamed


def drain(blob: bytes, keys: KeyProvider, context: EnvelopeContext, into: bytearray) -> None:
    for piece in envelope.decrypt(io.BytesIO(blob), keys=keys, context=context):
        into += piece


def assert_refused_everywhere(
    blob: bytes, keys: KeyProvider, plaintext: bytes, context: EnvelopeContext = CONTEXT
) -> None:
    """Every way of opening fails; the streaming one yields only true plaintext before it does."""
    yielded = bytearray()
    with pytest.raises(REFUSED):
        drain(blob, keys, context, yielded)
    assert plaintext.startswith(yielded)
    for source in (io.BytesIO(blob), as_stream(blob)):
        with pytest.raises(REFUSED):
            envelope.decrypt_and_hash(source, keys=keys, context=context)


def segments_of(blob: bytes) -> tuple[bytes, list[bytes]]:
    header = envelope.read_header(io.BytesIO(blob))
    body = blob[header.header_length :]
    return blob[: header.header_length], [body[i : i + STRIDE] for i in range(0, len(body), STRIDE)]


# --- round trips and layout ---------------------------------------------------------------------

SIZES = [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 3 * SEG + 17]


@pytest.mark.parametrize("size", SIZES)
def test_round_trip(keys: FakeKeyProvider, size: int) -> None:
    plaintext = os.urandom(size)
    assert open_all(seal(plaintext, keys), keys) == plaintext


@pytest.mark.parametrize("size", SIZES)
def test_body_layout(keys: FakeKeyProvider, size: int) -> None:
    blob = seal(os.urandom(size), keys)
    header = envelope.read_header(io.BytesIO(blob))
    count = max(1, -(-size // SEG))
    assert len(blob) == header.header_length + size + count * envelope.TAG_BYTES
    _, segments = segments_of(blob)
    assert len(segments) == count


def test_bytes_like_plaintexts(keys: FakeKeyProvider) -> None:
    plaintext = os.urandom(2 * SEG + 5)
    assert open_all(seal(memoryview(plaintext), keys), keys) == plaintext  # type: ignore[arg-type]
    words = array.array("I", range(3000))
    assert open_all(seal(memoryview(words), keys), keys) == words.tobytes()  # type: ignore[arg-type]


def test_non_contiguous_plaintext_is_refused(keys: FakeKeyProvider) -> None:
    with pytest.raises(InvalidInputError):
        seal(memoryview(os.urandom(100))[::2], keys)  # type: ignore[arg-type]


def test_header_fields(keys: FakeKeyProvider) -> None:
    blob = seal(b"hello", keys, segment_size=3 * SEG)
    source = io.BytesIO(blob)
    header = envelope.read_header(source)
    assert source.tell() == header.header_length
    assert blob.startswith(envelope.MAGIC)
    assert header.format_version == envelope.FORMAT_VERSION == 1
    assert header.segment_size == 3 * SEG
    assert len(header.nonce_prefix) == envelope.NONCE_PREFIX_BYTES
    assert header.wrapped_key.key_id == keys.key_id
    assert header.wrapped_key.version == keys.current_version()
    assert blob[: header.header_length] == header.to_bytes()
    assert header.fixed_bytes == blob[: envelope.FIXED_HEADER_BYTES]


def test_two_blobs_of_one_plaintext_share_nothing(keys: FakeKeyProvider) -> None:
    plaintext = os.urandom(SEG)
    first, second = seal(plaintext, keys), seal(plaintext, keys)
    one, two = envelope.read_header(io.BytesIO(first)), envelope.read_header(io.BytesIO(second))
    assert one.nonce_prefix != two.nonce_prefix
    assert first[one.header_length :] != second[two.header_length :]


def test_segment_nonces() -> None:
    prefix = bytes(range(7))
    assert envelope.segment_nonce(prefix, 0, final=False) == prefix + b"\0\0\0\0\0"
    assert envelope.segment_nonce(prefix, 258, final=True) == prefix + b"\0\0\x01\x02\x01"


@pytest.mark.parametrize("size", [0, 4095, 64 * 1024 * 1024 + 1, -1, True])
def test_segment_size_out_of_range_is_refused(keys: FakeKeyProvider, size: int) -> None:
    with pytest.raises(InvalidInputError):
        seal(b"x", keys, segment_size=size)


def test_largest_segment_size_is_accepted(keys: FakeKeyProvider) -> None:
    assert open_all(seal(b"x" * 10, keys, segment_size=envelope.MAX_SEGMENT_SIZE), keys)


# --- context ------------------------------------------------------------------------------------


def test_context_bytes_are_canonical() -> None:
    context = EnvelopeContext(model="m", version=7, path="dir/ä.onnx", manifest_digest="d")
    assert context.to_bytes() == (
        b"strongroom/envelope-context/v1\x00"
        b'{"manifest_digest":"d","model":"m","path":"dir/\xc3\xa4.onnx","version":7}'
    )


@pytest.mark.parametrize(
    "field",
    [
        {"model": "other"},
        {"version": 4},
        {"path": "model.onnx.bak"},
        {"manifest_digest": "sha256:" + "cd" * 32},
    ],
)
def test_other_context_does_not_open(keys: FakeKeyProvider, field: dict[str, Any]) -> None:
    plaintext = os.urandom(SEG + 1)
    blob = seal(plaintext, keys)
    assert_refused_everywhere(blob, keys, plaintext, dataclasses.replace(CONTEXT, **field))


def test_body_is_bound_to_the_context_even_with_a_rebound_key(keys: FakeKeyProvider) -> None:
    """Re-wrapping the data key for another artifact does not make the body open there."""
    plaintext = os.urandom(SEG + 1)
    blob = seal(plaintext, keys)
    header = envelope.read_header(io.BytesIO(blob))
    other = dataclasses.replace(CONTEXT, path="other.onnx")
    data_key = keys.unwrap(header.wrapped_key, CONTEXT.to_bytes())
    rebound = dataclasses.replace(header, wrapped_key=keys.wrap(data_key, other.to_bytes()))
    forged = rebound.to_bytes() + blob[header.header_length :]
    assert_refused_everywhere(forged, keys, plaintext, other)


@pytest.mark.parametrize(
    "fields",
    [
        {"model": ""},
        {"path": ""},
        {"manifest_digest": ""},
        {"version": 0},
        {"version": True},
        {"version": 2**53},
        {"model": "\udc80"},
        {"path": 3},
    ],
)
def test_invalid_context_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        dataclasses.replace(CONTEXT, **fields)


# --- damage -------------------------------------------------------------------------------------


@pytest.fixture
def sample(keys: FakeKeyProvider) -> tuple[bytes, bytes]:
    """A plaintext of three full segments and a short one, and its blob."""
    plaintext = os.urandom(3 * SEG + 100)
    return plaintext, seal(plaintext, keys)


def test_truncation_at_every_boundary_and_mid_segment(
    keys: FakeKeyProvider, sample: tuple[bytes, bytes]
) -> None:
    plaintext, blob = sample
    header_length = envelope.read_header(io.BytesIO(blob)).header_length
    cuts = set(range(header_length + 1))
    for k in range(5):
        boundary = header_length + k * STRIDE
        cuts |= {boundary - 1, boundary, boundary + 1, boundary + STRIDE // 2}
    cuts |= {len(blob) - 1, len(blob) - envelope.TAG_BYTES}
    for cut in sorted(c for c in cuts if 0 <= c < len(blob)):
        assert_refused_everywhere(blob[:cut], keys, plaintext)


def test_reordered_duplicated_or_dropped_segments(
    keys: FakeKeyProvider, sample: tuple[bytes, bytes]
) -> None:
    plaintext, blob = sample
    head, s = segments_of(blob)
    variants = [
        [s[1], s[0], s[2], s[3]],
        [s[0], s[2], s[1], s[3]],
        [s[0], s[1], s[2], s[2], s[3]],
        [s[0], s[0], s[1], s[2], s[3]],
        [s[0], s[2], s[3]],
        [s[0], s[1], s[2]],
        [s[3]],
        [s[0], s[1], s[3], s[2]],
        [s[0], s[1], s[2], s[3], s[3]],
    ]
    for order in variants:
        assert_refused_everywhere(head + b"".join(order), keys, plaintext)


@pytest.mark.parametrize("garbage", [b"\0", b"x" * 16, b"y" * STRIDE, b"z" * (STRIDE + 1)])
def test_appended_bytes(keys: FakeKeyProvider, sample: tuple[bytes, bytes], garbage: bytes) -> None:
    plaintext, blob = sample
    assert_refused_everywhere(blob + garbage, keys, plaintext)


def test_appended_bytes_after_a_full_final_segment(keys: FakeKeyProvider) -> None:
    plaintext = os.urandom(2 * SEG)
    blob = seal(plaintext, keys)
    for garbage in (b"\0", os.urandom(envelope.TAG_BYTES), blob[-STRIDE:]):
        assert_refused_everywhere(blob + garbage, keys, plaintext)


def test_segments_swapped_between_blobs_of_one_key(keys: FakeKeyProvider) -> None:
    plaintext = os.urandom(2 * SEG)
    first, second = seal(plaintext, keys), seal(plaintext, keys)
    head, segments = segments_of(first)
    _, others = segments_of(second)
    assert_refused_everywhere(head + segments[0] + others[1], keys, plaintext)


def test_header_only_and_empty_blobs(keys: FakeKeyProvider) -> None:
    blob = seal(b"", keys)
    head, _ = segments_of(blob)
    for damaged in (b"", head, head + b"\0" * (envelope.TAG_BYTES - 1)):
        assert_refused_everywhere(damaged, keys, b"")


def flip_every_bit(data: bytes, start: int, stop: int) -> Iterator[bytes]:
    for index in range(start, stop):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[index] ^= 1 << bit
            yield bytes(damaged)


def test_every_header_bit(keys: FakeKeyProvider) -> None:
    plaintext = os.urandom(SEG + 100)
    blob = seal(plaintext, keys)
    header_length = envelope.read_header(io.BytesIO(blob)).header_length
    for damaged in flip_every_bit(blob, 0, header_length):
        assert_refused_everywhere(damaged, keys, plaintext)


def test_every_bit_of_a_full_and_a_final_segment(keys: FakeKeyProvider) -> None:
    plaintext = os.urandom(SEG + 100)
    blob = seal(plaintext, keys)
    header_length = envelope.read_header(io.BytesIO(blob)).header_length
    checked = 0
    for damaged in flip_every_bit(blob, header_length, len(blob)):
        with pytest.raises(IntegrityError):
            b"".join(envelope.decrypt(io.BytesIO(damaged), keys=keys, context=CONTEXT))
        checked += 1
    assert checked == 8 * (len(blob) - header_length) == 8 * (STRIDE + 116)


def test_every_bit_through_decrypt_and_hash(keys: FakeKeyProvider) -> None:
    plaintext = os.urandom(SEG + 20)
    blob = seal(plaintext, keys)
    for damaged in flip_every_bit(blob, len(blob) - 36, len(blob)):
        with pytest.raises(IntegrityError):
            envelope.decrypt_and_hash(io.BytesIO(damaged), keys=keys, context=CONTEXT)


# --- keys ---------------------------------------------------------------------------------------


def test_rewrap_keeps_the_body_and_opens(
    keys: FakeKeyProvider, sample: tuple[bytes, bytes]
) -> None:
    plaintext, blob = sample
    keys.rotate()
    rewrapped = b"".join(envelope.rewrap(io.BytesIO(blob), keys=keys, context=CONTEXT))
    old = envelope.read_header(io.BytesIO(blob))
    new = envelope.read_header(io.BytesIO(rewrapped))
    assert (old.wrapped_key.version, new.wrapped_key.version) == (1, 2)
    assert rewrapped[new.header_length :] == blob[old.header_length :]
    assert new.fixed_bytes == old.fixed_bytes
    assert open_all(rewrapped, keys) == plaintext
    keys.set_min_decryption_version(2)
    assert open_all(rewrapped, keys) == plaintext
    with pytest.raises(KeyAccessError):
        envelope.decrypt_and_hash(io.BytesIO(blob), keys=keys, context=CONTEXT)


def test_rewrap_does_not_decrypt_or_repair_the_body(keys: FakeKeyProvider) -> None:
    plaintext = os.urandom(SEG + 1)
    damaged = bytearray(seal(plaintext, keys))
    damaged[-1] ^= 1
    rewrapped = b"".join(envelope.rewrap(io.BytesIO(bytes(damaged)), keys=keys, context=CONTEXT))
    assert rewrapped.endswith(bytes(damaged[-STRIDE:]))
    assert_refused_everywhere(rewrapped, keys, plaintext)


def test_rewrap_needs_the_right_context(keys: FakeKeyProvider) -> None:
    blob = seal(b"data", keys)
    with pytest.raises(IntegrityError):
        envelope.rewrap(
            io.BytesIO(blob), keys=keys, context=dataclasses.replace(CONTEXT, version=9)
        )


def test_a_blob_opens_only_with_its_provider(keys: FakeKeyProvider) -> None:
    blob = seal(b"data", keys)
    with pytest.raises(REFUSED):
        open_all(blob, FakeKeyProvider())
    with pytest.raises(KeyAccessError):
        open_all(blob, FakeKeyProvider(key_id="fake:other"))


class ShortKeys(FakeKeyProvider):
    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        return super().unwrap(wrapped, context)[:16]


class OversizedWraps(FakeKeyProvider):
    def wrap(self, data_key: bytes, context: bytes) -> WrappedKey:
        wrapped = super().wrap(data_key, context)
        return dataclasses.replace(wrapped, ciphertext=wrapped.ciphertext * 100)


def test_misbehaving_providers_are_refused() -> None:
    short = ShortKeys()
    with pytest.raises(IntegrityError):
        open_all(seal(b"data", short), short)
    with pytest.raises(KeyAccessError):
        seal(b"data", OversizedWraps())


def test_short_random_bytes_are_refused(keys: FakeKeyProvider) -> None:
    with pytest.raises(ValueError, match="random_bytes"):
        envelope.encrypt(b"x", keys=keys, context=CONTEXT, random_bytes=lambda n: b"\0" * (n - 1))


def test_provider_errors_surface_on_the_call(keys: FakeKeyProvider) -> None:
    blob = seal(b"data", keys)
    keys.rotate()
    keys.set_min_decryption_version(2)
    with pytest.raises(KeyAccessError):
        envelope.decrypt(io.BytesIO(blob), keys=keys, context=CONTEXT)


def test_decrypt_and_hash_from_a_file(tmp_path: Path, keys: FakeKeyProvider) -> None:
    plaintext = os.urandom(5 * SEG + 3)
    path = tmp_path / "blob"
    path.write_bytes(seal(plaintext, keys))
    with path.open("rb") as source:
        data, digest = envelope.decrypt_and_hash(source, keys=keys, context=CONTEXT)
    assert data == plaintext
    assert digest == hashlib.sha256(plaintext).hexdigest()
    assert type(data) is bytes


def test_versions_reported_by_the_provider_are_usable(keys: FakeKeyProvider) -> None:
    info: KeyVersionInfo = keys.rotate()
    blob = seal(b"data", keys)
    assert envelope.read_header(io.BytesIO(blob)).wrapped_key.version == info.version
