"""Envelope encryption format v1 (normative spec: ``docs/formats/envelope-v1.md``).

A blob is ``header || segments``. The header holds a fixed, authenticated part (magic, format
version, segment size, 7-byte nonce prefix) and a *key block* (KEK id, KEK version, wrapped data
key) that key rotation may rewrite. The body is the plaintext cut into ``segment_size`` pieces,
each sealed with AES-256-GCM under a fresh per-blob data key with the nonce
``prefix || index (u32 BE) || final flag`` and the AAD ``fixed header || context bytes``.

Invariants:

* Opening either yields exactly the plaintext that was sealed for this context, or raises
  ``IntegrityError`` (malformed header, tag failure, truncation, extension, reordering, trailing
  bytes, wrong context). The key provider's own errors propagate unchanged: ``KeyAccessError``
  for an unknown KEK id, an unknown or retired KEK version or a locked keyring, ``IntegrityError``
  for a wrapped key that does not open, ``StorageError`` for an unreachable remote KMS.
* The key block is not in the segment AAD, so ``rewrap`` re-wraps the data key under the current
  KEK version and copies the body verbatim; the wrapped key itself is bound to the same context
  by the provider, so a key block moved to another artifact does not open.
* Streaming: ``encrypt`` and ``decrypt`` hold about one segment at a time. ``decrypt`` yields
  plaintext before the end is verified: it is untrusted until the iterator is exhausted.
* No randomness of its own: the data key and the nonce prefix come from the injected
  ``RandomBytes``, in that order (golden files depend on it).
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Final, NamedTuple, Self

import rfc8785

from strongroom.core.crypto._primitives import GCM_TAG_BYTES, Aead
from strongroom.core.crypto.keys import DATA_KEY_BYTES, KeyProvider, WrappedKey
from strongroom.core.types import RandomBytes
from strongroom.errors import IntegrityError, InvalidInputError, KeyAccessError, TooLargeError

MAGIC: Final = b"\x89SRENV\r\n"
FORMAT_VERSION: Final = 1
MIN_SEGMENT_SIZE: Final = 4 * 1024
MAX_SEGMENT_SIZE: Final = 64 * 1024 * 1024
DEFAULT_SEGMENT_SIZE: Final = 1024 * 1024
NONCE_PREFIX_BYTES: Final = 7
TAG_BYTES: Final = GCM_TAG_BYTES
MAX_KEY_ID_BYTES: Final = 1024
MAX_WRAPPED_KEY_BYTES: Final = 4096
MAX_SEGMENTS: Final = 2**32
"""The segment index is a u32 in the nonce."""
CONTEXT_DOMAIN: Final = b"strongroom/envelope-context/v1\x00"
MAX_JSON_INTEGER: Final = 2**53 - 1

_FIXED: Final = struct.Struct(">8sHI7s")
FIXED_HEADER_BYTES: Final = _FIXED.size
"""21: magic, version, segment size, nonce prefix. This part is authenticated by every segment."""
_U16: Final = struct.Struct(">H")
_KEY_TAIL: Final = struct.Struct(">IH")
"""KEK version and wrapped key length."""
_SEGMENT_SUFFIX: Final = struct.Struct(">IB")
_COPY_CHUNK: Final = 1024 * 1024
_HASH_BATCH: Final = 8 * 1024 * 1024
"""decrypt_and_hash hands the hashing thread this much at a time: few hand-offs, little lag."""


@dataclass(frozen=True, slots=True)
class EnvelopeContext:
    """Identity of the artifact a blob belongs to; bound to the body AAD and the wrapped key."""

    model: str
    version: int
    path: str
    manifest_digest: str

    def __post_init__(self) -> None:
        for name in ("model", "path", "manifest_digest"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or not _is_utf8(value):
                raise InvalidInputError(f"envelope context {name} must be a non-empty string")
        if type(self.version) is not int or not 1 <= self.version <= MAX_JSON_INTEGER:
            raise InvalidInputError("envelope context version must be a positive integer")

    def to_bytes(self) -> bytes:
        """Canonical encoding: domain string, NUL, then the RFC 8785 JSON object."""
        fields = {"manifest_digest": self.manifest_digest, "model": self.model}
        return CONTEXT_DOMAIN + rfc8785.dumps(fields | {"path": self.path, "version": self.version})


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    format_version: int
    segment_size: int
    nonce_prefix: bytes
    wrapped_key: WrappedKey
    header_length: int
    """Bytes from the start of the blob to the first segment."""

    @property
    def fixed_bytes(self) -> bytes:
        """The authenticated part of the header (the start of every segment's AAD)."""
        return _FIXED.pack(MAGIC, self.format_version, self.segment_size, self.nonce_prefix)

    def to_bytes(self) -> bytes:
        return self.fixed_bytes + _key_block(self.wrapped_key)


# --- encrypt ------------------------------------------------------------------------------------


def encrypt(
    plaintext: bytes | memoryview,
    *,
    keys: KeyProvider,
    context: EnvelopeContext,
    random_bytes: RandomBytes,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> Iterator[bytes]:
    """Seal ``plaintext``: yields the header, then each sealed segment.

    Key wrapping happens before the first item is yielded, so provider errors surface on the
    call. ``plaintext`` must not change while the iterator is consumed.
    """
    check_segment_size(segment_size)
    try:
        view = memoryview(plaintext).cast("B")
    except TypeError as exc:
        raise InvalidInputError("plaintext must be a contiguous bytes-like object") from exc
    if _segment_count(len(view), segment_size) > MAX_SEGMENTS:
        raise TooLargeError("plaintext is too large for one envelope at this segment size")
    data_key = _random(random_bytes, DATA_KEY_BYTES)
    context_bytes = context.to_bytes()
    wrapped = keys.wrap(data_key, context_bytes)
    _check_wrapped_from_provider(wrapped)
    key_block = _key_block(wrapped)
    fixed = _FIXED.pack(
        MAGIC, FORMAT_VERSION, segment_size, _random(random_bytes, NONCE_PREFIX_BYTES)
    )
    header = EnvelopeHeader(
        FORMAT_VERSION, segment_size, fixed[-NONCE_PREFIX_BYTES:], wrapped, len(fixed + key_block)
    )
    return _seal_segments(header, Aead(data_key), fixed + context_bytes, view)


def _seal_segments(
    header: EnvelopeHeader, aead: Aead, aad: bytes, view: memoryview
) -> Iterator[bytes]:
    yield header.to_bytes()
    size = header.segment_size
    count = _segment_count(len(view), size)
    for index in range(count):
        nonce = segment_nonce(header.nonce_prefix, index, final=index == count - 1)
        yield aead.seal(nonce, view[index * size : (index + 1) * size], aad)


# --- header -------------------------------------------------------------------------------------


def read_header(source: BinaryIO) -> EnvelopeHeader:
    """Parse the header and leave ``source`` at the first segment; ``IntegrityError`` if bad."""
    fixed = _read_exact(source, FIXED_HEADER_BYTES)
    magic, version, segment_size, nonce_prefix = _FIXED.unpack(fixed)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise IntegrityError
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise IntegrityError
    (key_id_length,) = _U16.unpack(_read_exact(source, _U16.size))
    if not 1 <= key_id_length <= MAX_KEY_ID_BYTES:
        raise IntegrityError
    try:
        key_id = _read_exact(source, key_id_length).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntegrityError from exc
    if not _is_printable(key_id):
        raise IntegrityError
    kek_version, wrapped_length = _KEY_TAIL.unpack(_read_exact(source, _KEY_TAIL.size))
    if kek_version < 1 or not 1 <= wrapped_length <= MAX_WRAPPED_KEY_BYTES:
        raise IntegrityError
    ciphertext = _read_exact(source, wrapped_length)
    header_length = FIXED_HEADER_BYTES + _U16.size + key_id_length + _KEY_TAIL.size + wrapped_length
    return EnvelopeHeader(
        version, segment_size, nonce_prefix, WrappedKey(key_id, kek_version, ciphertext),
        header_length,
    )  # fmt: skip


def check_segment_size(segment_size: int) -> None:
    if type(segment_size) is not int or not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise InvalidInputError(
            f"segment size must be between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE} bytes"
        )


def segment_nonce(nonce_prefix: bytes, index: int, *, final: bool) -> bytes:
    """``prefix (7) || index (u32 BE) || flag`` where the flag is 1 only on the final segment."""
    return nonce_prefix + _SEGMENT_SUFFIX.pack(index, 1 if final else 0)


# --- decrypt ------------------------------------------------------------------------------------


def decrypt(source: BinaryIO, *, keys: KeyProvider, context: EnvelopeContext) -> Iterator[bytes]:
    """Yield verified plaintext segments; ``IntegrityError`` at the first bad one.

    The header is parsed and the data key unwrapped on the call. A truncated or extended blob
    fails at its last segment, so the plaintext is untrusted until the iterator is exhausted.
    """
    return _open_segments(source, _open(source, keys, context))


def _open_segments(source: BinaryIO, opened: _Opened) -> Iterator[bytes]:
    header, aead, aad = opened
    stride = header.segment_size + TAG_BYTES
    current = _read_up_to(source, stride)
    for index in range(MAX_SEGMENTS):
        following = _read_up_to(source, stride) if len(current) == stride else b""
        final = not following
        if len(current) < TAG_BYTES:
            raise IntegrityError
        yield aead.open(segment_nonce(header.nonce_prefix, index, final=final), current, aad)
        if final:
            return
        current = following
    raise IntegrityError


def decrypt_and_hash(
    source: BinaryIO, *, keys: KeyProvider, context: EnvelopeContext
) -> tuple[bytes, str]:
    """The whole verified plaintext and its SHA-256 (hex), or ``IntegrityError``.

    Fast path for seekable sources: the segment layout follows from the body length, the
    plaintext goes into one preallocated buffer that becomes the result without a copy, and a
    worker thread hashes it a few MiB behind the decryption (hashlib releases the GIL). The main
    thread never waits for the worker until the end, so the two run in parallel when a second
    core is free and degrade to sequential work (not worse) when it is not.
    """
    opened = _open(source, keys, context)
    body_length = _remaining_length(source)
    if body_length is not None:
        return _decrypt_sized(source, opened, _layout(body_length, opened.header.segment_size))
    pieces: list[bytes] = []
    with _BackgroundSha256(parallel=True) as hasher:
        for piece in _open_segments(source, opened):
            pieces.append(piece)
            hasher.update(piece)
        return b"".join(pieces), hasher.hexdigest()


def _decrypt_sized(source: BinaryIO, opened: _Opened, layout: tuple[int, int]) -> tuple[bytes, str]:
    header, aead, aad = opened
    count, total = layout
    size = header.segment_size
    # bytes(n) is lazily zeroed memory; BytesIO adopts it and getvalue() returns it uncopied.
    out = io.BytesIO(bytes(total))
    # Exit order matters: the hasher joins its thread before the buffer view is released.
    with out.getbuffer() as view, _BackgroundSha256(parallel=count > 1) as hasher:
        hashed = 0
        for index in range(count):
            start = index * size
            end = min(start + size, total)
            sealed = _read_exact(source, end - start + TAG_BYTES)
            nonce = segment_nonce(header.nonce_prefix, index, final=index == count - 1)
            view[start:end] = aead.open(nonce, sealed, aad)
            if end - hashed >= _HASH_BATCH or index == count - 1:
                hasher.update(view[hashed:end])
                hashed = end
        digest = hasher.hexdigest()
    if source.read(1):
        raise IntegrityError
    return out.getvalue(), digest


class _BackgroundSha256:
    """SHA-256 computed by one worker thread from a FIFO of buffers, in submission order.

    The thread starts on the first update and is joined on exit, also on errors. With
    ``parallel=False`` (one segment: nothing to overlap) updates run inline.
    """

    __slots__ = ("_hash", "_jobs", "_parallel", "_pool")

    def __init__(self, *, parallel: bool) -> None:
        self._hash = hashlib.sha256()
        self._parallel = parallel
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: list[Future[None]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def update(self, data: bytes | memoryview) -> None:
        """Queue ``data``; it must stay unchanged until ``hexdigest`` or exit."""
        if not self._parallel:
            self._hash.update(data)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="strongroom-sha256")
        self._jobs.append(self._pool.submit(self._hash.update, data))

    def hexdigest(self) -> str:
        for job in self._jobs:
            job.result()
        return self._hash.hexdigest()


# --- rewrap -------------------------------------------------------------------------------------


def rewrap(source: BinaryIO, *, keys: KeyProvider, context: EnvelopeContext) -> Iterator[bytes]:
    """Re-wrap the data key under the provider's current KEK version; copy the body verbatim.

    The body is neither decrypted nor checked (a damaged body stays damaged and fails when
    opened). Unwrapping and wrapping happen on the call; the iterator yields the new header and
    then the body in chunks.
    """
    header = read_header(source)
    context_bytes = context.to_bytes()
    data_key = _unwrap(keys, header.wrapped_key, context_bytes)
    wrapped = keys.wrap(data_key, context_bytes)
    _check_wrapped_from_provider(wrapped)
    new_header = header.fixed_bytes + _key_block(wrapped)
    return _copy_body(new_header, source)


def _copy_body(new_header: bytes, source: BinaryIO) -> Iterator[bytes]:
    yield new_header
    while chunk := source.read(_COPY_CHUNK):
        yield chunk


# --- helpers ------------------------------------------------------------------------------------


class _Opened(NamedTuple):
    """A parsed header with the unwrapped data key, ready to open segments."""

    header: EnvelopeHeader
    aead: Aead
    aad: bytes


def _open(source: BinaryIO, keys: KeyProvider, context: EnvelopeContext) -> _Opened:
    header = read_header(source)
    context_bytes = context.to_bytes()
    data_key = _unwrap(keys, header.wrapped_key, context_bytes)
    return _Opened(header, Aead(data_key), header.fixed_bytes + context_bytes)


def _unwrap(keys: KeyProvider, wrapped: WrappedKey, context_bytes: bytes) -> bytes:
    data_key = keys.unwrap(wrapped, context_bytes)
    if len(data_key) != DATA_KEY_BYTES:
        raise IntegrityError
    return data_key


def _key_block(wrapped: WrappedKey) -> bytes:
    key_id, ciphertext = wrapped.key_id.encode("utf-8"), wrapped.ciphertext
    tail = _KEY_TAIL.pack(wrapped.version, len(ciphertext))
    return _U16.pack(len(key_id)) + key_id + tail + ciphertext


def _check_wrapped_from_provider(wrapped: WrappedKey) -> None:
    """A provider's answer must fit the key block (and parse back) before anything is written."""
    key_id = wrapped.key_id
    key_id_ok = isinstance(key_id, str) and _is_utf8(key_id) and _is_printable(key_id)
    key_id_ok = key_id_ok and 1 <= len(key_id.encode("utf-8")) <= MAX_KEY_ID_BYTES
    version_ok = type(wrapped.version) is int and 1 <= wrapped.version < 2**32
    if not (key_id_ok and version_ok and 1 <= len(wrapped.ciphertext) <= MAX_WRAPPED_KEY_BYTES):
        raise KeyAccessError("the key provider returned a wrapped key an envelope cannot hold")


def _segment_count(plaintext_length: int, segment_size: int) -> int:
    return max(1, -(-plaintext_length // segment_size))


def _layout(body_length: int, segment_size: int) -> tuple[int, int]:
    """(segment count, plaintext length) of a body; ``IntegrityError`` if no layout fits."""
    stride = segment_size + TAG_BYTES
    count = max(1, -(-body_length // stride))
    if count > MAX_SEGMENTS or body_length - (count - 1) * stride < TAG_BYTES:
        raise IntegrityError
    return count, body_length - count * TAG_BYTES


def _remaining_length(source: BinaryIO) -> int | None:
    try:
        if not source.seekable():
            return None
        here = source.tell()
        end = source.seek(0, io.SEEK_END)
        source.seek(here)
    except (OSError, ValueError):
        return None
    return end - here


def _random(random_bytes: RandomBytes, n: int) -> bytes:
    value = random_bytes(n)
    if len(value) != n:
        raise ValueError("random_bytes returned the wrong number of bytes")
    return value


def _read_exact(source: BinaryIO, n: int) -> bytes:
    data = _read_up_to(source, n)
    if len(data) != n:
        raise IntegrityError
    return data


def _read_up_to(source: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at end of stream (raw streams may return short reads)."""
    data = source.read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    missing = n - len(data)
    while missing and (more := source.read(missing)):
        parts.append(more)
        missing -= len(more)
    return b"".join(parts)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_printable(text: str) -> bool:
    return not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)  # noqa: PLR2004 - C0 and DEL
