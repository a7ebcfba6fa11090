"""Many images at once, against real registries: what a run asks (counted at the fault proxy) and
the order guarantees of the pipelined, parallel engine (issue 11)."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
import requests

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


# -- requests per image: many small images (the shape of benchmarks/bench_scale.py) ---------------

IMAGES, BASE = 12, random.Random("base").randbytes(64 << 10)  # 6 repositories x 2 tags


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _upload(session: requests.Session, url: str, repo: str, data: bytes) -> None:
    r = session.post(f"{url}/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    location = location if location.startswith("http") else url + location
    assert session.put(location, params={"digest": _sha(data)}, data=data).status_code == 201


@pytest.fixture(scope="module")
def small_images(tmp_path_factory):
    """A registry holding IMAGES small images in IMAGES/2 repositories ``many/rN`` x tags t0, t1:
    a base layer shared by all, a layer and a config of its own each."""
    from tests.bed.registry import Registry

    registry = Registry(tmp_path_factory.mktemp("small-images"), "plain").start()
    session, url = requests.Session(), f"http://{registry.host}"
    try:
        for i in range(IMAGES):
            repo, tag = f"many/r{i // 2}", f"t{i % 2}"
            layer, config = random.Random(i).randbytes(4096), json.dumps({"image": i}).encode()
            for blob in (BASE, layer, config):
                _upload(session, url, repo, blob)
            manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                   "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                              "digest": _sha(config), "size": len(config)},
                                   "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                               "digest": _sha(b), "size": len(b)} for b in (BASE, layer)]}).encode()
            r = session.put(f"{url}/v2/{repo}/manifests/{tag}", data=manifest,
                            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
            assert r.status_code == 201, r.text
        yield registry
    finally:
        registry.stop()


def _counts(proxy) -> dict[str, int]:
    """(method kind) -> requests, e.g. ``GET manifest:tag``, ``POST upload``."""
    out: dict[str, int] = {}
    for ex in proxy.exchanges:
        path = ex.path.split("?")[0]
        kind = next((name for part, name in (("/blobs/uploads/", "upload"), ("/blobs/", "blob"),
                                             ("/manifests/sha256:", "manifest@digest"), ("/manifests/", "manifest:tag"),
                                             ("/tags/list", "tags"), ("/_catalog", "catalog"), ("/referrers/", "referrers"))
                     if part in path), "ping" if path.rstrip("/") == "/v2" else path)
        out[f"{ex.method} {kind}"] = out.get(f"{ex.method} {kind}", 0) + 1
    return out


def test_export_of_small_images_sends_the_floors_requests(small_images, fault_proxy, tmp_path, capsys):
    """Per image one GET of its manifest by tag (it resolves the tag and gives the bytes), per
    repository one tags list (read to select, and reused to find cosign-style referrers), each
    blob once, and the missing referrers API asked once: 3.6 requests per image here (5.6
    before: a HEAD and a GET per manifest, and a second tags list per repository)."""
    proxy = fault_proxy(small_images)
    res = run_cli(capsys, "export", "--catalog", proxy.host, "-o", tmp_path / "b.bundle", "--json")
    assert res.code == 0, res.err
    assert res.json()["images"] == IMAGES
    assert _counts(proxy) == {"GET ping": 1, "GET catalog": 1, "GET tags": IMAGES // 2, "GET manifest:tag": IMAGES,
                              "GET blob": 2 * IMAGES + 1, "GET referrers": 1}


@pytest.fixture(scope="module")
def small_bundle(small_images, tmp_path_factory):
    from transfer.cli import main

    path = tmp_path_factory.mktemp("small") / "small.bundle"
    assert main(["export", "--catalog", small_images.host, "-o", str(path), "-q"]) == 0
    return path


def _floor_push(repos: int) -> dict[str, int]:
    """What pushing the small images into repositories that do not exist takes: the catalog once,
    the base uploaded once (POST + PUT) and cross-mounted into every other repository (POST), two
    uploads per image (POST + PUT) and its manifest PUT by tag; no HEAD at all."""
    return {"GET ping": 1, "GET catalog": 1, "POST upload": 2 * IMAGES + repos, "PUT upload": 2 * IMAGES + 1,
            "PUT manifest:tag": IMAGES}


def test_import_into_new_repositories_asks_nothing_it_knows(small_bundle, fresh_registry, fault_proxy, tmp_path, capsys):
    """The catalog says the repositories do not exist: no tag, blob or manifest in them is asked
    about (5.6 requests per image here, 9.1 before: a HEAD per tag and per blob)."""
    proxy = fault_proxy(fresh_registry())
    res = run_cli(capsys, "import", small_bundle, proxy.host, "--json", "--journal", tmp_path / "j.json")
    assert res.code == 0, res.err
    assert res.json()["images"] == IMAGES and res.json()["tags_written"] == IMAGES
    assert _counts(proxy) == _floor_push(IMAGES // 2)
    # kept-alive connections: an answer left unread (a 201, a HEAD's) no longer closes its
    # connection (it did: one new connection, over HTTPS one TLS handshake, per request)
    assert proxy.connections <= 8 and proxy.connections * 4 < len(proxy.exchanges), (proxy.connections, len(proxy.exchanges))


def test_copy_into_new_repositories_asks_nothing_it_knows(small_images, fresh_registry, fault_proxy, tmp_path, capsys):
    proxy = fault_proxy(fresh_registry())
    res = run_cli(capsys, "copy", "--catalog", small_images.host, proxy.host, "--json", "--journal", tmp_path / "j.json")
    assert res.code == 0, res.err
    assert res.json()["images"] == IMAGES
    assert _counts(proxy) == _floor_push(IMAGES // 2)


@pytest.mark.parametrize("catalog_status", [401, 404, 500])
def test_import_where_the_catalog_is_refused_asks_as_before(small_bundle, fresh_registry, fault_proxy, tmp_path,
                                                           catalog_status, capsys):
    """A registry that does not show its catalog: every tag and blob is asked about (HEAD), and
    the import is the same."""
    dest = fresh_registry()
    proxy = fault_proxy(dest)
    proxy.respond(catalog_status, "GET", "/_catalog", times=None)
    res = run_cli(capsys, "import", small_bundle, proxy.host, "--json", "--journal", tmp_path / "j.json")
    assert res.code == 0, res.err
    assert res.json()["images"] == IMAGES
    counts = _counts(proxy)
    assert counts["HEAD manifest:tag"] == IMAGES and counts["HEAD blob"] >= 2 * IMAGES
    assert _dangling(RegistryClient(dest.host)) == []


def test_import_into_repositories_partly_there_skips_what_is_there(small_bundle, small_images, fresh_registry,
                                                                  fault_proxy, tmp_path, capsys):
    """Repositories that exist are asked about as before (a HEAD per tag and blob): what is there
    is not sent again, and only the new repositories go without questions."""
    dest = fresh_registry()
    ref = f"{small_images.host}/many/r0:t0"
    assert run_cli(capsys, "copy", ref, f"{dest.host}/many/r0:t0", "-q").code == 0
    proxy = fault_proxy(dest)
    res = run_cli(capsys, "import", small_bundle, proxy.host, "--json", "--journal", tmp_path / "j.json")
    assert res.code == 0, res.err
    assert res.json()["images"] == IMAGES and res.json()["tags_written"] == IMAGES - 1
    counts = _counts(proxy)
    assert counts["HEAD manifest:tag"] == 2  # many/r0's two tags; the other repositories' none
    assert counts["HEAD blob"] == 2  # many/r0:t1's own two; its base is r0:t0's, which is at its digest
    assert counts["PUT manifest:tag"] == IMAGES - 1
    assert _dangling(RegistryClient(dest.host)) == []


def test_on_existing_fail_asks_about_every_tag(small_bundle, fresh_registry, fault_proxy, tmp_path, capsys):
    """``--on-existing fail`` must see every conflict itself: the catalog spares blob questions,
    never tag questions."""
    proxy = fault_proxy(fresh_registry())
    res = run_cli(capsys, "import", small_bundle, proxy.host, "--json", "--on-existing", "fail",
                  "--journal", tmp_path / "j.json")
    assert res.code == 0, res.err
    counts = _counts(proxy)
    assert counts["HEAD manifest:tag"] == IMAGES and "HEAD blob" not in counts


def test_referrers_api_answered_404_is_asked_once_per_registry(registry, fault_proxy, tmp_path, capsys):
    proxy = fault_proxy(registry)
    res = run_cli(capsys, "export", "--catalog", proxy.host, "-o", tmp_path / "all.bundle", "--json")
    assert res.code == 0, res.err
    manifests = proxy.stats("GET", "/manifests/").requests
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
    proxy.connections = 0
    again = run_cli(capsys, "import", catalog_bundle, proxy.host, "--json")
    assert again.code == 0, again.err
    assert again.json()["images"] == first.json()["images"] and again.json()["tags_written"] == 0
    methods = {e.method for e in proxy.exchanges}
    assert methods <= {"GET", "HEAD"}, methods  # no PUT, POST, PATCH at all
    assert proxy.stats(None, "/blobs/").requests == 0  # a tag at its digest: its graph is there
    assert proxy.stats("HEAD", "/manifests/").requests == tags  # one question per tag, none after
    assert len(proxy.exchanges) <= tags + 2  # and the ping
    assert proxy.connections <= 8  # one HEAD after another on kept-alive connections


def test_an_imports_questions_to_the_target_run_lookups_at_a_time(small_bundle, fresh_registry, fault_proxy,
                                                                    tmp_path, capsys):
    """Which tags are there already is asked --lookups at a time (default 16), not --jobs (4):
    through a link of 100 ms round trip, the no-op import's HEADs go out side by side, each thread
    on its own kept-alive connection."""
    proxy = fault_proxy(fresh_registry())
    assert run_cli(capsys, "import", small_bundle, proxy.host, "--journal", tmp_path / "j.json").code == 0
    proxy.delay = 0.05  # each way
    for lookups, fewest, most in ((["--lookups", "2"], 1, 3), ([], 6, 17)):  # and the first requests' one
        proxy.exchanges.clear()
        proxy.connections = 0
        again = run_cli(capsys, "import", small_bundle, proxy.host, "--json", "--journal", tmp_path / "j.json", *lookups)
        assert again.code == 0, again.err
        assert again.json()["tags_written"] == 0 and proxy.stats("HEAD", "/manifests/").requests == IMAGES
        assert fewest <= proxy.connections <= most, (lookups, proxy.connections)


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
