"""Client-side signing use case: sign model files the way the OpenSSF ``model_signing`` tool does.

Used by ``strongroom model push --sign-key`` and the quickstart. The server never needs a private
key: it only verifies (``RegistryService``).
"""

from __future__ import annotations

from collections.abc import Mapping

from strongroom.core.crypto import signing
from strongroom.core.registry.manifest import sha256_hex


def sign_files(
    files: Mapping[str, bytes],
    *,
    subject_name: str,
    private_key_pem: bytes,
    password: bytes | None = None,
    single_file: bool = False,
) -> str:
    """Return a sigstore bundle (JSON text) over the files' SHA-256 digests."""
    digests = {path: sha256_hex(data) for path, data in files.items()}
    return signing.sign_model(
        digests,
        subject_name=subject_name,
        private_key_pem=private_key_pem,
        password=password,
        single_file=single_file,
    )


def generate_signing_key() -> tuple[bytes, bytes]:
    """A fresh ECDSA P-256 key pair as (private PKCS#8 PEM, public SPKI PEM)."""
    return signing.generate_signing_key()
