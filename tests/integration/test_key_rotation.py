"""KEK rotation with the real keyring, SQLite and blob files.

Rotation keeps every artifact readable, re-wraps every data key without touching ciphertext
bodies or writing plaintext anywhere, and retiring the old version makes blobs still wrapped by
it unreadable.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Harness
from strongroom.core.crypto import envelope
from strongroom.errors import ConflictError, SecurityError


def _headers_and_bodies(harness: Harness) -> dict[str, tuple[int, bytes]]:
    result = {}
    for _, _, artifact in harness.metadata.iter_artifacts():
        with harness.blobs.open(artifact.blob_id) as source:
            header = envelope.read_header(source)
            source.seek(header.header_length)
            result[artifact.blob_id] = (header.wrapped_key.version, source.read())
    return result


def _publish_three(harness: Harness, onnx: bytes) -> None:
    harness.publish("fraud", {"model.onnx": onnx})
    harness.publish("fraud", {"model.onnx": onnx, "NOTES.md": b"v2\n"}, single_file=False)
    harness.publish("credit", {"model.onnx": onnx})


def _open_all(harness: Harness) -> None:
    for model, version in (("fraud", 1), ("fraud", 2), ("credit", 1)):
        harness.registry.open_verified(model, version)


class RecordingBlobs:
    """Blob store proxy that keeps every chunk written, to prove no plaintext is written."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.written: list[bytes] = []

    def put(self, blob_id, chunks):
        def record():
            for chunk in chunks:
                self.written.append(bytes(chunk))
                yield chunk

        return self.inner.put(blob_id, record())

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_rotation_rewraps_every_key_and_retires_the_old_version(
    real_harness: Harness, trained_model, tmp_path: Path
):
    harness = real_harness
    _publish_three(harness, trained_model.onnx)
    before = _headers_and_bodies(harness)
    assert {version for version, _ in before.values()} == {1}
    old_blob = next(iter(before))
    old_bytes = (tmp_path / "blobs" / old_blob[:2] / old_blob).read_bytes()

    recording = RecordingBlobs(harness.blobs)
    harness.keys_service._blobs = recording
    report = harness.keys_service.rotate(retire_old=True)

    assert report.new_version.version == 2
    assert report.rewrapped == len(before) == 4
    assert report.retired_below == 2
    after = _headers_and_bodies(harness)
    assert {blob: version for blob, (version, _) in after.items()} == dict.fromkeys(before, 2)
    assert {blob: body for blob, (_, body) in after.items()} == {
        blob: body for blob, (_, body) in before.items()
    }, "bodies are copied verbatim, never re-encrypted"
    window = trained_model.onnx[100:164]
    assert recording.written and not any(window in chunk for chunk in recording.written)
    _open_all(harness)
    states = {v.info.version: v.info.retired for v in harness.keys_service.list()}
    assert states == {1: True, 2: False}

    # A blob still wrapped by the retired version no longer opens.
    (tmp_path / "blobs" / old_blob[:2] / old_blob).write_bytes(old_bytes)
    owner = next((m, v) for m, v, a in harness.metadata.iter_artifacts() if a.blob_id == old_blob)
    with pytest.raises(SecurityError):
        harness.registry.open_verified(*owner)


def test_retiring_is_refused_while_artifacts_need_the_old_version(
    real_harness: Harness, trained_model
):
    harness = real_harness
    _publish_three(harness, trained_model.onnx)
    harness.key_provider.rotate()  # a new version exists, nothing re-wrapped yet
    with pytest.raises(ConflictError):
        harness.keys_service.retire_below(2)
    _open_all(harness)


def test_interrupted_rotation_resumes(real_harness: Harness, trained_model):
    harness = real_harness
    _publish_three(harness, trained_model.onnx)

    def crash_after_first(done: int, total: int) -> None:
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        harness.keys_service.rotate(on_progress=crash_after_first)
    versions = {version for version, _ in _headers_and_bodies(harness).values()}
    assert versions == {1, 2}, "half-rotated state"
    _open_all(harness)  # still readable mid-way
    rewrapped, skipped = harness.keys_service.rewrap_all()
    assert (rewrapped, skipped) == (3, 1)
    assert {v for v, _ in _headers_and_bodies(harness).values()} == {2}
    harness.keys_service.retire_below(2)
    _open_all(harness)
