"""RegistryClient and RegistryStore against real docker-registry processes (plain HTTP), checked
with skopeo, and behind the bed's fault proxy (corrupt byte, cut download, 429/503)."""

from __future__ import annotations

import hashlib

import pytest

from transfer.errors import IntegrityError, NotFoundError, RegistryError
from transfer.models import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Descriptor
from transfer.registry import RegistryClient, RegistryStore, RetryPolicy
from transfer.store import Catalog, Source, Target

FAST = RetryPolicy(attempts=4, backoff=0.01, max_delay=1.0, total=20.0)
pytestmark = pytest.mark.registry


def client_for(host: str, **kw) -> RegistryClient:
    kw.setdefault("retry", FAST)
    return RegistryClient(host, **kw)


def desc_of(item) -> Descriptor:
    return Descriptor(media_type=item.media_type, digest=item.digest, size=item.size)


def push_image(store: RegistryStore, layout, manifest, repo: str, tag: str | None, mount_from: str | None = None):
    """Push a bed manifest and everything under it through ``store``, children first."""
    for child in manifest.children:
        push_image(store, layout, child, repo, None, mount_from)
    for blob in ([manifest.config] if manifest.config else []) + list(manifest.layers):
        path = layout.blob_path(blob.digest)
        store.push(repo, desc_of(blob), lambda p=path: open(p, "rb"), mount_from=mount_from)
    store.push(repo, desc_of(manifest), lambda m=manifest: __import__("io").BytesIO(m.raw))
    if tag:
        store.tag(repo, desc_of(manifest), tag)


def test_store_implements_the_protocols(registry):
    store = RegistryStore(client_for(registry.host))
    assert isinstance(store, Source) and isinstance(store, Target) and isinstance(store, Catalog)


def test_catalog_and_tags_match_skopeo(registry, skopeo, seeded):
    with client_for(registry.host) as client:
        repos = client.catalog()
        assert repos == sorted({s.repo for s in seeded.values()})
        for repo in repos:
            assert client.tags(repo) == skopeo.list_tags(registry, repo)
        with pytest.raises(NotFoundError, match="NAME_UNKNOWN"):
            client.tags("no/such/repo")


@pytest.mark.parametrize("ref, media_type", [("small", OCI_MANIFEST), ("docker", DOCKER_MANIFEST),
                                             ("multi", OCI_INDEX), ("dockerlist", DOCKER_LIST)])
def test_manifests_and_indexes_have_skopeo_digests(registry, skopeo, seeded, ref, media_type):
    item = seeded[ref]
    raw = skopeo.inspect_raw(registry, item.image)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    store = RegistryStore(client_for(registry.host))
    desc = store.resolve(item.repo, item.tag)
    assert (desc.digest, desc.media_type, desc.size) == (digest, media_type, len(raw))
    assert store.client.get_manifest(item.repo, item.tag).data == raw
    assert store.client.get_manifest(item.repo, digest).digest == digest
    for child in item.manifest.children:  # children of an index, by digest
        got = store.client.get_manifest(item.repo, child.digest)
        assert got.data == child.raw and got.media_type == child.media_type
    with store.fetch(item.repo, desc) as reader:
        assert reader.read_all(1 << 20) == raw


def test_blob_fetch_is_verified_and_exact(registry, seeded, sample_layout):
    layout, _ = sample_layout
    item = seeded["app"]
    store = RegistryStore(client_for(registry.host))
    for layer in item.manifest.layers:
        with store.fetch(item.repo, desc_of(layer)) as reader:
            data = reader.read_all(1 << 22)
        assert data == layout.blob_path(layer.digest).read_bytes()
    with pytest.raises(NotFoundError):
        store.fetch(item.repo, Descriptor(media_type="x", digest="sha256:" + "0" * 64, size=1)).read()


def test_push_round_trip_checked_by_skopeo(fresh_registry, sample_layout, skopeo, tmp_path):
    layout, refs = sample_layout
    reg = fresh_registry()
    store = RegistryStore(client_for(reg.host))
    for ref in ("app", "multi", "dockerlist"):
        push_image(store, layout, refs[ref], f"copy/{ref}", ref)
        assert skopeo.inspect_raw(reg, f"copy/{ref}:{ref}") == refs[ref].raw
        assert store.exists(f"copy/{ref}", desc_of(refs[ref]))
    skopeo.copy_from_registry(reg, "copy/multi:multi", tmp_path / "out", "multi")  # every blob readable
    assert store.repositories() == ["copy/app", "copy/dockerlist", "copy/multi"]
    assert not store.exists("copy/app", Descriptor(media_type=OCI_MANIFEST, digest="sha256:" + "1" * 64, size=2))


