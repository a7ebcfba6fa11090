"""BundleWriter: a bundle as a Target. Append-only; an interrupted export continues the same file.

Each content record is written as a zeroed header, then its payload (streamed, hashed and
compressed once), then the real header over the zeros. A crash leaves at most one torn record at
the end, which reopening drops. The index and trailer go at the end of each part; only close()
after a successful export marks the bundle complete.

Written to a stream (a pipe, stdout), nothing can be sought back to: each record's payload (at most
one segment, ``checkpoint`` bytes of content) is held in memory until its header is known, then
header and payload go out together. The bytes are the same as in a file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import os
import queue
import threading
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, ClassVar, Iterable, Iterator, Union

import zstandard

from transfer import __version__
from transfer.bundle import format as fmt
from transfer.bundle.format import BundlePlan, CatalogEntry, ChunkEntry, IndexDoc, RecordHeader
from transfer.bundle.lock import BundleLock
from transfer.bundle.reader import LoadedPart, find_parts, load_part
from transfer.bundle.stream import ContentStream
from transfer.digest import READ_SIZE, Digester, Readable, VerifyingReader
from transfer.errors import BundleError, IntegrityError, TransferError, UnsupportedManifestError
from transfer.interrupt import check as check_stop
from transfer.models import MAX_MANIFEST_SIZE, Descriptor, Platform, parse_manifest
from transfer.reference import validate_repository, validate_tag
from transfer.store import BlobOpener, Traits, check_output_file

if TYPE_CHECKING:
    from transfer.keys import PrivateKey

MIN_SPLIT_SIZE = fmt.MIN_SPLIT_SIZE
CHECKPOINT = 16 << 20  # a large content is stored as segments of this many bytes: a killed export keeps them
ZSTD_MARGIN = 160  # frame end, block headers and the compress bound's constant term


def zstd_bound(n: int) -> int:
    """An upper bound of the compressed size of ``n`` bytes in one frame (ZSTD_compressBound)."""
    return n + (n >> 8) + ZSTD_MARGIN


def format_created(created: dt.datetime | str | None) -> str:
    if isinstance(created, str):
        return created
    when = created or dt.datetime.now(dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


Output = Union[str, "os.PathLike[str]", BinaryIO]


class StreamOut:
    """A write-only stream (a pipe, standard output) as a file: counts its position (``tell``);
    cannot seek back. Bundles and docker archives written to a stream use it."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self._stream, self.name, self.pos, self.closed = stream, name, 0, False

    def write(self, data: bytes | memoryview) -> int:
        self._stream.write(data)
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self.flush()
        self.closed = True


@dataclass
class _Part:
    number: int
    path: str
    fh: Any  # a file, or a StreamOut
    chunks: list[ChunkEntry] = field(default_factory=list)
    chunk_bytes: int = 0  # JSON bytes the chunk entries add to this part's index
    crcs: dict[int, int] = field(default_factory=dict)  # payload CRC of the record at each offset (signing)
    plan: BundlePlan | None = None  # of the last PLAN record in this part (signing)


WRITEBACK_EVERY = 8 << 20  # payload bytes between two requests to start writing the file to disk
_writeback: Any = None  # sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE), looked up on first use


def _start_writeback(fd: int) -> None:
    """Ask the kernel to begin writing a file's dirty pages to disk now, without waiting (Linux
    ``sync_file_range(SYNC_FILE_RANGE_WRITE)``; nothing where there is no such call). The write-back
    then overlaps the download, and the fsync that ends a part has less left to do."""
    global _writeback
    if _writeback is None:
        _writeback = False
        with contextlib.suppress(ImportError, OSError, AttributeError):
            import ctypes

            call = ctypes.CDLL(None, use_errno=True).sync_file_range
            call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            _writeback = call
    if _writeback:
        _writeback(fd, 0, 0, 2)  # 2: SYNC_FILE_RANGE_WRITE; offset 0, length 0: the whole file


