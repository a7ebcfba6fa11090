"""Reading records: bounded payload readers, a sequential record iterator (works on pipes) and the
scanner that recovers every complete record of a part whose index is missing or damaged.

Nothing here trusts a length from the file before checking it, and no read is larger than
READ_SIZE, so a hostile bundle costs at most a bounded buffer.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator

import zstandard

from transfer.bundle import format as fmt
from transfer.bundle.format import CatalogEntry, ChunkEntry, IndexDoc, RecordHeader
from transfer.digest import READ_SIZE, Readable, digest_bytes
from transfer.errors import BundleError, CorruptBundleError
from transfer.untrusted import load_json


def read_exact(src: Readable, n: int, what: str) -> bytes:
    """Read exactly ``n`` bytes (``n`` already bounded by the caller), or b"" at a clean EOF."""
    parts, got = [], 0
    while got < n:
        data = src.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    data = b"".join(parts)
    if data and len(data) != n:
        raise CorruptBundleError(f"{what}: truncated ({len(data)} of {n} bytes)")
    return data


def read_record_header(src: Readable, what: str) -> RecordHeader | None:
    """The next record header, or None at a clean end of stream."""
    fixed = read_exact(src, fmt.RECORD_FIXED.size, what)
    if not fixed:
        return None
    rest = read_exact(src, fmt.variable_length(fixed, what), what)
    return fmt.decode_record_header(fixed + rest, what)


class PayloadReader:
    """The stored bytes of one record: never past its end; CRC-32 checked when fully read."""

    def __init__(self, src: Readable, length: int, crc: int, what: str, check: bool = True) -> None:
        self._src, self._left, self._crc, self._want = src, length, 0, crc
        self.what, self._check = what, check

    def read(self, n: int = -1) -> bytes:
        if self._left == 0:
            if self._check and self._crc != self._want:
                raise CorruptBundleError(f"{self.what}: payload checksum mismatch")
            self._check = False
            return b""
        n = READ_SIZE if n is None or n < 0 else n
        data = self._src.read(min(n, self._left, READ_SIZE))
        if not data:
            raise CorruptBundleError(f"{self.what}: payload truncated ({self._left} bytes missing)")
        self._left -= len(data)
        if self._check:
            self._crc = zlib.crc32(data, self._crc)
        return data

    def drain(self) -> None:
        while self.read(READ_SIZE):
            pass

    def unchecked(self) -> None:
        """Before the first read: no CRC-32 (the caller verifies a digest of the same bytes)."""
        self._check = False


class ChunkReader:
    """The uncompressed bytes of one record: exactly ``chunk_length`` bytes or CorruptBundleError
    (a frame that decompresses to more is cut off after one byte: no zstd bomb)."""

    def __init__(self, raw: PayloadReader, h: RecordHeader, skipped: int = 0, closer: Any = None) -> None:
        self._raw, self._left, self._h, self.what = raw, h.chunk_length - skipped, h, raw.what
        self._closer = closer
        self._src: Any = raw
        if h.codec == fmt.ZSTD:
            dctx = zstandard.ZstdDecompressor(max_window_size=fmt.MAX_WINDOW_SIZE)
            self._src = dctx.stream_reader(raw, read_size=READ_SIZE, read_across_frames=False, closefd=False)
        self._finished = False

    def read(self, n: int = -1) -> bytes:
        if self._left == 0:
            self._finish()
            return b""
        n = READ_SIZE if n is None or n < 0 else n
        data = self._call(min(n, self._left, READ_SIZE))
        if not data:
            raise CorruptBundleError(
                f"{self.what}: {self._h.digest} yields {self._h.chunk_length - self._left} bytes, "
                f"fewer than the declared {self._h.chunk_length}"
            )
        self._left -= len(data)
        return data

    def _call(self, n: int) -> bytes:
        try:
            return self._src.read(n)
        except zstandard.ZstdError as exc:
            raise CorruptBundleError(f"{self.what}: {self._h.digest} cannot be decompressed ({exc})") from None

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if (self._src is not self._raw and self._call(1)) or self._raw.read(1):
            raise CorruptBundleError(
                f"{self.what}: {self._h.digest} has more bytes than the declared {self._h.chunk_length}"
            )
        self._raw.read(1)  # at the end: checks the payload CRC

    def close(self) -> None:
        if self._closer:
            self._closer()

    def read_whole(self) -> bytes:
        """All of a small record (its length is bounded by check_record_header), checked."""
        parts = []
        while data := self.read(READ_SIZE):
            parts.append(data)
        return b"".join(parts)

    def skip(self, n: int) -> None:
        while n > 0:
            n -= len(self.read(min(n, READ_SIZE)))

    def drain(self) -> None:
        while self.read(READ_SIZE):
            pass


@dataclass
class Record:
    """One record met while reading a stream sequentially; read it with ``open()`` before the next."""

    header: RecordHeader
    offset: int
    part: int
    payload: PayloadReader

    def open(self, crc: bool = True) -> ChunkReader:
        """``crc=False``: the payload's CRC-32 is not computed (a caller that checks the content's
        sha256 over the same bytes, as the file reader does)."""
        if not crc:
            self.payload.unchecked()
        return ChunkReader(self.payload, self.header)

    def read_small(self) -> bytes:
        """The payload of a META, ROOT, EXPECT or INDEX record (at most 64 MiB), checked."""
        if self.header.type == fmt.CONTENT:
            raise BundleError("read_small() is for META, ROOT, EXPECT and INDEX records; use open()")
        return self.open().read_whole()


class _Counting:
    def __init__(self, src: Readable) -> None:
        self.src, self.pos = src, 0

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.pos += len(data)
        return data


def iter_records(stream: Readable, what: str = "bundle stream") -> Iterator[Record]:
    """Every record of a bundle read front to back from a non-seekable stream (a pipe, or the parts
    of a split set concatenated in order). The index record of each part is yielded too; its
    trailer is checked. A stream that ends early raises CorruptBundleError after the last
    complete record was yielded."""
    src = _Counting(stream)
    while head := read_exact(src, fmt.FILE_HEADER_SIZE, what):
        part = fmt.decode_file_header(head, what).part
        start = src.pos - fmt.FILE_HEADER_SIZE
        while True:
            offset = src.pos - start
            h = read_record_header(src, f"{what} part {part} offset {offset}")
            if h is None:
                raise CorruptBundleError(f"{what}: part {part} ends without an index (incomplete bundle)")
            rec = Record(h, offset, part, PayloadReader(src, h.stored_length, h.payload_crc, f"{what} part {part}"))
            yield rec
            rec.payload.drain()
            if h.type == fmt.INDEX:
                fmt.decode_trailer(read_exact(src, fmt.TRAILER_SIZE, what), 1 << 62, what)
                break


@dataclass
class ScanResult:
    """What a scan of one part found: the complete records, and where the valid bytes end."""

    doc: IndexDoc
    end: int  # offset after the last complete record (before any index): where appending resumes
    problem: str | None = None  # why the scan stopped early, if it did
    records: int = 0
    dropped_bytes: int = 0
    roots: list[CatalogEntry] = field(default_factory=list)


def scan_part(fh: BinaryIO, size: int, what: str) -> ScanResult:
    """Read one part's records from the start, checking every header and payload checksum, and
    stop at the first record that is torn or damaged (everything after it is dropped)."""
    fh.seek(0)
    head = fmt.decode_file_header(read_exact(fh, fmt.FILE_HEADER_SIZE, what), what)
    doc = IndexDoc(head.part, head.set_id.hex(), False, False, None, "", "", "", [], [], [], version=head.version)
    res = ScanResult(doc, fmt.FILE_HEADER_SIZE)
    while res.end < size:
        try:
            h = _scan_one(fh, res, what)
        except CorruptBundleError as exc:
            res.problem = str(exc)
            break
        if h is None:
            break
    res.dropped_bytes = size - res.end
    return res


def _scan_one(fh: BinaryIO, res: ScanResult, what: str) -> RecordHeader | None:
    fh.seek(res.end)
    where = f"{what} offset {res.end}"
    h = read_record_header(fh, where)
    if h is None or h.type == fmt.INDEX:
        return None
    payload = PayloadReader(fh, h.stored_length, h.payload_crc, where)
    if h.type == fmt.CONTENT:
        payload.drain()
        res.doc.chunks.append(ChunkEntry(
            h.digest, h.media_type, h.size, fmt.CODEC_NAMES[h.codec], res.end, h.stored_length,
            h.chunk_offset, h.chunk_length, res.doc.part,
        ))
    else:
        apply_small_record(res.doc, h, ChunkReader(payload, h).read_whole(), where)
    res.end += h.length + h.stored_length
    res.records += 1
    return h


def apply_small_record(doc: IndexDoc, h: RecordHeader, data: bytes, what: str) -> None:
    """Fold a meta, plan, root or expect record into ``doc`` (used by scans and sequential
    readers); a later plan replaces an earlier one."""
    if digest_bytes(data) != h.digest:
        raise CorruptBundleError(f"{what}: {fmt.RECORD_TYPES[h.type]} record digest mismatch")
    limit = fmt.MAX_INDEX_SIZE if h.type in (fmt.PLAN, fmt.SIGNATURE) else fmt.MAX_SMALL_RECORD
    obj = load_json(data, f"{what}: {fmt.RECORD_TYPES[h.type]} record", CorruptBundleError, limit)
    if h.type == fmt.PLAN:
        doc.plan = fmt.decode_plan(obj, f"{what} plan")
    elif h.type == fmt.META:
        doc.created = fmt._get(obj, "created", str, what)
        doc.tool_version = fmt._get(obj, "tool_version", str, what)
        doc.source_registry = fmt._get(obj, "source_registry", str, what)
    elif h.type == fmt.ROOT:
        entry = fmt.decode_catalog_entry(obj, what)
        doc.catalog = [e for e in doc.catalog if e.key != entry.key] + [entry]
    elif h.type == fmt.EXPECT:
        doc.expected.append(fmt._expected(obj, what))


def open_content(path: str, entry: ChunkEntry, skip: int, what: str, crc: bool = True) -> ChunkReader:
    """Open one content record of a part file by its index entry, checking its header against the
    entry, positioned ``skip`` uncompressed bytes into the record; ``crc=False`` leaves the payload
    checksum to a caller that checks the content's digest (a stronger check of the same bytes)."""
    fh = open(path, "rb")
    try:
        fh.seek(entry.offset)
        h = read_record_header(fh, f"{what} offset {entry.offset}")
        if h is None or h.type != fmt.CONTENT or h != entry.header(h.payload_crc):
            raise CorruptBundleError(f"{what}: record at offset {entry.offset} does not match the index")
        seek = skip if h.codec == fmt.NONE else 0
        if seek:
            fh.seek(seek, 1)
        raw = PayloadReader(fh, h.stored_length - seek, h.payload_crc, what, check=crc and not seek)
        reader = ChunkReader(raw, h, skipped=seek, closer=fh.close)
        reader.skip(skip - seek)
        return reader
    except BaseException:
        fh.close()
        raise


class ContentStream:
    """The uncompressed bytes of one content from ``start`` over consecutive records (which may lie
    in different parts), opening one record at a time."""

    def __init__(self, chain: list[tuple[str, ChunkEntry]], start: int, what: str, crc: bool = True) -> None:
        self._chain = [(p, e) for p, e in chain if e.chunk_offset + e.chunk_length > start or e.chunk_length == 0]
        self._pos, self._cur, self.what, self._crc = start, None, what, crc

    def read(self, n: int = -1) -> bytes:
        while True:
            if self._cur is None:
                if not self._chain:
                    return b""
                path, entry = self._chain.pop(0)
                self._cur = open_content(path, entry, self._pos - entry.chunk_offset, self.what, self._crc)
            data = self._cur.read(n)
            if data:
                self._pos += len(data)
                return data
            self.close()

    def close(self) -> None:
        if self._cur is not None:
            self._cur.close()
            self._cur = None
