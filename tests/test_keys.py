"""transfer.keys against openssl, an independent implementation: keys either one makes are read
by the other, and signatures made here verify with `openssl dgst -sha256 -verify`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from transfer import keys
from transfer.errors import SignatureError, UsageError


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=input, capture_output=True, check=False)


def test_generated_ecdsa_key_signs_what_openssl_verifies(tmp_path: Path) -> None:
    priv = keys.generate(tmp_path / "k.pem", tmp_path / "k.pub")
    assert (os.stat(tmp_path / "k.pem").st_mode & 0o777) == 0o600
    data = b'{"statement":1}'
    (tmp_path / "data").write_bytes(data)
    (tmp_path / "sig").write_bytes(keys.sign(priv, data))
    ok = openssl("dgst", "-sha256", "-verify", str(tmp_path / "k.pub"), "-signature", str(tmp_path / "sig"),
                 str(tmp_path / "data"))
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "data").write_bytes(data + b" ")
    bad = openssl("dgst", "-sha256", "-verify", str(tmp_path / "k.pub"), "-signature", str(tmp_path / "sig"),
                  str(tmp_path / "data"))
    assert bad.returncode != 0
    pub = keys.load_public_key(tmp_path / "k.pub")
    assert pub.fingerprint == priv.fingerprint and pub.algorithm == keys.ECDSA_P256
    assert keys.verify(pub, keys.sign(priv, data), data)
    assert not keys.verify(pub, keys.sign(priv, data), data + b"x")


def test_openssl_keys_read_and_openssl_signatures_verify(tmp_path: Path) -> None:
    assert openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(tmp_path / "ec.pem")).returncode == 0
    assert openssl("ec", "-in", str(tmp_path / "ec.pem"), "-pubout", "-out", str(tmp_path / "ec.pub")).returncode == 0
    (tmp_path / "data").write_bytes(b"hello")
    assert openssl("dgst", "-sha256", "-sign", str(tmp_path / "ec.pem"), "-out", str(tmp_path / "sig"),
                   str(tmp_path / "data")).returncode == 0
    pub = keys.load_public_key(tmp_path / "ec.pub")
    assert keys.verify(pub, (tmp_path / "sig").read_bytes(), b"hello")
    priv = keys.load_private_key(tmp_path / "ec.pem")
    assert priv.fingerprint == pub.fingerprint
    assert keys.verify_any([pub], keys.sign(priv, b"x"), b"x", fingerprint=pub.fingerprint) == pub


def test_encrypted_key_takes_its_passphrase_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys.generate(tmp_path / "k.pem", tmp_path / "k.pub", passphrase=b"s3cret")
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "k.pem").read_bytes()
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "s3cret")
    assert keys.load_private_key(tmp_path / "k.pem").algorithm == keys.ECDSA_P256
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "wrong")
    with pytest.raises(UsageError, match="wrong passphrase") as exc:
        keys.load_private_key(tmp_path / "k.pem")
    assert "s3cret" not in str(exc.value) and "wrong" not in str(exc.value).replace("wrong passphrase", "")


def test_ed25519_and_refusals(tmp_path: Path) -> None:
    priv = keys.generate(tmp_path / "e.pem", tmp_path / "e.pub", algorithm=keys.ED25519)
    pub = keys.load_public_key(tmp_path / "e.pub")
    assert pub.algorithm == keys.ED25519 and keys.verify(pub, keys.sign(priv, b"d"), b"d")
    other = keys.load_public_key(keys.generate(tmp_path / "o.pem", tmp_path / "o.pub") and tmp_path / "o.pub")
    with pytest.raises(SignatureError, match="not among"):
        keys.verify_any([other], keys.sign(priv, b"d"), b"d", fingerprint=pub.fingerprint)
    with pytest.raises(SignatureError, match="does not match"):
        keys.verify_any([other, pub], keys.sign(priv, b"d"), b"e")
    with pytest.raises(UsageError, match="private key; give the public key"):
        keys.load_public_key(tmp_path / "e.pem")
    with pytest.raises(UsageError, match="public key; signing needs"):
        keys.load_private_key(tmp_path / "e.pub")
    with pytest.raises(UsageError, match="exists already"):
        keys.generate(tmp_path / "e.pem", tmp_path / "new.pub")
    assert openssl("genrsa", "-out", str(tmp_path / "rsa.pem"), "2048").returncode == 0
    with pytest.raises(UsageError, match="ECDSA P-256 or Ed25519"):
        keys.load_private_key(tmp_path / "rsa.pem")
    (tmp_path / "junk").write_bytes(b"\x00" * 100)
    with pytest.raises(UsageError, match="not a PEM public key"):
        keys.load_public_key(tmp_path / "junk")
    with pytest.raises(UsageError, match="cannot read key"):
        keys.load_public_key(tmp_path / "missing")
