"""Damaged and hostile bundles: truncation, flipped bits, handcrafted lies."""

from __future__ import annotations

import dataclasses
import io
import random
import shutil
import tracemalloc
import zlib

import pytest
import zstandard
from test_bundle import CREATED, desc_of, image, push, read_all

from transfer.bundle import BundleReader, BundleWriter, iter_records, rewrite_index
from transfer.bundle import format as fmt
from transfer.bundle.format import ChunkEntry, IndexDoc, RecordHeader
from transfer.bundle.writer import append_index
from transfer.cli import main
from transfer.digest import digest_bytes
from transfer.errors import CorruptBundleError, UnsupportedBundleError
from transfer.models import OCI_LAYER


def _build(w: BundleWriter) -> list:
    rng = random.Random(11)
    ms = [image(w, rng, "app", "1", layer_sizes=(40_000,)), image(w, rng, "app", "2", layer_sizes=(5_000, 9_000))]
    push(w, b"plain text layer " * 3000, OCI_LAYER)  # compressed with zstd
    return ms


def _records(path) -> list[tuple[int, int, int, RecordHeader]]:
    """(offset, header end, record end, header) of every record in a single-file bundle."""
    with open(path, "rb") as fh:
        return [(r.offset, r.offset + r.header.length, r.offset + r.header.length + r.header.stored_length, r.header)
                for r in iter_records(fh)]


@pytest.fixture
def bundle(tmp_path):
    path = tmp_path / "b.bundle"
    with BundleWriter(path, created=CREATED) as w:
        _build(w)
    return path


