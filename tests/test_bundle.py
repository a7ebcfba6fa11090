"""Bundle round trips, store behaviour, determinism, resuming and sequential reading.

Helpers here (realistic layers, images) are imported by the other test_bundle_* modules.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import tarfile

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transfer.bundle import BundleReader, BundleWriter, iter_records
from transfer.bundle import format as fmt
from transfer.cli import main
from transfer.digest import digest_bytes
from transfer.errors import BundleError, IntegrityError, UnsupportedBundleError
from transfer.models import (DOCKER_LAYER_GZIP, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_LAYER_GZIP,
                             OCI_MANIFEST, Descriptor)

CREATED = "2026-01-02T03:04:05Z"


def desc_of(data: bytes, media_type: str = "application/octet-stream") -> Descriptor:
    return Descriptor(media_type=media_type, digest=digest_bytes(data), size=len(data))


def push(w: BundleWriter, data: bytes, media_type: str = "application/octet-stream", repo: str = "app") -> Descriptor:
    d = desc_of(data, media_type)
    w.push(repo, d, lambda: io.BytesIO(data))
    return d


def layer_tar(rng: random.Random, size: int) -> bytes:
    """A tar of half text (compressible) and half random bytes, about ``size`` bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        words = [b"lorem", b"ipsum", b"layer", b"config", b"usr/bin", b"\n"]
        text = b" ".join(rng.choice(words) for _ in range(size // 12))
        for name, body in (("etc/text.conf", text), ("bin/blob", rng.randbytes(size // 2))):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def image(w: BundleWriter, rng: random.Random, repo: str, tag: str | None, arch: str = "amd64",
          layer_sizes: tuple[int, ...] = (20_000, 3_000)) -> Descriptor:
    """Push a gzip-layered image children first and tag it; return the manifest descriptor."""
    layers = [push(w, gzip.compress(layer_tar(rng, n), mtime=0), OCI_LAYER_GZIP, repo) for n in layer_sizes]
    config = push(w, json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers"}}).encode(), OCI_CONFIG, repo)
    body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.model_dump(by_alias=True, exclude_none=True),
            "layers": [d.model_dump(by_alias=True, exclude_none=True) for d in layers]}
    manifest = push(w, json.dumps(body, indent=3).encode(), OCI_MANIFEST, repo)
    if tag:
        w.tag(repo, manifest, tag)
    return manifest


def read_all(r: BundleReader, d: Descriptor) -> bytes:
    with r.fetch("any", d) as s:
        return s.read_all(1 << 31)


# ---- round trips -------------------------------------------------------------------------------

KINDS = ["random", "text", "gzip", "zstd", "tar"]
SIZES = st.one_of(st.just(0), st.integers(1, 5000), st.integers(60_000, 200_000), st.just((1 << 20) + 17))


def content(kind: str, size: int, seed: int) -> tuple[bytes, str]:
    rng = random.Random(seed)
    if kind == "random":
        return rng.randbytes(size), "application/vnd.example.unknown"
    if kind == "text":
        return (b"hello layer %d\n" % seed * (size // 15 + 1))[:size], OCI_LAYER
    if kind == "gzip":
        return gzip.compress(rng.randbytes(size), mtime=0), DOCKER_LAYER_GZIP
    if kind == "zstd":  # no zstd media type: the sniffer must see the magic bytes
        return zstandard.ZstdCompressor().compress(rng.randbytes(size)), "application/octet-stream"
    return layer_tar(rng, size), OCI_LAYER


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    items=st.lists(st.tuples(st.sampled_from(KINDS), SIZES, st.integers(0, 1000)), min_size=1, max_size=6),
    split=st.sampled_from([None, 64 << 10, 300 << 10]),
    level=st.sampled_from([1, 3]),
)
def test_round_trip_random_blob_sets(tmp_path_factory, items, split, level):
    path = tmp_path_factory.mktemp("rt") / "b.bundle"
    blobs = [content(*item) for item in items]
    with BundleWriter(path, split_size=split, level=level, created=CREATED) as w:
        descs = [push(w, data, mt) for data, mt in blobs]
    first_type = {}
    for d in descs:  # content-addressed: the same bytes are stored once, as first pushed
        first_type.setdefault(d.digest, d.media_type)
    with BundleReader(path) as r:
        assert r.complete and r.digests() == sorted(first_type)
        for (data, mt), d in zip(blobs, descs):
            assert r.has(d.digest) and r.descriptor(d.digest) == desc_of(data, first_type[d.digest])
            assert read_all(r, d) == data
            codecs = {c.codec for c in r._chunks[d.digest]}
            compressed = mt == DOCKER_LAYER_GZIP or data[:4] == b"\x28\xb5\x2f\xfd"
            assert codecs == ({"none"} if compressed or not data else {"zstd"})


def test_store_protocol_and_catalog(tmp_path):
    rng = random.Random(1)
    path = tmp_path / "b.bundle"
    with BundleWriter(path, created=CREATED, source_registry="registry.example:5000") as w:
        amd = image(w, rng, "team/app", "1.0")
        arm = image(w, rng, "team/app", None, arch="arm64")
        w.add_root("team/app", arm)
        idx_body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            dict(amd.model_dump(by_alias=True, exclude_none=True), platform={"os": "linux", "architecture": "amd64"}),
            dict(arm.model_dump(by_alias=True, exclude_none=True), platform={"os": "linux", "architecture": "arm64", "variant": "v8"}),
        ]}).encode()
        idx = push(w, idx_body, OCI_INDEX, "other")
        w.tag("other", idx, "multi")
        w.tag("team/app", amd, "latest")
        assert w.exists("x", amd) and w.stored(amd.digest)
        before = w.bytes_written
        push(w, idx_body, OCI_INDEX)  # twice: a no-op
        assert w.bytes_written == before
        gone = desc_of(b"at destination", OCI_LAYER_GZIP)
        w.expect(gone)
        assert w.exists("x", gone) and not w.stored(gone.digest)
        with pytest.raises(BundleError, match="cannot be stored"):
            push(w, b"odd", "application/" + "x" * 300)
        with pytest.raises(BundleError, match="not pushed"):
            w.tag("team/app", desc_of(b"{}", OCI_MANIFEST), "nope")
    with BundleReader(path) as r:
        assert r.repositories() == ["other", "team/app"]
        assert r.tags("team/app") == ["1.0", "latest"]
        assert r.resolve("team/app", "1.0") == amd
        assert r.resolve("other", idx.digest).digest == idx.digest
        by_tag = {(e.repository, e.tag): e for e in r.entries}
        assert by_tag[("other", "multi")].platforms == ["linux/amd64", "linux/arm64/v8"]
        assert by_tag[("team/app", "1.0")].platforms == ["linux/amd64"]
        assert by_tag[("team/app", None)].digest == arm.digest
        assert r.expected == [gone] and not r.has(gone.digest)
        assert r.info.source_registry == "registry.example:5000" and r.info.created == CREATED
        assert read_all(r, idx) == idx_body


def test_push_with_wrong_digest_leaves_nothing(tmp_path):
    path = tmp_path / "b.bundle"
    w = BundleWriter(path, created=CREATED)
    push(w, b"first")
    size = os.path.getsize(path)
    good = b"x" * 100_000
    lie = Descriptor(media_type=OCI_LAYER, digest=digest_bytes(b"other"), size=len(good))
    with pytest.raises(IntegrityError):
        w.push("app", lie, lambda: io.BytesIO(good))
    short = Descriptor(media_type=OCI_LAYER, digest=digest_bytes(good), size=len(good) + 1)
    with pytest.raises(IntegrityError):
        w.push("app", short, lambda: io.BytesIO(good))
    assert os.path.getsize(path) == size and not w.stored(lie.digest) and not w.stored(short.digest)
    w.close()
    with BundleReader(path) as r:
        assert r.digests() == [digest_bytes(b"first")]


def _write_fixed(path, split=None, created=CREATED, threads=0):
    rng = random.Random(7)
    with BundleWriter(path, split_size=split, created=created, threads=threads) as w:
        image(w, rng, "a", "1", layer_sizes=(150_000, 10_000))
        image(w, rng, "b", "2")
        w.expect(desc_of(b"base layer", OCI_LAYER_GZIP))


@pytest.mark.parametrize("split,threads", [(None, 0), (96 << 10, 0), (None, 2)])
def test_deterministic(tmp_path, split, threads):
    _write_fixed(tmp_path / "one", split, threads=threads)
    _write_fixed(tmp_path / "two", split, threads=threads)
    _write_fixed(tmp_path / "three", split, created="2027-01-01T00:00:00Z")
    names = sorted(os.listdir(tmp_path))
    ones = [n for n in names if n.startswith("one")]
    assert ones and len(ones) == len([n for n in names if n.startswith("two")])
    for n in ones:
        assert (tmp_path / n).read_bytes() == (tmp_path / n.replace("one", "two")).read_bytes()
    assert (tmp_path / ones[0]).read_bytes() != (tmp_path / ones[0].replace("one", "three")).read_bytes()


def test_exception_leaves_incomplete_bundle(tmp_path, capsys):
    path = tmp_path / "b.bundle"
    with pytest.raises(RuntimeError):
        with BundleWriter(path, created=CREATED) as w:
            image(w, random.Random(2), "app", "1")
            raise RuntimeError("network down")
    r = BundleReader(path)
    assert not r.complete and r.tags("app") == ["1"]
    assert main(["ls", str(path)]) == 0
    assert "INCOMPLETE" in capsys.readouterr().out
    assert main(["verify", str(path)]) == 1
    assert "INCOMPLETE" in capsys.readouterr().out


def test_continue_after_crash(tmp_path):
    path = tmp_path / "b.bundle"
    w = BundleWriter(path, created=CREATED)
    rng = random.Random(3)
    first = image(w, rng, "app", "1")
    w._part.fh.flush()  # the process dies here: no index, no close
    os.close(w._file_lock._fd)  # and the kernel drops its lock (the lock file stays)
    w2 = BundleWriter(path)
    assert w2.stored(first.digest) and w2.created == CREATED
    second = image(w2, rng, "app", "2")
    w2.close()
    with BundleReader(path) as r:
        assert r.complete and r.tags("app") == ["1", "2"] and r.has(second.digest)


def test_unknown_version_refused(tmp_path):
    path = tmp_path / "b.bundle"
    _write_fixed(path)
    data = bytearray(path.read_bytes())
    data[8:10] = (3).to_bytes(2, "big")
    path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedBundleError, match="version 3"):
        BundleReader(path)
    with pytest.raises(UnsupportedBundleError):
        BundleReader(path, recover=True)


class _Pipe:
    """A non-seekable stream that returns short reads."""

    def __init__(self, data: bytes) -> None:
        self._b = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._b.read(min(n, 4099) if n and n > 0 else 4099)


@pytest.mark.parametrize("split", [None, 80 << 10])
def test_iter_records_from_a_pipe(tmp_path, split):
    _write_fixed(tmp_path / "b", split)
    files = sorted(p for p in os.listdir(tmp_path))
    stream = _Pipe(b"".join((tmp_path / f).read_bytes() for f in files))
    got: dict[str, bytes] = {}
    types, roots = [], set()
    for rec in iter_records(stream):
        types.append(rec.header.type)
        if rec.header.type == fmt.ROOT:
            root = json.loads(rec.read_small())
            roots.add((root["repository"], root["tag"], root["digest"]))
        if rec.header.type == fmt.CONTENT:
            reader = rec.open()
            data = b"".join(iter(lambda: reader.read(1 << 20), b""))
            assert len(data) == rec.header.chunk_length
            got[rec.header.digest] = got.get(rec.header.digest, b"") + data
    with BundleReader(tmp_path / files[0]) as r:
        assert set(got) == set(r.digests())
        assert roots == {(e.repository, e.tag, e.digest) for e in r.entries} and len(roots) == 2
        for dg, data in got.items():
            assert digest_bytes(data) == dg
    assert types.count(fmt.INDEX) == len(files) and types[0] == fmt.META


@pytest.mark.parametrize("media_type", [OCI_LAYER_GZIP, OCI_LAYER])  # stored, and zstd for a plain tar
def test_fetched_blob_rewinds_within_the_bundle(tmp_path, media_type):
    """fetch() reopens the record at an offset to go back (an upload resending bytes)."""
    data = (b"layer bytes %d " * 200_000) % tuple(range(200_000)) if media_type == OCI_LAYER else os.urandom(3 << 20)
    path = tmp_path / "b.bundle"
    with BundleWriter(path, created=CREATED) as w:
        d = push(w, data, media_type)
    with BundleReader(path) as r:
        reader = r.fetch("app", d)
        first = reader.read(1 << 20) + reader.read(1 << 20)
        assert reader.rewind(1_500_000) and reader.position == 1_500_000
        rest = b"".join(iter(lambda: reader.read(1 << 20), b""))  # EOF checks the digest
        reader.close()
    assert first == data[: len(first)] and rest == data[1_500_000:]
