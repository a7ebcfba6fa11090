"""transfer import into real registries (plain, htpasswd over TLS, token auth), checked with skopeo."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.bed.images import Layout
from tests.cli_helpers import run_cli
from transfer.bundle import format as fmt
from transfer.bundle import iter_records
from transfer.models import is_manifest_type
from transfer.registry import RegistryClient


@pytest.fixture(scope="module")
def catalog_bundle(registry, tmp_path_factory):
    """The whole sample registry exported once (OCI, Docker, lists, artifact, signature)."""
    from transfer.cli import main

    path = tmp_path_factory.mktemp("bundles") / "catalog.bundle"
    assert main(["export", "--catalog", registry.host, "-o", str(path), "-q"]) == 0
    return path


def test_import_keeps_every_digest_and_skopeo_pulls_it_back(registry, catalog_bundle, fresh_registry, skopeo,
                                                            tmp_path, capsys):
    dest = fresh_registry()
    res = run_cli(capsys, "import", catalog_bundle, dest.host, "--json")
    assert res.code == 0, res.err
    assert res.json()["tags_written"] == len(registry.seeded)
    for s in registry.seeded.values():
        assert skopeo.digest(dest, s.image) == skopeo.digest(registry, s.image) == s.manifest.digest
    for ref in ("app", "multi", "docker"):  # an independent client can pull them back out
        skopeo.copy_from_registry(dest, registry.seeded[ref].image, tmp_path / ref, ref)
    # Running it again pushes nothing.
    again = run_cli(capsys, "import", catalog_bundle, dest.host, "--json").json()
    assert again["blobs_copied"] == 0 and again["manifests_copied"] == 0


def test_prefix_and_map(registry, catalog_bundle, fresh_registry, skopeo, capsys):
    dest = fresh_registry()
    res = run_cli(capsys, "import", catalog_bundle, f"{dest.host}/mirror", "--map", "sample=lib")
    assert res.code == 0, res.err
    repos = RegistryClient(dest.host).catalog()
    assert repos and all(r.startswith("mirror/lib/") for r in repos)
    multi = registry.seeded["multi"]
    assert skopeo.digest(dest, "mirror/lib/multi:multi") == multi.manifest.digest


def test_on_existing_and_dry_run(registry, catalog_bundle, fresh_registry, skopeo, capsys):
    dest = fresh_registry()
    small, docker = registry.seeded["small"], registry.seeded["docker"]
    # Make sample/small:small at the destination point at something else.
    skopeo.run("copy", "--preserve-digests", "-q", "--src-tls-verify=false", "--dest-tls-verify=false",
               f"docker://{registry.host}/{docker.image}", f"docker://{dest.host}/{small.image}")
    res = run_cli(capsys, "import", catalog_bundle, dest.host, "--dry-run", "--json")
    assert res.code == 0, res.err
    plan = res.json()
    assert plan["dry_run"] and plan["blobs_to_push"] > 0
    assert f"{small.repo}:small -> {small.manifest.digest}" in plan["tags"]
    assert RegistryClient(dest.host).catalog() == ["sample/small"]  # the dry run wrote nothing

    res = run_cli(capsys, "import", catalog_bundle, dest.host, "--on-existing", "fail")
    assert res.code == 1 and f"{small.repo}:small" in res.err and "already points" in res.err
    assert RegistryClient(dest.host).catalog() == ["sample/small"]

    res = run_cli(capsys, "import", catalog_bundle, dest.host, "--on-existing", "skip")
    assert res.code == 0, res.err
    assert "kept sample/small:small" in res.err
    assert skopeo.digest(dest, small.image) == docker.manifest.digest

    res = run_cli(capsys, "import", catalog_bundle, dest.host)  # default: overwrite, and say so
    assert res.code == 0 and "overwriting sample/small:small" in res.err
    assert skopeo.digest(dest, small.image) == small.manifest.digest


def test_import_into_htpasswd_tls_and_token_registries(registry, catalog_bundle, tls_registry, token_registry,
                                                       skopeo, monkeypatch, capsys):
    app = registry.seeded["app"]
    for target in (tls_registry, token_registry):
        monkeypatch.setenv("TRANSFER_USERNAME", target.username)
        monkeypatch.setenv("TRANSFER_PASSWORD", target.password)
        extra = ["--ca-cert", str(target.ca_cert_path)] if target.ca_cert_path else []
        res = run_cli(capsys, "import", catalog_bundle, f"{target.host}/imported", *extra)
        assert res.code == 0, res.err
        assert target.password not in res.out + res.err
        assert skopeo.digest(target, f"imported/{app.image}") == app.manifest.digest


def test_wrong_password_is_one_clear_line(catalog_bundle, tls_registry, monkeypatch, capsys):
    monkeypatch.setenv("TRANSFER_USERNAME", tls_registry.username)
    monkeypatch.setenv("TRANSFER_PASSWORD", "not-the-password-x9")
    res = run_cli(capsys, "import", catalog_bundle, tls_registry.host, "--ca-cert", tls_registry.ca_cert_path)
    assert res.code == 1 and res.err.count("\n") == 1
    assert "not-the-password-x9" not in res.err and "401" in res.err


def test_incomplete_bundle_is_refused(registry, fresh_registry, tmp_path, capsys):
    out = tmp_path / "part.bundle"
    res = run_cli(capsys, "export", f"{registry.host}/sample/nope:1", f"{registry.host}/sample/small:small",
                  "--keep-going", "-o", out)
    assert res.code == 1
    dest = fresh_registry()
    res = run_cli(capsys, "import", out, dest.host)
    assert res.code == 1 and "incomplete" in res.err
    assert RegistryClient(dest.host).catalog() == []
    res = run_cli(capsys, "import", out, dest.host, "--allow-incomplete")
    assert res.code == 0, res.err


def test_ls_json_lists_the_bundle(catalog_bundle, registry, capsys):
    res = run_cli(capsys, "ls", catalog_bundle, "--json")
    assert res.code == 0
    text = json.dumps(res.json())
    for s in registry.seeded.values():
        assert s.manifest.digest in text


def test_blob_shared_between_repositories_is_mounted(registry, catalog_bundle, fresh_registry, fault_proxy,
                                                    skopeo, capsys):
    dest = fresh_registry()
    proxy = fault_proxy(dest)
    small, app = registry.seeded["small"].manifest, registry.seeded["app"].manifest
    shared = sorted(small.blob_digests() & app.blob_digests())
    assert shared
    res = run_cli(capsys, "import", catalog_bundle, proxy.host, "--jobs", "1", "--json")
    assert res.code == 0, res.err
    assert res.json()["upload"]["mounted"] >= len(shared)
    mounts = [e for e in proxy.exchanges if e.method == "POST" and e.status == 201]
    assert len(mounts) >= len(shared)  # 201 on the POST: mounted, nothing uploaded for it
    # No presence check: the catalog said none of the repositories exists (test_scale counts the
    # checks into repositories that do).
    assert proxy.stats("GET", "/_catalog").requests == 1
    assert proxy.stats("HEAD", "/blobs/sha256:").requests == 0
    for s in registry.seeded.values():
        assert skopeo.digest(dest, s.image) == s.manifest.digest


def test_parallel_import_sends_a_shared_blob_once(fresh_registry, fault_proxy, skopeo, tmp_path, capsys):
    """Three repositories hold the same image: with parallel uploads (default --jobs), the copies of
    a blob must not race each other up; the first is uploaded, the others cross-mounted."""
    src, dest = fresh_registry(), fresh_registry()
    proxy = fault_proxy(dest)
    layout = Layout(tmp_path / "layout")
    image = layout.image("shared", [3_000_000, 2_000_000])
    layout.save()
    repos = ["one/app", "two/app", "three/app"]
    for repo in repos:
        skopeo.seed(src, layout, image, repo, "v1")
    bundle = tmp_path / "shared.bundle"
    assert run_cli(capsys, "export", "--catalog", src.host, "-o", bundle, "-q").code == 0
    res = run_cli(capsys, "import", bundle, proxy.host, "--json")
    assert res.code == 0, res.err
    sizes: dict[str, int] = {}
    image._collect_blobs(sizes)
    blob_bytes = sum(size for d, size in sizes.items() if d not in image.manifest_digests())
    assert sum(proxy.stats(m, "/blobs/uploads/").request_bytes for m in ("PATCH", "PUT")) == blob_bytes
    assert res.json()["upload"]["mounted"] == 2 * (len(sizes) - 1)  # config and layers, in two repositories
    last = [line for line in res.err.splitlines() if line.startswith("import: ")][-1]
    done, total = re.match(r"import: (.+) of (.+?),", last).groups()
    assert done == total, last  # mounted copies count as done in the progress
    for repo in repos:
        assert skopeo.digest(dest, f"{repo}:v1") == image.digest


@pytest.mark.parametrize("codec", ["stored", "zstd"])
def test_damaged_blob_stops_the_import_before_any_manifest(catalog_bundle, fresh_registry, fault_proxy,
                                                           tmp_path, capsys, codec):
    """A flipped bit inside a blob of the bundle: the sha256 check stops the upload before its last
    bytes leave, the error names the blob, and no manifest is pushed."""
    damaged = tmp_path / "damaged.bundle"
    shutil.copy(catalog_bundle, damaged)
    with open(damaged, "rb") as fh:
        records = [r for r in iter_records(fh) if r.header.type == fmt.CONTENT and not is_manifest_type(r.header.media_type)
                   and r.header.codec == (fmt.NONE if codec == "stored" else fmt.ZSTD)]
    record = max(records, key=lambda r: r.header.stored_length)
    at = record.offset + record.header.length + record.header.stored_length // 2
    data = bytearray(damaged.read_bytes())
    data[at] ^= 0x10
    damaged.write_bytes(bytes(data))
    dest = fresh_registry()
    proxy = fault_proxy(dest)
    res = run_cli(capsys, "import", damaged, proxy.host, "-q")
    assert res.code == 1
    assert len(res.err.strip().splitlines()) == 1 and record.header.digest in res.err, res.err
    assert proxy.stats("PUT", "/manifests/").requests == 0
    hexdigest = record.header.digest.split(":")[1]
    stored = dest.data_dir / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexdigest[:2] / hexdigest
    assert not stored.exists()  # the registry never accepted the damaged blob
