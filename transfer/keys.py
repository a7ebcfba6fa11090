"""Signing keys: PEM files in, signatures out, with ``cryptography`` (nothing hand-rolled).

Two algorithms: ``ecdsa-p256-sha256`` (the default; what ``openssl dgst -sha256`` and
``cosign verify-blob --key`` check: a DER-encoded ECDSA signature over SHA-256 of the data) and
``ed25519``. Keys are PEM: private keys PKCS#8 (``BEGIN PRIVATE KEY`` or, with a passphrase,
``BEGIN ENCRYPTED PRIVATE KEY``; a ``BEGIN EC PRIVATE KEY`` file from ``openssl ecparam -genkey``
reads too), public keys SubjectPublicKeyInfo (``BEGIN PUBLIC KEY``). A key's fingerprint is the
SHA-256 of its public key's DER encoding, written ``sha256:<hex>``.

A key file is untrusted input like any other: read bounded, refused in one line naming the file.
The passphrase of an encrypted private key comes from ``TRANSFER_KEY_PASSPHRASE``, else from the
terminal (not echoed), else from the first line of standard input when that is not a terminal;
it is never printed or logged. ``cryptography`` is imported here only, and only when a key is used,
so commands that sign nothing do not pay for it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from transfer.errors import SignatureError, UsageError

ECDSA_P256 = "ecdsa-p256-sha256"
ED25519 = "ed25519"
ALGORITHMS = (ECDSA_P256, ED25519)
PASSPHRASE_ENV = "TRANSFER_KEY_PASSPHRASE"
MAX_KEY_FILE = 64 * 1024


class PublicKey(NamedTuple):
    """A trusted public key: the key object, its algorithm, fingerprint and where it came from."""

    key: Any
    algorithm: str
    fingerprint: str
    source: str


class PrivateKey(NamedTuple):
    key: Any
    algorithm: str
    fingerprint: str  # of the matching public key
    source: str


def _read_key_file(path: str | os.PathLike[str]) -> bytes:
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise UsageError(f"cannot read key {str(p)!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE:
        raise UsageError(f"key {str(p)!r} is larger than {MAX_KEY_FILE} bytes: not a PEM key")
    return data


def _algorithm_of(key: Any, source: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        if not isinstance(key.curve, ec.SECP256R1):
            raise UsageError(f"key {source!r} is on curve {key.curve.name}; only P-256 (secp256r1) is supported")
        return ECDSA_P256
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return ED25519
    raise UsageError(f"key {source!r} is a {type(key).__name__.lstrip('_')}; use ECDSA P-256 or Ed25519")


def fingerprint(public_key: Any) -> str:
    """``sha256:<hex>`` of the public key's DER SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def public_key_from_pem(data: bytes, source: str) -> PublicKey:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        if b"PRIVATE KEY" in data:
            raise UsageError(f"{source!r} is a private key; give the public key (.pub) to check with") from None
        raise UsageError(f"{source!r} is not a PEM public key") from None
    return PublicKey(key, _algorithm_of(key, source), fingerprint(key), source)


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    return public_key_from_pem(_read_key_file(path), str(path))


def load_public_keys(paths: Sequence[str | os.PathLike[str]]) -> list[PublicKey]:
    """Every key of ``--key PUB`` (repeatable); duplicates (same fingerprint) kept once."""
    keys: dict[str, PublicKey] = {}
    for path in paths:
        k = load_public_key(path)
        keys.setdefault(k.fingerprint, k)
    return list(keys.values())


def _passphrase(source: str) -> bytes:
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        return env.encode()
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass  # here: it loads termios, which only a prompt needs

        return getpass.getpass(f"Passphrase for {source}: ").encode()
    if sys.stdin is not None:
        line = sys.stdin.buffer.readline(4096) if hasattr(sys.stdin, "buffer") else sys.stdin.readline(4096).encode()
        if line:
            return line.rstrip(b"\r\n")
    raise UsageError(f"key {source!r} is encrypted: set {PASSPHRASE_ENV} or give the passphrase on standard input")


def load_private_key(path: str | os.PathLike[str], passphrase: bytes | None = None) -> PrivateKey:
    """Read a PEM private key; an encrypted one asks for its passphrase (see the module's text)."""
    from cryptography.hazmat.primitives import serialization

    source = str(path)
    data = _read_key_file(path)
    if b"PRIVATE KEY" not in data:
        if b"PUBLIC KEY" in data:
            raise UsageError(f"{source!r} is a public key; signing needs the private key")
        raise UsageError(f"{source!r} is not a PEM private key")
    encrypted = b"ENCRYPTED" in data or b"Proc-Type: 4,ENCRYPTED" in data
    if encrypted and passphrase is None:
        passphrase = _passphrase(source)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except TypeError:
        raise UsageError(f"key {source!r} is encrypted: set {PASSPHRASE_ENV} or give the passphrase on standard input") from None
    except ValueError:
        if encrypted:
            raise UsageError(f"cannot decrypt key {source!r}: wrong passphrase?") from None
        raise UsageError(f"{source!r} is not a PEM private key") from None
    algorithm = _algorithm_of(key, source)
    return PrivateKey(key, algorithm, fingerprint(key.public_key()), source)


def sign(private: PrivateKey, data: bytes) -> bytes:
    """The signature of ``data``: DER ECDSA over SHA-256, or a raw 64-byte Ed25519 signature."""
    if private.algorithm == ECDSA_P256:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        return bytes(private.key.sign(data, ec.ECDSA(hashes.SHA256())))
    return bytes(private.key.sign(data))


def verify(public: PublicKey, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` over ``data`` was made by ``public``'s private key."""
    from cryptography.exceptions import InvalidSignature

    try:
        if public.algorithm == ECDSA_P256:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import ec

            public.key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            public.key.verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_any(keys: Sequence[PublicKey], signature: bytes, data: bytes, *, fingerprint: str | None = None) -> PublicKey:
    """The trusted key that made ``signature`` over ``data``; SignatureError when none did.

    With ``fingerprint`` (as a signature record names its key) only that key is tried, and a
    fingerprint no trusted key has is said so."""
    candidates = [k for k in keys if fingerprint is None or k.fingerprint == fingerprint]
    if not candidates:
        raise SignatureError(f"signed by key {fingerprint}, which is not among the {len(keys)} trusted key(s)")
    for k in candidates:
        if verify(k, signature, data):
            return k
    raise SignatureError("the signature does not match the signed content for any trusted key")


def generate(private_path: str | os.PathLike[str], public_path: str | os.PathLike[str], *,
             algorithm: str = ECDSA_P256, passphrase: bytes | None = None) -> PrivateKey:
    """Make a key pair: the private key PKCS#8 PEM (mode 0600; encrypted when a passphrase is
    given), the public key SubjectPublicKeyInfo PEM. Neither file may exist already."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if algorithm not in ALGORITHMS:
        raise UsageError(f"unknown key algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    key: Any = ec.generate_private_key(ec.SECP256R1()) if algorithm == ECDSA_P256 else ed25519.Ed25519PrivateKey.generate()
    encryption: Any = (serialization.BestAvailableEncryption(passphrase) if passphrase
                       else serialization.NoEncryption())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise UsageError(f"{str(path)!r} exists already; not overwriting a key")
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    with open(public_path, "xb") as f:
        f.write(public_pem)
    return PrivateKey(key, algorithm, fingerprint(key.public_key()), str(private_path))
