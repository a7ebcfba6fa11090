"""unpack (bundle -> OCI layout / docker archive) and export --from (layout / archive -> bundle)
against real registries, every result read by skopeo 1.9.3 as the independent implementation."""

from __future__ import annotations

import json
import tarfile

import pytest

from tests.cli_helpers import run_cli
from transfer.bundle import BundleReader
from transfer.cli import main
from transfer.interop import machine_platform
from transfer.layout import REF_NAME, OciLayout


@pytest.fixture(scope="module")
def catalog_bundle(registry, tmp_path_factory):
    """The whole sample registry (every format, the artifact and the signature) as one bundle."""
    out = tmp_path_factory.mktemp("interop") / "all.bundle"
    assert main(["export", "--catalog", registry.host, "-o", str(out), "-q"]) == 0
    return out


def entries(path):
    with BundleReader(path) as r:
        return {(e.repository, e.tag or e.digest): e.digest for e in r.entries}


def skopeo_push(skopeo, layout_ref: str, dst, image: str) -> None:
    skopeo.run("copy", "--all", "--preserve-digests", "-q", "--dest-tls-verify=false", layout_ref,
               f"docker://{dst.host}/{image}")


def config_of(skopeo, ref: str, *flags: str) -> dict:
    return json.loads(skopeo.run("inspect", "--config", "--raw", *flags, ref))


def test_unpack_oci_skopeo_pushes_the_original_digests(registry, catalog_bundle, fresh_registry, skopeo, tmp_path, capsys):
    layout = tmp_path / "all"
    res = run_cli(capsys, "unpack", catalog_bundle, "--oci", layout, "--json")
    assert res.code == 0, res.err
    names = res.json()["names"]
    dst = fresh_registry()
    # Several repositories: ref.name is the full name, which skopeo takes as oci:DIR:NAME.
    for ref in ("small", "app", "multi", "sbom"):
        s = registry.seeded[ref]
        assert f"docker.io/{s.image}" in names
        skopeo_push(skopeo, f"oci:{layout}:docker.io/{s.image}", dst, s.image)
        assert skopeo.digest(dst, s.image) == s.manifest.digest == skopeo.digest(registry, s.image)
    # Docker schema2 and lists are kept byte-exact (skopeo 1.9.3 reads them only by digest).
    oci = OciLayout(layout)
    for ref in ("docker", "dockerlist"):
        s = registry.seeded[ref]
        assert oci.resolve(s.repo, s.tag).digest == s.manifest.digest
    # One repository: ref.name is the bare tag, as skopeo, crane and oras write it.
    multi = registry.seeded["multi"]
    one = tmp_path / "one"
    res = run_cli(capsys, "unpack", catalog_bundle, "--oci", one, multi.image)
    assert res.code == 0, res.err
    assert f"oci:{one}:NAME, NAME one of: multi" in res.out
    skopeo_push(skopeo, f"oci:{one}:multi", dst, "again/multi:multi")
    assert skopeo.digest(dst, "again/multi:multi") == multi.manifest.digest


def test_unpack_oci_keeps_signatures_and_untagged_roots(registry, skopeo, tmp_path, capsys):
    app, small = registry.seeded["app"], registry.seeded["small"]
    sig = next(s for s in registry.seeded.values() if s.tag.endswith(".sig"))
    bundle = tmp_path / "b.bundle"
    res = run_cli(capsys, "export", f"{registry.host}/{app.image}", f"{registry.host}/{small.repo}@{small.manifest.digest}",
                  "-o", bundle)
    assert res.code == 0, res.err
    layout = tmp_path / "l"
    res = run_cli(capsys, "unpack", bundle, "--oci", layout, app.image)  # the image brings its signature
    assert res.code == 0, res.err
    index = json.loads((layout / "index.json").read_text())["manifests"]
    assert {m["annotations"][REF_NAME] for m in index} == {"app", sig.tag}
    res = run_cli(capsys, "unpack", bundle, "--oci", layout, f"{small.repo}@{small.manifest.digest}")
    assert res.code == 0, res.err
    index = json.loads((layout / "index.json").read_text())["manifests"]
    untagged = [m for m in index if not m.get("annotations")]
    assert [m["digest"] for m in untagged] == [small.manifest.digest]  # reachable, with no name
    # And back: the untagged root is packed by digest into the --repository given.
    res = run_cli(capsys, "export", "--from", f"oci:{layout}", "--repository", "sample/mixed", "-o", tmp_path / "back.bundle")
    assert res.code == 0, res.err
    assert entries(tmp_path / "back.bundle") == {
        ("sample/app", "app"): app.manifest.digest,
        ("sample/app", sig.tag): sig.manifest.digest,
        ("sample/mixed", small.manifest.digest): small.manifest.digest,
    }


