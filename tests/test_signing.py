"""Signed bundles (issue 15): keygen, export --sign, transfer sign, verify --key, import --key,
against real registries (skopeo sees what was imported; the registry's catalog shows that nothing
arrived from a refused bundle) and openssl (an independent check of the printed statement)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
import requests

import transfer.bundle.writer as writer_module
from tests.cli_helpers import ROOT, run_cli
from transfer import api
from transfer.bundle import format as fmt
from transfer.bundle import signing
from transfer.bundle.reader import BundleReader, load_part
from transfer.bundle.writer import append_index
from transfer.errors import SignatureError
from transfer.keys import ED25519, load_private_key, load_public_key
from transfer.options import ExportOptions

ENV = dict(os.environ, PYTHONPATH=str(ROOT))


# ---- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two ECDSA pairs (the site's, another) and an Ed25519 pair: {name: (private, public)}."""
    d = tmp_path_factory.mktemp("keys")
    pairs = {}
    for name, algorithm in (("site", "ecdsa-p256-sha256"), ("other", "ecdsa-p256-sha256"), ("ed", ED25519)):
        api.keygen(str(d / name), algorithm=algorithm)
        pairs[name] = (str(d / f"{name}.key"), str(d / f"{name}.pub"))
    return pairs


@pytest.fixture(scope="module")
def bundles(sample_layout, keys, tmp_path_factory):
    """The sample set exported from its OCI layout: signed, unsigned, signed split."""
    layout, _ = sample_layout
    d = tmp_path_factory.mktemp("bundles")
    api.export([], str(d / "signed.bundle"), source=f"oci:{layout.root}", sign=keys["site"][0])
    api.export([], str(d / "plain.bundle"), source=f"oci:{layout.root}")
    api.export([], str(d / "split.bundle"), source=f"oci:{layout.root}", sign=keys["site"][0],
               options=ExportOptions(split_size=256 << 10))
    return d


def catalog(registry) -> list[str]:
    return requests.get(f"{registry.url}/v2/_catalog", timeout=10).json().get("repositories") or []


def records(path) -> list[tuple[int, fmt.RecordHeader]]:
    """(offset, header) of every record before the index."""
    return sorted(signing.walk_part(str(path)).headers.items())


def record_at(path, kind: int, media_type: str | None = None) -> tuple[int, fmt.RecordHeader]:
    return next((o, h) for o, h in records(path) if h.type == kind and (media_type is None or media_type in h.media_type))


def flip(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def fix_payload_crc(path, offset: int, h: fmt.RecordHeader) -> None:
    """What an attacker without the key does after changing a payload: new CRC, new header CRC."""
    with open(path, "r+b") as f:
        f.seek(offset + h.length)
        crc = zlib.crc32(f.read(h.stored_length))
        f.seek(offset)
        f.write(fmt.encode_record_header(fmt.RecordHeader(h.type, h.codec, h.digest, h.media_type, h.size,
                                                          h.chunk_offset, h.chunk_length, h.stored_length, crc)))


def rewrite_index(path, change) -> None:
    """An attacker without the key: edit the index (``change(doc)``), write it back with correct
    checksums; the signature record stays where it was."""
    part = load_part(str(path), recover=False)
    change(part.doc)
    with open(path, "r+b") as fh:
        fh.truncate(part.records_end)
        fh.seek(part.records_end)
        append_index(fh, part.doc)


def index_offset(path) -> int:
    with open(path, "rb") as f:
        f.seek(-fmt.TRAILER_SIZE, os.SEEK_END)
        return struct.unpack(">Q", f.read(8))[0]


def openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True)


# ---- the good path -----------------------------------------------------------------------------


def test_sign_verify_import_with_the_right_key(bundles, keys, fresh_registry, skopeo, sample_layout, capsys):
    bundle = bundles / "signed.bundle"
    res = run_cli(capsys, "verify", bundle, "--key", keys["other"][1], "--key", keys["site"][1])
    assert res.code == 0 and "signature: checked, signed by sha256:" in res.out, res.out + res.err
    dest = fresh_registry()
    res = run_cli(capsys, "--json", "import", bundle, dest.host, "--key", keys["site"][1])
    assert res.code == 0, res.err
    sig = res.json()["signature"]
    assert sig["checked"] and sig["signed"] and sig["keys"] == [load_public_key(keys["site"][1]).fingerprint]
    layout, refs = sample_layout
    repo = Path(layout.root).name  # images named by a tag only go to the layout's directory name
    for ref, manifest in refs.items():
        assert skopeo.digest(dest, f"{repo}:{ref}") == manifest.digest


