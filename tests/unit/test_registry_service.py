"""RegistryService use cases on in-memory fakes (and the real adapters where it matters)."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from conftest import Harness, build_harness, make_signer
from strongroom.core.registry.model import Stage
from strongroom.errors import (
    ConflictError,
    IntegrityError,
    InvalidInputError,
    InvalidTransitionError,
    NotFoundError,
    SignatureError,
    UnsupportedFormatError,
)
from strongroom.testing.fake_keys import FakeKeyProvider
from strongroom.testing.fake_storage import InMemoryBlobStore, InMemoryMetadataStore

SRC = Path(__file__).resolve().parents[2] / "src" / "strongroom"


def test_publish_then_open_verified_returns_the_signed_bytes(fake_harness: Harness, trained_model):
    result = fake_harness.publish("fraud", {"model.onnx": trained_model.onnx})
    assert result.record.version == 1
    assert result.signer == "team-a"
    artifact = fake_harness.registry.open_verified("fraud", 1)
    assert artifact.primary_bytes == trained_model.onnx
    assert artifact.manifest_digest == result.manifest.digest()
    assert artifact.signer == "team-a"
    assert artifact.input_schema["features"], "schema inferred from the ONNX graph"


def test_loaded_model_predicts_like_the_in_process_model(fake_harness: Harness, trained_model):
    fake_harness.publish("fraud", {"model.onnx": trained_model.onnx})
    fake_harness.lifecycle.promote("fraud", 1, Stage.PRODUCTION, reason="go", actor="t")
    loaded = fake_harness.registry.load_model("fraud")
    rows = trained_model.features[:20]
    outputs = loaded.predict({"input": rows})
    np.testing.assert_allclose(
        outputs["probabilities"], trained_model.sklearn.predict_proba(rows), atol=1e-5
    )


def test_unsigned_version_is_refused_by_default(fake_harness: Harness, trained_model):
    with pytest.raises(SignatureError):
        fake_harness.publish("fraud", {"model.onnx": trained_model.onnx}, signed=False)
    assert fake_harness.metadata.list_models() == []
    assert fake_harness.blobs.list_ids() == [], "nothing stored for a refused version"


def test_unsafe_allow_unsigned_publishes_with_a_warning_and_records_it(signer, trained_model):
    harness = build_harness(
        InMemoryMetadataStore(),
        InMemoryBlobStore(),
        FakeKeyProvider(),
        signer,
        unsafe_allow_unsigned=True,
    )
    result = harness.publish("fraud", {"model.onnx": trained_model.onnx}, signed=False)
    assert result.signer is None
    assert result.warnings and "unsafe_allow_unsigned" in result.warnings[0]
    assert result.manifest.signature_sha256 is None
    assert harness.registry.open_verified("fraud", 1).signer is None


def test_signer_outside_its_model_patterns_is_refused(signer, trained_model):
    harness = build_harness(
        InMemoryMetadataStore(),
        InMemoryBlobStore(),
        FakeKeyProvider(),
        signer,
        patterns=("credit-*",),
    )
    with pytest.raises(SignatureError):
        harness.publish("fraud", {"model.onnx": trained_model.onnx})


def test_removing_a_signer_from_the_policy_stops_its_models_loading(trained_model):
    metadata, blobs, keys = InMemoryMetadataStore(), InMemoryBlobStore(), FakeKeyProvider()
    trusted = make_signer("old-team")
    build_harness(metadata, blobs, keys, trusted).publish(
        "fraud", {"model.onnx": trained_model.onnx}
    )
    reconfigured = build_harness(metadata, blobs, keys, make_signer("new-team"))
    with pytest.raises(SignatureError):
        reconfigured.registry.open_verified("fraud", 1)


def test_signature_over_other_bytes_is_refused(fake_harness: Harness, trained_model):
    from strongroom.core.registry.manifest import ModelCard
    from strongroom.services.publishing import PublishRequest
    from strongroom.services.signing import sign_files

    bundle = sign_files(
        {"model.onnx": trained_model.onnx + b"\x00"},
        subject_name="model.onnx",
        private_key_pem=fake_harness.signer.private_pem,
        single_file=True,
    )
    request = PublishRequest(
        model="fraud",
        files={"model.onnx": trained_model.onnx},
        card=ModelCard(owner="t"),
        actor="t",
        single_file=True,
        signature_bundle=bundle,
    )
    with pytest.raises(SignatureError):
        fake_harness.registry.publish(request)


def test_pickle_is_refused_before_anything_is_stored(fake_harness: Harness):
    import pickle

    with pytest.raises(UnsupportedFormatError) as caught:
        fake_harness.publish("fraud", {"model.pkl": pickle.dumps({"w": [1, 2]})})
    assert "skl2onnx" in str(caught.value) or "skops" in str(caught.value)
    assert fake_harness.blobs.list_ids() == []


def test_auxiliary_files_must_be_text_documents(fake_harness: Harness, trained_model):
    files = {"model.onnx": trained_model.onnx, "README.md": b"# fraud model\n"}
    result = fake_harness.publish("fraud", files, single_file=False)
    assert result.manifest.primary == "model.onnx"
    assert set(fake_harness.registry.open_verified("fraud", 1).files) == set(files)
    with pytest.raises(UnsupportedFormatError):
        fake_harness.publish(
            "fraud",
            {"model.onnx": trained_model.onnx, "extra.bin": b"\x80\x04K\x01."},
            single_file=False,
            primary="model.onnx",
        )


def test_invalid_model_names_are_refused(fake_harness: Harness, trained_model):
    for name in ("", "Fraud", "../x", "a" * 65, "fraud/1", "-x"):
        with pytest.raises(InvalidInputError):
            fake_harness.publish(name, {"model.onnx": trained_model.onnx})


# --- stages -------------------------------------------------------------------------------------


def test_stages_promote_archive_and_rollback(fake_harness: Harness, trained_model):
    registry, lifecycle = fake_harness.registry, fake_harness.lifecycle
    for _ in range(2):
        fake_harness.publish("fraud", {"model.onnx": trained_model.onnx})
    lifecycle.promote("fraud", 1, Stage.STAGING, reason="candidate", actor="alice")
    lifecycle.promote("fraud", 1, Stage.PRODUCTION, reason="approved", actor="bob")
    lifecycle.promote("fraud", 2, Stage.PRODUCTION, reason="better AUC", actor="bob")
    stages = {v.record.version: v.record.stage for v in registry.list_versions("fraud")}
    assert stages == {1: Stage.ARCHIVED, 2: Stage.PRODUCTION}

    events = lifecycle.rollback("fraud", reason="false positives", actor="carol")
    assert [(e.version, e.to_stage) for e in events] == [
        (2, Stage.ARCHIVED),
        (1, Stage.PRODUCTION),
    ]
    assert registry.open_verified("fraud").version == 1
    history = lifecycle.history("fraud")
    assert [e.kind for e in history][-2:] == ["replaced", "rollback"]
    assert history[-1].reason == "false positives" and history[-1].actor == "carol"


def test_stage_rules(fake_harness: Harness, trained_model):
    lifecycle = fake_harness.lifecycle
    fake_harness.publish("fraud", {"model.onnx": trained_model.onnx})
    with pytest.raises(InvalidInputError):
        lifecycle.promote("fraud", 1, Stage.STAGING, reason="  ", actor="a")
    with pytest.raises(InvalidTransitionError):
        lifecycle.promote("fraud", 1, Stage.NONE, reason="x", actor="a")
    with pytest.raises(InvalidTransitionError):
        lifecycle.rollback("fraud", reason="no production yet", actor="a")
    lifecycle.promote("fraud", 1, Stage.PRODUCTION, reason="x", actor="a")
    with pytest.raises(InvalidTransitionError):
        lifecycle.rollback("fraud", reason="nothing earlier", actor="a")
    with pytest.raises(NotFoundError):
        lifecycle.promote("fraud", 9, Stage.STAGING, reason="x", actor="a")


def test_a_version_that_does_not_verify_never_reaches_production(
    fake_harness: Harness, trained_model
):
    fake_harness.publish("fraud", {"model.onnx": trained_model.onnx})
    (blob_id,) = fake_harness.blobs.list_ids()
    fake_harness.blobs.tamper(blob_id, lambda b: b[:-1] + bytes([b[-1] ^ 1]))
    with pytest.raises(IntegrityError):
        fake_harness.lifecycle.promote("fraud", 1, Stage.PRODUCTION, reason="x", actor="a")
    assert fake_harness.metadata.production_version("fraud") is None


# --- crash safety and gc ------------------------------------------------------------------------


class _FailingMetadata(InMemoryMetadataStore):
    def add_version(self, record):  # simulates the database failing at commit time
        raise ConflictError("simulated commit failure")


def test_failed_commit_leaves_no_blobs(signer, trained_model):
    blobs = InMemoryBlobStore()
    harness = build_harness(_FailingMetadata(), blobs, FakeKeyProvider(), signer)
    with pytest.raises(ConflictError):
        harness.publish("fraud", {"model.onnx": trained_model.onnx})
    assert blobs.list_ids() == []


def test_gc_removes_old_orphans_only(fake_harness: Harness, trained_model):
    fake_harness.publish("fraud", {"model.onnx": trained_model.onnx})
    (kept,) = fake_harness.blobs.list_ids()
    orphan = "ab" * 16
    fake_harness.blobs.put(orphan, [b"left by a crashed publish"])

    young = fake_harness.registry.collect_garbage(dry_run=False)  # default: older than 1 h
    assert young.orphan_blobs == []
    assert young.too_young == 1, "a fresh blob may belong to a publish in flight"
    assert fake_harness.blobs.exists(orphan)

    fake_harness.blobs.modified[orphan] -= timedelta(hours=2)
    dry = fake_harness.registry.collect_garbage(dry_run=True)
    assert dry.orphan_blobs == [orphan]
    assert fake_harness.blobs.exists(orphan)
    report = fake_harness.registry.collect_garbage(dry_run=False)
    assert report.orphan_blobs == [orphan]
    assert fake_harness.blobs.list_ids() == [kept]
    fake_harness.registry.open_verified("fraud", 1)


# --- the choke point ----------------------------------------------------------------------------


def test_only_the_registry_service_issues_verified_artifacts():
    """The one path from bytes to model: no production module but services/registry.py calls
    issue_verified_artifact or constructs VerifiedArtifact."""
    callers = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in {"issue_verified_artifact", "VerifiedArtifact"}:
                    callers.append(path.relative_to(SRC).as_posix())
    assert sorted(set(callers)) == ["core/registry/artifact.py", "services/registry.py"]


def test_verified_artifact_cannot_be_built_without_the_token():
    from strongroom.core.registry.artifact import VerifiedArtifact
    from strongroom.core.registry.formats import ModelFormat

    with pytest.raises(TypeError):
        VerifiedArtifact(
            object(),  # type: ignore[arg-type]
            model="m",
            version=1,
            manifest_digest="0" * 64,
            format=ModelFormat.ONNX,
            primary="m.onnx",
            files={"m.onnx": b""},
            trusted_types=(),
            input_schema={},
            signer=None,
        )


def test_repeated_rollback_steps_back_never_forward(fake_harness: Harness, trained_model):
    lifecycle = fake_harness.lifecycle
    for version in (1, 2, 3):
        fake_harness.publish("fraud", {"model.onnx": trained_model.onnx})
        lifecycle.promote("fraud", version, Stage.PRODUCTION, reason="release", actor="a")
    lifecycle.rollback("fraud", reason="v3 bad", actor="a")
    assert fake_harness.metadata.production_version("fraud") == 2
    lifecycle.rollback("fraud", reason="v2 bad too", actor="a")
    assert fake_harness.metadata.production_version("fraud") == 1, "not back to the bad v3"
    with pytest.raises(InvalidTransitionError):
        lifecycle.rollback("fraud", reason="nothing earlier", actor="a")


def test_signature_for_another_model_is_not_replayable(fake_harness: Harness, trained_model):
    """A signer trusted for fraud-* signs fraud-us; that bundle must not publish fraud-eu."""
    from strongroom.core.registry.manifest import ModelCard
    from strongroom.services.publishing import PublishRequest
    from strongroom.services.signing import sign_files

    files = {"model.onnx": trained_model.onnx}
    bundle = sign_files(
        files,
        subject_name="fraud-us",
        private_key_pem=fake_harness.signer.private_pem,
        single_file=True,
    )
    for model, accepted in (("fraud-us", True), ("fraud-eu", False)):
        request = PublishRequest(
            model=model,
            files=files,
            card=ModelCard(owner="t"),
            actor="t",
            single_file=True,
            signature_bundle=bundle,
        )
        if accepted:
            fake_harness.registry.publish(request)
        else:
            with pytest.raises(SignatureError):
                fake_harness.registry.publish(request)
    assert fake_harness.registry.list_models() == ["fraud-us"]
