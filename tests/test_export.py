"""transfer export against a real registry seeded by skopeo; bundles read back by our reader and
manifest digests checked against what skopeo sees at the source."""

from __future__ import annotations

import os
import signal
import time


from tests.bed.images import Layout
from tests.cli_helpers import run_cli, spawn_cli
from transfer.bundle import BundleReader
from transfer.registry import RegistryClient


def entries_by_tag(path):
    with BundleReader(path) as r:
        return {(e.repository, e.tag): e for e in r.entries}, r.info.complete, set(r.digests())


def test_single_image_with_its_signature(registry, skopeo, tmp_path, capsys):
    app = registry.seeded["app"]
    out = tmp_path / "app.bundle"
    res = run_cli(capsys, "export", f"{registry.host}/{app.image}", "-o", out, "--json")
    assert res.code == 0, res.err
    summary = res.json()
    assert summary["complete"] and summary["images"] == 2  # the image and its cosign signature
    entries, complete, digests = entries_by_tag(out)
    assert complete
    sig = next(s for s in registry.seeded.values() if s.tag.endswith(".sig"))
    assert entries[(app.repo, "app")].digest == skopeo.digest(registry, app.image) == app.manifest.digest
    assert entries[(sig.repo, sig.tag)].digest == skopeo.digest(registry, sig.image)
    assert app.manifest.blob_digests() <= digests
    # --no-referrers leaves the signature out.
    res = run_cli(capsys, "export", f"{registry.host}/{app.image}", "-o", tmp_path / "bare.bundle", "--no-referrers")
    assert res.code == 0, res.err
    assert set(entries_by_tag(tmp_path / "bare.bundle")[0]) == {(app.repo, "app")}


def test_multi_arch_whole_and_filtered(registry, skopeo, tmp_path, capsys):
    multi = registry.seeded["multi"]
    ref = f"{registry.host}/{multi.image}"
    assert run_cli(capsys, "export", ref, "-o", tmp_path / "all.bundle").code == 0
    whole = entries_by_tag(tmp_path / "all.bundle")[0][(multi.repo, multi.tag)]
    assert whole.digest == skopeo.digest(registry, multi.image)
    assert sorted(whole.platforms) == ["linux/amd64", "linux/arm64/v8"]

    res = run_cli(capsys, "export", ref, "--platform", "linux/arm64", "-o", tmp_path / "arm.bundle")
    assert res.code == 0, res.err
    assert "root digest changes" in res.out and multi.manifest.digest in res.out
    entries, _, digests = entries_by_tag(tmp_path / "arm.bundle")
    arm = entries[(multi.repo, multi.tag)]
    assert arm.platforms == ["linux/arm64/v8"] and arm.digest != multi.manifest.digest
    amd_child = next(c for c in multi.manifest.children if c.platform["architecture"] == "amd64")
    assert not (amd_child.blob_digests() & digests)  # the other platform's layers stayed home


def test_docker_formats_and_catalog_dedup(registry, skopeo, tmp_path, capsys):
    out = tmp_path / "all.bundle"
    res = run_cli(capsys, "export", "--catalog", registry.host, "-o", out, "--json")
    assert res.code == 0, res.err
    entries, complete, digests = entries_by_tag(out)
    assert complete
    for s in registry.seeded.values():  # OCI, Docker schema2, Docker list, index, artifact, signature
        assert entries[(s.repo, s.tag)].digest == skopeo.digest(registry, s.image) == s.manifest.digest
    # small and app share a base layer: stored once, so the bundle is smaller than the images summed.
    small, app = registry.seeded["small"].manifest, registry.seeded["app"].manifest
    shared = small.blob_digests() & app.blob_digests()
    assert shared
    total = sum(s.manifest.all_bytes() for s in registry.seeded.values())
    assert os.path.getsize(out) < total
    blobs = {}
    for s in registry.seeded.values():
        s.manifest._collect_blobs(blobs)
    manifest_digests = set().union(*(s.manifest.manifest_digests() for s in registry.seeded.values()))
    blob_sizes = {d: n for d, n in blobs.items() if d not in manifest_digests}
    # Each blob fetched once, however many repositories use it.
    assert res.json()["blobs_copied"] == len(blob_sizes)
    assert res.json()["bytes_copied"] == sum(blob_sizes.values()) < total
    assert shared <= digests


