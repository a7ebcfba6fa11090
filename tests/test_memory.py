"""What a run keeps per image (issue 11): structure checks, no network.

A run holds every plan, every record of the bundle's index and every root to its end, so what each
costs is checked here by shape (no ``__dict__``, one shared instance, no manifest bytes kept), and
the index and the plan are written without their whole JSON in memory (tracemalloc's peak while
writing, far below what the JSON of the entries alone takes). Nothing here is timed or reads RSS.
"""

from __future__ import annotations

import io
import json
import tracemalloc

import pytest

from transfer.bundle import BundleReader, BundleWriter
from transfer.bundle import format as fmt
from transfer.bundle.format import BundlePlan, CatalogEntry, ChunkEntry, IndexDoc
from transfer.bundle.writer import append_index, index_bytes
from transfer.digest import digest_bytes
from transfer.errors import CorruptBundleError
from transfer.import_ import RepositoryMapping, plan_imports
from transfer.models import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Descriptor
from transfer.store import ImagePlan
from transfer.untrusted import _STRING, BLANK_AT_ONCE, blank_strings, check_shape

CREATED = "2026-01-02T03:04:05Z"
ENTRIES = 20_000


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def many_entries() -> tuple[list[ChunkEntry], list[CatalogEntry]]:
    chunks = [ChunkEntry(digest(n), OCI_LAYER_GZIP, 4096 + n, "none", 64 + 5000 * n, 4096 + n, 0, 4096 + n)
              for n in range(ENTRIES)]
    catalog = [CatalogEntry(f"scale/r{n // 2:05d}", f"t{n % 2}", digest(n), OCI_MANIFEST, ["linux/amd64"], 500)
               for n in range(0, ENTRIES, 3)]
    return chunks, catalog


def peak_of(fn) -> tuple[object, int]:
    """``fn()`` and the most memory it held at once beyond what was there before (tracemalloc)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_per_record_and_per_image_structures_have_no_dict():
    chunks, catalog = many_entries()
    plan = ImagePlan("a", "a", Descriptor(mediaType=OCI_MANIFEST, digest=digest(1), size=1), ["t"])
    for obj in (chunks[0], catalog[0], plan):
        assert not hasattr(obj, "__dict__"), type(obj)


def test_the_index_is_written_in_pieces_with_the_same_bytes(tmp_path):
    chunks, catalog = many_entries()
    doc = IndexDoc(1, "00" * 16, True, True, 1, CREATED, "0", "reg", chunks, catalog,
                   [{"digest": digest(7), "size": 1, "mediaType": OCI_CONFIG}])
    whole = fmt.dumps({"format": "transfer-bundle", "version": doc.version, "part": 1, "set_id": doc.set_id,
                       "complete": True, "final": True, "parts": 1, "created": CREATED, "tool_version": "0",
                       "source_registry": "reg",
                       "records": [c.to_json() for c in sorted(chunks, key=lambda c: (c.digest, c.chunk_offset))],
                       "catalog": [c.to_json() for c in sorted(catalog, key=lambda c: c.key)],
                       "expected": doc.expected})
    assert fmt.encode_index(doc) == whole
    with open(tmp_path / "index", "wb") as fh:
        fh.write(b"x" * fmt.FILE_HEADER_SIZE)
        _, peak = peak_of(lambda: append_index(fh, doc))
    assert peak < len(whole) // 2, (peak, len(whole))  # encoded whole: 3.3x (the JSON, copies, a dict per record)
    flags = fmt.TRAILER_COMPLETE | fmt.TRAILER_FINAL
    assert (tmp_path / "index").read_bytes()[fmt.FILE_HEADER_SIZE:] == index_bytes(whole, fmt.FILE_HEADER_SIZE, flags)


def test_the_plan_is_written_in_pieces_with_the_same_bytes():
    layer = Descriptor(mediaType=OCI_LAYER_GZIP, digest=digest(0), size=2 << 20)
    images = tuple(ImagePlan(f"r{n // 2}", f"r{n // 2}", root, [f"t{n % 2}"], [root],
                             [Descriptor(mediaType=OCI_CONFIG, digest=digest(3 * n + 2), size=300), layer])
                   for n in range(ENTRIES // 4)
                   for root in [Descriptor(mediaType=OCI_MANIFEST, digest=digest(3 * n + 1), size=700)])
    plan = BundlePlan(images)
    whole = fmt.dumps(plan.to_json())
    assert b"".join(plan.pieces()) == whole
    size, peak = peak_of(lambda: sum(map(len, plan.pieces())))
    assert size == len(whole) and peak < len(whole), (peak, len(whole))  # encoded whole: 6.5x


def test_import_plans_share_blob_descriptors_and_keep_no_manifest_bytes(tmp_path):
    path = tmp_path / "b.bundle"
    with BundleWriter(path, created=CREATED) as w:
        base = push(w, b"base layer" * 100, OCI_LAYER_GZIP)
        for n in range(3):
            config = push(w, json.dumps({"architecture": "amd64", "os": "linux", "n": n}).encode(), OCI_CONFIG)
            body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": config.model_dump(by_alias=True, exclude_none=True),
                    "layers": [base.model_dump(by_alias=True, exclude_none=True)]}
            w.tag(f"app{n}", push(w, json.dumps(body).encode(), OCI_MANIFEST), "1")
    with BundleReader(path) as reader:
        plans = plan_imports(reader, reader.entries, RepositoryMapping())
    assert len(plans) == 3 and all(plan.raw == {} for plan in plans)
    layers = [blob for plan in plans for blob in plan.blobs if blob.digest == base.digest]
    assert len(layers) == 3 and all(layer is layers[0] for layer in layers)


def push(w: BundleWriter, data: bytes, media_type: str) -> Descriptor:
    desc = Descriptor(mediaType=media_type, digest=digest_bytes(data), size=len(data))
    w.push("app", desc, lambda: io.BytesIO(data))
    return desc


def test_a_large_index_is_checked_without_a_piece_per_string():
    chunks, catalog = many_entries()
    data = fmt.encode_index(IndexDoc(1, "00" * 16, True, True, 1, CREATED, "0", "reg", chunks, catalog, []))
    assert len(data) > BLANK_AT_ONCE
    bare, peak = peak_of(lambda: blank_strings(data))
    assert bare == _STRING.sub(b'""', data)  # what re.sub gives, at about 9x the input here
    assert peak < len(data), (peak, len(data))
    check_shape(data, "index", CorruptBundleError)
    for bad in (b'{"a":[' * 70 + b"]" * 70 + b"}", b'{"n":' + b"1" * 20 + b"}"):
        with pytest.raises(CorruptBundleError):
            check_shape(bad + b" " * BLANK_AT_ONCE, "index", CorruptBundleError)