def test_push_twice_is_a_noop_and_mount_avoids_upload(fresh_registry, fault_proxy, sample_layout):
    layout, refs = sample_layout
    reg = fresh_registry()
    proxy = fault_proxy(reg)
    store = RegistryStore(client_for(proxy.host))
    push_image(store, layout, refs["small"], "one/a", "small")
    uploaded = proxy.stats("PUT", r"/blobs/uploads/").request_bytes
    assert uploaded == sum(b.size for b in [refs["small"].config, *refs["small"].layers])
    push_image(store, layout, refs["small"], "one/a", "small")
    assert proxy.stats("PUT", r"/blobs/uploads/").request_bytes == uploaded
    push_image(store, layout, refs["small"], "two/b", "small", mount_from="one/a")
    assert proxy.stats("PUT", r"/blobs/uploads/").request_bytes == uploaded  # mounted, not sent
    assert proxy.stats("POST", r"/two/b/blobs/uploads/").statuses == [201, 201]


def test_integrity_error_on_corrupted_blob(registry, seeded, fault_proxy):
    proxy = fault_proxy(registry)
    item = seeded["small"]
    layer = item.manifest.layers[0]
    proxy.corrupt_response("GET", f"/blobs/{layer.digest}", offset=1000)
    store = RegistryStore(client_for(proxy.host))
    with pytest.raises(IntegrityError) as info:
        with store.fetch(item.repo, desc_of(layer)) as reader:
            reader.drain()
    assert layer.digest in str(info.value)


def test_dropped_download_resumes_with_range(registry, seeded, fault_proxy, sample_layout):
    layout, _ = sample_layout
    proxy = fault_proxy(registry)
    item = seeded["app"]
    layer = max(item.manifest.layers, key=lambda b: b.size)
    proxy.cut_response("GET", f"/blobs/{layer.digest}", after=100_000, times=2)
    store = RegistryStore(client_for(proxy.host))
    with store.fetch(item.repo, desc_of(layer)) as reader:
        data = reader.read_all(1 << 22)
    assert data == layout.blob_path(layer.digest).read_bytes()
    gets = proxy.stats("GET", f"/blobs/{layer.digest}")
    assert gets.requests == 3
    assert gets.statuses[1:] == [206, 206]  # the registry answers 206 only to a Range request
    assert gets.response_bytes == layer.size  # no byte was downloaded twice


def test_blob_reader_goes_to_an_offset_with_range(registry, seeded, fault_proxy, sample_layout):
    """An upload that resumes or resends asks the source registry for the bytes from an offset
    (206), rather than downloading the blob from its start again."""
    layout, _ = sample_layout
    proxy = fault_proxy(registry)
    item = seeded["app"]
    layer = max(item.manifest.layers, key=lambda b: b.size)
    data = layout.blob_path(layer.digest).read_bytes()
    store = RegistryStore(client_for(proxy.host))
    with store.fetch(item.repo, desc_of(layer)) as reader:
        assert reader.read(200_000) == data[:200_000]
        assert reader.skip_unverified(400_000)
        assert reader.read_all(1 << 22) == data[400_000:]  # only the size is checked
        assert reader.rewind(0) and not reader.unverified
        assert reader.read_all(1 << 22) == data  # the digest checked again
    assert proxy.stats("GET", f"/blobs/{layer.digest}").statuses == [200, 206, 200]


def test_download_gives_up_after_bounded_attempts(registry, seeded, fault_proxy):
    proxy = fault_proxy(registry)
    item = seeded["app"]
    layer = max(item.manifest.layers, key=lambda b: b.size)
    proxy.cut_response("GET", f"/blobs/{layer.digest}", after=0, times=None)
    store = RegistryStore(RegistryClient(proxy.host, retry=FAST, resume_attempts=2))
    with pytest.raises(RegistryError, match="gave up"):
        store.fetch(item.repo, desc_of(layer)).drain()
    assert proxy.stats("GET", f"/blobs/{layer.digest}").requests == 3


