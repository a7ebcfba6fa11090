"""Bundles through pipes (issue 13): `export -o -` | `import -`, `verify -`, `ls -`, the format
version 2 (plan and manifests before the blobs) and bundles of version 1 still read."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

import transfer.bundle.writer as writer_module
from tests.cli_helpers import ROOT, run_cli
from transfer import api
from transfer.bundle import BundleReader
from transfer.bundle import format as fmt
from transfer.bundle.sequential import BundleStream
from transfer.bundle.stream import iter_records

V1_BUNDLE = ROOT / "tests" / "data" / "bundle-v1.bundle"  # written by the version 1 writer (commit bfc3d93)
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
CLI = [sys.executable, "-m", "transfer"]


def pipe(export_args: list[str], import_args: list[str], cut: int | None = None) -> tuple[subprocess.CompletedProcess, bytes]:
    """``transfer EXPORT... -o - | transfer IMPORT... -`` through an OS pipe; with ``cut``, only the
    first ``cut`` bytes of the stream reach the importer. Returns the importer's result and the
    exporter's stderr."""
    exp = subprocess.Popen(CLI + export_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=ROOT)
    if cut is None:
        imp = subprocess.run(CLI + import_args, stdin=exp.stdout, capture_output=True, env=ENV, cwd=ROOT, timeout=300)
    else:
        data = exp.stdout.read(cut)
        imp = subprocess.run(CLI + import_args, input=data, capture_output=True, env=ENV, cwd=ROOT, timeout=300)
    exp.stdout.close()
    err = exp.stderr.read()
    exp.wait(timeout=60)
    return imp, err


def test_a_stream_is_the_same_bytes_as_the_file(sample_layout, tmp_path, monkeypatch):
    layout, _ = sample_layout
    monkeypatch.setattr(writer_module, "format_created", lambda created: "2026-01-02T03:04:05Z")
    api.export([], str(tmp_path / "f.bundle"), source=f"oci:{layout.root}")
    read_end, write_end = os.pipe()
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(_drain(read_end)))
    reader.start()
    with open(write_end, "wb", buffering=0) as out:  # a pipe: not seekable
        report = api.export([], out, source=f"oci:{layout.root}")
    reader.join()
    assert bytes(got) == (tmp_path / "f.bundle").read_bytes()
    assert report.bytes_written > 0 and report.complete


def _drain(fd: int) -> bytes:
    with open(fd, "rb") as f:
        return f.read()


def test_version_2_writes_the_plan_and_the_manifests_before_any_blob(sample_layout, tmp_path):
    layout, refs = sample_layout
    api.export([], str(tmp_path / "b.bundle"), source=f"oci:{layout.root}")
    with open(tmp_path / "b.bundle", "rb") as f:
        assert f.read(10)[8:10] == (2).to_bytes(2, "big")
        f.seek(0)
        kinds = [(r.header.type, r.header.media_type) for r in iter_records(f)]
    types = [t for t, _ in kinds]
    assert types[:2] == [fmt.META, fmt.PLAN]
    manifests = {m for ref in refs.values() for m in ref.manifest_digests()}
    contents = [(t, mt) for t, mt in kinds if t == fmt.CONTENT]
    first_blob = next(n for n, (_, mt) in enumerate(contents) if "manifest" not in mt and "index" not in mt)
    assert first_blob == len(manifests)  # every manifest first, then the blobs


