"""Ed25519 for callers outside ``core.crypto`` (e.g. the token issuer): raw 32-byte seeds and
public keys, signatures as bytes. ``_primitives`` stays the only module touching hazmat."""

from __future__ import annotations

from strongroom.core.crypto._primitives import (
    ED25519_KEY_BYTES,
    ed25519_public_from_private,
    ed25519_sign,
    ed25519_verify,
)

__all__ = ["ED25519_KEY_BYTES", "ed25519_public_from_private", "ed25519_sign", "ed25519_verify"]