def test_429_and_503_are_retried(registry, seeded, fault_proxy):
    proxy = fault_proxy(registry)
    item = seeded["small"]
    proxy.respond(429, "GET", r"/manifests/", times=2, retry_after=0)
    proxy.respond(503, "GET", r"/blobs/", times=2)
    sleeps: list[float] = []
    client = RegistryClient(proxy.host, retry=FAST, sleep=sleeps.append)
    store = RegistryStore(client)
    desc = desc_of(item.manifest)
    with store.fetch(item.repo, desc) as reader:
        reader.drain()
    with store.fetch(item.repo, desc_of(item.manifest.layers[0])) as reader:
        reader.drain()
    assert proxy.stats("GET", r"/manifests/").statuses == [429, 429, 200]
    assert proxy.stats("GET", r"/blobs/").statuses == [503, 503, 200]
    assert sleeps[:2] == [0.0, 0.0] and len(sleeps) == 4  # Retry-After honoured, then backoff


def test_retries_are_bounded_and_only_the_plain_session_post_is_retried(registry, seeded, fault_proxy):
    proxy = fault_proxy(registry)
    proxy.respond(503, "GET", r"/tags/list", times=None)
    proxy.respond(503, "POST", r"/blobs/uploads/", times=None)
    client = RegistryClient(proxy.host, retry=FAST, sleep=lambda s: None)
    with pytest.raises(RegistryError) as info:
        client.tags(seeded["small"].repo)
    assert info.value.status == 503 and info.value.retryable and "UNAVAILABLE" in str(info.value)
    assert proxy.stats("GET", r"/tags/list").requests == FAST.attempts
    with pytest.raises(RegistryError):
        client.start_upload("new/repo")
    assert proxy.stats("POST", r"/blobs/uploads/").requests == FAST.attempts  # an unused session costs nothing
    proxy.clear()
    proxy.respond(503, "POST", r"/blobs/uploads/", times=None)
    with pytest.raises(RegistryError):  # the mount is tried once, then the plain POST (retried)
        client.start_upload("new/repo", mount=seeded["small"].manifest.layers[0].digest, from_repo=seeded["small"].repo)
    assert proxy.stats("POST", r"/blobs/uploads/").requests == 1 + FAST.attempts


def test_rate_limit_longer_than_max_delay_is_not_waited(registry, seeded, fault_proxy):
    proxy = fault_proxy(registry)
    proxy.respond(429, "GET", r"/tags/list", times=None, retry_after=3600)
    client = RegistryClient(proxy.host, retry=FAST, sleep=lambda s: pytest.fail("should not wait"))
    with pytest.raises(RegistryError) as info:
        client.tags(seeded["small"].repo)
    assert info.value.retry_after == 3600


def test_catalog_pagination_follows_link(fresh_registry, fault_proxy):
    reg = fresh_registry()
    proxy = fault_proxy(reg)
    client = client_for(proxy.host)
    config = b"{}"
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    names = [f"many/r{i:02d}" for i in range(23)]
    for name in names:
        status = client.start_upload(name)
        client.finish_upload(status.location, name, digest, body=config, length=len(config))
        for tag in ("b", "a", "c"):
            manifest = (b'{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.empty.v1+json",'
                        b'"digest":"%s","size":2},"layers":[],"annotations":{"t":"%s"}}'
                        % (OCI_MANIFEST.encode(), digest.encode(), tag.encode()))
            client.put_manifest(name, tag, manifest, OCI_MANIFEST)
    assert client.catalog(page_size=5) == names
    assert proxy.stats("GET", r"/v2/_catalog").requests == 5  # 23 names, 5 per page
    assert client.tags("many/r07") == ["a", "b", "c"]


def test_netrc_credentials_never_replace_the_registry_token(tmp_path, monkeypatch):
    """requests adds ~/.netrc credentials to a request that has no auth of its own, and again
    after every redirect: an entry for the registry's host would have replaced the token. A local
    server plays the redirect (the real registry has none to give)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from transfer.registry.http import Transport
    from transfer.registry.tls import tls_policy

    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            seen.append((self.path, self.headers.get("Authorization")))
            moved = self.path == "/v2/a"
            self.send_response(307 if moved else 200)
            if moved:
                self.send_header("Location", "/v2/b")
            self.send_header("Content-Length", "0" if moved else "2")
            self.end_headers()
            if not moved:
                self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login netrcuser password netrcpass\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    host = f"127.0.0.1:{server.server_address[1]}"
    transport = Transport(tls_policy(host, insecure=True))
    try:
        for path in ("/v2/b", "/v2/a"):
            transport.send("GET", f"http://{host}{path}", headers={"Authorization": "Bearer registry-token"}).close()
        transport.send("GET", f"http://{host}/v2/b").close()
    finally:
        transport.close()
        server.shutdown()
        server.server_close()
    assert seen == [("/v2/b", "Bearer registry-token"), ("/v2/a", "Bearer registry-token"),
                    ("/v2/b", "Bearer registry-token"), ("/v2/b", None)]
