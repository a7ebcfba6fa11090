"""An export continues a blob it had partly stored (issue 12, item 9): a large content is written
as records of at most ``checkpoint`` bytes, each complete on its own (the format's segments), so a
kill keeps all but the record in flight; the next run hashes the stored prefix from the bundle and
asks the source for the rest only (a registry: one Range request)."""

from __future__ import annotations

import io
import os
import random
import signal
import time

import pytest

from tests.bed.images import Layout
from tests.cli_helpers import run_cli, spawn_cli
from transfer.bundle import BundleReader, BundleWriter
from transfer.bundle.verify import verify
from transfer.digest import VerifyingReader, digest_bytes
from transfer.errors import IntegrityError
from transfer.models import OCI_LAYER, OCI_LAYER_GZIP, Descriptor

MiB = 1 << 20


class Source:
    """A blob source that can start at an offset (as a registry does with Range), counting what
    it serves; ``die_at``: raise there, as a killed process stops."""

    def __init__(self, data: bytes, die_at: int | None = None, digest: str | None = None) -> None:
        self.data, self.die_at, self.starts, self.served = data, die_at, [], 0
        self.digest = digest or digest_bytes(data)

    def open(self):
        return VerifyingReader(self._at(0), self.digest, len(self.data), reopen=self._at)

    def _at(self, offset: int):
        self.starts.append(offset)
        return _Counting(self, offset)


class _Counting(io.RawIOBase):
    def __init__(self, source: Source, offset: int) -> None:
        self.source, self.pos = source, offset

    def read(self, n: int = -1) -> bytes:
        s = self.source
        if s.die_at is not None and self.pos >= s.die_at:
            raise KeyboardInterrupt  # the process is killed here
        data = s.data[self.pos:self.pos + (n if n > 0 else MiB)]
        self.pos += len(data)
        s.served += len(data)
        return data


def killed(w: BundleWriter) -> None:
    """What a kill leaves: the bytes written so far, no index, the lock dropped by the kernel."""
    w._part.fh.flush()
    os.close(w._file_lock._fd)


@pytest.mark.parametrize("media_type", [OCI_LAYER_GZIP, OCI_LAYER])  # stored as is / zstd frames
def test_a_killed_push_continues_from_the_records_stored(tmp_path, media_type):
    data = random.Random(7).randbytes(5 * MiB + 12345)
    desc = Descriptor(media_type=media_type, digest=digest_bytes(data), size=len(data))
    w = BundleWriter(tmp_path / "b.bundle", checkpoint=MiB)
    dying = Source(data, die_at=3 * MiB + 500_000)
    with pytest.raises(KeyboardInterrupt):
        w.push("app", desc, dying.open)
    killed(w)
    w2 = BundleWriter(tmp_path / "b.bundle", checkpoint=MiB)
    assert w2._available(desc.digest) == 3 * MiB and not w2.stored(desc.digest)
    again = Source(data)
    w2.push("app", desc, again.open)
    w2.close()
    assert again.starts == [0, 3 * MiB]  # opened, then asked from where the stored records end
    assert again.served <= len(data) - 3 * MiB + MiB  # at most one read-ahead before the skip
    with BundleReader(tmp_path / "b.bundle") as r:
        assert r.complete and r.fetch("app", desc).read_all(len(data)) == data
    assert verify(tmp_path / "b.bundle").ok


def test_a_continued_prefix_that_the_rest_proves_wrong_is_dropped(tmp_path):
    data = random.Random(8).randbytes(3 * MiB)
    desc = Descriptor(media_type=OCI_LAYER_GZIP, digest=digest_bytes(data), size=len(data))
    w = BundleWriter(tmp_path / "b.bundle", checkpoint=MiB)
    wrong = bytearray(data)
    wrong[10] ^= 0xFF  # the source sent a bad byte early; the kill came before the digest check
    bad = Source(bytes(wrong), die_at=2 * MiB + 10, digest=desc.digest)
    with pytest.raises(KeyboardInterrupt):
        w.push("app", desc, bad.open)
    killed(w)
    w2 = BundleWriter(tmp_path / "b.bundle", checkpoint=MiB)
    assert w2._available(desc.digest) == 2 * MiB
    with pytest.raises(IntegrityError, match="continued after the bytes an interrupted run stored"):
        w2.push("app", desc, Source(data).open)
    assert w2._available(desc.digest) == 0  # forgotten: the next push starts over
    w2.push("app", desc, Source(data).open)
    w2.close()
    assert verify(tmp_path / "b.bundle").ok


