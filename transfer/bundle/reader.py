"""BundleReader: a bundle (one file, or the parts of a split set that are present) as a store.

Opening reads each part's header, trailer and index (O(1) lookups by digest afterwards). With
``recover=True`` a part whose index is missing or damaged is scanned record by record instead.
Nothing read from the file is trusted before it is checked (see transfer.bundle.format).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import BinaryIO, ClassVar

from transfer.bundle import format as fmt
from transfer.bundle.format import BundlePlan, CatalogEntry, ChunkEntry, IndexDoc
from transfer.bundle.stream import ContentStream, PayloadReader, ScanResult, read_exact, read_record_header, scan_part
from transfer.digest import VerifyingReader, digest_bytes, is_digest
from transfer.errors import BundleError, CorruptBundleError, IntegrityError, NotFoundError
from transfer.models import MAX_MANIFEST_SIZE, Descriptor, parse_manifest
from transfer.reports import BundleImage, BundleListing
from transfer.store import Traits, read_manifest

_PART_RE = re.compile(r"^(.*)\.(\d{3})$")


def find_parts(path: str | os.PathLike[str]) -> tuple[str, bool, dict[int, str]]:
    """(base name, split?, {part number: path}) for a bundle file, a part ``NAME.00N`` or a
    split set's ``NAME``."""
    path = os.fspath(path)
    m = _PART_RE.match(path)
    if m and os.path.isfile(path):
        base = m.group(1)
    elif os.path.isfile(path):
        return path, False, {1: path}
    elif os.path.isfile(path + ".001") or os.path.isdir(os.path.dirname(path) or "."):
        base = path
    else:
        raise BundleError(f"{path}: no such bundle")
    parts = {}
    folder, name = os.path.split(base)
    for entry in os.listdir(folder or "."):
        pm = _PART_RE.match(entry)
        if pm and pm.group(1) == name and 1 <= int(pm.group(2)) <= fmt.MAX_PART_NUMBER:
            parts[int(pm.group(2))] = os.path.join(folder, entry)
    if not parts:
        raise BundleError(f"{path}: no such bundle (neither the file nor {path}.001 exists)")
    return base, True, dict(sorted(parts.items()))


@dataclass
class LoadedPart:
    number: int
    path: str
    size: int
    set_id: bytes
    doc: IndexDoc
    records_end: int  # where the records end: the index offset, or where a scan stopped
    index_problem: str | None = None  # why the index could not be used (then ``scan`` is set)
    scan: ScanResult | None = None


def load_part(path: str, recover: bool) -> LoadedPart:
    what = path
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fmt.decode_file_header(read_exact(fh, fmt.FILE_HEADER_SIZE, what), what)
        try:
            doc, end = read_index(fh, size, what)
            part = LoadedPart(head.part, path, size, head.set_id, doc, end)
        except CorruptBundleError as exc:
            if not recover:
                raise CorruptBundleError(f"{exc}; 'transfer recover {path}' rebuilds it from the records") from None
            scan = scan_part(fh, size, what)
            part = LoadedPart(head.part, path, size, head.set_id, scan.doc, scan.end, str(exc), scan)
    if part.doc.part != head.part or part.doc.set_id != head.set_id.hex():
        raise CorruptBundleError(f"{what}: index does not belong to this file (part or set id differs)")
    return part


def read_index(fh: BinaryIO, size: int, what: str) -> tuple[IndexDoc, int]:
    """Read and check the trailer and the index record it points at."""
    if size < fmt.FILE_HEADER_SIZE + fmt.TRAILER_SIZE:
        raise CorruptBundleError(f"{what}: no trailer at the end (the bundle was not closed)")
    fh.seek(size - fmt.TRAILER_SIZE)
    t = fmt.decode_trailer(fh.read(fmt.TRAILER_SIZE), size, what)
    fh.seek(t.index_offset)
    h = read_record_header(fh, f"{what} index")
    if h is None or h.type != fmt.INDEX or h.stored_length != t.index_length:
        raise CorruptBundleError(f"{what}: trailer does not point at an index record")
    if t.index_offset + h.length + h.stored_length != size - fmt.TRAILER_SIZE:
        raise CorruptBundleError(f"{what}: index record does not end at the trailer")
    data = read_exact(PayloadReader(fh, h.stored_length, h.payload_crc, f"{what} index"), h.stored_length, what)
    if digest_bytes(data) != h.digest or h.digest != "sha256:" + t.index_sha256.hex():
        raise CorruptBundleError(f"{what}: index checksum mismatch")
    doc = fmt.decode_index(data, t.index_offset, what)
    if doc.complete != bool(t.flags & fmt.TRAILER_COMPLETE):
        raise CorruptBundleError(f"{what}: trailer and index disagree on completeness")
    return doc, t.index_offset


