"""Split bundles: parts that verify alone, blobs spanning parts, missing later parts, resuming."""

from __future__ import annotations

import io
import os
import random

import pytest
from test_bundle import CREATED, desc_of, image, push, read_all

from transfer.bundle import BundleReader, BundleWriter
from transfer.cli import main
from transfer.errors import BundleError, IntegrityError
from transfer.models import OCI_LAYER, OCI_LAYER_GZIP, Descriptor

SPLIT = 128 << 10


def _parts(tmp_path, name="set"):
    return sorted(p for p in os.listdir(tmp_path) if p.startswith(name + ".") and p[len(name) + 1:].isdigit())


@pytest.fixture
def split_set(tmp_path):
    rng = random.Random(5)
    big_stored = rng.randbytes(700_000)  # random bytes: stored, spans ~6 parts
    big_text = rng.randbytes(300_000).hex().encode()  # hex: zstd halves it; still spans parts
    with BundleWriter(tmp_path / "set", split_size=SPLIT, created=CREATED) as w:
        m = image(w, rng, "app", "1", layer_sizes=(30_000,))
        push(w, big_stored, OCI_LAYER_GZIP)
        push(w, big_text, OCI_LAYER)
        small = push(w, b"last small blob", OCI_LAYER)
    return tmp_path, {"big_stored": big_stored, "big_text": big_text, "manifest": m, "small": small}


def test_every_part_fits_and_verifies_alone(split_set, capsys):
    tmp_path, _ = split_set
    parts = _parts(tmp_path)
    assert len(parts) >= 6
    for name in parts:
        assert os.path.getsize(tmp_path / name) <= SPLIT
        assert main(["verify", str(tmp_path / name)]) == 0, capsys.readouterr().out
    assert main(["verify", str(tmp_path / "set")]) == 0
    assert "OK" in capsys.readouterr().out
    for name in parts:  # a part alone in a folder (one DVD in the drive) verifies too
        alone = tmp_path / "alone" / name
        alone.parent.mkdir(exist_ok=True)
        os.replace(tmp_path / name, alone)
        assert main(["verify", str(alone)]) == 0, capsys.readouterr().out
        os.replace(alone, tmp_path / name)


def test_spanning_blobs_read_back_and_range(split_set):
    tmp_path, data = split_set
    with BundleReader(tmp_path / "set.003") as r:  # any part finds its siblings
        assert r.complete and r.info.parts_expected == len(_parts(tmp_path))
        for key in ("big_stored", "big_text"):
            blob = data[key]
            d = r.descriptor(desc_of(blob).digest)
            assert len(r._chunks[d.digest]) > 1
            assert read_all(r, d) == blob
            s = r.open_range(d.digest, 333_333)
            assert b"".join(iter(lambda: s.read(50_000), b"")) == blob[333_333:]


def test_last_parts_missing(split_set, capsys):
    tmp_path, data = split_set
    parts = _parts(tmp_path)
    for name in parts[3:]:
        os.remove(tmp_path / name)
    with BundleReader(tmp_path / "set") as r:
        assert not r.complete and r.info.parts_present == [1, 2, 3] and r.info.parts_expected is None
        assert r.tags("app") == ["1"] and r.has(data["manifest"].digest)
        assert read_all(r, r.resolve("app", "1")) and not r.has(data["small"].digest)
        blob = data["big_stored"]
        digest = desc_of(blob).digest
        avail = r.available_bytes(digest)
        assert 0 < avail < len(blob) and not r.has(digest)
        s = r.open_range(digest, 1000)
        assert b"".join(iter(lambda: s.read(1 << 20), b"")) == blob[1000:avail]
        with pytest.raises(BundleError, match="insert the next part"):
            r.fetch("app", r.descriptor(digest))
    assert main(["verify", str(tmp_path / "set")]) == 0
    assert "last part is not here" in capsys.readouterr().out
    assert main(["ls", str(tmp_path / "set")]) == 0
    assert "INCOMPLETE" in capsys.readouterr().out


def test_continue_split_set_mid_blob(tmp_path):
    rng = random.Random(9)
    blob = rng.randbytes(600_000)
    w = BundleWriter(tmp_path / "set", split_size=SPLIT, created=CREATED)
    push(w, b"first", OCI_LAYER)
    d = desc_of(blob, OCI_LAYER_GZIP)

    class Dies(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > 400_000:
                w._part.fh.flush()
                raise KeyboardInterrupt  # the process is killed mid-blob
            return super().read(n)

    with pytest.raises(KeyboardInterrupt):
        w.push("app", d, lambda: Dies(blob))
    assert not w.stored(d.digest)
    # the rollback removed what the failed push wrote; a crash (no rollback) leaves a prefix instead:
    w.push("app", d, lambda: io.BytesIO(blob))
    last = _parts(tmp_path)[-1]
    with open(tmp_path / last, "r+b") as fh:
        fh.truncate(os.path.getsize(tmp_path / last) // 2)
    os.close(w._file_lock._fd)  # the process died: the kernel dropped its lock
    w2 = BundleWriter(tmp_path / "set", split_size=SPLIT)
    assert not w2.stored(d.digest) and w2._available(d.digest) > 0
    w2.push("app", d, lambda: io.BytesIO(blob))
    w2.close()
    with BundleReader(tmp_path / "set") as r:
        assert r.complete and read_all(r, d) == blob


def test_failed_spanning_push_removes_its_parts(tmp_path):
    w = BundleWriter(tmp_path / "set", split_size=SPLIT, created=CREATED)
    push(w, b"first", OCI_LAYER)
    before = _parts(tmp_path)
    blob = random.Random(1).randbytes(500_000)
    lie = Descriptor(media_type=OCI_LAYER_GZIP, digest=desc_of(b"other").digest, size=len(blob))
    with pytest.raises(IntegrityError):
        w.push("app", lie, lambda: io.BytesIO(blob))
    assert _parts(tmp_path) == before
    push(w, b"second", OCI_LAYER)
    w.close()
    with BundleReader(tmp_path / "set") as r:
        assert r.complete and len(r.digests()) == 2 and r.available_bytes(lie.digest) == 0


def test_split_size_too_small(tmp_path):
    with pytest.raises(BundleError, match="too small"):
        BundleWriter(tmp_path / "x", split_size=1000)
