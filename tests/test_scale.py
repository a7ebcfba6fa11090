"""Many images at once, against real registries: what a run asks (counted at the fault proxy) and
the order guarantees of the pipelined, parallel engine (issue 11)."""

from __future__ import annotations

import json

import pytest

from tests.cli_helpers import run_cli
from transfer.errors import NotFoundError
from transfer.models import Descriptor, parse_manifest
from transfer.registry import RegistryClient


@pytest.fixture(scope="module")
def catalog_bundle(registry, tmp_path_factory):
    from transfer.cli import main

    path = tmp_path_factory.mktemp("bundles") / "catalog.bundle"
    assert main(["export", "--catalog", registry.host, "-o", str(path), "-q"]) == 0
    return path


def test_referrers_api_answered_404_is_asked_once_per_registry(registry, fault_proxy, tmp_path, capsys):
    proxy = fault_proxy(registry)
    res = run_cli(capsys, "export", "--catalog", proxy.host, "-o", tmp_path / "all.bundle", "--json")
    assert res.code == 0, res.err
    manifests = proxy.stats("GET", "/manifests/sha256:").requests
    assert manifests > 5  # many manifests were read ...
    assert proxy.stats("GET", "/referrers/").requests == 1  # ... the missing API was asked about once
    app = registry.seeded["app"]  # the fallback still finds the cosign-style signature
    listing = run_cli(capsys, "ls", tmp_path / "all.bundle", "--json").out
    assert "sha256-" + app.manifest.digest.split(":")[1] + ".sig" in listing


def test_no_op_import_asks_once_per_tag_and_writes_nothing(catalog_bundle, fresh_registry, fault_proxy, capsys):
    dest = fresh_registry()
    proxy = fault_proxy(dest)
    first = run_cli(capsys, "import", catalog_bundle, proxy.host, "--json")
    assert first.code == 0, first.err
    tags = first.json()["tags_written"]
    proxy.exchanges.clear()
    again = run_cli(capsys, "import", catalog_bundle, proxy.host, "--json")
    assert again.code == 0, again.err
    assert again.json()["images"] == first.json()["images"] and again.json()["tags_written"] == 0
    methods = {e.method for e in proxy.exchanges}
    assert methods <= {"GET", "HEAD"}, methods  # no PUT, POST, PATCH at all
    assert proxy.stats(None, "/blobs/").requests == 0  # a tag at its digest: its graph is there
    assert proxy.stats("HEAD", "/manifests/").requests == tags  # one question per tag, none after
    assert len(proxy.exchanges) <= tags + 2  # and the ping


def test_no_op_copy_writes_no_tag_again(registry, fresh_registry, fault_proxy, capsys):
    dest = fresh_registry()
    proxy = fault_proxy(dest)
    first = run_cli(capsys, "copy", "--catalog", registry.host, proxy.host, "--json")
    assert first.code == 0, first.err
    assert first.json()["tags_written"] > 5
    proxy.exchanges.clear()
    again = run_cli(capsys, "copy", "--catalog", registry.host, proxy.host, "--json")
    assert again.code == 0, again.err
    assert again.json()["tags_written"] == 0
    assert proxy.stats("PUT").requests == 0 and proxy.stats(None, "/blobs/").requests == 0
    assert proxy.stats("HEAD", "/manifests/").requests == first.json()["tags_written"]


def _dangling(client: RegistryClient) -> list[str]:
    """Every tag of the registry whose manifest graph is not wholly there."""
    problems = []
    for repo in client.catalog():
        try:
            tags = client.tags(repo)
        except NotFoundError:  # blobs only so far: no tag to dangle
            continue
        for tag in tags:
            problems += _missing(client, repo, client.head_manifest(repo, tag), f"{repo}:{tag}")
    return problems


def _missing(client: RegistryClient, repo: str, desc: Descriptor, where: str) -> list[str]:
    try:
        raw = client.get_manifest(repo, desc.digest).data
    except NotFoundError:
        return [f"{where}: manifest {desc.digest}"]
    out = []
    for child in parse_manifest(raw, desc.media_type).children():
        if child.is_manifest:
            out += _missing(client, repo, child, where)
        elif client.blob_size(repo, child.digest) is None:
            out.append(f"{where}: blob {child.digest}")
    return out


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8, 0.95])
def test_a_crash_anywhere_in_a_parallel_import_leaves_nothing_dangling(catalog_bundle, fresh_registry, fault_proxy,
                                                                      fraction, tmp_path, capsys):
    """Every request from the Nth on fails (the registry went away) while 8 transfers run side by
    side: no tag may then point at a manifest whose children are missing, and no manifest may
    have been pushed before its children; the next run finishes the job."""
    counted = fault_proxy(fresh_registry())
    assert run_cli(capsys, "import", catalog_bundle, counted.host, "-q", "--jobs", "8").code == 0
    dest = fresh_registry()
    proxy = fault_proxy(dest)
    proxy.respond(400, skip=int(len(counted.exchanges) * fraction), times=None)
    res = run_cli(capsys, "import", catalog_bundle, proxy.host, "--jobs", "8", "--json")
    assert res.code == 1, res.err
    assert _manifests_after_children(proxy.exchanges, dest) == []
    assert _dangling(RegistryClient(dest.host)) == []
    proxy.clear()
    assert run_cli(capsys, "import", catalog_bundle, proxy.host, "-q", "--jobs", "8").code == 0
    assert _dangling(RegistryClient(dest.host)) == []


def _manifests_after_children(exchanges, dest) -> list[str]:
    """Manifests PUT by digest before one of their child manifests was PUT (or found there)."""
    client, done, wrong = RegistryClient(dest.host), set(), []
    for ex in exchanges:
        if ex.method in ("PUT", "HEAD") and "/manifests/sha256:" in ex.path and ex.status in (200, 201):
            repo, digest = ex.path[len("/v2/"):].split("/manifests/")
            if ex.method == "PUT":
                desc = client.head_manifest(repo, digest)
                view = parse_manifest(client.get_manifest(repo, digest).data, desc.media_type)
                wrong += [f"{repo}@{digest} before {c.digest}" for c in view.children()
                          if c.is_manifest and (repo, c.digest) not in done]
            done.add((repo, digest))
    return wrong


def test_planning_shows_images_as_it_goes(registry, tmp_path, capsys):
    from transfer import ExportOptions, NullProgress, export

    class Count(NullProgress):
        def __init__(self) -> None:
            self.calls: list[tuple[int, int]] = []

        def images(self, found: int, planned: int) -> None:
            self.calls.append((found, planned))

    progress = Count()
    report = export([], str(tmp_path / "all.bundle"), catalog=registry.host, progress=progress,
                    options=ExportOptions(lookups=4))
    assert progress.calls and progress.calls[-1][0] == progress.calls[-1][1] > 0  # every image found was planned
    planned = [p for _, p in progress.calls]
    assert planned == sorted(planned)  # counted up as planning goes on
    assert json.loads(report.to_json())["images"] == report.images
