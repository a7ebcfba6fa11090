"""ChunkedUploader against a real docker-registry (through the fault proxy, which counts the bytes
of every request) and against the scripted spec registry for behaviour 2.8 cannot show."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from collections.abc import Iterator

import pytest
import requests

from tests.bed.proxy import FaultProxy
from tests.bed.spec_registry import SpecRegistry
from transfer.errors import AuthenticationError, NotFoundError, RegistryError, UploadError
from transfer.models import Descriptor
from transfer.registry.client import RegistryClient
from transfer.registry.http import RetryPolicy
from transfer.registry.store import RegistryStore
from transfer.registry.settings import RegistrySettings
from transfer.registry.upload import ChunkedUploader

MiB = 1 << 20
FAST = RetryPolicy(attempts=3, backoff=0.01, max_delay=0.05, total=10)
REPO = "team/app"


def make_blob(size: int, seed: int = 1) -> tuple[bytes, Descriptor]:
    data = (hashlib.sha256(seed.to_bytes(8, "big")).digest() * 8)[:256] + os.urandom(max(size - 256, 0))
    data = data[:size]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return data, Descriptor(media_type="application/vnd.oci.image.layer.v1.tar", digest=digest, size=size)


def uploader(chunk: int = MiB, **kw) -> ChunkedUploader:
    kw.setdefault("backoff", 0.01)
    return ChunkedUploader(chunk, **kw)


def push(host: str, up: ChunkedUploader, data: bytes, desc: Descriptor, repo: str = REPO, **client_kw) -> None:
    client_kw.setdefault("retry", FAST)
    with RegistryClient(host, **client_kw) as client:
        RegistryStore(client, uploader=up).push(repo, desc, lambda: io.BytesIO(data))


def assert_blob(url: str, desc: Descriptor, repo: str = REPO, **session_kw) -> None:
    """An independent check (plain requests): HEAD size and a GET whose sha256 is the digest."""
    path = f"{url}/v2/{repo}/blobs/{desc.digest}"
    head = requests.head(path, timeout=30, **session_kw)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == desc.size
    body = requests.get(path, timeout=60, **session_kw)
    assert "sha256:" + hashlib.sha256(body.content).hexdigest() == desc.digest


def bodies(proxy: FaultProxy, method: str, since: int = 0) -> list[int]:
    """Request body sizes the proxy forwarded for ``method`` upload requests."""
    with proxy.lock:
        return [e.request_bytes for e in proxy.exchanges[since:] if e.method == method and "/blobs/uploads/" in e.path]


@pytest.fixture
def spec_registry() -> Iterator:
    started: list[SpecRegistry] = []

    def start(**kw) -> SpecRegistry:
        registry = SpecRegistry(**kw).start()
        started.append(registry)
        return registry

    try:
        yield start
    finally:
        for registry in started:
            registry.stop()


# -- distribution 2.8 ---------------------------------------------------------------------------

def test_chunked_upload_lands_in_chunk_sized_patches(fresh_registry, fault_proxy):
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    data, desc = make_blob(20 * MiB + 123)
    up = uploader(MiB)
    push(proxy.host, up, data, desc)
    assert_blob(registry.url, desc)
    assert bodies(proxy, "PATCH") == [MiB] * 20 + [123]
    assert bodies(proxy, "PUT") == [0]
    assert proxy.stats("POST").requests == 1
    assert (up.stats.blobs, up.stats.chunks_sent, up.stats.bytes_sent) == (1, 21, desc.size)
    assert (up.stats.monolithic, up.stats.blobs_restarted, up.stats.status_queries) == (0, 0, 0)


class LinkClock:
    """A clock for the uploader that makes the link as fast as ``rate``: it reads the request bytes
    the proxy has forwarded so far, divided by ``rate``. The proxy counts a body in full before it
    relays the answer, so a request carrying n bytes seems to take exactly n / rate seconds."""

    def __init__(self, proxy: FaultProxy, rate: float) -> None:
        self.proxy, self.rate = proxy, rate

    def __call__(self) -> float:
        return self.proxy.stats().request_bytes / self.rate


@pytest.mark.parametrize("rate, patches", [
    (8 * MiB, [8 * MiB, 16 * MiB, 16 * MiB, 3 * MiB]),  # 2 s of sending at 8 MiB/s is 16 MiB
    (400 * MiB, [8 * MiB, 35 * MiB]),  # 800 MiB in 2 s: the rest fits one chunk
])
def test_default_chunks_are_sized_by_time(fresh_registry, fault_proxy, rate, patches):
    """Without a chunk size, the first chunk is 8 MiB and each next one about 2 s of sending at
    the rate seen so far."""
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    data, desc = make_blob(43 * MiB)
    up = ChunkedUploader(backoff=0.01, clock=LinkClock(proxy, rate))
    push(proxy.host, up, data, desc)
    assert_blob(registry.url, desc)
    assert bodies(proxy, "PATCH") == patches and bodies(proxy, "PUT") == [0]
    # The rate carries over to the next blob: 12 MiB is under 2 s of sending, so one PUT (a new
    # uploader would send it in two chunks: 8 MiB, then 4 MiB).
    data, desc = make_blob(12 * MiB, seed=2)
    since = len(proxy.exchanges)
    push(proxy.host, up, data, desc)
    assert bodies(proxy, "PATCH", since) == [] and bodies(proxy, "PUT", since) == [12 * MiB]


def test_a_chunk_is_streamed_not_held_in_memory(fresh_registry):
    """A 48 MiB chunk goes from the source into the request without being copied into memory."""
    registry = fresh_registry()
    data, desc = make_blob(64 * MiB)
    up = uploader(48 * MiB)
    tracemalloc.start()
    try:
        push(registry.host, up, data, desc)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_blob(registry.url, desc)
    assert up.stats.chunks_sent == 2
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB traced while uploading"


class FailingSource(io.BytesIO):
    """A source (a registry being copied from) that fails with ``error`` after ``after`` bytes."""

    def __init__(self, data: bytes, after: int, error: Exception) -> None:
        super().__init__(data)
        self.after, self.error = after, error

    def read(self, n: int = -1) -> bytes:
        if self.tell() >= self.after:
            raise self.error
        return super().read(min(n if n is not None and n >= 0 else self.after, self.after - self.tell()))


@pytest.mark.parametrize("error", [
    NotFoundError("GET https://source.example/v2/app/blobs/sha256:x: 404 Not Found", status=404),
    OSError(5, "Input/output error: source.example.bundle.002"),  # a bundle part on a failing disk
], ids=["source registry 404", "bundle read error"])
@pytest.mark.parametrize("size, after", [(5 * MiB, 3 * MiB + 5), (300_000, 0)], ids=["chunked", "one PUT"])
def test_a_source_error_is_raised_as_itself_not_taken_for_the_targets(fresh_registry, fault_proxy, size, after,
                                                                      error):
    """The source's error surfaces at once: the target is not asked where the upload stands, the
    blob not restarted (the source would fail the same way)."""
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    data, desc = make_blob(size)
    up = uploader(MiB)
    with RegistryClient(proxy.host, retry=FAST) as client:
        with pytest.raises(type(error), match="source.example"):
            RegistryStore(client, uploader=up).push(REPO, desc, lambda: FailingSource(data, after, error))
    assert proxy.stats("POST").requests == 1 and up.stats.blobs_restarted == 0
    assert up.stats.status_queries == 0 and proxy.stats("GET", "/blobs/uploads/").requests == 0


def test_a_body_refused_as_too_large_goes_again_in_halves(fresh_registry, fault_proxy):
    """A proxy before the registry refuses the 8 MiB first chunk with 413 (nginx's
    client_max_body_size, a CDN's limit): the same bytes go again in 4 MiB chunks, as do the next
    blob's; a whole-blob PUT refused likewise continues its session in chunks."""
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    proxy.respond(413, "PATCH", "/blobs/uploads/")
    data, desc = make_blob(20 * MiB)
    up = ChunkedUploader(backoff=0.01)
    push(proxy.host, up, data, desc)
    assert_blob(registry.url, desc)
    assert bodies(proxy, "PATCH") == [8 * MiB] + [4 * MiB] * 5  # the refused one, then halves
    assert up.stats.blobs_restarted == 0 and proxy.stats("POST").requests == 1
    data, desc = make_blob(6 * MiB, seed=3)
    since = len(proxy.exchanges)
    push(proxy.host, up, data, desc)  # the limit stays: no 6 MiB PUT, though the link is fast
    assert bodies(proxy, "PATCH", since) == [4 * MiB, 2 * MiB] and bodies(proxy, "PUT", since) == [0]
    # a PUT of a whole blob refused: the same session continues in chunks
    proxy.respond(413, "PUT", "/blobs/uploads/")
    data, desc = make_blob(3 * MiB, seed=2)
    since = len(proxy.exchanges)
    push(proxy.host, uploader(MiB, threshold=4 * MiB), data, desc)
    assert_blob(registry.url, desc)
    assert bodies(proxy, "PUT", since) == [3 * MiB, 0] and bodies(proxy, "PATCH", since) == [MiB] * 3
    assert len(bodies(proxy, "POST", since)) == 1


def test_413_with_registry_settings(fresh_registry, fault_proxy):
    """A 413 and the per-registry settings: a PUT carrying the last chunk (ECR style) is split
    too; the limit never goes under the registry's minimum chunk; a registry that takes whole
    blobs only gets a clear error; a proxy refusing everything ends in bounded attempts."""
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    here = {"127.0.0.1": RegistrySettings(min_chunk=5 * MiB, last_chunk_in_put=True)}
    proxy.respond(413, "PUT", "/blobs/uploads/")
    data, desc = make_blob(20 * MiB)
    push(proxy.host, ChunkedUploader(settings=here, backoff=0.01, clock=LinkClock(proxy, 400 * MiB)), data, desc)
    assert_blob(registry.url, desc)
    # 8 MiB, then the 12 MiB rest in the PUT: refused; then 6 MiB chunks, the last in the PUT
    assert bodies(proxy, "PATCH") == [8 * MiB, 6 * MiB] and bodies(proxy, "PUT") == [12 * MiB, 6 * MiB]

    proxy.respond(413, "PATCH", "/blobs/uploads/")
    data, desc = make_blob(18 * MiB, seed=2)
    since = len(proxy.exchanges)
    push(proxy.host, ChunkedUploader(settings=here, backoff=0.01), data, desc)
    assert_blob(registry.url, desc)
    assert bodies(proxy, "PATCH", since) == [8 * MiB] + [5 * MiB] * 3  # 4 MiB would be under the minimum
    assert bodies(proxy, "PUT", since) == [3 * MiB]

    whole_only = {"127.0.0.1": RegistrySettings(monolithic_only=True)}
    proxy.respond(413, "PUT", "/blobs/uploads/")
    data, desc = make_blob(3 * MiB, seed=3)
    with pytest.raises(UploadError, match="too large .413. .*whole blobs only"):
        push(proxy.host, ChunkedUploader(settings=whole_only, backoff=0.01), data, desc)

    proxy.respond(413, "PATCH", "/blobs/uploads/", times=None)
    data, desc = make_blob(20 * MiB, seed=4)
    since = len(proxy.exchanges)
    with pytest.raises(RegistryError, match="413"):
        push(proxy.host, ChunkedUploader(backoff=0.01), data, desc)
    assert bodies(proxy, "PATCH", since) == [8 * MiB, 4 * MiB, 2 * MiB, MiB]


def test_small_blob_goes_up_in_one_put(fresh_registry, fault_proxy):
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    data, desc = make_blob(300_000)
    up = uploader(MiB)
    push(proxy.host, up, data, desc)
    assert_blob(registry.url, desc)
    assert bodies(proxy, "PATCH") == [] and bodies(proxy, "PUT") == [300_000]
    assert up.stats.monolithic == 1 and up.stats.bytes_sent == 300_000


def test_empty_blob(fresh_registry):
    registry = fresh_registry()
    data, desc = make_blob(0)
    push(registry.host, uploader(), data, desc)
    assert_blob(registry.url, desc)


@pytest.mark.parametrize("settings, patches, put", [
    (RegistrySettings(min_chunk=3 * MiB), [3 * MiB] * 3 + [MiB // 2], [0]),
    (RegistrySettings(max_chunk=MiB // 2), [MiB // 2] * 19, [0]),
    (RegistrySettings(last_chunk_in_put=True), [MiB] * 9, [MiB // 2]),
    (RegistrySettings(min_chunk=2 * MiB, last_chunk_in_put=True), [2 * MiB] * 4, [MiB + MiB // 2]),
    (RegistrySettings(monolithic_only=True), [], [9 * MiB + MiB // 2]),
])
def test_registry_settings_shape_the_requests(fresh_registry, fault_proxy, settings, patches, put):
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    data, desc = make_blob(9 * MiB + MiB // 2)
    push(proxy.host, uploader(MiB, settings={"127.0.0.1:*": settings}), data, desc)
    assert_blob(registry.url, desc)
    assert bodies(proxy, "PATCH") == patches
    assert bodies(proxy, "PUT") == put


def test_threshold_sends_larger_blobs_whole(fresh_registry, fault_proxy):
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    data, desc = make_blob(3 * MiB)
    push(proxy.host, uploader(MiB, threshold=4 * MiB), data, desc)
    assert bodies(proxy, "PATCH") == [] and bodies(proxy, "PUT") == [3 * MiB]


def test_wrong_source_bytes_fail_before_the_put(fresh_registry, fault_proxy):
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    data, desc = make_blob(5 * MiB)
    bad = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(Exception, match="integrity check failed for blob"):
        push(proxy.host, uploader(MiB), bad, desc)
    assert bodies(proxy, "PUT") == []
    assert requests.head(f"{registry.url}/v2/{REPO}/blobs/{desc.digest}", timeout=10).status_code == 404


# -- the scripted spec registry -----------------------------------------------------------------

def test_chunk_min_length_header_raises_the_chunk_size(spec_registry):
    registry = spec_registry(min_chunk=2 * MiB)
    data, desc = make_blob(7 * MiB)
    push(registry.host, uploader(MiB), data, desc)
    assert [r.body_bytes for r in registry.requests_of("PATCH")] == [2 * MiB] * 3 + [MiB]
    assert registry.blobs[(REPO, desc.digest)] == data


def test_patch_answered_201_like_ecr(spec_registry):
    registry = spec_registry(patch_status=201)
    data, desc = make_blob(5 * MiB + 7)
    push(registry.host, uploader(MiB), data, desc)
    assert registry.blobs[(REPO, desc.digest)] == data
    assert {r.status for r in registry.requests_of("PATCH")} == {201}


def test_ghcr_like_chunk_cap_fails_clearly_without_settings(spec_registry):
    registry = spec_registry(max_chunk=MiB)
    data, desc = make_blob(6 * MiB)
    up = uploader(2 * MiB, max_restarts=1, max_failures=2)
    with pytest.raises(UploadError, match=rf"blob {desc.digest} .* to {registry.host}/{REPO} failed"):
        push(registry.host, up, data, desc)
    push(registry.host, uploader(2 * MiB, settings={registry.host: RegistrySettings(max_chunk=MiB)}), data, desc)
    assert registry.blobs[(REPO, desc.digest)] == data


def test_416_on_a_patch_continues_from_the_registry_offset(spec_registry, fault_proxy):
    registry = spec_registry()
    proxy = fault_proxy(registry)
    proxy.respond(416, "PATCH", skip=3)
    data, desc = make_blob(8 * MiB)
    up = uploader(MiB)
    push(proxy.host, up, data, desc)
    assert registry.blobs[(REPO, desc.digest)] == data
    assert sum(r.body_bytes for r in registry.requests_of("PATCH")) == desc.size  # nothing sent twice
    assert up.stats.status_queries == 1 and up.stats.blobs_restarted == 0
    assert len(registry.requests_of("POST")) == 1


def test_429_on_a_patch_waits_as_long_as_retry_after_then_continues(fresh_registry, fault_proxy):
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    data, desc = make_blob(5 * MiB)
    slept: list[float] = []
    up = uploader(MiB, sleep=slept.append)
    proxy.respond(429, "PATCH", "/blobs/uploads/", skip=2, retry_after=7)  # the 3rd chunk is refused
    push(proxy.host, up, data, desc)
    assert_blob(registry.url, desc)
    assert 7 in slept  # the registry's Retry-After, not the 0.01 s backoff
    assert up.stats.blobs_restarted == 0 and up.stats.bytes_sent == desc.size


def test_an_auth_error_from_reading_the_body_is_raised_as_itself(fresh_registry):
    """A request body whose source fails with a 401 (another registry's) is not taken for this
    registry's challenge."""
    registry = fresh_registry()

    class Refusing(io.BytesIO):
        def read(self, n: int = -1) -> bytes:
            raise AuthenticationError("GET https://source.example/v2/: 401 Unauthorized", status=401)

    with RegistryClient(registry.host, retry=FAST) as client:
        location = client.start_upload(REPO).location
        with pytest.raises(AuthenticationError, match="source.example"):
            client.patch_upload(location, REPO, lambda: Refusing(b"x" * 10), 0, 10)