def test_kill_9_inside_a_blob_then_the_rerun_fetches_only_the_rest(fresh_registry, fault_proxy, skopeo, tmp_path):
    src = fresh_registry()
    layout = Layout(tmp_path / "layout")
    big = layout.image("big", [40 * MiB], tag="v1")
    layout.save()
    skopeo.seed(src, layout, big, "big/app", "v1")
    layer = big.layers[0]
    proxy = fault_proxy(src)
    proxy.stall(120, "GET", f"/blobs/{layer.digest}", after=36 * MiB)
    out = tmp_path / "big.bundle"
    proc = spawn_cli("export", f"{proxy.host}/big/app:v1", "-o", out, "--jobs", "1", "-q")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and out.stat().st_size > 35 * MiB):
        time.sleep(0.05)
    assert out.stat().st_size > 35 * MiB, proc.stderr.read1().decode() if proc.poll() is not None else "slow"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proxy.clear()
    proc = spawn_cli("export", f"{proxy.host}/big/app:v1", "-o", out, "--jobs", "1", "-q")
    assert proc.wait(120) == 0, proc.stderr.read().decode()
    gets = proxy.stats("GET", f"/blobs/{layer.digest}")
    assert gets.statuses == [206]  # a Range request from where the stored records end
    assert gets.response_bytes == layer.size - 32 * MiB  # two records of 16 MiB were kept
    with BundleReader(out) as r:
        assert r.complete and big.blob_digests() <= set(r.digests())
    assert verify(out).ok


class _FailingFile:
    """A bundle part whose writes fail (a full disk) once ``budget`` more bytes were written."""

    def __init__(self, fh, budget: int) -> None:
        self._fh, self.budget = fh, budget

    def write(self, data) -> int:
        self.budget -= len(data)
        if self.budget < 0:
            raise OSError(28, "No space left on device")
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)


def test_a_write_failing_inside_a_blob_keeps_the_records_written_before(tmp_path):
    """One writer thread serves every record of a content and writes each header once the
    record's payload is out, while the reader goes on with the next record: a failed write drops
    the records whose header was not written, keeps the others, and the blob continues from them."""
    data = random.Random(9).randbytes(5 * MiB + 777)
    desc = Descriptor(media_type=OCI_LAYER_GZIP, digest=digest_bytes(data), size=len(data))
    w = BundleWriter(tmp_path / "b.bundle", checkpoint=MiB)
    real = w._part.fh
    w._part.fh = _FailingFile(real, 3 * MiB + 500_000)
    with pytest.raises(Exception, match="No space left"):
        w.push("app", desc, Source(data).open)
    w._part.fh = real
    assert w._available(desc.digest) == 3 * MiB and not w.stored(desc.digest)
    again = Source(data)
    w.push("app", desc, again.open)
    w.close()
    assert again.starts == [0, 3 * MiB]
    with BundleReader(tmp_path / "b.bundle") as r:
        assert r.complete and r.fetch("app", desc).read_all(len(data)) == data
    assert verify(tmp_path / "b.bundle").ok


class _Pipe(io.RawIOBase):
    """A write-only, unseekable stream (what a pipe is to the writer)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.data += b
        return len(b)


@pytest.mark.parametrize("media_type", [OCI_LAYER_GZIP, OCI_LAYER])  # stored as is / zstd frames
def test_a_stream_gets_the_same_bytes_as_a_file_for_a_blob_of_many_records(tmp_path, media_type):
    """To a stream each record's payload is held until its header is known: the same bytes as a
    file whose headers are written over zeros, record after record of the same content."""
    rng = random.Random(10)
    big = rng.randbytes(3 * MiB) + bytes(2 * MiB) + rng.randbytes(MiB + 99)  # incompressible, then not
    small = rng.randbytes(1000)
    blobs = [Descriptor(media_type=media_type, digest=digest_bytes(d), size=len(d)) for d in (big, small)]
    created = "2026-01-02T03:04:05Z"

    def write(out) -> None:
        w = BundleWriter(out, checkpoint=MiB, created=created)
        for desc, data in zip(blobs, (big, small)):
            w.push("app", desc, Source(data).open)
        w.close()

    write(tmp_path / "f.bundle")
    pipe = _Pipe()
    write(pipe)
    assert bytes(pipe.data) == (tmp_path / "f.bundle").read_bytes()
    with BundleReader(tmp_path / "f.bundle") as r:
        assert len([c for c in r.parts[0].doc.chunks if c.digest == blobs[0].digest]) == 7
        assert r.fetch("app", blobs[0]).read_all(len(big)) == big