def test_truncation_everywhere_recovers_complete_records_and_continues(tmp_path, bundle):
    records = _records(bundle)
    content = {}
    with BundleReader(bundle) as r:
        for d in r.digests():
            content[d] = read_all(r, r.descriptor(d))
    cuts = sorted({c for off, hend, end, _ in records for c in (off, (off + hend) // 2, (hend + end) // 2, end)})
    assert len(cuts) > 30
    for cut in cuts:
        cut_path = tmp_path / f"cut{cut}.bundle"
        cut_path.write_bytes(bundle.read_bytes()[:cut])
        whole = {h.digest for off, hend, end, h in records if end <= cut and h.type == fmt.CONTENT}
        if cut >= fmt.FILE_HEADER_SIZE:
            with BundleReader(cut_path, recover=True) as r:
                assert set(r.digests()) == whole, cut
                assert not r.complete
                for d in whole:
                    assert read_all(r, r.descriptor(d)) == content[d]
        with BundleWriter(cut_path, created=CREATED) as w:  # append-continue: the same export again
            _build(w)
        with BundleReader(cut_path) as r:
            assert r.complete and r.tags("app") == ["1", "2"]
            assert {d: read_all(r, r.descriptor(d)) for d in r.digests()} == content
            assert r.info.created == CREATED
        if cut > 2 * fmt.FILE_HEADER_SIZE:  # the continued bundle is the uninterrupted one
            assert cut_path.read_bytes() == bundle.read_bytes()


def test_missing_index_needs_recover(tmp_path, bundle, capsys):
    records = _records(bundle)
    index_at = [off for off, _, _, h in records if h.type == fmt.INDEX][0]
    cut = tmp_path / "cut.bundle"
    cut.write_bytes(bundle.read_bytes()[:index_at])
    with pytest.raises(CorruptBundleError, match="transfer recover"):
        BundleReader(cut)
    assert main(["ls", str(cut)]) == 0
    out = capsys.readouterr().out
    assert "INCOMPLETE" in out and "not closed" in out and "app" in out
    assert main(["recover", str(cut)]) == 0
    r = BundleReader(cut)
    assert not r.complete and r.tags("app") == ["1", "2"]
    assert main(["verify", str(cut)]) == 1  # incomplete, loudly
    assert rewrite_index(cut, mark_complete=True)["parts"] == [1]
    assert BundleReader(cut).complete and main(["verify", str(cut)]) == 0


def test_damaged_small_record_ends_the_scan(tmp_path, bundle):
    records = _records(bundle)
    index_at = [off for off, _, _, h in records if h.type == fmt.INDEX][0]
    off, hend, end, _ = [r for r in records if r[3].type == fmt.ROOT][-1]
    cut = tmp_path / "cut.bundle"
    cut.write_bytes(bundle.read_bytes()[:index_at])
    _flip(cut, (hend + end) // 2)
    r = BundleReader(cut, recover=True)
    assert r.tags("app") == ["1"] and "payload checksum mismatch" in r.recovered["problems"][-1]


def _flip(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["stored payload", "zstd payload", "record header"])
def test_flipped_bit_in_a_record_is_reported_with_its_digest(bundle, capsys, where):
    records = [r for r in _records(bundle) if r[3].type == fmt.CONTENT and r[3].size > 1000]
    codec = fmt.ZSTD if where == "zstd payload" else fmt.NONE
    off, hend, end, h = [r for r in records if r[3].codec == codec][0]
    _flip(bundle, off + 20 if where == "record header" else (hend + end) // 2)
    assert main(["verify", str(bundle)]) == 1
    out = capsys.readouterr().out
    assert f"PROBLEM {h.digest}" in out, out


def test_flipped_bit_in_the_index_is_reported(bundle, capsys):
    off, hend, end, _ = [r for r in _records(bundle) if r[3].type == fmt.INDEX][0]
    _flip(bundle, (hend + end) // 2)
    assert main(["verify", str(bundle)]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM index unusable" in out and "index checksum mismatch" in out
    with pytest.raises(CorruptBundleError, match="index checksum mismatch"):
        BundleReader(bundle)
    assert main(["verify", "--repair", str(bundle)]) == 1
    assert BundleReader(bundle).tags("app") == ["1", "2"]


# ---- handcrafted hostile bundles ---------------------------------------------------------------


def craft(path, records: list[tuple[RecordHeader, bytes]], fix=lambda entries: None) -> None:
    """A bundle written by hand, with valid checksums around whatever lies it is given."""
    with open(path, "w+b") as fh:
        fh.write(fmt.encode_file_header(1, bytes(16)))
        entries = []
        for h, payload in records:
            h = RecordHeader(**{**h.__dict__, "payload_crc": zlib.crc32(payload)})
            entries.append(ChunkEntry(h.digest, h.media_type, h.size, fmt.CODEC_NAMES[h.codec], fh.tell(),
                                      h.stored_length, h.chunk_offset, h.chunk_length))
            fh.write(fmt.encode_record_header(h) + payload)
        fix(entries)
        append_index(fh, IndexDoc(1, "00" * 16, True, True, 1, CREATED, "0", "", entries, [], []))


def content_header(digest, size, payload, codec=fmt.NONE, chunk_length=None) -> RecordHeader:
    n = size if chunk_length is None else chunk_length
    return RecordHeader(fmt.CONTENT, codec, digest, OCI_LAYER, size, 0, n, len(payload), 0)


def test_hostile_offset_past_the_end(tmp_path):
    data = b"abc"
    def lie(entries):
        entries[0] = dataclasses.replace(entries[0], offset=10**12)
    craft(tmp_path / "h", [(content_header(digest_bytes(data), 3, data), data)], lie)
    with pytest.raises(CorruptBundleError, match="outside the file"):
        BundleReader(tmp_path / "h")


def test_hostile_terabyte_sizes(tmp_path):
    tb = 5 << 40
    frame = zstandard.ZstdCompressor().compress(b"tiny")
    craft(tmp_path / "z", [(content_header(digest_bytes(b"tiny"), tb, frame, fmt.ZSTD), frame)])
    r = BundleReader(tmp_path / "z")
    with pytest.raises(CorruptBundleError, match="fewer than the declared"):
        read_all(r, r.descriptor(digest_bytes(b"tiny")))
    craft(tmp_path / "s", [(RecordHeader(fmt.CONTENT, fmt.NONE, digest_bytes(b"x"), OCI_LAYER, tb, 0, tb, tb, 0), b"x")])
    with pytest.raises(CorruptBundleError, match="outside the file"):
        BundleReader(tmp_path / "s")
    scanned = BundleReader(tmp_path / "s", recover=True)
    assert scanned.digests() == [] and "payload truncated" in scanned.recovered["problems"][-1]


def test_hostile_zstd_bomb_is_cut_off(tmp_path):
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(64 << 20))
    first = bytes(1000)
    craft(tmp_path / "bomb", [(content_header(digest_bytes(first), 1000, bomb, fmt.ZSTD), bomb)])
    r = BundleReader(tmp_path / "bomb")
    tracemalloc.start()
    try:
        with pytest.raises(CorruptBundleError, match="more bytes than the declared"):
            read_all(r, desc_of(first, OCI_LAYER))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    assert main(["verify", str(tmp_path / "bomb")]) == 1


def test_hostile_digest_with_path_characters(tmp_path):
    bad = "sha256:../../../../etc/passwd"
    craft(tmp_path / "p", [(content_header(bad, 3, b"abc"), b"abc")])
    with pytest.raises(CorruptBundleError, match="malformed digest"):
        BundleReader(tmp_path / "p")
    r = BundleReader(tmp_path / "p", recover=True)
    assert r.digests() == [] and "malformed digest" in r.recovered["problems"][-1]


def test_hostile_versions_and_garbage(tmp_path, capsys):
    (tmp_path / "g").write_bytes(b"PK\x03\x04 not a bundle" * 10)
    with pytest.raises(CorruptBundleError, match="not a transfer bundle"):
        BundleReader(tmp_path / "g")
    head = bytearray(fmt.encode_file_header(1, bytes(16)))
    head[8:10] = b"\x00\x07"
    (tmp_path / "v").write_bytes(bytes(head) + b"\0" * 500)
    assert main(["ls", str(tmp_path / "v")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "version 7 is not supported" in err and str(tmp_path / "v") in err
    with pytest.raises(UnsupportedBundleError):
        BundleWriter(tmp_path / "v")


def test_hostile_trailer_and_index_lengths(tmp_path, bundle):
    data = bytearray(bundle.read_bytes())
    body = bytearray(data[-fmt.TRAILER_SIZE:-fmt.TRAILER_SIZE + fmt.TRAILER.size])
    body[8:16] = (1 << 40).to_bytes(8, "big")  # index length: a terabyte
    trailer = bytes(body) + zlib.crc32(bytes(body)).to_bytes(4, "big") + fmt.END_MAGIC
    hostile = tmp_path / "t.bundle"
    hostile.write_bytes(bytes(data[:-fmt.TRAILER_SIZE]) + trailer)
    with pytest.raises(CorruptBundleError, match="trailer points outside the file"):
        BundleReader(hostile)
    shutil.copy(hostile, tmp_path / "t2.bundle")
    assert BundleReader(tmp_path / "t2.bundle", recover=True).tags("app") == ["1", "2"]
    assert io  # keep the import honest for readers of this file