@dataclass(frozen=True)
class BundleInfo:
    version: int
    created: str
    tool_version: str
    source_registry: str
    complete: bool
    split: bool
    parts_present: list[int]
    parts_expected: int | None  # known once the last part is present
    why_incomplete: list[str] = field(default_factory=list)


class BundleReader:
    """A bundle as a Source, Catalog and Partial (see transfer.store), plus random access by digest."""

    traits: ClassVar[Traits] = Traits()

    def __init__(self, path: str | os.PathLike[str], *, recover: bool = False) -> None:
        self.path = os.fspath(path)
        self.base, self.split, paths = find_parts(self.path)
        self.parts = [load_part(p, recover) for p in paths.values()]
        if len({p.set_id for p in self.parts}) > 1:
            raise CorruptBundleError(f"{self.path}: the parts present belong to different bundles")
        self._chunks: dict[str, list[ChunkEntry]] = {}
        self._catalog: dict[tuple[str, str, str], CatalogEntry] = {}
        self._expected: dict[str, Descriptor] = {}
        self._paths = {p.number: p.path for p in self.parts}
        for part in self.parts:
            self._merge(part.doc)
        self.info = self._info()

    def _merge(self, doc: IndexDoc) -> None:
        for c in doc.chunks:
            self._chunks.setdefault(c.digest, []).append(c)
        for e in doc.catalog:
            self._catalog[e.key] = e
        for d in doc.expected:
            self._expected[d["digest"]] = Descriptor.model_validate(d)
        for chunks in self._chunks.values():
            chunks.sort(key=lambda c: (c.chunk_offset, c.part))

    def _info(self) -> BundleInfo:
        last = self.parts[-1].doc
        expected = last.parts if last.final else None
        why = [str(p.index_problem) for p in self.parts if p.index_problem]
        if not (last.final and last.complete):
            why.append(
                "the export did not finish, or later parts are missing" if self.split
                else "the export did not finish (no index marked complete)"
            )
        missing = [n for n in range(1, (expected or 0) + 1) if n not in self._paths]
        if missing:
            why.append(f"parts missing: {', '.join(map(str, missing))}")
        return BundleInfo(
            last.version, last.created, last.tool_version, last.source_registry, not why,
            self.split, sorted(self._paths), expected, why,
        )

    @property
    def complete(self) -> bool:
        """True only for a bundle whose export finished and whose parts are all present."""
        return self.info.complete

    @property
    def recovered(self) -> dict[str, object]:
        """Summary of the parts that had to be scanned (index missing or damaged)."""
        scanned = [p for p in self.parts if p.scan]
        return {
            "parts": [p.number for p in scanned],
            "records": sum(p.scan.records for p in scanned if p.scan),
            "dropped_bytes": sum(p.scan.dropped_bytes for p in scanned if p.scan),
            "problems": [p.index_problem for p in scanned] + [p.scan.problem for p in scanned if p.scan and p.scan.problem],
        }

    # ---- catalog ------------------------------------------------------------------------------

    @property
    def entries(self) -> list[CatalogEntry]:
        return [self._catalog[k] for k in sorted(self._catalog)]

    def repositories(self) -> list[str]:
        return sorted({e.repository for e in self._catalog.values()})

    def tags(self, repo: str) -> list[str]:
        return sorted(e.tag for e in self._catalog.values() if e.repository == repo and e.tag)

    def resolve(self, repo: str, ref: str) -> Descriptor:
        if is_digest(ref):
            if ref in self._chunks:
                return self.descriptor(ref)
        elif (e := self._catalog.get((repo, ref, ""))) is not None:
            return Descriptor(mediaType=e.media_type, digest=e.digest, size=e.size)
        raise NotFoundError(f"{self.path}: {repo}:{ref} is not in the bundle")

    @property
    def plan(self) -> BundlePlan | None:
        """The export plan recorded in the parts present (split sets), from the latest part."""
        plans = [p.doc.plan for p in self.parts if p.doc.plan is not None]
        return plans[-1] if plans else None

    @property
    def expected(self) -> list[Descriptor]:
        return [self._expected[d] for d in sorted(self._expected)]

    # ---- content ------------------------------------------------------------------------------

    def descriptor(self, digest: str) -> Descriptor:
        chunks = self._chunks.get(digest)
        if not chunks:
            if digest in self._expected:
                return self._expected[digest]
            raise NotFoundError(f"{self.path}: {digest} is not in the bundle")
        return Descriptor(mediaType=chunks[0].media_type, digest=digest, size=chunks[0].size)

    def digests(self) -> list[str]:
        return sorted(self._chunks)

    def _chain(self, digest: str) -> list[ChunkEntry]:
        """Consecutive records from byte 0 that are present (all of them for a stored blob)."""
        chain: list[ChunkEntry] = []
        pos = 0
        for c in self._chunks.get(digest, []):
            if c.chunk_offset > pos or c.size != self._chunks[digest][0].size:
                break
            if c.chunk_offset == pos and (c.chunk_length or not chain):
                chain.append(c)
                pos += c.chunk_length
        return chain

    def available_bytes(self, digest: str) -> int:
        return sum(c.chunk_length for c in self._chain(digest))

    def has(self, digest: str) -> bool:
        chain = self._chain(digest)
        return bool(chain) and sum(c.chunk_length for c in chain) == chain[0].size

    def covered(self, digest: str) -> list[tuple[int, int]]:
        """The byte ranges ``[start, end)`` of a content that the parts present hold, merged,
        in order (one range ``(0, size)`` for a content stored whole)."""
        ranges: list[tuple[int, int]] = []
        for c in self._runs(digest):
            ranges.append((c[0].chunk_offset, c[-1].chunk_offset + c[-1].chunk_length))
        return ranges

    def _runs(self, digest: str) -> list[list[ChunkEntry]]:
        """The segments present, grouped into runs of consecutive ones."""
        runs: list[list[ChunkEntry]] = []
        chunks = self._chunks.get(digest, [])
        for c in chunks:
            if c.size != chunks[0].size:
                break
            end = runs[-1][-1].chunk_offset + runs[-1][-1].chunk_length if runs else -1
            if c.chunk_offset == end and c.chunk_length:
                runs[-1].append(c)
            elif c.chunk_offset > end:
                runs.append([c])
        return runs

    def part_at(self, digest: str, offset: int) -> int | None:
        """The number of the part present whose segment of ``digest`` holds byte ``offset``."""
        for c in self._chunks.get(digest, []):
            if c.chunk_offset <= offset < c.chunk_offset + c.chunk_length:
                return c.part
        return None

    def open_range(self, digest: str, start: int = 0, *, crc: bool = True) -> ContentStream:
        """The uncompressed bytes from ``start`` to the end of the consecutive segments present
        that hold ``start`` (the end of a range ``covered`` reports); ``crc=False``: the caller
        checks the digest, so the records' payload checksums are not computed as well."""
        for run in self._runs(digest):
            if run[0].chunk_offset <= start <= run[-1].chunk_offset + run[-1].chunk_length:
                return ContentStream([(self._paths[c.part], c) for c in run], start, self.path, crc)
        if not self._chunks.get(digest):
            raise NotFoundError(f"{self.path}: {digest} is not in the bundle")
        have = ", ".join(f"{a}-{b}" for a, b in self.covered(digest)) or "none"
        raise BundleError(f"{self.path}: {digest}: offset {start} is not in the parts present (they hold bytes {have})")

    def fetch(self, repo: str, desc: Descriptor) -> VerifyingReader:
        have = self.descriptor(desc.digest) if desc.digest in self._chunks else None
        if have is None:
            raise NotFoundError(f"{self.path}: {desc.digest} is not in the bundle")
        if have.size != desc.size:
            raise IntegrityError(desc.digest, f"{desc.size} bytes", f"{have.size} bytes in the bundle")
        if not self.has(desc.digest):
            raise BundleError(
                f"{self.path}: {desc.digest}: only {self.available_bytes(desc.digest)} of {have.size} "
                "bytes are in the parts present (insert the next part)"
            )
        # The sha256 of every byte is checked, so the records' CRC-32s need not be computed as well.
        return VerifyingReader(self.open_range(desc.digest, crc=False), desc.digest, desc.size,
                               f"{desc.digest} in {self.path}",
                               reopen=lambda offset: self.open_range(desc.digest, offset, crc=False))

    def image_size(self, digest: str) -> int:
        """Bytes of a root and everything it references that the bundle stores, each counted once."""
        seen: set[str] = set()
        todo = [digest]
        while todo:
            d = todo.pop()
            if d in seen or not self.has(d):
                continue
            seen.add(d)
            desc = self.descriptor(d)
            if desc.is_manifest and len(seen) < 100_000:
                raw = read_manifest(self, "", desc, MAX_MANIFEST_SIZE)
                view = parse_manifest(raw, desc.media_type, f"{self.path}: manifest {d}", CorruptBundleError)
                todo.extend(c.digest for c in view.children())
        return sum(self.descriptor(d).size for d in seen)

    def listing(self) -> BundleListing:
        """The bundle's state and every image it records (what ``transfer ls --json`` prints)."""
        from transfer.bundle.signing import found_signature, inspect_bundle

        images = [BundleImage(**e.to_json(), total_size=self.image_size(e.digest)) for e in self.entries]
        return BundleListing(bundle=self.path, complete=self.info.complete, info=dict(self.info.__dict__), images=images,
                             signature=found_signature(inspect_bundle(self)))

    def read(self, digest: str, limit: int = MAX_MANIFEST_SIZE) -> bytes:
        """The verified bytes of a stored content of at most ``limit`` bytes (a manifest, a config)."""
        return read_manifest(self, "", self.descriptor(digest), limit)

    def close(self) -> None:
        """Nothing stays open between calls; kept for the context manager and symmetry."""

    def __enter__(self) -> "BundleReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
