"""Bundle format, version 2 (reads 1 and 2): pure encode/decode of the fixed structures (no file I/O).

The layout is specified byte by byte in ``docs/bundle-format.md``; this module is its executable
form. Every integer is big-endian. Every decoder checks magic, lengths, ranges and checksums and
raises CorruptBundleError (damaged or hostile bytes) or UnsupportedBundleError (a version this
build does not know), naming what is wrong.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator

from transfer.digest import is_digest
from transfer.errors import CorruptBundleError, InvalidReferenceError, UnsupportedBundleError
from transfer.models import Descriptor
from transfer.reference import validate_repository, validate_tag
from transfer.store import ImagePlan
from transfer.untrusted import load_json, validate

MAGIC = b"\x89TRBNDL\n"
from transfer.limits import MIN_SPLIT_SIZE  # noqa: E402  (a part must hold its header, a record and its index)
VERSION = 2  # what this build writes (docs/bundle-format.md, "Versions")
VERSIONS = (1, 2)  # what it reads
# magic, version, header length, part number, set id, reserved; then CRC-32 of those 36 bytes.
FILE_HEADER = struct.Struct(">8sHHI16sI")
FILE_HEADER_SIZE = FILE_HEADER.size + 4  # 40

RECORD_MAGIC = b"TRC1"
# magic, type, codec, flags, size, chunk offset, chunk length, stored length, payload CRC-32,
# digest length, reserved, media type length. Then digest, media type, CRC-32 of all before it.
RECORD_FIXED = struct.Struct(">4sBBHQQQQIBBH")  # 48 bytes

END_MAGIC = b"\x89TRBEND\n"
# index record offset, index payload length, sha256 of the index payload, flags; then CRC-32 of
# those 52 bytes and END_MAGIC.
TRAILER = struct.Struct(">QQ32sI")
TRAILER_SIZE = TRAILER.size + 4 + len(END_MAGIC)  # 64
TRAILER_COMPLETE = 1
TRAILER_FINAL = 2

# Record types
META, CONTENT, ROOT, EXPECT, INDEX, PLAN, SIGNATURE = 1, 2, 3, 4, 5, 6, 7  # SIGNATURE: read by transfer.bundle.signing, skipped by readers
RECORD_TYPES = {META: "meta", CONTENT: "content", ROOT: "root", EXPECT: "expect", INDEX: "index", PLAN: "plan",
                SIGNATURE: "signature"}
# Codecs
NONE, ZSTD = 0, 1
CODEC_NAMES = {NONE: "none", ZSTD: "zstd"}
CODECS = {v: k for k, v in CODEC_NAMES.items()}

META_TYPE = "application/vnd.transfer.bundle.meta.v1+json"
ROOT_TYPE = "application/vnd.transfer.bundle.root.v1+json"
EXPECT_TYPE = "application/vnd.transfer.bundle.expect.v1+json"
INDEX_TYPE = "application/vnd.transfer.bundle.index.v1+json"
PLAN_TYPE = "application/vnd.transfer.bundle.plan.v1+json"

MAX_MEDIA_TYPE = 255  # RFC 6838: 127 + "/" + 127
MAX_CONTENT_SIZE = 1 << 50  # 1 PiB: more is a lie, not a layer
MAX_SMALL_RECORD = 1 << 20  # meta, root and expect payloads
MAX_INDEX_SIZE = 64 << 20  # ~200,000 records; bounds what a hostile index costs to parse
MAX_WINDOW_SIZE = 1 << 27  # zstd window a reader accepts (the zstd default limit)
MAX_PART_NUMBER = 999

COMPRESSED_SUFFIXES = ("+gzip", ".gzip", "+zstd", ".zstd", "+xz", ".xz", "+bzip2", ".bzip2")
COMPRESSED_MAGICS = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00", b"BZh")


def dumps(obj: Any) -> bytes:
    """The one JSON encoding used in bundles: sorted keys, no spaces, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def choose_codec(media_type: str, first_chunk: bytes) -> int:
    """ZSTD for compressible content; NONE for empty or already-compressed content."""
    if not first_chunk or media_type.endswith(COMPRESSED_SUFFIXES):
        return NONE
    if first_chunk.startswith(COMPRESSED_MAGICS):
        return NONE
    return ZSTD


