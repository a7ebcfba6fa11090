"""Certificates for the test bed, made with ``cryptography``: a CA plus a loopback server
certificate (TLS registries) and a self-signed RSA signer (token server JWTs).

Keys are generated once per process and reused: key generation is the slow part.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: str, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: ``ca_cert`` (trust this), ``server_cert``/``server_key`` (the registry serves
    these) and ``cert_dir``, a directory holding only ``ca.crt`` for skopeo's ``--*-cert-dir``."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    cert_dir: Path  # only ca.crt: for skopeo --src-cert-dir/--dest-cert-dir


@functools.cache
def _ca_and_server() -> tuple[bytes, bytes, bytes]:
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        _builder("transfer test CA", "transfer test CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    server = (
        _builder("127.0.0.1", "transfer test CA", server_key.public_key())
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _pem(ca), _pem(server), _key_pem(server_key)


def write_tls_files(directory: Path) -> TlsFiles:
    """Write a CA and a server certificate for 127.0.0.1 and localhost into ``directory``."""
    ca_pem, server_pem, key_pem = _ca_and_server()
    directory.mkdir(parents=True, exist_ok=True)
    cert_dir = directory / "trust"
    cert_dir.mkdir(exist_ok=True)
    files = TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key", cert_dir)
    files.ca_cert.write_bytes(ca_pem)
    (cert_dir / "ca.crt").write_bytes(ca_pem)
    files.server_cert.write_bytes(server_pem)
    files.server_key.write_bytes(key_pem)
    return files


@functools.cache
def signer_cert_der() -> bytes:
    """A self-signed certificate for the token signing key: the JWT x5c leaf and the registry's
    rootcertbundle at once."""
    key = rsa_key()
    cert = _builder("transfer test token signer", "transfer test token signer", key.public_key())
    cert = cert.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER)


def signer_cert_pem() -> bytes:
    return _pem(x509.load_der_x509_certificate(signer_cert_der()))
