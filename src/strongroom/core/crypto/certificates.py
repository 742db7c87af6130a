"""The TLS server's certificate: a development certificate, fingerprints, and the start-up check.

``strongroom init`` makes a self-signed development certificate (ECDSA P-256, valid for
``localhost``, ``127.0.0.1`` and ``::1`` only, 90 days); operators supply their own otherwise.
Before the server listens, ``check_certificate_and_key`` proves that the configured certificate
and key belong together and that the certificate is valid now, so that a mistake is a clear
``ConfigurationError`` at start and never a handshake failure that clients see.

Invariants: time and serial-number randomness are passed in; the development key is never
encrypted (it lives beside its certificate in a 0600 file, as the server must read it unattended);
fingerprints are SHA-256 over the certificate's DER, in lower-case hex.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from strongroom.core.crypto._primitives import (
    CertificateFields,
    load_der_certificate,
    load_pem_certificates,
    private_key_public_der,
    self_signed_p256_certificate,
)
from strongroom.core.types import Clock, RandomBytes
from strongroom.errors import ConfigurationError, InvalidInputError

DEV_COMMON_NAME: Final = "strongroom-dev"
DEV_DNS_NAMES: Final = ("localhost",)
DEV_IP_ADDRESSES: Final = ("127.0.0.1", "::1")
DEV_LIFETIME: Final = timedelta(days=90)
DEV_BACKDATE: Final = timedelta(minutes=5)
"""``notBefore`` lies this far back, so a client whose clock is a little behind accepts it."""
SERIAL_BYTES: Final = 16
"""RFC 5280: positive, at most 20 octets; 127 random bits keep it unpredictable (CA/B rules)."""


@dataclass(frozen=True, slots=True)
class DevelopmentCertificate:
    key_pem: bytes
    cert_pem: bytes
    fingerprint: str
    not_after: datetime


@dataclass(frozen=True, slots=True)
class CertificateSummary:
    """What the server logs at start: which certificate it serves and until when."""

    subject: str
    fingerprint: str
    not_after: datetime


def generate_development_certificate(
    clock: Clock, random_bytes: RandomBytes
) -> DevelopmentCertificate:
    """A fresh key and a self-signed certificate for local development (see module docstring)."""
    now = clock()
    serial = int.from_bytes(random_bytes(SERIAL_BYTES), "big") >> 1
    key_pem, cert_pem = self_signed_p256_certificate(
        common_name=DEV_COMMON_NAME,
        dns_names=DEV_DNS_NAMES,
        ip_addresses=DEV_IP_ADDRESSES,
        not_before=now - DEV_BACKDATE,
        not_after=now + DEV_LIFETIME,
        serial=serial or 1,
    )
    return DevelopmentCertificate(
        key_pem=key_pem,
        cert_pem=cert_pem,
        fingerprint=certificate_fingerprint(pem_to_der(cert_pem)),
        not_after=now + DEV_LIFETIME,
    )


def certificate_fingerprint(der: bytes) -> str:
    """SHA-256 of the DER certificate, lower-case hex: what ``openssl x509 -fingerprint
    -sha256`` prints (without colons), so an operator can pin or compare it."""
    return hashlib.sha256(der).hexdigest()


def pem_to_der(pem: bytes) -> bytes:
    """The DER form of the first (leaf) certificate in ``pem``; ``InvalidInputError`` if none."""
    return load_pem_certificates(pem)[0].der


def certificate_subject(der: bytes) -> str:
    """RFC 4514 subject of a DER certificate (the ASGI TLS extension's ``client_cert_name``)."""
    return load_der_certificate(der).subject


def check_certificate_and_key(
    cert_pem: bytes, key_pem: bytes, now: datetime, *, cert_name: str, key_name: str
) -> CertificateSummary:
    """Raise ``ConfigurationError`` unless the leaf of ``cert_pem`` is valid at ``now`` and
    ``key_pem`` is its private key. ``cert_name`` and ``key_name`` (file paths) go in messages."""
    leaf = _leaf(cert_pem, cert_name)
    try:
        key_public = private_key_public_der(key_pem)
    except InvalidInputError as exc:
        raise ConfigurationError(
            f"cannot use the TLS private key {key_name}: {exc.message}",
            hint="expected an unencrypted PEM private key (PKCS#8, SEC1 or PKCS#1)",
        ) from None
    if key_public != leaf.public_key_der:
        raise ConfigurationError(
            f"the TLS private key {key_name} does not belong to the certificate {cert_name}",
            hint="point tls_key_file at the key the certificate was issued for",
        )
    if now < leaf.not_before:
        raise ConfigurationError(
            f"the TLS certificate {cert_name} is not valid before {leaf.not_before.isoformat()}",
            hint="check the system clock, or install a certificate that is valid now",
        )
    if now > leaf.not_after:
        raise ConfigurationError(
            f"the TLS certificate {cert_name} expired on {leaf.not_after.isoformat()}",
            hint="install a renewed certificate (and its key) at the configured paths",
        )
    return CertificateSummary(
        subject=leaf.subject,
        fingerprint=certificate_fingerprint(leaf.der),
        not_after=leaf.not_after,
    )


def _leaf(cert_pem: bytes, cert_name: str) -> CertificateFields:
    try:
        return load_pem_certificates(cert_pem)[0]
    except InvalidInputError:
        raise ConfigurationError(
            f"cannot read the TLS certificate {cert_name}",
            hint="expected a PEM certificate chain, leaf first",
        ) from None