class _Pipeline:
    """Writes the records of one content (in one part) on a worker thread while the caller reads,
    hashes and compresses the next pieces (hashlib, zlib and file writes release the GIL). At most
    ``depth`` pieces are in flight, so memory stays bounded.

    One worker serves every record of the content: a record's header is written by the worker once
    the record's payload is out (``end_record``), so the caller goes on with the next record without
    waiting for the disk (a thread per 16 MiB record made the reader wait at every record end).
    In a file the header goes over the zeros written first (``begin_record``); to a stream (which
    cannot seek back) the worker holds the record's payload until its header is known, then writes
    both, so the bytes are the same as in a file. ``finished`` counts the records whose header is
    written; ``end`` is where the caller's next byte lands.

    The worker starts with the second payload piece: a content of one piece (a small blob, a
    manifest) is written by the caller at ``close``, as starting and joining a thread for it cost
    more than the write (a third of an export of 1,000 small images)."""

    def __init__(self, fh: Any, stream: bool, depth: int = 4) -> None:
        self._fh, self._queue = fh, queue.Queue(maxsize=depth)
        self._held: list[bytes] | None = [] if stream else None  # a stream: this record's payload
        self.crc, self._error, self._unsynced = 0, None, 0
        self.end, self.finished = fh.tell(), 0
        self._backlog: list[Any] = []  # what was put before the worker started
        self._pieces = 0
        self._thread: threading.Thread | None = None

    def begin_record(self, hlen: int) -> int:
        """Start a record whose header takes ``hlen`` bytes; return where it begins."""
        start = self.end
        if self._held is None:
            zeros = bytes(hlen)  # a record torn here has no valid header
            self._submit(lambda: self._fh.write(zeros))
        self.end += hlen
        return start

    def put(self, data: bytes | memoryview) -> None:
        """Payload bytes: written and counted in the record's CRC."""
        self._pieces += 1
        self._submit(data)
        self.end += len(data)

    def end_record(self, start: int, header: Callable[[int], bytes]) -> None:
        """Write ``header(crc)`` at ``start`` once the record's payload is out."""
        self._submit(lambda: self._finish_record(start, header))

    def _finish_record(self, start: int, header: Callable[[int], bytes]) -> None:
        data = header(self.crc)
        if self._held is None:
            self._fh.flush()
            os.pwrite(self._fh.fileno(), data, start)
        else:
            self._fh.write(data)
            for piece in self._held:
                self._fh.write(piece)
            self._held.clear()
        self.crc = 0
        self.finished += 1

    def _submit(self, item: Any) -> None:
        if self._error is not None:
            raise self._error
        if self._thread is None:
            if self._pieces < 2:
                self._backlog.append(item)
                return
            self._thread = threading.Thread(target=self._run, name="bundle-writer", daemon=True)
            self._thread.start()
            for queued in self._backlog:
                self._queue.put(queued)
            self._backlog = []
        self._queue.put(item)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._do(item)
                except BaseException as exc:  # handed to the caller by put() or close()
                    self._error = exc

    def _do(self, item: Any) -> None:
        if callable(item):
            item()
            return
        self.crc = zlib.crc32(item, self.crc)
        if self._held is not None:
            self._held.append(bytes(item))
            return
        self._fh.write(item)
        self._unsynced += len(item)
        if self._unsynced >= WRITEBACK_EVERY:
            self._fh.flush()
            _start_writeback(self._fh.fileno())
            self._unsynced = 0

    def close(self) -> None:
        """Wait until everything put is written; raise what failed."""
        if self._thread is None:
            backlog, self._backlog = self._backlog, []
            if self._error is None:
                try:
                    for item in backlog:
                        self._do(item)
                except BaseException as exc:
                    self._error = exc
        elif self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


