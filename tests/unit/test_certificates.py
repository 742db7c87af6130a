"""``core.crypto.certificates``: the development certificate and the start-up check.

The certificate is inspected with ``cryptography`` directly (an independent reader), and
fingerprints with ``hashlib`` and the stdlib's PEM decoder.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import ssl
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from strongroom.core.crypto.certificates import (
    DEV_LIFETIME,
    CertificateSummary,
    certificate_fingerprint,
    certificate_subject,
    check_certificate_and_key,
    generate_development_certificate,
    pem_to_der,
)
from strongroom.errors import ConfigurationError, InvalidInputError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SERIAL_BYTES = bytes(range(1, 17))


def fixed_random(n: int) -> bytes:
    return SERIAL_BYTES[:n]


def dev(when: datetime = NOW) -> tuple[bytes, bytes]:
    made = generate_development_certificate(lambda: when, fixed_random)
    return made.cert_pem, made.key_pem


def check(cert_pem: bytes, key_pem: bytes, now: datetime = NOW) -> CertificateSummary:
    return check_certificate_and_key(cert_pem, key_pem, now, cert_name="c.pem", key_name="k.pem")


def test_development_certificate_fields():
    made = generate_development_certificate(lambda: NOW, fixed_random)
    cert = x509.load_pem_x509_certificate(made.cert_pem)
    key = serialization.load_pem_private_key(made.key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.public_key() == key.public_key()
    assert cert.subject.rfc4514_string() == "CN=strongroom-dev" == cert.issuer.rfc4514_string()
    assert cert.serial_number == int.from_bytes(SERIAL_BYTES, "big") >> 1
    assert cert.not_valid_after_utc == NOW + timedelta(days=90) == made.not_after
    assert cert.not_valid_before_utc <= NOW
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    cert.verify_directly_issued_by(cert)  # self-signed
    assert (
        made.fingerprint
        == hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    )


def test_each_development_certificate_has_its_own_key_and_serial():
    first = generate_development_certificate(lambda: NOW, os.urandom)
    second = generate_development_certificate(lambda: NOW, os.urandom)
    assert first.key_pem != second.key_pem and first.fingerprint != second.fingerprint
    serials = {x509.load_pem_x509_certificate(c.cert_pem).serial_number for c in (first, second)}
    assert len(serials) == 2


def test_zero_serial_randomness_still_gives_a_positive_serial():
    made = generate_development_certificate(lambda: NOW, bytes)  # n zero bytes
    assert x509.load_pem_x509_certificate(made.cert_pem).serial_number == 1


def test_fingerprint_and_der_agree_with_the_stdlib():
    cert_pem, _ = dev()
    der = pem_to_der(cert_pem)
    assert der == ssl.PEM_cert_to_DER_cert(cert_pem.decode())
    assert certificate_fingerprint(der) == hashlib.sha256(der).hexdigest()
    assert len(certificate_fingerprint(der)) == 64
    assert certificate_subject(der) == "CN=strongroom-dev"


def test_pem_to_der_takes_the_leaf_of_a_chain_and_refuses_garbage():
    leaf, _ = dev()
    other, _ = dev(NOW + timedelta(days=1))
    assert pem_to_der(leaf + other) == pem_to_der(leaf)
    with pytest.raises(InvalidInputError):
        pem_to_der(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(InvalidInputError):
        pem_to_der(b"")
    with pytest.raises(InvalidInputError):
        certificate_subject(b"\x30\x03\x02\x01\x01")


def test_a_matching_valid_pair_passes_and_is_summarised():
    cert_pem, key_pem = dev()
    summary = check_certificate_and_key(
        cert_pem, key_pem, NOW + timedelta(days=1), cert_name="c", key_name="k"
    )
    assert summary.subject == "CN=strongroom-dev"
    assert summary.fingerprint == certificate_fingerprint(pem_to_der(cert_pem))
    assert summary.not_after == NOW + DEV_LIFETIME


def test_an_operator_rsa_certificate_is_accepted():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api.example")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1, as many CAs hand it out
        serialization.NoEncryption(),
    )
    check(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def test_a_key_from_another_certificate_is_refused():
    cert_pem, _ = dev()
    _, other_key = dev()
    with pytest.raises(
        ConfigurationError, match=r"k\.pem does not belong to the certificate c\.pem"
    ):
        check(cert_pem, other_key)


def test_expired_and_not_yet_valid_certificates_are_refused():
    cert_pem, key_pem = dev()
    check(cert_pem, key_pem, NOW + DEV_LIFETIME)  # the last valid instant
    with pytest.raises(ConfigurationError, match="expired on 2026-05-30"):
        check(cert_pem, key_pem, NOW + DEV_LIFETIME + timedelta(seconds=1))
    with pytest.raises(ConfigurationError, match="not valid before") as early:
        check(cert_pem, key_pem, NOW - timedelta(hours=1))
    assert "clock" in (early.value.hint or "")


def test_unreadable_certificates_and_keys_are_refused_with_their_file_names():
    cert_pem, key_pem = dev()
    with pytest.raises(ConfigurationError, match=r"cannot read the TLS certificate c\.pem"):
        check(b"not pem", key_pem)
    with pytest.raises(ConfigurationError, match=r"cannot use the TLS private key k\.pem"):
        check(cert_pem, b"not pem")
    encrypted = serialization.load_pem_private_key(key_pem, None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret-password"),
    )
    with pytest.raises(ConfigurationError, match="encrypted"):
        check(cert_pem, encrypted)
