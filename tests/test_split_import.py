"""Split bundles imported part by part as the parts arrive: each run sees only the new part (the
ones before were imported and removed), a blob spanning parts continues its chunked upload across
runs, and the bytes the registry receives are counted by a proxy in front of it."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.bed.images import AMD64, Layout
from tests.cli_helpers import run_cli

SPLIT = "1MiB"
BIG = 2_400_000  # random bytes: the layer spans three parts of 1 MiB
ARM64 = {"os": "linux", "architecture": "arm64", "variant": "v8"}


@pytest.fixture
def split_export(fresh_registry, skopeo, tmp_path, capsys):
    """A source registry with a large image, a multi-arch index and a two-tag image, exported with
    a 1 MiB split size into ``out/``; returns (source, {ref: manifest}, [part paths])."""
    src = fresh_registry()
    layout = Layout(tmp_path / "layout")
    images = {
        "big/app:v1": layout.image("big", [BIG, 30_000]),
        "multi/app:1.0": layout.index([layout.image("m-amd", [40_000], platform=AMD64),
                                       layout.image("m-arm", [50_000], platform=ARM64)]),
        "small/tool:1": layout.image("tool", [20_000]),
    }
    layout.save()
    for ref, manifest in images.items():
        repo, tag = ref.split(":")
        skopeo.seed(src, layout, manifest, repo, tag)
    skopeo.seed(src, layout, images["small/tool:1"], "small/tool", "latest")
    skopeo.seed(src, layout, images["big/app:v1"], "big/copy", "v1")  # the spanning blob in two repositories
    out = tmp_path / "out"
    out.mkdir()
    res = run_cli(capsys, "export", "--catalog", src.host, "--split-size", SPLIT, "-o", out / "site.bundle", "-q")
    assert res.code == 0, res.err
    parts = sorted(out.iterdir())
    assert len(parts) >= 3, parts
    return src, images, parts


def _upload_bytes(proxy) -> int:
    return sum(proxy.stats(m, "/blobs/uploads/").request_bytes for m in ("PATCH", "PUT"))


def _arrive(part, arrival):
    """Move one part into the (otherwise empty) arrival folder; return its new path."""
    for old in arrival.iterdir():
        old.unlink()
    return shutil.copy(part, arrival / part.name)


def _import(capsys, part, host, journal, *extra):
    return run_cli(capsys, "import", part, host, "--chunk-size", "256KiB", "--journal", journal, "--json", *extra)


def _blob_bytes(images) -> int:
    """Bytes of every distinct blob once (what a correct import uploads): a blob's copy in a second
    repository (big/copy holds big/app's blobs) goes there by a cross-repository mount."""
    sizes: dict[str, int] = {}
    manifests: set[str] = set()
    for manifest in images.values():
        manifest._collect_blobs(sizes)
        manifests |= set(manifest.manifest_digests())
    return sum(size for digest, size in sizes.items() if digest not in manifests)


def test_parts_imported_one_by_one_send_each_byte_once(split_export, fresh_registry, fault_proxy, skopeo,
                                                        tmp_path, capsys):
    src, images, parts = split_export
    dest = fresh_registry()
    proxy = fault_proxy(dest)
    arrival, journal = tmp_path / "arrival", tmp_path / "journal.json"
    arrival.mkdir()
    spanning_seen = set()
    for number, part in enumerate(parts, 1):
        res = _import(capsys, _arrive(part, arrival), proxy.host, journal)
        assert res.code == 0, res.err
        report = res.json()
        assert report["parts_present"] == [number]
        assert report["upload"]["blobs_restarted"] == 0
        spanning_seen |= {s["digest"] for s in report["spanning"]}
        if number < len(parts):
            assert report["next_part"] == number + 1 and not report["final"]
            assert report["next_command"] == f"transfer import {arrival}/site.bundle.{number + 1:03d} {proxy.host}"
            assert report["images_waiting"], "something must wait for the last part (the manifests)"
        else:
            assert report["final"] and report["next_part"] is None and not report["tag_problems"]
            assert not report["images_waiting"]
    big_layer = max(images["big/app:v1"].layers, key=lambda b: b.size)
    assert spanning_seen >= {big_layer.digest}
    for ref, manifest in images.items():
        assert skopeo.digest(dest, ref) == manifest.digest == skopeo.digest(src, ref)
    assert skopeo.digest(dest, "small/tool:latest") == images["small/tool:1"].digest
    assert skopeo.digest(dest, "big/copy:v1") == images["big/app:v1"].digest
    # Each blob byte went up once: no chunk re-sent across runs, no restart.
    assert _upload_bytes(proxy) == _blob_bytes(images)


def test_part_twice_and_out_of_order(split_export, fresh_registry, fault_proxy, skopeo, tmp_path, capsys):
    src, images, parts = split_export
    dest = fresh_registry()
    proxy = fault_proxy(dest)
    arrival, journal = tmp_path / "arrival", tmp_path / "journal.json"
    arrival.mkdir()
    assert _import(capsys, _arrive(parts[0], arrival), proxy.host, journal).code == 0
    # Part 3 before part 2: refused before anything is pushed, naming the part needed first.
    before = _upload_bytes(proxy)
    res = _import(capsys, _arrive(parts[2], arrival), proxy.host, journal)
    assert res.code == 1
    assert "part 2 must be imported first" in res.err
    assert f"transfer import {arrival}/site.bundle.002 {proxy.host}" in res.err
    assert _upload_bytes(proxy) == before
    # Part 2, then part 2 again: the second run sends nothing and reports the same state.
    first = _import(capsys, _arrive(parts[1], arrival), proxy.host, journal)
    assert first.code == 0, first.err
    sent = _upload_bytes(proxy)
    again = _import(capsys, _arrive(parts[1], arrival), proxy.host, journal)
    assert again.code == 0, again.err
    assert _upload_bytes(proxy) == sent
    assert again.json()["spanning"] == first.json()["spanning"]
    assert again.json()["blobs_copied"] == 0
    for part in parts[2:]:
        res = _import(capsys, _arrive(part, arrival), proxy.host, journal)
        assert res.code == 0, res.err
    assert res.json()["final"] and not res.json()["tag_problems"]
    for ref, manifest in images.items():
        assert skopeo.digest(dest, ref) == manifest.digest
    assert _upload_bytes(proxy) == _blob_bytes(images)


def test_lost_session_restarts_the_blob_when_its_first_bytes_come_again(split_export, fresh_registry, skopeo,
                                                                        tmp_path, capsys):
    _, images, parts = split_export
    dest = fresh_registry()
    arrival, journal = tmp_path / "arrival", tmp_path / "journal.json"
    arrival.mkdir()
    assert _import(capsys, _arrive(parts[0], arrival), dest.host, journal).code == 0
    dest.extra_config = {"http": {"secret": "another-secret"}}  # the saved upload state is now invalid
    dest.restart()
    res = _import(capsys, _arrive(parts[1], arrival), dest.host, journal)
    assert res.code == 0, res.err
    (span,) = res.json()["spanning"]
    assert span["restarted"] and span["held"] == 0
    assert any("was lost" in note and "part 1 or earlier, then part 2" in note for note in res.json()["notes"])
    assert res.json()["next_part"] == 1 and res.json()["next_command"].endswith(f"site.bundle.001 {dest.host}")
    for part in parts:  # the operator brings the parts again from the first
        res = _import(capsys, _arrive(part, arrival), dest.host, journal)
        assert res.code == 0, res.err
    assert res.json()["final"] and not res.json()["tag_problems"]
    for ref, manifest in images.items():
        assert skopeo.digest(dest, ref) == manifest.digest


def test_human_output_names_the_next_part(split_export, fresh_registry, tmp_path, capsys):
    _, _, parts = split_export
    dest = fresh_registry()
    arrival = tmp_path / "arrival"
    arrival.mkdir()
    res = run_cli(capsys, "import", _arrive(parts[0], arrival), dest.host, "--journal", tmp_path / "j.json")
    assert res.code == 0, res.err
    assert "parts present: 1" in res.out
    assert f"insert part 2 and run: transfer import {arrival}/site.bundle.002 {dest.host}" in res.out
    assert "of 2.3 MiB at the destination" in res.out or "MiB at the destination" in res.out
    assert os.path.exists(tmp_path / "j.json")


# -- the plan in every part, and reading a part alone (no registry) ---------------------------------

def _content(digest: str, size: int, media_type: str):
    from transfer.models import Descriptor

    return Descriptor(mediaType=media_type, digest=digest, size=size)


def _image(repo: str, tags: list, manifests: list, blobs: list):
    from transfer.store import ImagePlan

    return ImagePlan(repo, repo, manifests[-1], tags, manifests, blobs)


def _writer_set(tmp_path):
    """A split set whose plan names two images; the big blob spans at least three parts."""
    import io
    import random

    from transfer.bundle import BundleWriter
    from transfer.bundle.format import BundlePlan
    from transfer.digest import digest_bytes
    from transfer.models import OCI_LAYER_GZIP, OCI_MANIFEST, Descriptor

    big = random.Random(3).randbytes(300_000)
    small = b"small layer"
    blobs = [_content(digest_bytes(b), len(b), OCI_LAYER_GZIP) for b in (big, small)]
    fake_root = _content(digest_bytes(b"{}"), 2, OCI_MANIFEST)
    plan = BundlePlan((_image("a/app", ["1"], [fake_root], blobs), _image("b/app", [], [fake_root], [blobs[1]])))
    with BundleWriter(tmp_path / "set", split_size=128 << 10, created="2026-01-01T00:00:00Z") as w:
        w.set_plan(plan)
        for data in (big, small):
            d = Descriptor(mediaType=OCI_LAYER_GZIP, digest=digest_bytes(data), size=len(data))
            w.push("a/app", d, lambda data=data: io.BytesIO(data))
    return plan, big


def test_plan_in_every_part_and_a_middle_part_alone(tmp_path):
    from transfer.bundle import BundleReader
    from transfer.digest import digest_bytes

    plan, big = _writer_set(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) >= 3
    digest = digest_bytes(big)
    for name in names:
        alone = tmp_path / "alone" / name
        alone.parent.mkdir(exist_ok=True)
        shutil.copy(tmp_path / name, alone)
        with BundleReader(alone) as r:
            assert r.plan == plan and r.info.parts_present == [int(name[-3:])]
            if name == names[1]:  # the middle part: bytes of the big blob from where part 1 ended
                (start, end), = r.covered(digest)
                assert 0 < start < end < len(big) and not r.has(digest)
                assert r.part_at(digest, start) == 2
                s = r.open_range(digest, start + 10)
                assert b"".join(iter(lambda: s.read(7000), b"")) == big[start + 10:end]
                with pytest.raises(Exception, match="not in the parts present"):
                    r.open_range(digest, start - 1)
        shutil.rmtree(alone.parent)


def test_plan_encoding_is_checked_and_its_size_for_5000_images():
    import hashlib
    import json

    from transfer.bundle.format import BundlePlan, decode_plan, dumps
    from transfer.errors import CorruptBundleError

    def content(key: str, size: int, media_type: str):
        return _content("sha256:" + hashlib.sha256(key.encode()).hexdigest(), size, media_type)

    images = tuple(
        _image(f"team{i % 100}/app{i % 500}", [f"v{i}"], [content(f"m{i}", 1200, "m/manifest")],
               [content(f"l{i}-{j}", 30_000_000 + j, "m/layer") for j in range(10)])
        for i in range(5000))
    plan = BundlePlan(images)
    data = dumps(plan.to_json())
    assert 5_000_000 < len(data) < 6_000_000  # 5.4 MB with 55,000 distinct digests (docs/bundle-format.md)
    assert decode_plan(json.loads(data), "plan") == plan
    bad = plan.to_json()
    bad["images"][0]["blobs"].append(len(bad["contents"]))
    with pytest.raises(CorruptBundleError, match="not listed"):
        decode_plan(bad, "plan")


def test_a_plan_larger_than_the_split_size_is_refused(tmp_path):
    import hashlib

    from transfer.bundle import BundleWriter
    from transfer.bundle.format import BundlePlan
    from transfer.errors import BundleError

    def content(i: int):
        return _content("sha256:" + hashlib.sha256(str(i).encode()).hexdigest(), i, "m/x")

    plan = BundlePlan(tuple(_image("a", [], [content(i)], []) for i in range(2000)))
    w = BundleWriter(tmp_path / "set", split_size=64 << 10)
    with pytest.raises(BundleError, match="does not fit in the split size"):
        w.set_plan(plan)
    w.close()
