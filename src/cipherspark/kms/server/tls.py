"""TLS for the KMS server: its context, and a self-signed certificate when the operator brings none.

TLS 1.2 and 1.3 only, and TLS 1.2 with AEAD suites only (:data:`TLS12_CIPHERS`): ECDHE key
exchange with AES-GCM or ChaCha20-Poly1305, as Mozilla's "intermediate" configuration
(https://wiki.mozilla.org/Security/Server_Side_TLS). uvicorn's default cipher string
(``TLSv1``) also let TLS 1.2 clients negotiate CBC suites (``ECDHE-ECDSA-AES128-SHA``, the
Lucky13 family). TLS 1.3's suites are all AEAD and stay OpenSSL's defaults. The KMS client
(:mod:`cipherspark.kms._http`) offers the same list.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cipherspark._atomic import create_file
from cipherspark.errors import KmsError

__all__ = [
    "TLS12_CIPHERS",
    "certificate_fingerprint",
    "ensure_self_signed",
    "server_ssl_context",
    "ssl_context_factory",
]

#: OpenSSL cipher list for TLS 1.2: forward secret (ECDHE) and AEAD (AES-GCM, ChaCha20-Poly1305).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"


def server_ssl_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The KMS server's TLS context: TLS 1.2+ with :data:`TLS12_CIPHERS`, no client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise KmsError(
            f"cannot load the TLS certificate {cert_file} / key {key_file}: {exc}"
        ) from exc
    return context


def ssl_context_factory(cert_file: Path, key_file: Path) -> Callable[[Any, Any], ssl.SSLContext]:
    """uvicorn's ``ssl_context_factory`` for :func:`server_ssl_context` (its default is ignored)."""

    def factory(_config: Any, _default: Any) -> ssl.SSLContext:
        return server_ssl_context(cert_file, key_file)

    return factory


def certificate_fingerprint(cert_file: Path) -> str:
    """SHA-256 of the certificate's DER encoding, as colon-separated upper-case hex."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise KmsError(f"cannot read the TLS certificate {cert_file}: {exc}") from exc
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    if host not in ("", "0.0.0.0", "::", "localhost", "127.0.0.1", "::1"):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def ensure_self_signed(tls_dir: Path, host: str) -> tuple[Path, Path, bool]:
    """The (cert, key) files in ``tls_dir``, creating a self-signed pair if absent.

    Returns whether it created them. The certificate names localhost, 127.0.0.1, ::1 and
    ``host``, is valid for ten years, and is its own trust anchor: clients pin it as the CA.
    """
    cert_file, key_file = tls_dir / "cert.pem", tls_dir / "key.pem"
    if cert_file.exists() and key_file.exists():
        return cert_file, key_file, False
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cipherspark KMS")])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(_names(host)), critical=False)
        # CA:TRUE so verifiers that insist on a CA as trust anchor accept the pinned file.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Each file is created new (0600 for the key, from the moment it exists) and renamed into
    # place: a key.pem left there by someone else, perhaps 0644 or hard-linked to a file they
    # can read, is replaced as a name, never written into. The key goes first: a pair is
    # complete only once the certificate exists, so an interrupted run is redone next time.
    create_file(key_file, key_pem, mode=0o600)
    create_file(cert_file, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return cert_file, key_file, True