# ---- file header -------------------------------------------------------------------------------


def encode_file_header(part: int, set_id: bytes, version: int = VERSION) -> bytes:
    body = FILE_HEADER.pack(MAGIC, version, FILE_HEADER_SIZE, part, set_id, 0)
    return body + struct.pack(">I", zlib.crc32(body))


@dataclass(frozen=True)
class FileHeader:
    part: int
    set_id: bytes
    version: int = VERSION


def decode_file_header(data: bytes, what: str) -> FileHeader:
    if len(data) < 10 or data[:8] != MAGIC:
        raise CorruptBundleError(f"{what}: not a transfer bundle (bad magic bytes)")
    (version,) = struct.unpack(">H", data[8:10])
    if version not in VERSIONS:
        raise UnsupportedBundleError(
            f"{what}: bundle format version {version} is not supported by this build (it reads "
            f"versions {', '.join(map(str, VERSIONS))}); use a newer transfer"
        )
    if len(data) < FILE_HEADER_SIZE:
        raise CorruptBundleError(f"{what}: file header is truncated")
    _, _, hlen, part, set_id, _ = FILE_HEADER.unpack(data[: FILE_HEADER.size])
    (crc,) = struct.unpack(">I", data[FILE_HEADER.size : FILE_HEADER_SIZE])
    if hlen != FILE_HEADER_SIZE or crc != zlib.crc32(data[: FILE_HEADER.size]):
        raise CorruptBundleError(f"{what}: file header checksum mismatch")
    if not 1 <= part <= MAX_PART_NUMBER:
        raise CorruptBundleError(f"{what}: part number {part} out of range")
    return FileHeader(part, set_id, version)


# ---- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordHeader:
    type: int
    codec: int
    digest: str
    media_type: str
    size: int  # uncompressed size of the whole content
    chunk_offset: int  # where this record's bytes start inside the content
    chunk_length: int  # uncompressed bytes in this record
    stored_length: int  # payload bytes following the header
    payload_crc: int

    @property
    def length(self) -> int:
        return header_length(self.digest, self.media_type)

    @property
    def whole(self) -> bool:
        return self.chunk_offset == 0 and self.chunk_length == self.size


def header_length(digest: str, media_type: str) -> int:
    return RECORD_FIXED.size + len(digest) + len(media_type.encode()) + 4


def encode_record_header(h: RecordHeader) -> bytes:
    d, m = h.digest.encode(), h.media_type.encode()
    body = RECORD_FIXED.pack(
        RECORD_MAGIC, h.type, h.codec, 0, h.size, h.chunk_offset, h.chunk_length,
        h.stored_length, h.payload_crc, len(d), 0, len(m),
    ) + d + m
    return body + struct.pack(">I", zlib.crc32(body))


def variable_length(fixed: bytes, what: str) -> int:
    """Bytes that follow the 48 fixed header bytes (digest, media type, CRC), checked first."""
    if fixed[:4] != RECORD_MAGIC:
        raise CorruptBundleError(f"{what}: bad record magic")
    dlen, mlen = fixed[44], struct.unpack(">H", fixed[46:48])[0]
    if dlen > 135 or mlen > MAX_MEDIA_TYPE:
        raise CorruptBundleError(f"{what}: record header lengths out of range")
    return dlen + mlen + 4


