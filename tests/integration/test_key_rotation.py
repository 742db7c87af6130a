"""KEK rotation with the real keyring, SQLite and blob files.

Rotation keeps every artifact readable, re-wraps every data key without touching ciphertext
bodies or writing plaintext anywhere, and retiring the old version makes blobs still wrapped by
it unreadable.
"""

from __future__ import annotations

import os
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
    states = {v.info.version: v.info.retired for v in harness.keys_service.usage()}
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
    rewrapped, skipped, failures = harness.keys_service.rewrap_all()
    assert (rewrapped, skipped, failures) == (3, 1, [])
    assert {v for v, _ in _headers_and_bodies(harness).values()} == {2}
    harness.keys_service.retire_below(2)
    _open_all(harness)


def test_crash_between_blob_rewrite_and_index_update_keeps_models_loadable(
    real_harness: Harness, trained_model
):
    """Rotation replaces the blob before it updates the metadata index; a crash in between
    must not make a live version look tampered, and the next run repairs the index."""
    harness = real_harness
    _publish_three(harness, trained_model.onnx)
    metadata = harness.metadata

    class CrashingIndex:
        def __getattr__(self, name):
            return getattr(metadata, name)

        def set_artifact_key_version(self, blob_id, key_version):
            raise KeyboardInterrupt

    harness.keys_service._metadata = CrashingIndex()
    with pytest.raises(KeyboardInterrupt):
        harness.keys_service.rotate()
    harness.keys_service._metadata = metadata
    _open_all(harness)
    rewrapped, skipped, failures = harness.keys_service.rewrap_all()
    assert failures == []
    assert rewrapped + skipped == 4
    assert {a.key_version for _, _, a in metadata.iter_artifacts()} == {2}


def test_unreferenced_blob_with_an_old_key_blocks_retirement(real_harness: Harness, trained_model):
    """A publish that wrote its blob but has not committed yet (or crashed) is invisible to
    the metadata; retirement reads every blob header, so it is refused, not stranded."""
    from strongroom.core.crypto import envelope

    harness = real_harness
    _publish_three(harness, trained_model.onnx)
    context = envelope.EnvelopeContext(
        model="fraud", version=9, path="model.onnx", manifest_digest="0" * 64
    )
    in_flight = "cd" * 16
    harness.blobs.put(
        in_flight,
        envelope.encrypt(
            b"payload",
            keys=harness.key_provider,
            context=context,
            random_bytes=os.urandom,
            segment_size=4096,
        ),
    )
    report = harness.keys_service.rotate(retire_old=True)
    assert report.retired_below is None
    assert "still use key versions [1]" in report.retire_refused
    with pytest.raises(ConflictError):
        harness.keys_service.retire_below(2)
    harness.blobs.delete(in_flight)
    harness.keys_service.retire_below(2)
    _open_all(harness)


def test_a_failing_artifact_does_not_stop_rotation_or_get_retired_away(
    real_harness: Harness, trained_model, tmp_path: Path
):
    harness = real_harness
    _publish_three(harness, trained_model.onnx)
    victim = next(a.blob_id for _, _, a in harness.metadata.iter_artifacts())
    path = tmp_path / "blobs" / victim[:2] / victim
    data = bytearray(path.read_bytes())
    data[30] ^= 0xFF  # inside the key block: cannot be unwrapped, so cannot be re-wrapped
    path.write_bytes(bytes(data))
    report = harness.keys_service.rotate(retire_old=True)
    assert [f.code for f in report.failures] == ["security.key_access"] or [
        f.code for f in report.failures
    ] == ["security.integrity"]
    assert report.rewrapped == 3
    assert report.retired_below is None, "never retire while an artifact still needs v1"
    assert report.retire_refused
    assert {v.info.version: v.info.retired for v in harness.keys_service.usage()} == {
        1: False,
        2: False,
    }