def test_bundles_of_version_1_are_still_read(fresh_registry, skopeo, tmp_path, capsys):
    res = run_cli(capsys, "verify", V1_BUNDLE)
    assert res.code == 0, res.out + res.err
    with BundleReader(V1_BUNDLE) as reader:
        assert reader.info.version == 1 and reader.complete
        want = {e.tag: e.digest for e in reader.entries}
    dest = fresh_registry()
    assert run_cli(capsys, "import", V1_BUNDLE, dest.host).code == 0
    for tag, digest in want.items():
        assert skopeo.digest(dest, f"old/app:{tag}") == digest
    res = subprocess.run(CLI + ["ls", "-"], stdin=open(V1_BUNDLE, "rb"), capture_output=True, env=ENV, cwd=ROOT)
    assert res.returncode == 0 and b"old/app     1.0" in res.stdout, res.stderr
    res = subprocess.run(CLI + ["import", "-", dest.host], stdin=open(V1_BUNDLE, "rb"), capture_output=True, env=ENV, cwd=ROOT)
    assert res.returncode == 1 and b"version 1" in res.stderr and b"Traceback" not in res.stderr


def test_a_continued_version_1_bundle_stays_version_1(sample_layout, tmp_path):
    layout, _ = sample_layout
    old = tmp_path / "old.bundle"
    old.write_bytes(V1_BUNDLE.read_bytes())
    rewritten = api.verify(str(old))
    assert rewritten.ok
    api.export([], str(old), source=f"oci:{layout.root}")  # continues the file: more images, same format
    with BundleReader(old) as reader:
        assert reader.info.version == 1 and reader.complete and len(reader.entries) > 2
    assert api.verify(str(old)).ok


def test_export_pipe_import_every_lab_image(registry, fresh_registry, skopeo):
    dest = fresh_registry()
    imp, exp_err = pipe(["export", "--catalog", registry.host, "-o", "-"], ["import", "-", dest.host])
    assert imp.returncode == 0, imp.stderr.decode() + exp_err.decode()
    assert b"imported" in imp.stdout and b"exported" in exp_err  # the exporter's report went to stderr
    for item in registry.seeded.values():
        assert skopeo.digest(dest, item.image) == item.manifest.digest, item.image