def test_catalog_filters_and_reference_file(registry, tmp_path, capsys):
    out = tmp_path / "f.bundle"
    res = run_cli(capsys, "export", "--catalog", registry.host, "--include", "sample/*", "--exclude", "sample/d*",
                  "--tags", "multi|small", "-o", out)
    assert res.code == 0, res.err
    assert set(entries_by_tag(out)[0]) == {("sample/multi", "multi"), ("sample/small", "small")}

    listing = tmp_path / "images.txt"
    small = registry.seeded["small"]
    listing.write_text(f"# a comment\n\n{registry.host}/{small.repo}@{small.manifest.digest}  # by digest\n"
                       f"{registry.host}/sample/docker:docker\n")
    res = run_cli(capsys, "export", "-f", listing, "-o", tmp_path / "list.bundle")
    assert res.code == 0, res.err
    with BundleReader(tmp_path / "list.bundle") as r:
        keys = {(e.repository, e.tag, e.digest) for e in r.entries}
    assert (small.repo, None, small.manifest.digest) in keys
    assert any(k[:2] == ("sample/docker", "docker") for k in keys)


def test_missing_image_names_the_reference(registry, tmp_path, capsys):
    out = tmp_path / "x.bundle"
    res = run_cli(capsys, "export", f"{registry.host}/sample/nope:1", "-o", out)
    assert res.code == 1
    assert res.err.count("\n") == 1 and "sample/nope" in res.err
    res = run_cli(capsys, "export", f"{registry.host}/sample/nope:1", f"{registry.host}/sample/small:small",
                  "--keep-going", "-o", out)
    assert res.code == 1 and "sample/nope:1" in res.out and "incomplete" in res.err
    entries, complete, _ = entries_by_tag(out)
    assert not complete and ("sample/small", "small") in entries  # kept, but never passed off as complete
    res = run_cli(capsys, "export", f"{registry.host}/Sample/x", "-o", out)
    assert res.code == 2 and "lower case" in res.err


def test_delta_export_leaves_out_what_the_destination_has(registry, fresh_registry, skopeo, tmp_path, capsys):
    dest = fresh_registry()
    small, app = registry.seeded["small"], registry.seeded["app"]
    full = tmp_path / "small.bundle"
    assert run_cli(capsys, "export", f"{registry.host}/{small.image}", "-o", full).code == 0
    assert run_cli(capsys, "import", full, dest.host).code == 0
    inventory = tmp_path / "dest.json"
    assert run_cli(capsys, "inventory", dest.host, "-o", inventory).code == 0

    delta = tmp_path / "delta.bundle"
    res = run_cli(capsys, "export", f"{registry.host}/{small.image}", f"{registry.host}/{app.image}",
                  "--no-referrers", "--have", inventory, "-o", delta, "--json")
    assert res.code == 0, res.err
    with BundleReader(delta) as r:
        expected = {d.digest for d in r.expected}
        stored = set(r.digests())
        homes = [d.model_extra["mountFrom"] for d in r.expected]
    # small's blobs are at the destination, in sample/small: the layer app shares with it is left
    # out too (the import mounts it into sample/app from there); app's own are carried.
    assert expected and expected == small.manifest.blob_digests()
    assert homes == [[small.repo]] * len(expected)
    assert not (expected & stored)
    assert app.manifest.blob_digests() - expected <= stored
    assert os.path.getsize(delta) < os.path.getsize(full) + app.manifest.all_bytes()

    # Into the destination it was made for: fine. Into an empty registry: refused before any push.
    assert run_cli(capsys, "import", delta, dest.host).code == 0
    assert skopeo.digest(dest, app.image) == app.manifest.digest
    empty = fresh_registry()
    res = run_cli(capsys, "import", delta, empty.host)
    assert res.code == 1 and "lacks" in res.err and sorted(expected)[0] in res.err
    assert RegistryClient(empty.host).catalog() == []  # nothing was pushed


def test_killed_export_resumes_without_fetching_again(fresh_registry, fault_proxy, skopeo, tmp_path):
    src = fresh_registry()
    layout = Layout(tmp_path / "layout")
    big = layout.image("big", [1_500_000, 1_500_000, 1_500_000], tag="big")
    layout.save()
    skopeo.seed(src, layout, big, "big/app", "v1")
    proxy = fault_proxy(src)
    last = big.layers[-1].digest
    proxy.stall(60, "GET", f"/blobs/{last}")  # hangs the last layer: the process is killed there
    out = tmp_path / "big.bundle"
    proc = spawn_cli("export", f"{proxy.host}/big/app:v1", "-o", out, "--jobs", "1", "-q")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(r.fired for r in proxy.rules):
        time.sleep(0.05)
    assert any(r.fired for r in proxy.rules), "the export never reached the last layer"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    with BundleReader(out, recover=True) as r:
        assert not r.complete
        kept = {d for d in big.blob_digests() if r.has(d)}
    assert kept  # the layers fetched before the kill survived
    proxy.clear()
    proc = spawn_cli("export", f"{proxy.host}/big/app:v1", "-o", out, "--jobs", "1", "-q")
    assert proc.wait(60) == 0, proc.stderr.read().decode()
    for digest in kept:  # counted at the registry side: nothing stored was fetched again
        assert proxy.stats("GET", f"/blobs/{digest}").requests == 0
    assert proxy.stats("GET", f"/blobs/{last}").requests == 1
    with BundleReader(out) as r:
        assert r.complete and big.blob_digests() <= set(r.digests())