class _ChunkSink:
    """Writes one record's payload: stored as is, or one zstd frame; never past ``limit`` bytes
    stored nor ``max_length`` bytes of content."""

    def __init__(self, out: _Pipeline, codec: int, cctx: zstandard.ZstdCompressor, limit: int | None,
                 max_length: int) -> None:
        self._out, self._limit, self._max_length = out, limit, max_length
        self._z = cctx.compressobj() if codec == fmt.ZSTD else None
        self.stored = self.length = self._unflushed = 0

    def fill(self, pending: memoryview, src: Readable) -> tuple[memoryview, bool]:
        """Write from ``pending`` then ``src`` until EOF (True) or the record is full (False)."""
        while True:
            if not pending:
                pending = memoryview(src.read(READ_SIZE))
                if not pending:
                    return pending, True
            n = self._fits(len(pending))
            if n == 0:
                return pending, False
            self._feed(pending[:n])
            pending = pending[n:]

    def _fits(self, want: int) -> int:
        want = min(want, self._max_length - self.length)
        if self._limit is None or want == 0:
            return want
        if self._z is None:
            return min(want, self._limit - self.stored)
        if self.stored + zstd_bound(self._unflushed + want) <= self._limit:
            return want
        if self._unflushed:  # learn exactly what is out so far, then size the next piece
            self._emit(self._z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
            self._unflushed = 0
        n = min(want, (self._limit - self.stored - ZSTD_MARGIN) * 256 // 257)
        return max(n, 0)

    def _feed(self, data: memoryview) -> None:
        self.length += len(data)
        if self._z is None:
            self._emit(data)
            return
        self._unflushed += len(data)
        self._emit(self._z.compress(data))

    def _emit(self, out: bytes | memoryview) -> None:
        if out:
            self._out.put(out)
            self.stored += len(out)

    def finish(self) -> None:
        if self._z is not None:
            self._emit(self._z.flush())


class _Continued:
    """The rest of a content whose first bytes were hashed from the bundle (the source skipped
    them unverified): hashes what it passes on and checks the whole digest at the end."""

    def __init__(self, src: Readable, digester: Digester, digest: str, what: str) -> None:
        self._src, self._digester, self._digest, self._what = src, digester, digest, what

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        if data:
            self._digester.update(data)
        elif (actual := self._digester.digest()) != self._digest:
            raise IntegrityError(f"{self._what} (continued after the bytes an interrupted run stored)",
                                 self._digest, actual)
        return data


class _Kept:
    """Passes a small content through, keeping its bytes (None if it was continued mid-way)."""

    def __init__(self, src: VerifyingReader) -> None:
        self._src, self._pieces, self.skipped = src, list[bytes](), False

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        self._pieces.append(data)
        return data

    def skip_unverified(self, offset: int) -> bool:
        self.skipped = True
        return self._src.skip_unverified(offset)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._src, name)

    def data(self) -> bytes | None:
        return None if self.skipped else b"".join(self._pieces)


def _bytes_opener(desc: Descriptor, raw: bytes) -> Any:
    return lambda: VerifyingReader(io.BytesIO(raw), desc.digest, desc.size, f"manifest {desc.digest}")


def small_header(rtype: int, media_type: str, pieces: Iterable[bytes]) -> RecordHeader:
    """The header of an uncompressed record whose payload is ``pieces`` (its digest, length and
    CRC-32 taken as they pass: a payload given in pieces need not be whole in memory)."""
    sha, crc, length = hashlib.sha256(), 0, 0
    for piece in pieces:
        sha.update(piece)
        crc, length = zlib.crc32(piece, crc), length + len(piece)
    return RecordHeader(rtype, fmt.NONE, "sha256:" + sha.hexdigest(), media_type, length, 0, length, length, crc)


def _trailer(h: RecordHeader, start: int, flags: int) -> bytes:
    return fmt.encode_trailer(fmt.Trailer(start, h.stored_length, bytes.fromhex(h.digest[7:]), flags))


def index_bytes(data: bytes, start: int, flags: int) -> bytes:
    """The INDEX record holding ``data`` and the trailer after it, for an index starting at ``start``."""
    h = small_header(fmt.INDEX, fmt.INDEX_TYPE, (data,))
    return fmt.encode_record_header(h) + data + _trailer(h, start, flags)


def append_index(fh: Any, doc: IndexDoc) -> int:
    """Write the index record and trailer at the current position, end the file there and sync
    it (a stream: flush it); return the file's size. The index is encoded twice, piece by piece
    (its length and checksums first, for the header), never whole in memory."""
    flags = fmt.TRAILER_COMPLETE | fmt.TRAILER_FINAL if doc.complete else 0
    start, h = fh.tell(), small_header(fmt.INDEX, fmt.INDEX_TYPE, fmt.index_pieces(doc))
    fh.write(fmt.encode_record_header(h))
    for piece in fmt.index_pieces(doc):
        fh.write(piece)
    fh.write(_trailer(h, start, flags))
    if isinstance(fh, StreamOut):
        fh.flush()
        return fh.tell()
    fh.truncate()
    fh.flush()
    os.fsync(fh.fileno())
    return fh.tell()


class BundleWriter:
    """Writes a bundle (see docs/bundle-format.md); implements transfer.store.Target."""

    traits: ClassVar[Traits] = Traits(blobs_per_repository=False)  # one copy serves every repository; one push at a time

    def __init__(
        self,
        path: Output,
        *,
        split_size: int | None = None,
        level: int = 3,
        threads: int = 0,
        source_registry: str = "",
        created: dt.datetime | str | None = None,
        overwrite: bool = False,
        checkpoint: int = CHECKPOINT,
        sign: PrivateKey | None = None,
    ) -> None:
        if split_size is not None and split_size < MIN_SPLIT_SIZE:
            raise BundleError(f"split size {split_size} is too small (at least {MIN_SPLIT_SIZE} bytes)")
        self._stream = None if isinstance(path, (str, os.PathLike)) else path
        if self._stream is not None and split_size is not None:
            raise BundleError("a bundle written to a stream is one part: drop the split size")
        self.path = str(getattr(path, "name", "<stream>")) if self._stream else check_output_file(path, "bundle")
        self.split_size, self.version = split_size, fmt.VERSION
        self.checkpoint = max(checkpoint, READ_SIZE)
        self._cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
        self.created, self.source_registry = format_created(created), source_registry
        self._chunks: dict[str, list[ChunkEntry]] = {}
        self._catalog: dict[tuple[str, str, str], CatalogEntry] = {}
        self._expected: dict[str, dict[str, Any]] = {}
        self._shared_bytes = 0  # JSON bytes of catalog and expected entries in every index
        self._plan: BundlePlan | None = None
        self._plan_bytes = 0  # JSON bytes of the plan in every index
        self._parts: list[_Part] = []
        self._facts: dict[str, list[str] | str | None] = {}  # platforms of a config, an index; an image's config
        self._configs: set[str] = set()  # configs of the manifests stored: their platform is kept when they are
        self.bytes_written = self.blobs_written = 0
        self._closed = False
        self._lock = threading.RLock()  # one record at a time, whichever thread pushes
        self._signer = sign
        self._statements: dict[int, str] = {}  # signing: each part's statement digest (the next part names it)
        if self._stream is not None:  # a fresh stream: nothing to lock, continue or remove
            self._file_lock = None
            self._fresh()
            return
        self._file_lock = BundleLock(self.path).acquire()  # one writer per bundle, before any read
        try:
            self._open(overwrite)
        except BaseException:
            self._file_lock.release()
            raise

    def _open(self, overwrite: bool) -> None:
        existing = self._existing_parts()
        if existing and not overwrite:
            self._resume(existing)
        else:
            for p in existing:
                os.remove(p)
            self._fresh()

    # ---- parts --------------------------------------------------------------------------------

    def _part_path(self, number: int) -> str:
        return self.path if self.split_size is None else f"{self.path}.{number:03d}"

    def _existing_parts(self) -> list[str]:
        if self.split_size is None:
            if os.path.isfile(self.path + ".001"):
                raise BundleError(f"{self.path}: a split bundle exists here; give the same split size to continue it")
            return [self.path] if os.path.isfile(self.path) and os.path.getsize(self.path) else []
        if os.path.isfile(self.path):
            raise BundleError(f"{self.path}: an unsplit bundle exists here; continue it without a split size")
        try:
            return list(find_parts(self.path)[2].values())
        except BundleError:
            return []

    def _start_part(self, number: int) -> None:
        if number > fmt.MAX_PART_NUMBER:
            raise BundleError(f"{self.path}: more than {fmt.MAX_PART_NUMBER} parts; use a larger split size")
        path = self._part_path(number)
        fh: Any = StreamOut(self._stream, self.path) if self._stream is not None else open(path, "w+b")
        fh.write(fmt.encode_file_header(number, self._set_id, self.version))
        self._parts.append(_Part(number, path, fh))
        self._write_meta()

    def _write_meta(self) -> None:
        meta = {"created": self.created, "source_registry": self.source_registry, "tool_version": __version__}
        self._write_small(fmt.META, fmt.META_TYPE, meta, 0)

    @property
    def _part(self) -> _Part:
        return self._parts[-1]

    def _index_reserve(self) -> int:
        """Bytes to keep free at the end of the part for its index record and trailer."""
        fixed = 2048 + len(self.created) + len(self.source_registry) * 6 + len(__version__)
        index = fixed + self._shared_bytes + self._plan_bytes + self._part.chunk_bytes + fmt.TRAILER_SIZE
        if self._signer is not None:  # the signature record: a statement smaller than the index, JSON-escaped
            index += 2048 + (self._shared_bytes + self._part.chunk_bytes) * 5 // 4 + self._plan_bytes * 2
        return index

    def _room(self, needed: int, pos: int | None = None) -> bool:
        """Whether ``needed`` more bytes fit in the part (at ``pos``: the end of what is in flight)."""
        if self.split_size is None:
            return True
        pos = self._part.fh.tell() if pos is None else pos
        return pos + needed + self._index_reserve() <= self.split_size

    def _ensure_room(self, needed: int) -> None:
        if self._room(needed):
            return
        self._finish_part(complete=False)
        self._start_part(self._part.number + 1)
        if not self._room(needed):
            raise BundleError(
                f"{self.path}: split size {self.split_size} leaves no room for a record of {needed} "
                "bytes next to the index; use a larger split size"
            )

    def _finish_part(self, complete: bool) -> None:
        part = self._part
        doc = IndexDoc(
            part.number, self._set_id.hex(), complete, complete, part.number if complete else None,
            self.created, __version__, self.source_registry, part.chunks,
            list(self._catalog.values()), list(self._expected.values()), self._plan, self.version,
        )
        if self._signer is not None:
            self._sign_part(part, doc)
        end = append_index(part.fh, doc)
        part.fh.close()
        if self.split_size is not None and end > self.split_size:
            raise BundleError(f"{part.path}: the index outgrew the split size (a bug: please report)")

    @property
    def signed_parts(self) -> list[int]:
        """The parts signed so far (with ``sign``): by this run, or found signed by its key."""
        return sorted(self._statements)

    def _sign_part(self, part: _Part, doc: IndexDoc) -> None:
        """The part's SIGNATURE record, the last before its index (docs/bundle-format.md, "Signatures")."""
        from transfer.bundle import signing

        assert self._signer is not None
        body = signing.statement(doc, part.crcs, doc.plan if doc.plan is not None else part.plan,
                                 self._statements.get(part.number - 1))
        record = signing.signature_record(signing.signature_payload(self._signer, body))
        part.fh.write(record)
        self.bytes_written += len(record)
        self._statements[part.number] = signing.statement_digest(body)

    # ---- resuming -----------------------------------------------------------------------------

    def _resume(self, paths: list[str]) -> None:
        """Continue an existing bundle: keep its complete records, drop a torn tail and the index."""
        if os.path.getsize(paths[-1]) < fmt.FILE_HEADER_SIZE:  # died while creating that part
            os.remove(paths.pop())
        if not paths:
            return self._fresh()
        loaded = [load_part(p, recover=True) for p in paths]
        if [p.number for p in loaded] != list(range(1, len(loaded) + 1)) or len({p.set_id for p in loaded}) > 1:
            raise BundleError(f"{self.path}: cannot continue: parts are missing or belong to different bundles")
        first, last = loaded[0], loaded[-1]
        self._set_id, self.version = first.set_id, first.doc.version  # a version 1 bundle goes on as one
        self.created = first.doc.created or self.created
        self.source_registry = first.doc.source_registry or self.source_registry
        for part in loaded:
            self._load(part)
        end, walk = self._resume_signing(loaded)
        fh = open(last.path, "r+b")
        fh.truncate(end)
        fh.seek(end)
        self._parts.append(_Part(last.number, last.path, fh, list(last.doc.chunks), crcs=walk.crcs, plan=walk.plan))
        self._part.chunk_bytes = sum(len(fmt.dumps(c.to_json())) + 1 for c in last.doc.chunks)
        if last.records_end == fmt.FILE_HEADER_SIZE:  # its META record was torn
            self._write_meta()

    def _resume_signing(self, loaded: list[LoadedPart]) -> tuple[int, Any]:
        """Where the reopened last part's records end, without its signature (appending
        invalidates it), and its walk; with a key, sign the earlier parts that are not signed by
        it yet, and learn the statement the reopened part's will follow."""
        from transfer.bundle import signing

        last = loaded[-1]
        walk = signing.walk_part(last.path, last.records_end)
        end = walk.last_offset if walk.signed_last and walk.end == last.records_end else last.records_end
        if self._signer is not None and self.version < 2:
            raise BundleError(f"{self.path}: format version {self.version} has no signature record: it cannot be "
                              "continued signed (export it again, or continue it without --sign)")
        if self._signer is not None:
            for part in loaded[:-1]:
                previous = self._statements.get(part.number - 1)
                check = signing.inspect_part(part)
                check.compute(previous)
                body = check.statement
                if not (check.signed and check.key == self._signer.fingerprint and check.signed_statement == body):
                    body = signing.sign_part(part, self._signer, previous)[0]
                self._statements[part.number] = signing.statement_digest(body)
        return end, walk

    def _fresh(self) -> None:
        seed = f"{self.created}\0{self.source_registry}\0{self.split_size}".encode()
        self._set_id = hashlib.sha256(seed).digest()[:16]
        self._start_part(1)

    def _load(self, part: LoadedPart) -> None:
        for c in part.doc.chunks:
            self._chunks.setdefault(c.digest, []).append(c)
        for e in part.doc.catalog:
            self._add_catalog(e)
        for d in part.doc.expected:
            self._add_expected(d)
        if part.doc.plan is not None:
            self._set_plan(part.doc.plan)

    def set_plan(self, plan: BundlePlan) -> int:
        """Write the export's plan (version 2), then, in a single-part bundle, every manifest it
        carries the bytes of, before any blob (a reader of a stream then knows each image before
        its blobs pass, and a bundle cut short still tells which images it completed). In a split
        set, record the plan in the index of this part and every later one instead (a part alone
        then shows where each of its blobs belongs) and keep manifests after their children. Call it before the first push; a continued export writes the plan of
        its own run, which replaces the earlier one. Returns the number of manifests written."""
        with self._lock, self._os_errors():
            self._check_open()
            if self.split_size is not None:
                self._set_index_plan(plan)
            if self.version < 2:  # continuing a version 1 bundle: no plan record, children first
                return 0
            self._write_pieces(fmt.PLAN, fmt.PLAN_TYPE, plan.pieces)
            self._part.plan = plan
            written = 0
            if self.split_size is not None:  # a part alone must hold the manifests of the blobs it ends
                return 0
            for image in plan.images:
                for desc in image.manifests:
                    if desc.digest in image.raw and not self.stored(desc.digest):
                        self._push_locked(image.dst_repo, desc, _bytes_opener(desc, image.raw[desc.digest]))
                        written += 1
            return written

    def _set_index_plan(self, plan: BundlePlan) -> None:
        old = self._plan
        self._set_plan(plan)
        if self._room(0):
            return
        if self._index_reserve() - self._part.chunk_bytes + 4096 > (self.split_size or 0):
            self._set_plan(old)
            raise BundleError(f"{self.path}: the export plan ({len(fmt.dumps(plan.to_json()))} bytes in every "
                              f"part's index) does not fit in the split size {self.split_size}; use a larger split size")
        self._set_plan(old)  # the part in progress is full for the new plan: close it as it was
        self._finish_part(complete=False)
        self._set_plan(plan)
        self._start_part(self._part.number + 1)

    def _set_plan(self, plan: BundlePlan | None) -> None:
        """The plan written into every index (split sets)."""
        self._plan = plan
        self._plan_bytes = 0 if plan is None else sum(map(len, plan.pieces())) + 10

    def _add_catalog(self, entry: CatalogEntry) -> None:
        self._catalog[entry.key] = entry
        self._shared_bytes += len(fmt.dumps(entry.to_json())) + 1

    def _add_expected(self, desc: dict[str, Any]) -> None:
        self._expected[desc["digest"]] = desc
        self._shared_bytes += len(fmt.dumps(desc)) + 1

    # ---- small records ------------------------------------------------------------------------

    def _write_small(self, rtype: int, media_type: str, obj: Any, index_growth: int) -> None:
        data = fmt.dumps(obj)
        h = small_header(rtype, media_type, (data,))
        if rtype != fmt.META:
            self._ensure_room(h.length + len(data) + index_growth)
        self._part.fh.write(fmt.encode_record_header(h) + data)
        self.bytes_written += h.length + len(data)

    def _write_pieces(self, rtype: int, media_type: str, pieces: Callable[[], Iterator[bytes]]) -> None:
        """A small record whose payload ``pieces()`` gives (twice: first for its length and
        checksums), never whole in memory (the export's plan)."""
        h = small_header(rtype, media_type, pieces())
        self._ensure_room(h.length + h.stored_length)
        self._part.fh.write(fmt.encode_record_header(h))
        for piece in pieces():
            self._part.fh.write(piece)
        self.bytes_written += h.length + h.stored_length

    # ---- Target ------------------------------------------------------------------------------

    def stored(self, digest: str) -> bool:
        """True if the whole content of ``digest`` is in the bundle (not just expected)."""
        return self._available(digest) == (self._chunks[digest][0].size if digest in self._chunks else -1)

    def _available(self, digest: str) -> int:
        return sum(c.chunk_length for c in self._prefix(digest))

    def _prefix(self, digest: str) -> list[ChunkEntry]:
        """The records of ``digest`` that follow each other from byte 0."""
        chain, pos = [], 0
        for c in sorted(self._chunks.get(digest, []), key=lambda c: c.chunk_offset):
            if c.chunk_offset == pos and (c.chunk_length or not chain):
                chain.append(c)
                pos += c.chunk_length
        return chain

    def exists(self, repo: str, desc: Descriptor) -> bool:
        return desc.digest in self._expected or self.stored(desc.digest)

    def push(self, repo: str, desc: Descriptor, open_blob: BlobOpener, *, may_stall: bool = False) -> None:
        """Stream, verify and store ``desc``. On a failure the digest is not stored: the records
        finished before it are kept as a prefix the next push continues, unless the bytes proved
        wrong (IntegrityError), which keeps nothing. (A local write is never cut for idling, so
        ``may_stall`` changes nothing.)"""
        with self._lock, self._os_errors():
            self._check_open()
            if not self.stored(desc.digest):
                self._push_locked(repo, desc, open_blob)

    @contextlib.contextmanager
    def _os_errors(self):
        """A failed write (full disk, lost USB stick) is one clear error naming the bundle."""
        try:
            yield
        except OSError as exc:
            raise BundleError(f"cannot write {self.path}: {exc.strerror or exc}; what was stored "
                              "is kept, run the same command again to continue") from exc

    def _push_locked(self, repo: str, desc: Descriptor, open_blob: BlobOpener) -> None:
        mt = desc.media_type
        if len(mt) > fmt.MAX_MEDIA_TYPE or not mt.isascii() or not mt.isprintable():
            raise BundleError(f"{desc.digest}: media type {mt[:80]!r} cannot be stored (not printable ASCII of at most 255 bytes)")
        start = self._mark()
        try:
            with VerifyingReader(open_blob(), desc.digest, desc.size, f"{desc.digest} of {repo}") as src:
                small = desc.size <= MAX_MANIFEST_SIZE
                kept = _Kept(src) if small and (desc.is_manifest or desc.digest in self._configs) else None
                self._write_content(desc, kept or src)
            if kept is not None:
                self._learn(desc, kept.data())
        except IntegrityError:  # the bytes are wrong: keep none of them, nor a prefix they continued
            self._rollback(*start)
            self._forget(desc.digest)
            raise
        self.blobs_written += 1

    def _learn(self, desc: Descriptor, data: bytes | None) -> None:
        """Keep what the catalog needs of a manifest or config just stored (a stream cannot be
        read back): an index's platforms, an image's config digest, a config's platform."""
        if data is None:
            return
        if not desc.is_manifest:
            try:
                self._facts[desc.digest] = [str(Platform.model_validate_json(data))]
            except ValueError:
                self._facts[desc.digest] = []  # an artifact's config, not an image's
            return
        try:
            view = parse_manifest(data, desc.media_type, desc.digest)
        except TransferError:
            return  # stored as it is; recording it as a root says what is wrong with it
        if view.is_index:
            self._facts[desc.digest] = sorted({str(d.platform) for d in view.manifests if d.platform})
        else:
            self._facts[desc.digest] = view.config.digest if view.config is not None else None
            if view.config is not None:
                self._configs.add(view.config.digest)

    def _mark(self, pos: int | None = None) -> tuple[int, int, int, int, int]:
        part = self._part
        return part.number, part.fh.tell() if pos is None else pos, len(part.chunks), part.chunk_bytes, self.bytes_written

    def _write_content(self, desc: Descriptor, src: VerifyingReader) -> None:
        """Write the content as records of at most ``checkpoint`` bytes (and at most what a part
        holds), each complete on its own: a failure or a kill loses only the records whose header
        is not written yet, and the next push (or run) continues after the records stored."""
        offset = self._available(desc.digest)  # a prefix left by an interrupted run
        reader = self._past_stored(desc, src, offset)
        first = memoryview(reader.read(READ_SIZE))
        if offset:
            codec = fmt.CODECS[self._chunks[desc.digest][-1].codec]
        else:
            codec = fmt.choose_codec(desc.media_type, bytes(first[:8]))
        out: _Pipeline | None = None
        marks: list[tuple[int, int, int, int, int]] = []  # where each record through ``out`` began
        try:
            while True:
                out, marks = self._record_pipeline(out, marks, desc, offset)
                marks.append(self._mark(out.end))
                entry, first, done = self._write_chunk(desc, codec, offset, first, reader, out)
                self._chunks.setdefault(desc.digest, []).append(entry)
                offset += entry.chunk_length
                if done:
                    out.close()
                    return
                if entry.chunk_length < self.checkpoint:  # the part is full
                    out.close()
                    out, marks = None, []
                    self._finish_part(complete=False)
                    self._start_part(self._part.number + 1)
                check_stop(f"export to {self.path}")  # a safe point: the records so far are kept
        except BaseException:
            self._undo_unfinished(desc.digest, out, marks)
            raise

    def _record_pipeline(self, out: _Pipeline | None, marks: list[Any], desc: Descriptor,
                         offset: int) -> tuple[_Pipeline, list[Any]]:
        """The pipeline the next record goes through: the content's, while the part has room for
        the record (a split part: counted to the end of what is in flight); else a new one, once the
        records in flight are out and the part is closed if the record needs the next one."""
        needed = fmt.header_length(desc.digest, desc.media_type) + min(4096, zstd_bound(desc.size - offset))
        if out is not None:
            if self._room(needed, out.end):
                return out, marks
            out.close()
        self._ensure_room(needed)
        return _Pipeline(self._part.fh, stream=self._stream is not None), []

    def _undo_unfinished(self, digest: str, out: _Pipeline | None, marks: list[Any]) -> None:
        """After a failure: wait for the writer, then drop the records whose header it did not
        write (the one in flight, and any behind a failed write); the records before are kept."""
        if out is None:
            return
        with contextlib.suppress(BaseException):
            out.close()
        if out.finished < len(marks):
            mark = marks[out.finished]
            dropped = {id(c) for c in self._part.chunks[mark[2]:]}
            self._rollback(*mark)
            kept = [c for c in self._chunks.get(digest, []) if id(c) not in dropped]
            if kept:
                self._chunks[digest] = kept
            else:
                self._chunks.pop(digest, None)

    def _past_stored(self, desc: Descriptor, src: VerifyingReader, offset: int) -> Readable:
        """The content from ``offset``, its first ``offset`` bytes being stored already: they are
        hashed from the bundle and the source is asked for the rest only (a registry: a Range
        request); a source that cannot start there is read past them."""
        if offset == 0:
            return src
        if src.skip_unverified(offset):
            digester = Digester.for_digest(desc.digest)
            self._part.fh.flush()
            stream = ContentStream([(self._part_path(c.part), c) for c in self._prefix(desc.digest)], 0, self.path)
            while data := stream.read(READ_SIZE):
                digester.update(data)
            stream.close()
            return _Continued(src, digester, desc.digest, src.what)
        while src.position < offset:
            src.read(min(READ_SIZE, offset - src.position))
        return src

    def _forget(self, digest: str) -> None:
        """Take every record of ``digest`` in the open part out of the index (their bytes stay,
        unlisted): a prefix kept from an interrupted run that the rest proved wrong."""
        part = self._part
        dropped = [c for c in part.chunks if c.digest == digest]
        part.chunks[:] = [c for c in part.chunks if c.digest != digest]
        part.chunk_bytes -= sum(len(fmt.dumps(c.to_json())) + 1 for c in dropped)
        self._chunks.pop(digest, None)

    def _write_chunk(
        self, desc: Descriptor, codec: int, offset: int, pending: memoryview, src: Readable, out: _Pipeline
    ) -> tuple[ChunkEntry, memoryview, bool]:
        hlen = fmt.header_length(desc.digest, desc.media_type)
        start = out.begin_record(hlen)
        limit = None if self.split_size is None else self.split_size - self._index_reserve() - start - hlen
        sink = _ChunkSink(out, codec, self._cctx, limit, self.checkpoint)
        pending, done = sink.fill(pending, src)
        sink.finish()
        entry = ChunkEntry(
            desc.digest, desc.media_type, desc.size, fmt.CODEC_NAMES[codec], start, sink.stored,
            offset, sink.length, self._part.number,
        )
        crcs = self._part.crcs if self._signer is not None else None  # kept to the part's end: only to sign it

        def header(crc: int) -> bytes:  # on the pipeline's thread, once the payload is out
            if crcs is not None:
                crcs[start] = crc  # what a signature states about this record
            return fmt.encode_record_header(entry.header(crc))

        out.end_record(start, header)
        self._part.chunks.append(entry)
        self._part.chunk_bytes += len(fmt.dumps(entry.to_json())) + 1
        self.bytes_written += hlen + sink.stored
        return entry, pending, done

    def _rollback(self, number: int, pos: int, count: int, chunk_bytes: int, written: int) -> None:
        """Undo a failed record (or push): drop the parts started since ``mark`` and truncate back
        to where it began."""
        if self._stream is not None:  # what went out stays out, unlisted
            del self._part.chunks[count:]
            self._part.chunk_bytes = chunk_bytes
            return
        while self._part.number > number:
            part = self._parts.pop()
            part.fh.close()
            os.remove(part.path)
        part = self._part
        if part.fh.closed:
            part.fh = open(part.path, "r+b")
        part.fh.truncate(pos)
        part.fh.seek(pos)
        del part.chunks[count:]
        part.chunk_bytes, self.bytes_written = chunk_bytes, written

    def tag(self, repo: str, desc: Descriptor, tag: str) -> None:
        self.add_root(repo, desc, validate_tag(tag))

    def add_root(self, repo: str, desc: Descriptor, tag: str | None = None) -> None:
        """Record ``desc`` (a manifest already pushed) as a root of ``repo``, tagged or by digest."""
        with self._lock:
            self._add_root_locked(repo, desc, tag)

    def _add_root_locked(self, repo: str, desc: Descriptor, tag: str | None) -> None:
        self._check_open()
        validate_repository(repo)
        if not self.stored(desc.digest):
            raise BundleError(f"{self.path}: cannot add {repo}:{tag or desc.digest}: manifest {desc.digest} was not pushed first")
        media_type = self._chunks[desc.digest][0].media_type
        entry = CatalogEntry(repo, tag, desc.digest, media_type, self._platforms(desc.digest, media_type), desc.size)
        if self._catalog.get(entry.key) == entry:
            return
        self._write_small(fmt.ROOT, fmt.ROOT_TYPE, entry.to_json(), len(fmt.dumps(entry.to_json())) + 1)
        self._add_catalog(entry)

    def expect(self, desc: Descriptor) -> None:
        """Record ``desc`` as present at the destination already (a delta bundle leaves it out)."""
        with self._lock:
            self._check_open()
            if desc.digest not in self._expected:
                obj = desc.model_dump(mode="json", by_alias=True, exclude_none=True)
                self._write_small(fmt.EXPECT, fmt.EXPECT_TYPE, obj, len(fmt.dumps(obj)) + 1)
                self._add_expected(obj)

    def _read_back(self, digest: str, limit: int) -> bytes:
        self._part.fh.flush()
        chain = sorted(self._chunks[digest], key=lambda c: c.chunk_offset)
        stream = ContentStream([(self._part_path(c.part), c) for c in chain], 0, self.path)
        with VerifyingReader(stream, digest, chain[0].size) as reader:
            return reader.read_all(limit)

    def _platforms(self, digest: str, media_type: str) -> list[str]:
        if digest in self._facts:
            fact = self._facts[digest]
            if isinstance(fact, list):
                return fact
            if fact is None or not self.stored(fact):
                return []
            if fact in self._facts:
                return list(self._facts[fact] or [])
        view = parse_manifest(self._read_back(digest, MAX_MANIFEST_SIZE), media_type, digest)
        if view.is_index:
            return sorted({str(d.platform) for d in view.manifests if d.platform})
        if view.config is None or not self.stored(view.config.digest):
            return []
        try:
            config = Platform.model_validate_json(self._read_back(view.config.digest, MAX_MANIFEST_SIZE))
        except ValueError:
            return []  # an artifact's config, not an image's
        return [str(config)]

    # ---- closing ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BundleError(f"{self.path}: the bundle writer is closed")

    def close(self) -> None:
        """Write the final index, marked complete: call only after a successful export."""
        with self._lock, self._os_errors(), self._releasing():
            if not self._closed:
                self._closed = True
                self._finish_part(complete=True)

    def abort(self) -> None:
        """Write an index marked incomplete (the export can be continued later)."""
        with self._lock, self._releasing():
            if not self._closed:
                self._closed = True
                self._finish_part(complete=False)

    @contextlib.contextmanager
    def _releasing(self):
        """Let the next writer in once this one is done (even when the last write failed)."""
        try:
            yield
        finally:
            if self._file_lock is not None:
                self._file_lock.release()

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.abort()
        except OSError:
            pass  # e.g. the disk is full: no index, which reopening or 'transfer recover' handles


__all__ = ["BundleWriter", "UnsupportedManifestError"]