def test_the_printed_statement_verifies_with_openssl(bundles, keys, tmp_path, capsys):
    out = tmp_path / "statement"
    res = run_cli(capsys, "verify", bundles / "signed.bundle", "--key", keys["site"][1], "--print-statement", out)
    assert res.code == 0, res.out + res.err
    ok = openssl("dgst", "-sha256", "-verify", keys["site"][1], "-signature", f"{out}.sig", str(out))
    assert ok.returncode == 0 and "Verified OK" in ok.stdout, ok.stderr
    bad = openssl("dgst", "-sha256", "-verify", keys["other"][1], "-signature", f"{out}.sig", str(out))
    assert bad.returncode != 0
    text = out.read_text()
    assert '"format":"transfer-bundle-statement"' in text and '"tags":["small"]' in text
    # The statement is the one recomputed from the bundle: every record the index lists is in it.
    with BundleReader(bundles / "signed.bundle") as reader:
        assert all(d in text for d in reader.digests())
    # A split set: one statement per part, each verifies alone.
    res = run_cli(capsys, "verify", bundles / "split.bundle", "--print-statement", tmp_path / "st")
    assert res.code == 0, res.out
    parts = sorted(p for p in os.listdir(bundles) if p.startswith("split.bundle."))
    assert len(parts) >= 3
    for n in range(1, len(parts) + 1):
        ok = openssl("dgst", "-sha256", "-verify", keys["site"][1], "-signature", f"{tmp_path}/st.{n:03d}.sig",
                     f"{tmp_path}/st.{n:03d}")
        assert ok.returncode == 0, ok.stderr