def test_skopeo_layout_exports_and_imports_with_every_digest(registry, fresh_registry, skopeo, tmp_path, capsys):
    layout = tmp_path / "team"
    for ref in ("multi", "app", "small"):
        skopeo.copy_from_registry(registry, registry.seeded[ref].image, layout, ref)
    bundle = tmp_path / "team.bundle"
    res = run_cli(capsys, "export", "--from", f"oci:{layout}", "-o", bundle, "--json")
    assert res.code == 0, res.err
    with BundleReader(bundle) as r:
        assert r.info.source_registry == f"oci:{layout}"
    dst = fresh_registry()
    res = run_cli(capsys, "import", bundle, dst.host)
    assert res.code == 0, res.err
    for ref in ("multi", "app", "small"):  # bare tags go to the repository named after the directory
        assert skopeo.digest(dst, f"team:{ref}") == skopeo.digest(registry, registry.seeded[ref].image)
    # REF picks one image; --platform narrows an index as for a registry.
    one = tmp_path / "one.bundle"
    res = run_cli(capsys, "export", "--from", f"oci:{layout}:multi", "--repository", "x/multi",
                  "--platform", "linux/arm64", "-o", one)
    assert res.code == 0, res.err
    [(key, digest)] = entries(one).items()
    assert key == ("x/multi", "multi") and digest != registry.seeded["multi"].manifest.digest


def test_docker_archive_from_skopeo_through_a_bundle(registry, fresh_registry, skopeo, tmp_path, capsys):
    app = registry.seeded["app"]
    tar = tmp_path / "app.tar"
    skopeo.run("copy", "-q", "--src-tls-verify=false", f"docker://{registry.host}/{app.image}",
               f"docker-archive:{tar}:{app.image}")
    bundle = tmp_path / "app.bundle"
    res = run_cli(capsys, "export", "--from", f"docker-archive:{tar}", "-o", bundle)
    assert res.code == 0, res.err
    assert set(entries(bundle)) == {(app.repo, app.tag)}
    dst = fresh_registry()
    res = run_cli(capsys, "import", bundle, dst.host)
    assert res.code == 0, res.err
    out = tmp_path / "pulled"
    skopeo.run("copy", "-q", "--src-tls-verify=false", f"docker://{dst.host}/{app.image}", f"oci:{out}:app")
    original = config_of(skopeo, f"docker://{registry.host}/{app.image}", "--tls-verify=false")
    assert config_of(skopeo, f"oci:{out}:app")["rootfs"]["diff_ids"] == original["rootfs"]["diff_ids"]


def test_unpack_docker_archive_skopeo_reads_it(registry, catalog_bundle, skopeo, tmp_path, capsys):
    app, multi, small = registry.seeded["app"], registry.seeded["multi"], registry.seeded["small"]
    tar = tmp_path / "images.tar"
    res = run_cli(capsys, "unpack", catalog_bundle, "--docker-archive", tar, app.image, small.image, "--json")
    assert res.code == 0, res.err
    assert sorted(res.json()["names"]) == [app.image, small.image]
    with tarfile.open(tar) as t:
        repo_tags = sorted(tag for image in json.load(t.extractfile("manifest.json")) for tag in image["RepoTags"])
    assert repo_tags == [app.image, small.image]
    # skopeo 1.9.3 finds each image by its RepoTags entry and shows it as Name (its RepoTags field
    # lists a registry's tags: empty for an archive); it lists layers by diff_id.
    info = json.loads(skopeo.run("inspect", f"docker-archive:{tar}:{app.image}"))
    assert info["Name"] == f"docker.io/{app.repo}"
    assert info["Layers"] == [layer.diff_id for layer in app.manifest.layers]
    skopeo.run("copy", "-q", f"docker-archive:{tar}:{app.image}", f"oci:{tmp_path / 'x'}:app")
    # Our archive keeps the registry manifests, so packing one image back keeps its digest.
    res = run_cli(capsys, "export", "--from", f"docker-archive:{tar}:{app.image}", "-o", tmp_path / "back.bundle")
    assert res.code == 0, res.err
    assert entries(tmp_path / "back.bundle") == {(app.repo, app.tag): app.manifest.digest}
    original = config_of(skopeo, f"docker://{registry.host}/{app.image}", "--tls-verify=false")
    assert config_of(skopeo, f"oci:{tmp_path / 'x'}:app") == original

    # Everything: indexes narrowed to one platform, artifacts and signatures skipped with a note.
    res = run_cli(capsys, "unpack", catalog_bundle, "--docker-archive", tmp_path / "all.tar", "--platform", "linux/arm64", "--json")
    assert res.code == 0, res.err
    summary = res.json()
    assert any("sbom" in n and "skipped" in n for n in summary["notes"])
    assert any(".sig" in n and "skipped" in n for n in summary["notes"])
    arm = next(c for c in multi.manifest.children if c.platform["architecture"] == "arm64")
    with tarfile.open(tmp_path / "all.tar") as t:
        manifest = json.load(t.extractfile("manifest.json"))
    by_tag = {tag: image for image in manifest for tag in image["RepoTags"]}
    assert by_tag[multi.image]["Config"] == "blobs/sha256/" + arm.config.digest.split(":")[1]
    for ref in ("multi", "docker", "dockerlist", "small"):  # OCI and Docker, indexes and lists
        image = registry.seeded[ref].image
        skopeo.run("copy", "-q", f"docker-archive:{tmp_path / 'all.tar'}:{image}", f"oci:{tmp_path / ref}:{ref}")


