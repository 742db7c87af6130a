"""The only module that touches ``cryptography.hazmat``.

Small, typed functions over the few primitives Strongroom uses: AES-256-GCM, scrypt, ECDSA
P-256 with SHA-256, Ed25519 (signed notes: audit checkpoints) and the X.509 certificates of the
TLS server (read, check, make a self-signed one for development). Everything else in
``core.crypto`` composes these. Failures of authentication or parsing surface as
``IntegrityError`` / ``SignatureError`` without detail.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from strongroom.errors import IntegrityError, InvalidInputError, SignatureError

AES_KEY_BYTES: Final = 32
GCM_NONCE_BYTES: Final = 12
GCM_TAG_BYTES: Final = 16


# --- AES-256-GCM --------------------------------------------------------------------------------


class Aead:
    """AES-256-GCM with one key; reuse the object for many segments (key schedule done once)."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != AES_KEY_BYTES:
            raise ValueError("AES-256-GCM needs a 32-byte key")
        self._aead = AESGCM(key)

    def seal(self, nonce: bytes, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        if len(nonce) != GCM_NONCE_BYTES:
            raise ValueError("AES-GCM nonce must be 12 bytes")
        return self._aead.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, ciphertext: bytes | memoryview, aad: bytes) -> bytes:
        """Decrypt and authenticate; ``IntegrityError`` on any mismatch."""
        if len(nonce) != GCM_NONCE_BYTES:
            raise IntegrityError
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag as exc:
            raise IntegrityError from exc


# --- HKDF ---------------------------------------------------------------------------------------


def hkdf_sha256(secret: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF with SHA-256: independent keys for independent purposes from one secret."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


# --- scrypt -------------------------------------------------------------------------------------


def scrypt_derive(passphrase: bytes, salt: bytes, *, n: int, r: int, p: int) -> bytes:
    """Derive a 32-byte key from a passphrase (keyring sealing)."""
    return Scrypt(salt=salt, length=AES_KEY_BYTES, n=n, r=r, p=p).derive(passphrase)


# --- ECDSA P-256 / SHA-256 ----------------------------------------------------------------------


def generate_p256_private_key_pem(password: bytes | None = None) -> bytes:
    """A fresh ECDSA P-256 private key as PKCS#8 PEM, encrypted when ``password`` is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _load_private(pem: bytes, password: bytes | None) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidInputError(
            "cannot read the signing key", hint="expected a PEM ECDSA P-256 private key"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InvalidInputError("signing key must be an ECDSA P-256 private key")
    return key


def _load_public(pem: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidInputError(
            "cannot read the public key", hint="expected a PEM ECDSA P-256 public key"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InvalidInputError("public key must be an ECDSA P-256 key")
    return key


def public_pem_from_private(private_pem: bytes, password: bytes | None = None) -> bytes:
    return public_pem_normalized(
        _load_private(private_pem, password)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def public_pem_normalized(public_pem: bytes) -> bytes:
    """Canonical SubjectPublicKeyInfo PEM of a P-256 public key (validates it)."""
    return _load_public(public_pem).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_fingerprint(public_pem: bytes) -> str:
    """SHA-256 hex of the canonical SPKI PEM: the ``publicKey.hint`` model_signing writes."""
    return hashlib.sha256(public_pem_normalized(public_pem)).hexdigest()


def ecdsa_p256_sign(private_pem: bytes, message: bytes, password: bytes | None = None) -> bytes:
    """DER-encoded ECDSA P-256 signature over SHA-256(message)."""
    return _load_private(private_pem, password).sign(message, ec.ECDSA(hashes.SHA256()))


def ecdsa_p256_verify(public_pem: bytes, signature_der: bytes, message: bytes) -> None:
    """Raise ``SignatureError`` unless ``signature_der`` is valid for ``message``."""
    key = _load_public(public_pem)
    try:
        key.verify(signature_der, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError from exc


# --- Ed25519 (C2SP signed notes: audit checkpoints) ---------------------------------------------

ED25519_KEY_BYTES: Final = 32
ED25519_SIGNATURE_BYTES: Final = 64


def _ed25519_private(private_raw: bytes) -> ed25519.Ed25519PrivateKey:
    if len(private_raw) != ED25519_KEY_BYTES:
        raise ValueError("an Ed25519 private key is 32 bytes (RFC 8032 seed)")
    return ed25519.Ed25519PrivateKey.from_private_bytes(private_raw)


def ed25519_public_from_private(private_raw: bytes) -> bytes:
    """The 32-byte RFC 8032 public key of a 32-byte private key (seed)."""
    return _ed25519_private(private_raw).public_key().public_bytes_raw()


def ed25519_sign(private_raw: bytes, message: bytes) -> bytes:
    """The 64-byte RFC 8032 signature of ``message`` (deterministic: no randomness needed)."""
    return _ed25519_private(private_raw).sign(message)


def ed25519_verify(public_raw: bytes, signature: bytes, message: bytes) -> None:
    """Raise ``SignatureError`` unless ``signature`` is a valid Ed25519 signature of ``message``."""
    if len(public_raw) != ED25519_KEY_BYTES or len(signature) != ED25519_SIGNATURE_BYTES:
        raise SignatureError
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError from exc


# --- X.509 (the server's TLS certificate) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateFields:
    """What Strongroom checks in a certificate, read once (no cryptography types escape)."""

    der: bytes
    subject: str
    """RFC 4514 distinguished name."""
    not_before: datetime
    not_after: datetime
    public_key_der: bytes
    """SubjectPublicKeyInfo DER: compared with the private key's to prove they match."""


def _certificate_fields(cert: x509.Certificate) -> CertificateFields:
    return CertificateFields(
        der=cert.public_bytes(serialization.Encoding.DER),
        subject=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        public_key_der=cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def load_pem_certificates(pem: bytes) -> list[CertificateFields]:
    """Every certificate of a PEM chain, leaf first; ``InvalidInputError`` if there is none."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise InvalidInputError("cannot read the certificate", hint="expected PEM") from exc
    return [_certificate_fields(cert) for cert in certs]


def load_der_certificate(der: bytes) -> CertificateFields:
    try:
        return _certificate_fields(x509.load_der_x509_certificate(der))
    except ValueError as exc:
        raise InvalidInputError("cannot read the certificate", hint="expected DER") from exc


def private_key_public_der(private_pem: bytes) -> bytes:
    """SubjectPublicKeyInfo DER of any unencrypted PEM private key (RSA, EC, Ed25519, ...)."""
    try:
        key = serialization.load_pem_private_key(private_pem, None)
    except TypeError as exc:  # encrypted: the server cannot prompt for a password
        raise InvalidInputError("the private key is encrypted") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidInputError("cannot read the private key", hint="expected PEM") from exc
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def self_signed_p256_certificate(
    *,
    common_name: str,
    dns_names: tuple[str, ...],
    ip_addresses: tuple[str, ...],
    not_before: datetime,
    not_after: datetime,
    serial: int,
) -> tuple[bytes, bytes]:
    """A fresh P-256 key (PKCS#8 PEM) and a self-signed TLS server certificate (PEM) for it.

    An end-entity certificate (not a CA) valid for the given names only, so that trusting it
    for development trusts nothing else. The key comes from OpenSSL's CSPRNG.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)
