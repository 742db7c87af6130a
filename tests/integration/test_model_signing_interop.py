"""Interoperability with the reference implementation, the ``model_signing`` package.

Models signed by ``model_signing``'s elliptic-key signer verify in Strongroom, and bundles made by
``sign_model`` verify with ``model_signing``'s elliptic-key verifier, for a single-file model and a
directory model. Keys are generated per test into ``tmp_path``; nothing is committed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import model_signing
import pytest

from strongroom.core.crypto._primitives import (
    generate_p256_private_key_pem,
    public_pem_from_private,
)
from strongroom.core.crypto.signing import check_files_match, sign_model, verify_bundle
from strongroom.errors import SignatureError


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path

    @property
    def public_pem(self) -> bytes:
        return self.public.read_bytes()


@dataclass(frozen=True)
class Model:
    path: Path
    single_file: bool

    @property
    def signature(self) -> Path:
        """Next to the model, outside it (a signature inside a directory would be hashed)."""
        return self.path.with_name(self.path.name + ".sig")

    def digests(self) -> dict[str, str]:
        """What a Strongroom caller passes: relative POSIX path -> SHA-256 hex."""
        if self.single_file:
            return {self.path.name: _sha256(self.path)}
        files = (p for p in self.path.rglob("*") if p.is_file())
        return {p.relative_to(self.path).as_posix(): _sha256(p) for p in files}

    def tamper(self) -> None:
        target = self.path if self.single_file else self.path / "sub" / "vocab.txt"
        target.write_bytes(target.read_bytes() + b"!")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    private = generate_p256_private_key_pem()
    (tmp_path / "keys").mkdir()
    result = Keys(tmp_path / "keys" / "signing.pem", tmp_path / "keys" / "signing.pub")
    result.private.write_bytes(private)
    result.public.write_bytes(public_pem_from_private(private))
    return result


@pytest.fixture(params=["single-file", "directory"])
def model(request: pytest.FixtureRequest, tmp_path: Path) -> Model:
    if request.param == "single-file":
        path = tmp_path / "fraud.onnx"
        path.write_bytes(b"\x08\x07onnx-model-bytes" * 100)
        return Model(path, single_file=True)
    path = tmp_path / "fraud-model"
    (path / "sub").mkdir(parents=True)
    (path / "model.onnx").write_bytes(b"\x08\x07onnx-model-bytes" * 100)
    # "sub-config.json" sorts before "sub/..." as a string but after it by path components.
    (path / "sub-config.json").write_text('{"threshold": 0.5}', encoding="utf-8")
    (path / "sub" / "vocab.txt").write_text("a\nb\n", encoding="utf-8")
    return Model(path, single_file=False)


def _model_signing_sign(model: Model, keys: Keys) -> str:
    model_signing.signing.Config().use_elliptic_key_signer(private_key=keys.private).sign(
        model.path, model.signature
    )
    return model.signature.read_text(encoding="utf-8")


def _model_signing_verify(model: Model, keys: Keys) -> None:
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=keys.public).verify(
        model.path, model.signature
    )


def _strongroom_sign(model: Model, keys: Keys) -> None:
    bundle = sign_model(
        model.digests(),
        subject_name=model.path.name,
        private_key_pem=keys.private.read_bytes(),
        single_file=model.single_file,
    )
    model.signature.write_text(bundle, encoding="utf-8")


def test_model_signing_bundle_verifies_in_strongroom(model: Model, keys: Keys) -> None:
    bundle = _model_signing_sign(model, keys)
    signer, statement = verify_bundle(bundle, {"release": keys.public_pem})
    assert signer == "release"
    assert statement.subject_name == model.path.name
    assert statement.single_file == model.single_file
    assert len(statement.resources) == len(model.digests())
    check_files_match(statement, model.digests())


def test_model_signing_bundle_rejects_tampered_model(model: Model, keys: Keys) -> None:
    bundle = _model_signing_sign(model, keys)
    model.tamper()
    _, statement = verify_bundle(bundle, {"release": keys.public_pem})
    with pytest.raises(SignatureError):
        check_files_match(statement, model.digests())


def test_model_signing_bundle_with_other_key_is_rejected(model: Model, keys: Keys) -> None:
    bundle = _model_signing_sign(model, keys)
    other = public_pem_from_private(generate_p256_private_key_pem())
    with pytest.raises(SignatureError):
        verify_bundle(bundle, {"other": other})


def test_strongroom_bundle_verifies_with_model_signing(model: Model, keys: Keys) -> None:
    _strongroom_sign(model, keys)
    _model_signing_verify(model, keys)
    signer, statement = verify_bundle(model.signature.read_text(), {"r": keys.public_pem})
    assert signer == "r"
    check_files_match(statement, model.digests())


def test_model_signing_rejects_strongroom_bundle_after_change(model: Model, keys: Keys) -> None:
    _strongroom_sign(model, keys)
    model.tamper()
    with pytest.raises(ValueError, match="Signature mismatch"):
        _model_signing_verify(model, keys)


def test_model_signing_rejects_strongroom_bundle_with_other_key(
    model: Model, keys: Keys, tmp_path: Path
) -> None:
    _strongroom_sign(model, keys)
    other = tmp_path / "keys" / "other.pub"
    other.write_bytes(public_pem_from_private(generate_p256_private_key_pem()))
    with pytest.raises(ValueError, match="Key mismatch"):
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=other).verify(
            model.path, model.signature
        )


def test_same_manifest_as_model_signing(model: Model, keys: Keys) -> None:
    """Both implementations describe the model with the same resources, in the same order."""
    reference = verify_bundle(_model_signing_sign(model, keys), {"r": keys.public_pem})[1]
    _strongroom_sign(model, keys)
    ours = verify_bundle(model.signature.read_text(), {"r": keys.public_pem})[1]
    assert ours.resources == reference.resources
    names = [r.name for r in ours.resources]
    assert model.single_file or names != sorted(names)  # the component order was exercised
    assert ours.subject_name == reference.subject_name