def test_ed25519_signatures_verify_with_openssl_and_a_stream_is_the_file(sample_layout, keys, tmp_path, monkeypatch, capsys):
    layout, _ = sample_layout
    monkeypatch.setattr(writer_module, "format_created", lambda created: "2026-01-02T03:04:05Z")
    api.export([], str(tmp_path / "f.bundle"), source=f"oci:{layout.root}", sign=keys["ed"][0])
    read_end, write_end = os.pipe()
    got = bytearray()
    drain = threading.Thread(target=lambda: got.extend(open(read_end, "rb").read()))
    drain.start()
    with open(write_end, "wb", buffering=0) as out:  # a pipe: signed at the end, the same bytes
        api.export([], out, source=f"oci:{layout.root}", sign=keys["ed"][0])
    drain.join()
    assert bytes(got) == (tmp_path / "f.bundle").read_bytes()  # Ed25519 is deterministic; ECDSA is not
    res = run_cli(capsys, "verify", tmp_path / "f.bundle", "--key", keys["ed"][1], "--print-statement", tmp_path / "st")
    assert res.code == 0, res.out
    ok = openssl("pkeyutl", "-verify", "-pubin", "-inkey", keys["ed"][1], "-rawin", "-in", str(tmp_path / "st"),
                 "-sigfile", str(tmp_path / "st.sig"))
    assert ok.returncode == 0 and "Verified Successfully" in ok.stdout, ok.stdout + ok.stderr
    # verify - reads the stream once and checks its signature too
    with open(tmp_path / "f.bundle", "rb") as f:
        done = subprocess.run([sys.executable, "-m", "transfer", "verify", "-", "--key", keys["ed"][1]], stdin=f,
                              capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert done.returncode == 0 and "signature: checked" in done.stdout, done.stdout + done.stderr
    with open(tmp_path / "f.bundle", "rb") as f:
        done = subprocess.run([sys.executable, "-m", "transfer", "verify", "-", "--key", keys["site"][1]], stdin=f,
                              capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert done.returncode == 1 and "not among the 1 trusted key(s)" in done.stdout


# ---- refusals: nothing reaches the registry ----------------------------------------------------


def _damage_cases(bundles, keys):
    """(name, bundle path, trusted key, expected words in the error) for every refusal."""
    src = bundles / "signed.bundle"

    def copy(name):
        dst = bundles.parent / f"case-{name}.bundle"
        shutil.copyfile(src, dst)
        return dst

    cases = [("wrong key", src, keys["other"][1], "not among the 1 trusted key(s)"),
             ("unsigned", bundles / "plain.bundle", keys["site"][1], "not signed")]
    p = copy("blob")
    o, h = record_at(p, fmt.CONTENT, "layer")
    flip(p, o + h.length + h.stored_length // 2)
    cases.append(("flipped byte in a layer", p, keys["site"][1], "does not match what was signed"))
    p = copy("blob-recrc")
    o, h = record_at(p, fmt.CONTENT, "layer")
    flip(p, o + h.length + h.stored_length // 2)
    fix_payload_crc(p, o, h)
    cases.append(("flipped byte in a layer, CRC fixed", p, keys["site"][1], "the records differ"))
    p = copy("manifest")
    o, h = record_at(p, fmt.CONTENT, "manifest")
    flip(p, o + h.length + h.stored_length - 3)
    cases.append(("flipped byte in a manifest", p, keys["site"][1], "does not match what was signed"))
    p = copy("plan")
    o, h = record_at(p, fmt.PLAN)
    flip(p, o + h.length + 10)
    cases.append(("flipped byte in the plan", p, keys["site"][1], "plan record payload checksum mismatch"))
    p = copy("index")
    flip(p, index_offset(p) + 300)  # in the payload
    cases.append(("flipped byte in the index", p, keys["site"][1], "index"))
    p = copy("signature")
    o, h = record_at(p, fmt.SIGNATURE)
    flip(p, o + h.length + 40)
    cases.append(("flipped byte in the signature record", p, keys["site"][1], "signature record payload checksum mismatch"))
    p = copy("retag")

    def retag(doc):
        e = next(e for e in doc.catalog if e.tag == "small")
        doc.catalog = [x for x in doc.catalog if x is not e] + [fmt.CatalogEntry(e.repository, "latest", e.digest,
                                                                                e.media_type, e.platforms, e.size)]
    rewrite_index(p, retag)
    cases.append(("re-tagged image", p, keys["site"][1], "the catalog (images and tags) differs"))
    p = copy("removed")
    rewrite_index(p, lambda doc: setattr(doc, "catalog", [e for e in doc.catalog if e.tag != "app"]))
    cases.append(("removed image", p, keys["site"][1], "the catalog (images and tags) differs"))
    return cases


def test_every_damage_is_refused_before_anything_is_pushed(bundles, keys, fresh_registry, capsys):
    dest = fresh_registry()
    for name, path, pub, words in _damage_cases(bundles, keys):
        res = run_cli(capsys, "import", path, dest.host, "--key", pub)
        assert res.code == 1, (name, res.err)
        line = res.err.strip()
        assert "\n" not in line and line.startswith("transfer: error:") and words in line, (name, line)
        assert catalog(dest) == [], name
        assert run_cli(capsys, "verify", path, "--key", pub).code == 1, name
    res = run_cli(capsys, "import", "--dry-run", bundles / "plain.bundle", dest.host, "--key", keys["site"][1])
    assert res.code == 1 and "not signed" in res.err
    res = run_cli(capsys, "import", "--dry-run", bundles / "signed.bundle", dest.host, "--key", keys["site"][1])
    assert res.code == 0 and "would push" in res.out, res.err


def test_a_swapped_part_of_a_split_bundle_is_refused(sample_layout, keys, tmp_path, fresh_registry, monkeypatch, capsys):
    """Two signed split exports with the same set id (same time, source and split size): each part
    verifies alone, but part 2 of the other export does not follow this part 1."""
    layout, _ = sample_layout
    monkeypatch.setattr(writer_module, "format_created", lambda created: "2026-01-02T03:04:05Z")
    for name, platforms in (("a", []), ("b", ["linux/amd64"])):
        api.export([], str(tmp_path / f"{name}.bundle"), source=f"oci:{layout.root}", sign=keys["site"][0],
                   options=ExportOptions(split_size=256 << 10, platforms=platforms))
    shutil.copyfile(tmp_path / "b.bundle.002", tmp_path / "a.bundle.002")
    assert run_cli(capsys, "verify", tmp_path / "a.bundle.002", "--key", keys["site"][1]).code == 1
    os.rename(tmp_path / "a.bundle.001", tmp_path / "away")
    res = run_cli(capsys, "verify", tmp_path / "a.bundle.002", "--key", keys["site"][1])
    assert res.code == 0 and "link to it was not checked" in res.out, res.out  # alone, the part is as signed
    os.rename(tmp_path / "away", tmp_path / "a.bundle.001")
    dest = fresh_registry()
    res = run_cli(capsys, "import", tmp_path / "a.bundle", dest.host, "--key", keys["site"][1])
    assert res.code == 1 and "the previous part differs" in res.err, res.err
    assert catalog(dest) == []
    res = run_cli(capsys, "import", tmp_path / "b.bundle", dest.host, "--key", keys["site"][1])
    assert res.code == 0, res.err


def test_a_stream_with_key_is_refused_and_a_signed_bundle_without_key_says_unchecked(bundles, keys, fresh_registry, capsys):
    dest = fresh_registry()
    with open(bundles / "signed.bundle", "rb") as f:
        done = subprocess.run([sys.executable, "-m", "transfer", "import", "-", dest.host, "--key", keys["site"][1]],
                              stdin=f, capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert done.returncode == 2 and "save it to a file" in done.stderr, done.stderr
    assert catalog(dest) == []
    res = run_cli(capsys, "--json", "import", bundles / "signed.bundle", dest.host)
    assert res.code == 0, res.err
    sig = res.json()["signature"]
    assert sig["signed"] and not sig["checked"] and "not checked" in sig["notes"][0]
    res = run_cli(capsys, "import", bundles / "signed.bundle", dest.host)
    assert "signature was not checked" in res.out + res.err
    with open(bundles / "signed.bundle", "rb") as f:
        done = subprocess.run([sys.executable, "-m", "transfer", "--json", "import", "-", dest.host], stdin=f,
                              capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert done.returncode == 0 and '"checked": false' in done.stdout, done.stderr
    res = run_cli(capsys, "--json", "import", bundles / "plain.bundle", dest.host)
    assert res.code == 0 and res.json()["signature"] is None


def test_ls_says_a_bundle_is_signed_by_which_key_and_that_it_did_not_check(bundles, keys, capsys):
    fingerprint = load_public_key(keys["site"][1]).fingerprint
    res = run_cli(capsys, "ls", bundles / "signed.bundle")
    assert res.code == 0 and f"signed by {fingerprint}" in res.out and "not checked here" in res.out, res.out
    res = run_cli(capsys, "--json", "ls", bundles / "signed.bundle")
    sig = res.json()["signature"]
    assert sig["signed"] and not sig["checked"] and sig["keys"] == [fingerprint] and sig["parts"] == [1]
    with open(bundles / "signed.bundle", "rb") as f:
        done = subprocess.run([sys.executable, "-m", "transfer", "--json", "ls", "-"], stdin=f,
                              capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert done.returncode == 0 and json.loads(done.stdout)["signature"]["keys"] == [fingerprint], done.stderr
    res = run_cli(capsys, "ls", bundles / "plain.bundle")
    assert res.code == 0 and "signed" not in res.out
    assert run_cli(capsys, "--json", "ls", bundles / "plain.bundle").json()["signature"] is None


# ---- transfer sign, keygen, resumed exports ----------------------------------------------------


def test_sign_an_existing_bundle_replace_its_signature_and_survive_a_kill(bundles, keys, tmp_path, monkeypatch, capsys):
    path = tmp_path / "x.bundle"
    shutil.copyfile(bundles / "plain.bundle", path)
    res = run_cli(capsys, "sign", path, "--key", keys["other"][0])
    assert res.code == 0, res.err
    assert run_cli(capsys, "verify", path, "--key", keys["other"][1]).code == 0
    signed_size = path.stat().st_size
    res = run_cli(capsys, "--json", "sign", path, "--key", keys["site"][0])
    assert res.code == 0 and res.json()["replaced"] == 1, res.out + res.err
    assert run_cli(capsys, "verify", path, "--key", keys["site"][1]).code == 0
    res = run_cli(capsys, "verify", path, "--key", keys["other"][1])
    assert res.code == 1 and "not among the 1 trusted key(s)" in res.out  # one signer: replaced
    # A kill after each write of the tail rewrite leaves a bundle that reads and can be signed again.
    real_fsync = os.fsync
    for kill_at in (1, 2, 3):
        shutil.copyfile(bundles / "plain.bundle", path)
        calls = []

        def fsync(fd):
            calls.append(fd)
            real_fsync(fd)
            if len(calls) == kill_at:
                raise KeyboardInterrupt("killed")
        monkeypatch.setattr(os, "fsync", fsync)
        with pytest.raises(KeyboardInterrupt):
            api.sign(str(path), keys["site"][0])
        monkeypatch.setattr(os, "fsync", real_fsync)
        assert api.verify(str(path)).ok, kill_at  # reads, every record intact
        api.sign(str(path), keys["site"][0])
        assert api.verify(str(path), keys=[keys["site"][1]]).ok, kill_at
        assert path.stat().st_size == signed_size
    # Only a complete bundle is signed; a version 1 bundle has no signature record.
    res = run_cli(capsys, "sign", ROOT / "tests" / "data" / "bundle-v1.bundle", "--key", keys["site"][0])
    assert res.code == 1 and "format version 1" in res.err


def test_a_continued_export_signs_every_part(sample_layout, keys, tmp_path, capsys):
    layout, _ = sample_layout
    opts = ExportOptions(split_size=256 << 10)
    api.export([], str(tmp_path / "s.bundle"), source=f"oci:{layout.root}", options=opts)
    assert not api.verify(str(tmp_path / "s.bundle"), keys=[keys["site"][1]]).ok
    exported = api.export([], str(tmp_path / "s.bundle"), source=f"oci:{layout.root}", options=opts,
                          sign=keys["site"][0])
    report = api.verify(str(tmp_path / "s.bundle"), keys=[keys["site"][1]])
    assert report.ok and report.signature is not None and report.signature.checked, report.problems
    assert len(report.signature.parts) >= 3
    assert exported.signature is not None and exported.signature.parts == report.signature.parts
    api.export([], str(tmp_path / "f.bundle"), source=f"oci:{layout.root}", sign=keys["other"][0])
    api.export([], str(tmp_path / "f.bundle"), source=f"oci:{layout.root}", sign=keys["site"][0])
    assert api.verify(str(tmp_path / "f.bundle"), keys=[keys["site"][1]]).ok
    with pytest.raises(SignatureError):
        signing.check_bundle(BundleReader(tmp_path / "f.bundle"), [load_public_key(keys["other"][1])])


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRANSFER_KEY_PASSPHRASE", "correct horse")
    res = run_cli(capsys, "--json", "keygen", tmp_path / "k")
    assert res.code == 0 and res.json()["encrypted"], res.err
    assert stat.S_IMODE(os.stat(tmp_path / "k.key").st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "k.key").read_bytes()
    assert load_private_key(tmp_path / "k.key").fingerprint == res.json()["fingerprint"]
    assert run_cli(capsys, "keygen", tmp_path / "k").code == 2  # never overwrites a key
    monkeypatch.delenv("TRANSFER_KEY_PASSPHRASE")
    res = run_cli(capsys, "keygen", "--ed25519", tmp_path / "e")
    assert res.code == 0 and "ed25519" in res.out
    assert b"ENCRYPTED" not in (tmp_path / "e.key").read_bytes()
    res = run_cli(capsys, "keygen", "--help")
    assert "openssl genpkey" in res.out
    # A key that is not a key, or the public key where the private one belongs: one line, exit 2.
    res = run_cli(capsys, "sign", tmp_path / "x.bundle", "--key", tmp_path / "k.pub")
    assert res.code == 2 and "is a public key" in res.err


def test_sign_and_keygen_help_load_no_cryptography():
    probe = ("import sys, runpy\n"
             "sys.argv = ['transfer', 'sign', '--help']\n"
             "try:\n    runpy.run_module('transfer', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('cryptography' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout + done.stderr


def test_a_signed_delta_bundle_covers_its_expected_blobs(sample_layout, keys, tmp_path):
    layout, _ = sample_layout
    api.export([], str(tmp_path / "old.bundle"), source=f"oci:{layout.root}:small")
    report = api.export([], str(tmp_path / "d.bundle"), source=f"oci:{layout.root}", sign=keys["site"][0],
                        options=ExportOptions(since=str(tmp_path / "old.bundle")))
    assert report.expected_at_destination > 0
    assert api.verify(str(tmp_path / "d.bundle"), keys=[keys["site"][1]]).ok

    def forget_expected(doc):
        doc.expected = doc.expected[1:]
    rewrite_index(tmp_path / "d.bundle", forget_expected)
    report = api.verify(str(tmp_path / "d.bundle"), keys=[keys["site"][1]])
    assert not report.ok and "the blobs expected at the destination differ" in str(report.problems[-1])