def test_referrers_api_where_the_registry_has_it(registry, fault_proxy, tmp_path, capsys):
    """distribution 2.8 has no referrers API (404): the proxy plays one that lists the SBOM."""
    import json as _json

    app, sbom = registry.seeded["app"], registry.seeded["sbom"]
    assert RegistryClient(registry.host).referrers(app.repo, app.manifest.digest) is None  # 2.8: no API
    proxy = fault_proxy(registry)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [dict(sbom.manifest.descriptor(), artifactType=sbom.manifest.artifact_type)]}
    proxy.respond(200, "GET", f"/referrers/{app.manifest.digest}", times=None,
                  body=_json.dumps(index).encode(), content_type="application/vnd.oci.image.index.v1+json")
    out = tmp_path / "ref.bundle"
    assert run_cli(capsys, "export", f"{proxy.host}/{app.image}", "-o", out).code == 0
    with BundleReader(out) as r:
        roots = {(e.tag, e.digest) for e in r.entries}
    assert (None, sbom.manifest.digest) in roots  # found through the API, carried untagged
    assert proxy.stats("GET", "/referrers/").requests >= 1
    assert run_cli(capsys, "export", f"{proxy.host}/{app.image}", "-o", tmp_path / "no.bundle", "--no-referrers").code == 0
    with BundleReader(tmp_path / "no.bundle") as r:
        assert sbom.manifest.digest not in {e.digest for e in r.entries}


def test_all_tags_and_since_an_earlier_bundle(registry, fresh_registry, tmp_path, capsys):
    app = registry.seeded["app"]
    everything = tmp_path / "app-all.bundle"
    res = run_cli(capsys, "export", "--all-tags", f"{registry.host}/{app.repo}", "-o", everything)
    assert res.code == 0, res.err
    tags = {t for (repo, t) in entries_by_tag(everything)[0] if repo == app.repo}
    assert {"app", "sbom"} <= tags and any(t.endswith(".sig") for t in tags)

    # --since: a later bundle leaves out what the earlier one carried to the same repositories.
    first = tmp_path / "small.bundle"
    assert run_cli(capsys, "export", f"{registry.host}/sample/small:small", "-o", first).code == 0
    later = tmp_path / "later.bundle"
    res = run_cli(capsys, "export", f"{registry.host}/sample/small:small", "--since", first, "-o", later)
    assert res.code == 0, res.err
    with BundleReader(later) as r:
        assert {d.digest for d in r.expected} == registry.seeded["small"].manifest.blob_digests()
        assert not set(r.digests()) & registry.seeded["small"].manifest.blob_digests()


def test_full_disk_leaves_a_partial_bundle_that_continues(registry, tmp_path):
    """The file-size limit stands in for a full disk: writes past it fail with EFBIG."""
    import resource
    import subprocess
    import sys

    out = tmp_path / "full.bundle"
    ref = f"{registry.host}/sample/app:app"

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))

    proc = subprocess.run([sys.executable, "-m", "transfer", "export", ref, "-o", str(out), "-q"],
                          capture_output=True, text=True, timeout=60, preexec_fn=limit,
                          env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and str(out) in proc.stderr  # one line naming the file
    with BundleReader(out, recover=True) as r:
        assert not r.complete
        kept = set(r.digests())
    proc = spawn_cli("export", ref, "-o", out, "-q")
    assert proc.wait(60) == 0, proc.stderr.read().decode()
    with BundleReader(out) as r:
        assert r.complete and kept <= set(r.digests())


def test_schema1_is_refused_with_the_image_named(registry, fault_proxy, tmp_path, capsys):
    """distribution 2.8 will not store an unsigned schema1 manifest, so the proxy serves one."""
    import json as _json

    proxy = fault_proxy(registry)
    body = _json.dumps({"schemaVersion": 1, "name": "sample/small", "tag": "old", "fsLayers": []}).encode()
    proxy.respond(200, None, "/manifests/old$", times=None, body=body,
                  content_type="application/vnd.docker.distribution.manifest.v1+prettyjws")
    out = tmp_path / "s1.bundle"
    res = run_cli(capsys, "export", f"{proxy.host}/sample/small:old", "-o", out)
    assert res.code == 1 and res.err.count("\n") == 1
    assert "sample/small:old" in res.err and "schema1" in res.err
    assert not os.path.exists(out) or not BundleReader(out, recover=True).complete