def decode_record_header(data: bytes, what: str) -> RecordHeader:
    """Decode and check a whole record header (fixed + variable part)."""
    if len(data) < RECORD_FIXED.size or len(data) != RECORD_FIXED.size + variable_length(data, what):
        raise CorruptBundleError(f"{what}: record header truncated")
    (crc,) = struct.unpack(">I", data[-4:])
    if crc != zlib.crc32(data[:-4]):
        raise CorruptBundleError(f"{what}: record header checksum mismatch")
    _, rtype, codec, _, size, off, clen, slen, pcrc, dlen, _, mlen = RECORD_FIXED.unpack(data[:48])
    try:
        digest = data[48 : 48 + dlen].decode("ascii")
        media_type = data[48 + dlen : 48 + dlen + mlen].decode("ascii")
    except UnicodeDecodeError:
        raise CorruptBundleError(f"{what}: record header has non-ASCII digest or media type") from None
    h = RecordHeader(rtype, codec, digest, media_type, size, off, clen, slen, pcrc)
    check_record_header(h, what)
    return h


def check_record_header(h: RecordHeader, what: str) -> None:
    if h.type not in RECORD_TYPES:
        raise CorruptBundleError(f"{what}: unknown record type {h.type}")
    if h.codec not in CODEC_NAMES:
        raise CorruptBundleError(f"{what}: unknown codec {h.codec}")
    if not is_digest(h.digest):
        raise CorruptBundleError(f"{what}: malformed digest {h.digest[:80]!r}")
    if not h.media_type.isprintable() or len(h.media_type) > MAX_MEDIA_TYPE:
        raise CorruptBundleError(f"{what}: malformed media type for {h.digest}")
    if h.size > MAX_CONTENT_SIZE or h.chunk_offset + h.chunk_length > h.size:
        raise CorruptBundleError(f"{what}: record for {h.digest} declares impossible sizes")
    if h.codec == NONE and h.stored_length != h.chunk_length:
        raise CorruptBundleError(f"{what}: stored record for {h.digest} has mismatched lengths")
    limit = MAX_INDEX_SIZE if h.type in (INDEX, PLAN, SIGNATURE) else MAX_SMALL_RECORD
    if h.type != CONTENT and (h.codec != NONE or not h.whole or h.size > limit):
        raise CorruptBundleError(f"{what}: {RECORD_TYPES[h.type]} record is malformed or too large")


# ---- trailer -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trailer:
    index_offset: int
    index_length: int
    index_sha256: bytes
    flags: int


def encode_trailer(t: Trailer) -> bytes:
    body = TRAILER.pack(t.index_offset, t.index_length, t.index_sha256, t.flags)
    return body + struct.pack(">I", zlib.crc32(body)) + END_MAGIC


def decode_trailer(data: bytes, file_size: int, what: str) -> Trailer:
    if len(data) != TRAILER_SIZE or data[-8:] != END_MAGIC:
        raise CorruptBundleError(f"{what}: no trailer at the end (the bundle was not closed)")
    body = data[: TRAILER.size]
    if struct.unpack(">I", data[TRAILER.size : TRAILER.size + 4])[0] != zlib.crc32(body):
        raise CorruptBundleError(f"{what}: trailer checksum mismatch")
    t = Trailer(*TRAILER.unpack(body))
    if t.index_length > MAX_INDEX_SIZE or t.index_offset + t.index_length > file_size - TRAILER_SIZE:
        raise CorruptBundleError(f"{what}: trailer points outside the file")
    return t