def test_verify_and_ls_read_standard_input_and_fifos(sample_layout, tmp_path):
    layout, refs = sample_layout
    bundle = tmp_path / "b.bundle"
    api.export([], str(bundle), source=f"oci:{layout.root}", options=None)
    res = subprocess.run(CLI + ["verify", "-"], stdin=open(bundle, "rb"), capture_output=True, env=ENV, cwd=ROOT)
    assert res.returncode == 0 and b"OK" in res.stdout, res.stdout + res.stderr
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    feeder = threading.Thread(target=lambda: fifo.write_bytes(bundle.read_bytes()))
    feeder.start()
    res = subprocess.run(CLI + ["ls", "--json", str(fifo)], capture_output=True, env=ENV, cwd=ROOT, timeout=60)
    feeder.join()
    assert res.returncode == 0, res.stderr
    with BundleReader(bundle) as reader:
        want = json.loads(reader.listing().to_json())
    got = json.loads(res.stdout)
    assert (got["images"], got["complete"], got["info"]["version"]) == (want["images"], True, 2)
    damaged = bytearray(bundle.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    res = subprocess.run(CLI + ["verify", "-"], input=bytes(damaged), capture_output=True, env=ENV, cwd=ROOT)
    assert res.returncode == 1 and b"PROBLEM" in res.stdout and b"Traceback" not in res.stderr


def test_a_file_named_dash_is_dot_slash_dash(sample_layout, tmp_path):
    layout, _ = sample_layout
    res = subprocess.run(CLI + ["export", "--from", f"oci:{layout.root}", "-o", "./-", "-q"], capture_output=True,
                         env=ENV, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout == b"", res.stderr
    res = subprocess.run(CLI + ["verify", "./-"], capture_output=True, env=ENV, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def _upload_bytes(proxy) -> int:
    return sum(proxy.stats(m, "/blobs/uploads/").request_bytes for m in ("PATCH", "PUT"))


def test_a_cut_stream_keeps_what_was_uploaded_and_the_rerun_sends_only_the_rest(
        registry, fresh_registry, fault_proxy, skopeo, tmp_path):
    bundle = tmp_path / "site.bundle"
    assert subprocess.run(CLI + ["export", "--catalog", registry.host, "-o", str(bundle), "-q"], env=ENV, cwd=ROOT).returncode == 0
    data = bundle.read_bytes()
    dest = fresh_registry()
    proxy = fault_proxy(dest)
    cut = random.Random(13).randrange(len(data) // 3, len(data) * 2 // 3)
    args = CLI + ["import", "-", proxy.host, "--chunk-size", "64KiB"]
    first = subprocess.run(args, input=data[:cut], capture_output=True, env=ENV, cwd=ROOT, timeout=120)
    err = first.stderr.decode()
    assert first.returncode == 1 and "Traceback" not in err, err
    assert "run the same import again" in err and "broke off" in err, err
    sent_first = _upload_bytes(proxy)
    assert sent_first > 0
    proxy.clear()
    again = subprocess.run(args, input=data, capture_output=True, env=ENV, cwd=ROOT, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    sent_again = _upload_bytes(proxy) - sent_first
    with BundleReader(bundle) as reader:
        total = sum(reader.descriptor(d).size for d in reader.digests() if not reader.descriptor(d).is_manifest)
    assert sent_again < total  # what the cut run completed is not sent again
    assert sent_first + sent_again <= total + (64 << 10)  # at most the chunk in flight twice
    for item in registry.seeded.values():
        assert skopeo.digest(dest, item.image) == item.manifest.digest, item.image


def test_recover_salvages_every_whole_image_of_a_bundle_cut_before_its_roots(
        sample_layout, fresh_registry, skopeo, tmp_path, capsys):
    layout, refs = sample_layout
    bundle = tmp_path / "cut.bundle"
    api.export([], str(bundle), source=f"oci:{layout.root}", options=None)
    with open(bundle, "rb") as f:
        first_root = next(r.offset for r in iter_records(f) if r.header.type == fmt.ROOT)
    with open(bundle, "r+b") as f:
        f.truncate(first_root + 7)  # cut inside the first ROOT record: every blob is there, no root
    with BundleReader(bundle, recover=True) as reader:
        assert reader.entries == []  # what a scan finds without the plan: nothing to import
    assert run_cli(capsys, "recover", bundle).code == 0
    with BundleReader(bundle) as reader:
        assert not reader.complete
        salvaged = {(e.repository, e.tag): e.digest for e in reader.entries}
    want = {(Path(str(layout.root)).name, ref): m.digest for ref, m in refs.items()}
    assert salvaged == want
    dest = fresh_registry()
    res = run_cli(capsys, "import", bundle, dest.host, "--allow-incomplete")
    assert res.code == 0, res.err
    for (repo, tag), digest in want.items():
        assert skopeo.digest(dest, f"{repo}:{tag}") == digest


MAXRSS = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
          "sys.stderr.write('MAXRSS %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def _big_layout(root: Path, layer: int) -> Path:
    """An image whose one layer is ``layer`` random bytes (stored as is: a +gzip media type)."""
    from tests.bed.images import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Blob, Layout, dump
    lay = Layout(root)
    digest = lay.put(os.urandom(layer))
    config = dump({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [digest]}})
    cfg = Blob(OCI_CONFIG, lay.put(config), len(config))
    body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg.descriptor(),
            "layers": [Blob(OCI_LAYER_GZIP, digest, layer).descriptor()]}
    lay._manifest(body, "big", config=cfg, layers=[])
    lay.save()
    return root


def _piped_peak_rss(layout: Path, host: str) -> tuple[int, int]:
    """Peak RSS (KiB) of `export --from oci: -o -` and of `import -`, joined by an OS pipe."""
    wrap = [sys.executable, "-c", MAXRSS]
    exp = subprocess.Popen(wrap + CLI + ["export", "--from", f"oci:{layout}", "--repository", "big/app", "-o", "-", "-q"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=ROOT)
    imp = subprocess.run(wrap + CLI + ["import", "-", host, "-q", "--chunk-size", "4MiB"], stdin=exp.stdout,
                         capture_output=True, env=ENV, cwd=ROOT, timeout=600)
    exp.stdout.close()
    exp_err = exp.stderr.read().decode()
    assert exp.wait(timeout=60) == 0 and imp.returncode == 0, exp_err + imp.stderr.decode()
    peak = [int(next(l for l in err.splitlines() if l.startswith("MAXRSS")).split()[1]) for err in (exp_err, imp.stderr.decode())]
    return peak[0], peak[1]


def test_both_ends_of_a_pipe_stay_flat_with_a_300_mib_layer(fresh_registry, tmp_path):
    dest = fresh_registry()
    small = _piped_peak_rss(_big_layout(tmp_path / "small", 30 << 20), dest.host)
    big = _piped_peak_rss(_big_layout(tmp_path / "big", 300 << 20), dest.host)
    for end, (s, b) in zip(("export", "import"), zip(small, big)):
        assert b < s + 32 * 1024, f"{end}: peak RSS {b} KiB with a 300 MiB layer, {s} KiB with 30 MiB"


def test_an_unfinished_export_through_a_pipe_imports_with_allow_incomplete(registry, fresh_registry, skopeo):
    """An export that failed while writing to `-o -` ends its stream with an index marked
    incomplete: the importer says so (not "cut short"), and --allow-incomplete imports what came."""
    dest = fresh_registry()
    export = ["export", f"{registry.host}/sample/nope:1", f"{registry.host}/sample/small:small", "--keep-going", "-o", "-"]
    imp, _ = pipe(export, ["import", "-", dest.host])
    assert imp.returncode == 1 and b"did not finish" in imp.stderr and b"cut short" not in imp.stderr
    imp, _ = pipe(export, ["import", "-", dest.host, "--allow-incomplete"])
    assert imp.returncode == 0, imp.stderr
    assert skopeo.digest(dest, "sample/small:small") == registry.seeded["small"].manifest.digest
    prune, _ = pipe(export, ["import", "-", dest.host, "--prune"])
    assert prune.returncode == 2 and b"--prune needs the bundle as a file" in prune.stderr


def test_a_damaged_blob_in_a_stream_is_refused_before_it_lands(sample_layout, fresh_registry, tmp_path):
    """The stream importer checks each blob's sha256 (not the records' CRC-32 too, as the file
    importer): a flipped byte in a layer ends the import with one line naming the layer, and the
    registry never commits it nor any manifest above it."""
    layout, _ = sample_layout
    bundle = tmp_path / "s.bundle"
    api.export([], str(bundle), source=f"oci:{layout.root}")
    with open(bundle, "rb") as f:
        layer = next(r for r in iter_records(f, "s.bundle") if r.header.type == fmt.CONTENT
                     and "layer" in r.header.media_type and r.header.stored_length > 4096)
        offset, h = layer.offset, layer.header
    damaged = bytearray(bundle.read_bytes())
    damaged[offset + h.length + h.stored_length // 2] ^= 0xFF
    dest = fresh_registry()
    res = subprocess.run(CLI + ["import", "-", dest.host, "-q", "--journal", str(tmp_path / "j.json")],
                         input=bytes(damaged), capture_output=True, env=ENV, cwd=ROOT, timeout=120)
    err = res.stderr.decode()
    assert res.returncode == 1 and h.digest in err and "Traceback" not in err, err
    with open(bundle, "rb") as f:
        stream = BundleStream(f, "s.bundle")
        holders = [i for i in stream.importable().images if any(b.digest == h.digest for b in i.blobs)]
    assert holders
    for image in holders:
        base = f"http://{dest.host}/v2/{image.dst_repo}"
        assert requests.head(f"{base}/blobs/{h.digest}", timeout=10).status_code == 404
        for tag in image.tags:
            assert requests.head(f"{base}/manifests/{tag}", timeout=10).status_code == 404
