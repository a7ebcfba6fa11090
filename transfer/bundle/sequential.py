"""A bundle read once, front to back, from a stream (a pipe, stdin, a FIFO): a Source whose content
passes by.

A version 2 bundle opens with its plan and its manifests (docs/bundle-format.md, "Streams"), so the
reader knows every image, and holds every manifest, before the first blob arrives. A blob can be
fetched while it is at the head of the stream; fetching a later one first drains the blobs before
it (their target had them). Memory is the manifests plus one record being read.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from typing import BinaryIO, ClassVar, Iterator, Union

from transfer.bundle import format as fmt
from transfer.bundle.format import BundlePlan, IndexDoc
from transfer.bundle.stream import ChunkReader, Record, apply_small_record, iter_records
from transfer.digest import READ_SIZE, Readable, VerifyingReader
from transfer.errors import BundleError, CorruptBundleError, NotFoundError, SignatureError
from transfer.models import MAX_MANIFEST_SIZE, Descriptor, is_manifest_type
from transfer.reports import BundleImage, BundleListing, SignatureStatus
from transfer.store import Traits


# Where a bundle is read from or written to: a path; "-" for the standard stream (a file named so
# is "./-"); or an open binary stream (a pipe, a socket's file). A path that is not a regular file
# (a FIFO, /dev/stdin, a shell's <(...)) is read as a stream as well.
BundleIO = Union[str, BinaryIO]


def is_stream_path(path: str) -> bool:
    """``-``, or a path that is not a regular file (a FIFO, /dev/stdin, a shell's <(...))."""
    if path == "-":
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def stream_input(bundle: BundleIO) -> tuple[BinaryIO, str] | None:
    """(stream, name) when ``bundle`` is read front to back; None for a bundle file or split set."""
    if not isinstance(bundle, str):
        return bundle, str(getattr(bundle, "name", "<stream>"))
    if not is_stream_path(bundle):
        return None
    return (sys.stdin.buffer, "-") if bundle == "-" else (open(bundle, "rb"), bundle)


class BundleStream:
    """A version 2 bundle read from ``stream`` (see the module doc). ``plan``, ``doc`` (meta,
    catalog and expected so far) and, once the stream ended, ``index`` (its last index)."""

    traits: ClassVar[Traits] = Traits(may_stall=True)  # the writer at the other end may pause: chunks are spooled

    def __init__(self, stream: Readable, name: str = "-") -> None:
        self.path = name
        self.doc = IndexDoc(1, "", False, False, None, "", "", "", [], [], [])
        self.index: IndexDoc | None = None
        self.signature: bytes | None = None  # the payload of the last SIGNATURE record read (not checked here)
        self.records = self.bytes = 0
        self._records: Iterator[Record] = iter_records(stream, name)
        self._head: Record | None = None
        self._manifests: dict[str, bytes] = {}
        self._passed: set[str] = set()
        self._advance()
        self._order: dict[str, int] = {}
        self._types: dict[str, str] = {}

    def importable(self) -> BundlePlan:
        """The plan, checked to come with every manifest before the blobs (what importing from
        a stream needs); BundleError naming what is in the way otherwise."""
        if self.doc.plan is None:
            raise BundleError(f"{self.path}: this bundle has no plan at its start (format version 1, written by an "
                              "older transfer): it cannot be imported from a stream; save it to a file and import that")
        late = [d.digest for i in self.doc.plan.images for d in i.manifests if d.digest not in self._manifests]
        if late and self._head is not None:
            raise BundleError(f"{self.path}: manifest {late[0]} does not come before the blobs (a split set, or an "
                              "export continued from an older one): import it from its file(s)")
        self._order = {d.digest: n for n, d in enumerate(_unique_blobs(self.doc.plan))}
        self._types = {d.digest: d.media_type for i in self.doc.plan.images for d in (*i.manifests, *i.blobs)}
        return self.doc.plan

    @property
    def plan(self) -> BundlePlan:
        assert self.doc.plan is not None
        return self.doc.plan

    @property
    def ended(self) -> bool:
        return self._head is None

    # ---- reading the stream ---------------------------------------------------------------------

    def _next(self) -> Record | None:
        try:
            rec = next(self._records)
        except StopIteration:
            return None
        self.records += 1
        self.bytes += rec.header.length + rec.header.stored_length
        return rec

    def _advance(self) -> None:
        """Take in small records and manifests until a blob is at the head, or the stream ends."""
        while (rec := self._next()) is not None:
            h = rec.header
            if h.type == fmt.INDEX:
                self.index = fmt.decode_index(rec.read_small(), rec.offset, self.path)
            elif h.type != fmt.CONTENT:
                data = rec.read_small()
                apply_small_record(self.doc, h, data, f"{self.path} offset {rec.offset}")
                if h.type == fmt.SIGNATURE:
                    self.signature = data
            elif _is_manifest(h.media_type, h.size) and h.whole:
                self._keep_manifest(rec)
            else:
                self._head = rec
                return
        self._head = None
        if self.index is None:  # (an index not marked complete: the export stopped; the importer says so)
            raise CorruptBundleError(f"{self.path}: the stream ended before the bundle's end (cut short)")

    def _keep_manifest(self, rec: Record) -> None:
        h = rec.header
        with VerifyingReader(rec.open(), h.digest, h.size, f"{self.path}: manifest {h.digest}") as reader:
            self._manifests[h.digest] = reader.read_all(MAX_MANIFEST_SIZE)

    def _skip_head(self) -> None:
        assert self._head is not None
        self._passed.add(self._head.header.digest)
        self._advance()

    def finish(self) -> IndexDoc:
        """Read to the end of the stream (checking every record); the bundle's last index."""
        while self._head is not None:
            self._skip_head()
        assert self.index is not None
        return self.index

    def listing(self) -> BundleListing:
        """Read the stream to its end; the bundle's state and every image it records (what
        ``transfer ls --json -`` prints). An image's size: what the plan lists for it."""
        index = self.finish()
        images_ = self.doc.plan.images if self.doc.plan else ()
        sizes = {(i.dst_repo, i.root.digest): sum({d.digest: d.size for d in (*i.manifests, *i.blobs)}.values())
                 for i in images_}
        images = [BundleImage(**e.to_json(), total_size=sizes.get((e.repository, e.digest), e.size))
                  for e in sorted(index.catalog, key=lambda e: e.key)]
        info = {"version": index.version, "created": self.doc.created, "tool_version": self.doc.tool_version,
                "source_registry": self.doc.source_registry, "complete": index.complete, "split": False,
                "parts_present": [index.part], "parts_expected": index.parts,
                "why_incomplete": [] if index.complete else ["the export did not finish (no index marked complete)"]}
        return BundleListing(bundle=self.path, complete=index.complete, info=info, images=images,
                             signature=self._found_signature(index.part))

    def _found_signature(self, part: int) -> SignatureStatus | None:
        """The signature the stream carried (not checked: ``verify - --key`` checks it)."""
        from transfer.bundle.signing import PartCheck, decode_signature, found_signature

        check = PartCheck(part, self.path, False)
        if self.signature is not None:
            try:
                signed = decode_signature(self.signature, self.path)
            except (CorruptBundleError, SignatureError) as exc:
                check.problem = str(exc)
            else:
                check.signed, check.key, check.algorithm = True, signed.key, signed.algorithm
        return found_signature([check])

    def close(self) -> None:
        """The stream stays open: it belongs to the caller."""

    def __enter__(self) -> "BundleStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- Source ----------------------------------------------------------------------------------

    def resolve(self, repo: str, ref: str) -> Descriptor:
        for image in self.plan.images:
            if image.dst_repo == repo and (ref in image.tags or ref == image.root.digest):
                return image.root
        raise NotFoundError(f"{self.path}: {repo}:{ref} is not in the bundle")

    def tags(self, repo: str) -> list[str]:
        return sorted({t for i in self.plan.images if i.dst_repo == repo for t in i.tags})

    def has(self, digest: str) -> bool:
        """Held (a manifest), or a blob: at the head, still to come, or passed (a target that
        received it for another repository mounts it from there, without fetching)."""
        return digest in self._manifests or not is_manifest_type(self._types.get(digest))

    def fetch(self, repo: str, desc: Descriptor) -> VerifyingReader:
        what = f"{desc.digest} in {self.path}"
        if desc.digest in self._manifests:
            return VerifyingReader(io.BytesIO(self._manifests[desc.digest]), desc.digest, desc.size, what)
        while self._head is not None and self._head.header.digest != desc.digest:
            if self._order.get(self._head.header.digest, -1) > self._order.get(desc.digest, len(self._order)):
                break  # the stream is past where it would be: the export did not store it
            self._skip_head()
        if self._head is None or self._head.header.digest != desc.digest:
            if desc.digest in self._passed:
                raise BundleError(f"{self.path}: {desc.digest} passed in the stream before {repo} needed it "
                                  "(the target could not mount it from where it was pushed); import from a file")
            raise NotFoundError(f"{self.path}: {desc.digest} is not in the bundle stream")
        if self._head.header.chunk_offset != 0 or self._head.header.size != desc.size:
            raise CorruptBundleError(f"{self.path}: {desc.digest} does not start at its first byte in the stream")
        return VerifyingReader(_Content(self), desc.digest, desc.size, what)


class _Content:
    """The bytes of the content at the head of the stream, segment after segment."""

    def __init__(self, stream: BundleStream) -> None:
        assert stream._head is not None
        self._stream, self._digest, self._pos = stream, stream._head.header.digest, 0
        # only ever read through fetch's VerifyingReader: the blob's sha256 covers these bytes, so
        # the records' CRC-32 is not computed too (as the file reader does; 0.18 s of CPU per 468 MiB)
        self._reader: ChunkReader | None = stream._head.open(crc=False)

    def read(self, n: int = -1) -> bytes:
        while self._reader is not None:
            data = self._reader.read(n if n and n > 0 else READ_SIZE)
            if data:
                self._pos += len(data)
                return data
            self._next_segment()
        return b""

    def _next_segment(self) -> None:
        s = self._stream
        assert s._head is not None
        h = s._head.header
        if self._pos >= h.size:
            self._reader = None
            s._skip_head()
            return
        s._advance()
        nxt = s._head.header if s._head is not None else None
        if nxt is None or nxt.digest != self._digest or nxt.chunk_offset != self._pos:
            raise CorruptBundleError(f"{s.path}: the segments of {self._digest} are not together in the stream "
                                     "(a continued export): import from the file")
        self._reader = s._head.open(crc=False)

    def close(self) -> None:
        """Nothing to release: the rest of the record is drained when the stream moves on."""


def _is_manifest(media_type: str, size: int) -> bool:
    return size <= MAX_MANIFEST_SIZE and is_manifest_type(media_type)


def _unique_blobs(plan: BundlePlan) -> list[Descriptor]:
    """The plan's blobs in the order a writer stores them (each once, image after image)."""
    seen: dict[str, Descriptor] = {}
    for image in plan.images:
        for blob in image.blobs:
            seen.setdefault(blob.digest, blob)
    return list(seen.values())