# ---- index -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)  # one per record / root: kept for a whole run
class ChunkEntry:
    """Where one content record lies: ``offset`` is the record header's offset in its part."""

    digest: str
    media_type: str
    size: int
    codec: str
    offset: int
    stored_length: int
    chunk_offset: int
    chunk_length: int
    part: int = field(default=1, compare=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        del d["part"]
        return d

    @property
    def end(self) -> int:
        return self.offset + header_length(self.digest, self.media_type) + self.stored_length

    def header(self, payload_crc: int = 0) -> RecordHeader:
        return RecordHeader(
            CONTENT, CODECS[self.codec], self.digest, self.media_type, self.size,
            self.chunk_offset, self.chunk_length, self.stored_length, payload_crc,
        )


@dataclass(frozen=True, slots=True)  # one per record / root: kept for a whole run
class CatalogEntry:
    """One root of the bundle: a tag (or an untagged root when ``tag`` is None) of a repository."""

    repository: str
    tag: str | None
    digest: str
    media_type: str
    platforms: list[str]
    size: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.repository, self.tag or "", "" if self.tag else self.digest)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _get(d: Any, key: str, kind: type, what: str) -> Any:
    value = d.get(key) if isinstance(d, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CorruptBundleError(f"{what}: field {key!r} missing or of the wrong type")
    return d[key]


def _nat(d: Any, key: str, what: str, limit: int = MAX_CONTENT_SIZE) -> int:
    v = _get(d, key, int, what)
    if not 0 <= v <= limit:
        raise CorruptBundleError(f"{what}: field {key!r} out of range ({v})")
    return v


def _digest(d: Any, key: str, what: str) -> str:
    v = _get(d, key, str, what)
    if not is_digest(v):
        raise CorruptBundleError(f"{what}: malformed digest {v[:80]!r}")
    return v


def _media_type(d: Any, key: str, what: str) -> str:
    v = _get(d, key, str, what)
    if len(v) > MAX_MEDIA_TYPE or not v.isascii() or not v.isprintable():
        raise CorruptBundleError(f"{what}: malformed media type {v[:80]!r}")
    return v


def _name(value: Any, check: Any, what: str) -> Any:
    """A repository name or tag from the bundle, checked like one typed by the user."""
    try:
        return check(value)
    except InvalidReferenceError as exc:
        raise CorruptBundleError(f"{what}: {exc}") from None


RECORD_FIELDS = ("digest", "media_type", "size", "codec", "offset", "stored_length", "chunk_offset", "chunk_length")
_RECORD_KEYS = frozenset(RECORD_FIELDS)


class _Packed(tuple):
    """An index record's fields as parsed (RECORD_FIELDS order), without a dict for each: an index
    may list 100,000 records, and they are all parsed before the first is checked."""

    __slots__ = ()


def _pack(d: dict[str, Any]) -> Any:
    """json object hook for an index: an object with exactly a record's fields, packed."""
    return _Packed(d[k] for k in RECORD_FIELDS) if len(d) == len(RECORD_FIELDS) and d.keys() == _RECORD_KEYS else d


def _draining(items: list[Any]) -> Iterator[Any]:
    """Each item of ``items`` in turn, dropped from the list as it is handed out (the parsed form
    then goes while the decoded one is built, not after all of them are)."""
    for n in range(len(items)):
        item, items[n] = items[n], None
        yield item


def decode_chunk_entry(d: Any, part: int, limit: int, what: str) -> ChunkEntry:
    if isinstance(d, _Packed):
        d = dict(zip(RECORD_FIELDS, d))
    if _get(d, "codec", str, what) not in CODECS:
        raise CorruptBundleError(f"{what}: unknown codec {d['codec'][:20]!r}")
    e = ChunkEntry(  # the strings once each (an index may list 100,000 records, kept while the bundle is open)
        sys.intern(_digest(d, "digest", what)), sys.intern(_media_type(d, "media_type", what)), _nat(d, "size", what),
        CODEC_NAMES[CODECS[d["codec"]]], _nat(d, "offset", what), _nat(d, "stored_length", what),
        _nat(d, "chunk_offset", what), _nat(d, "chunk_length", what), part,
    )
    check_record_header(e.header(), what)
    if e.offset < FILE_HEADER_SIZE or e.end > limit:
        raise CorruptBundleError(f"{what}: record of {e.digest} at offset {e.offset} lies outside the file")
    return e


def decode_catalog_entry(d: Any, what: str) -> CatalogEntry:
    tag = d.get("tag") if isinstance(d, dict) else None
    platforms = _get(d, "platforms", list, what)
    if (tag is not None and not isinstance(tag, str)) or not all(isinstance(p, str) for p in platforms):
        raise CorruptBundleError(f"{what}: malformed catalog entry")
    return CatalogEntry(
        sys.intern(_name(_get(d, "repository", str, what), validate_repository, what)),
        None if tag is None else _name(tag, validate_tag, what), sys.intern(_digest(d, "digest", what)),
        sys.intern(_media_type(d, "media_type", what)), [sys.intern(p) for p in platforms], _nat(d, "size", what),
    )


@dataclass(frozen=True)
class BundlePlan:
    """What the whole export carries, known before its first byte is written (see "Plan" in
    docs/bundle-format.md). Recorded in every part's index of a split set, so any part alone tells
    which repositories each of its blobs belongs to."""

    images: tuple[ImagePlan, ...]

    def contents(self) -> list[Descriptor]:
        """Every content once, sorted by digest."""
        seen = {c.digest: c for i in self.images for c in (*i.manifests, *i.blobs)}
        return [seen[d] for d in sorted(seen)]

    def to_json(self) -> dict[str, Any]:
        types, rows, images = self._json_parts()
        return {"media_types": types, "contents": list(rows), "images": list(images)}

    def pieces(self) -> Iterator[bytes]:
        """``dumps(self.to_json())`` in pieces (the same bytes): a plan of many images is never
        whole in memory as JSON, nor as a dict per image."""
        types, rows, images = self._json_parts()
        yield b'{"contents":'
        yield from list_pieces(map(dumps, rows))
        yield b',"images":'
        yield from list_pieces(map(dumps, images))
        yield b',"media_types":' + dumps(types) + b"}"

    def _json_parts(self) -> tuple[list[str], Iterator[list[Any]], Iterator[dict[str, Any]]]:
        contents = self.contents()
        types = sorted({c.media_type for c in contents})
        kind, where = {t: n for n, t in enumerate(types)}, {c.digest: n for n, c in enumerate(contents)}
        rows = ([c.digest, c.size, kind[c.media_type]] for c in contents)
        images = ({"repository": i.dst_repo, "tags": list(i.tags), "manifests": [where[c.digest] for c in i.manifests],
                   "blobs": [where[c.digest] for c in i.blobs]} for i in self.images)
        return types, rows, images


def decode_plan(d: Any, what: str) -> BundlePlan:
    types = [_media_type({"media_type": t}, "media_type", what) for t in _get(d, "media_types", list, what)]
    contents = []
    for row in _get(d, "contents", list, what):
        if not (isinstance(row, list) and len(row) == 3 and types):
            raise CorruptBundleError(f"{what}: malformed plan content {str(row)[:80]!r}")
        item = {"digest": row[0], "size": row[1], "type": row[2]}
        kind = types[_nat(item, "type", what, len(types) - 1)]
        # checked above: built without validating each field again (a plan may list 100,000)
        contents.append(Descriptor.model_construct(media_type=kind, digest=_digest(item, "digest", what),
                                                   size=_nat(item, "size", what)))
    return BundlePlan(tuple(_plan_image(i, contents, what) for i in _get(d, "images", list, what)))


def _plan_image(d: Any, contents: list[Descriptor], what: str) -> ImagePlan:
    tags = _get(d, "tags", list, what)
    picks = [_get(d, key, list, what) for key in ("manifests", "blobs")]
    if not all(isinstance(t, str) for t in tags) or not picks[0]:
        raise CorruptBundleError(f"{what}: malformed plan image")
    for n in (n for pick in picks for n in pick):
        if not (isinstance(n, int) and not isinstance(n, bool) and 0 <= n < len(contents)):
            raise CorruptBundleError(f"{what}: plan image refers to content {str(n)[:20]!r}, which is not listed")
    repo = _name(_get(d, "repository", str, what), validate_repository, what)
    manifests = [contents[n] for n in picks[0]]
    return ImagePlan(repo, repo, manifests[-1], [_name(t, validate_tag, what) for t in tags], manifests,
                     [contents[n] for n in picks[1]])


@dataclass
class IndexDoc:
    """The decoded index of one part (see docs/bundle-format.md, "Index")."""

    part: int
    set_id: str
    complete: bool
    final: bool
    parts: int | None
    created: str
    tool_version: str
    source_registry: str
    chunks: list[ChunkEntry]
    catalog: list[CatalogEntry]
    expected: list[dict[str, Any]]
    plan: BundlePlan | None = None  # split sets: the export plan, in every part
    version: int = VERSION  # of the part's file header


def encode_index(doc: IndexDoc) -> bytes:
    return b"".join(index_pieces(doc))


INDEX_BATCH = 256  # entries encoded per piece


def index_pieces(doc: IndexDoc) -> Iterator[bytes]:
    """The bytes of ``dumps`` of the index document, in pieces of at most INDEX_BATCH entries: a
    writer of a large bundle then never holds the whole JSON, nor a dict per record, at once."""
    fields: dict[str, Any] = {
        "format": "transfer-bundle", "version": doc.version, "part": doc.part, "set_id": doc.set_id,
        "complete": doc.complete, "final": doc.final, "parts": doc.parts, "created": doc.created,
        "tool_version": doc.tool_version, "source_registry": doc.source_registry,
    }
    plan = doc.plan
    lists: dict[str, Callable[[], Iterator[bytes]]] = {
        "records": lambda: list_pieces(dumps(c.to_json()) for c in sorted(doc.chunks, key=lambda c: (c.digest, c.chunk_offset))),
        "catalog": lambda: list_pieces(dumps(c.to_json()) for c in sorted(doc.catalog, key=lambda c: c.key)),
        "expected": lambda: list_pieces(map(dumps, sorted(doc.expected, key=lambda d: d["digest"]))),
    }
    if plan is not None:
        lists["plan"] = plan.pieces
    for n, key in enumerate(sorted([*fields, *lists])):  # the order of sort_keys
        head = (b"," if n else b"{") + dumps(key) + b":"
        if key in fields:
            yield head + dumps(fields[key])
        else:
            yield head
            yield from lists[key]()
    yield b"}"


def list_pieces(items: Iterable[bytes]) -> Iterator[bytes]:
    """A JSON list of the encoded ``items`` (as ``dumps`` writes it), INDEX_BATCH items a piece."""
    batch, sep = [b"["], b""
    for item in items:
        batch.append(sep + item)
        sep = b","
        if len(batch) >= INDEX_BATCH:
            yield b"".join(batch)
            batch = []
    yield b"".join(batch) + b"]"


def decode_index(data: bytes, limit: int, what: str) -> IndexDoc:
    """Parse and check an index; ``limit`` is the offset every record must end before."""
    d = load_json(data, f"{what}: index", CorruptBundleError, MAX_INDEX_SIZE, _pack)
    if not isinstance(d, dict) or d.get("format") != "transfer-bundle":
        raise CorruptBundleError(f"{what}: index is not a transfer bundle index")
    if d.get("version") not in VERSIONS:
        raise UnsupportedBundleError(f"{what}: index version {d.get('version')!r} is not supported")
    part = _nat(d, "part", what, MAX_PART_NUMBER)
    parts = d.get("parts")
    if parts is not None and not (isinstance(parts, int) and part <= parts <= MAX_PART_NUMBER):
        raise CorruptBundleError(f"{what}: index field 'parts' out of range")
    return IndexDoc(
        part, _get(d, "set_id", str, what), _get(d, "complete", bool, what),
        _get(d, "final", bool, what), parts, _get(d, "created", str, what),
        _get(d, "tool_version", str, what), _get(d, "source_registry", str, what),
        [decode_chunk_entry(e, part, limit, what) for e in _draining(_get(d, "records", list, what))],
        [decode_catalog_entry(e, what) for e in _draining(_get(d, "catalog", list, what))],
        [_expected(e, what) for e in _get(d, "expected", list, what)],
        decode_plan(d["plan"], f"{what} plan") if d.get("plan") is not None else None,
        d["version"],
    )


def _expected(d: Any, what: str) -> dict[str, Any]:
    _digest(d, "digest", what)
    _nat(d, "size", what)
    _media_type(d, "mediaType", what)
    validate(Descriptor, d, f"{what}: expected {d['digest']}", CorruptBundleError)
    return d