def test_docker_archive_platform_choice_and_names(registry, catalog_bundle, tmp_path, capsys):
    multi = registry.seeded["multi"]
    res = run_cli(capsys, "unpack", catalog_bundle, "--docker-archive", tmp_path / "m.tar", multi.image, "--platform", "linux/s390x")
    assert res.code == 2
    assert "linux/amd64, linux/arm64/v8" in res.err and "--platform" in res.err
    assert not list(tmp_path.iterdir())  # nothing half-written is left
    res = run_cli(capsys, "unpack", catalog_bundle, "--docker-archive", tmp_path / "m.tar", multi.image,
                  "--prefix", "registry.local:5000/mirror", "--json")
    assert res.code == 0, res.err
    assert res.json()["names"] == [f"registry.local:5000/mirror/{multi.image}"]
    assert f"took {machine_platform()}" in res.json()["notes"][0]
    res = run_cli(capsys, "unpack", catalog_bundle, "--docker-archive", tmp_path / "n.tar", "sample/nothing:1")
    assert res.code == 2 and "sample/nothing:1 is not in" in res.err and "transfer ls" in res.err


def test_export_from_names_the_problem(registry, skopeo, tmp_path, capsys):
    res = run_cli(capsys, "export", "--from", "tar:x", "-o", tmp_path / "b")
    assert res.code == 2 and "oci:DIR[:REF] or docker-archive:FILE[:REF]" in res.err
    res = run_cli(capsys, "export", "--from", f"oci:{tmp_path}", "-o", tmp_path / "b")
    assert res.code == 1 and "is not an OCI image layout" in res.err
    layout = skopeo.copy_from_registry(registry, registry.seeded["small"].image, tmp_path / "Bad Name", "small")
    res = run_cli(capsys, "export", "--from", f"oci:{layout}", "-o", tmp_path / "b")
    assert res.code == 2 and "--repository NAME" in res.err
    res = run_cli(capsys, "export", "--from", f"oci:{layout}:nope", "--repository", "x", "-o", tmp_path / "b")
    assert res.code == 1 and "no entry named 'nope'" in res.err
    res = run_cli(capsys, "export", f"{registry.host}/sample/small:small", "--from", f"oci:{layout}", "-o", tmp_path / "b")
    assert res.code == 2 and "--from names the source on its own" in res.err


def test_delta_bundles_from_a_layout_and_unpack_refusing_them(registry, skopeo, tmp_path, capsys):
    small, app = registry.seeded["small"], registry.seeded["app"]
    layout = tmp_path / "site"
    for s in (small, app):
        skopeo.copy_from_registry(registry, s.image, layout, s.tag)
    first = tmp_path / "small.bundle"
    assert run_cli(capsys, "export", "--from", f"oci:{layout}:small", "-o", first).code == 0
    delta = tmp_path / "delta.bundle"
    res = run_cli(capsys, "export", "--from", f"oci:{layout}:app", "--since", first, "-o", delta, "--json")
    assert res.code == 0, res.err
    assert res.json()["expected_at_destination"] == len(small.manifest.blob_digests() & app.manifest.blob_digests())
    res = run_cli(capsys, "unpack", delta, "--oci", tmp_path / "out")
    assert res.code == 1 and "is a delta bundle" in res.err
