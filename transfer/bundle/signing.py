"""Signed bundles: the statement each part's SIGNATURE record signs, the record itself, finding it
in a part, checking it, and signing an existing bundle in place (docs/bundle-format.md,
"Signatures").

The **statement** of a part is canonical JSON of what a reader of that part relies on: every
CONTENT record the index lists (digest, chunk offset and length, codec, stored length, payload
CRC), the catalog, the EXPECT descriptors, the plan (its digest, and every image's repository,
tags and root), the export's metadata and the part's place in its set (set id, part number,
completeness, and the digest of the previous part's statement). A verifier recomputes it from
the part and compares it byte for byte with the signed one, then checks the signature; with every
record read back against its digest (``transfer verify``), the bundle is then exactly what was
signed.

Keys and signatures come from ``transfer.keys`` (cryptography, imported only when a key is used).
"""

from __future__ import annotations

import base64
import binascii
import os
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Sequence

from transfer.bundle import format as fmt
from transfer.bundle.format import BundlePlan, IndexDoc, RecordHeader
from transfer.bundle.stream import PayloadReader, read_exact, read_record_header
from transfer.digest import digest_bytes
from transfer.errors import BundleError, CorruptBundleError, SignatureError
from transfer.untrusted import load_json

if TYPE_CHECKING:
    from transfer.bundle.reader import BundleReader, LoadedPart
    from transfer.keys import PrivateKey, PublicKey
    from transfer.reports import SignatureStatus

SIGNATURE_TYPE = "application/vnd.transfer.bundle.signature.v1+json"
STATEMENT_FORMAT = "transfer-bundle-statement"
MAX_SIGNATURE = 1024  # bytes of a DER ECDSA or Ed25519 signature, with room


# ---- the statement ---------------------------------------------------------------------------


def statement(doc: IndexDoc, crcs: dict[int, int], plan: BundlePlan | None, previous: str | None) -> bytes:
    """The canonical statement of one part: ``doc`` is its index, ``crcs`` the payload CRC of the
    record at each offset the index lists, ``plan`` the plan a reader of the part uses (the
    index's, else the part's last PLAN record), ``previous`` the sha256 of the statement of the
    part before (None for part 1)."""
    records = []
    for c in sorted(doc.chunks, key=lambda c: (c.digest, c.chunk_offset)):
        if c.offset not in crcs:
            raise CorruptBundleError(f"part {doc.part}: the index lists a record at offset {c.offset} that is not there")
        records.append([c.digest, c.chunk_offset, c.chunk_length, c.codec, c.stored_length, crcs[c.offset]])
    plan_json = plan.to_json() if plan is not None else None
    return fmt.dumps({
        "format": STATEMENT_FORMAT, "version": doc.version, "set_id": doc.set_id, "part": doc.part,
        "complete": doc.complete, "final": doc.final, "parts": doc.parts, "previous": previous,
        "created": doc.created, "source_registry": doc.source_registry, "tool_version": doc.tool_version,
        "records": records,
        "plan": None if plan_json is None else digest_bytes(fmt.dumps(plan_json)),
        "images": [{"repository": i.dst_repo, "tags": list(i.tags), "root": i.root.digest}
                   for i in (plan.images if plan is not None else ())],
        "catalog": [e.to_json() for e in sorted(doc.catalog, key=lambda e: e.key)],
        "expected": sorted(doc.expected, key=lambda d: d["digest"]),
    })


def statement_difference(signed: bytes, actual: bytes) -> str:
    """Which top-level field of two statements differs (for the one-line refusal)."""
    try:
        a, b = load_json(signed, "statement", CorruptBundleError, fmt.MAX_INDEX_SIZE), load_json(actual, "statement", CorruptBundleError, fmt.MAX_INDEX_SIZE)
    except CorruptBundleError:
        return "the signed statement is not JSON"
    if not isinstance(a, dict) or not isinstance(b, dict):
        return "the signed statement is not a JSON object"
    names = {"records": "the records", "catalog": "the catalog (images and tags)", "images": "the plan's images",
             "plan": "the plan", "expected": "the blobs expected at the destination", "part": "the part number",
             "set_id": "the set id", "previous": "the previous part", "complete": "completeness",
             "final": "completeness", "parts": "the number of parts"}
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{names.get(key, key)} differ{'s' if key not in names or not names[key].endswith('s') else ''}"
    return "the statement is not encoded canonically"


def statement_digest(data: bytes) -> str:
    return digest_bytes(data)


# ---- the SIGNATURE record ----------------------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    """A decoded SIGNATURE record: who signed (algorithm, key fingerprint), the signature, and the
    statement bytes it signs, verbatim."""

    algorithm: str
    key: str
    signature: bytes
    statement: bytes


def signature_payload(key: PrivateKey, data: bytes) -> bytes:
    from transfer import keys

    return fmt.dumps({"algorithm": key.algorithm, "key": key.fingerprint,
                      "signature": base64.b64encode(keys.sign(key, data)).decode(), "statement": data.decode("ascii")})


def signature_record(payload: bytes) -> bytes:
    h = RecordHeader(fmt.SIGNATURE, fmt.NONE, digest_bytes(payload), SIGNATURE_TYPE, len(payload), 0, len(payload),
                     len(payload), zlib.crc32(payload))
    return fmt.encode_record_header(h) + payload


def decode_signature(data: bytes, what: str) -> Signed:
    from transfer.keys import ALGORITHMS

    obj = load_json(data, f"{what}: signature record", CorruptBundleError, fmt.MAX_INDEX_SIZE)
    if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in ("algorithm", "key", "signature", "statement")):
        raise CorruptBundleError(f"{what}: malformed signature record")
    if obj["algorithm"] not in ALGORITHMS:
        raise SignatureError(f"{what}: signed with algorithm {obj['algorithm'][:40]!r}, which this build does not know")
    if not obj["statement"].isascii() or not obj["key"].startswith("sha256:") or len(obj["key"]) != 71:
        raise CorruptBundleError(f"{what}: malformed signature record")
    try:
        sig = base64.b64decode(obj["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise CorruptBundleError(f"{what}: the signature is not base64") from None
    if not 0 < len(sig) <= MAX_SIGNATURE:
        raise CorruptBundleError(f"{what}: the signature has an impossible length ({len(sig)} bytes)")
    return Signed(obj["algorithm"], obj["key"], sig, obj["statement"].encode("ascii"))


# ---- walking a part's records ------------------------------------------------------------------


@dataclass
class PartWalk:
    """What walking one part's records from the start found (headers only, but the payloads of the
    PLAN and SIGNATURE records): each record's payload CRC by offset, the last plan, the last
    signature, and where the walk stopped (at the INDEX record, or at the first record that is
    torn or damaged)."""

    crcs: dict[int, int] = field(default_factory=dict)
    headers: dict[int, RecordHeader] = field(default_factory=dict)
    plan: BundlePlan | None = None
    signature: tuple[int, bytes] | None = None  # (offset, payload) of the last signature record
    last_type: int | None = None  # of the last record before where the walk stopped
    last_offset: int = 0
    end: int = fmt.FILE_HEADER_SIZE  # after the last complete record
    stopped_at_index: bool = False
    problem: str | None = None

    @property
    def signed_last(self) -> bool:
        """The last record before the index is a SIGNATURE record."""
        return self.last_type == fmt.SIGNATURE and self.signature is not None


def walk_part(path: str, stop: int | None = None) -> PartWalk:
    """Walk the records of the part at ``path`` (from its first record to its INDEX record, or to
    ``stop``, or to the first damaged record)."""
    walk = PartWalk()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        fmt.decode_file_header(read_exact(fh, fmt.FILE_HEADER_SIZE, path), path)
        while walk.end < size and (stop is None or walk.end <= stop):  # at ``stop``: is it the INDEX?
            try:
                if not _walk_one(fh, walk, path):
                    break
            except CorruptBundleError as exc:
                walk.problem = str(exc)
                break
    return walk


def _walk_one(fh: BinaryIO, walk: PartWalk, path: str) -> bool:
    where = f"{path} offset {walk.end}"
    fh.seek(walk.end)
    h = read_record_header(fh, where)
    if h is None:
        return False
    if h.type == fmt.INDEX:
        walk.stopped_at_index = True
        return False
    if h.type in (fmt.PLAN, fmt.SIGNATURE):
        data = read_exact(PayloadReader(fh, h.stored_length, h.payload_crc, where), h.stored_length, where)
        if len(data) != h.stored_length:
            raise CorruptBundleError(f"{where}: {fmt.RECORD_TYPES[h.type]} record payload truncated")
        if zlib.crc32(data) != h.payload_crc:
            raise CorruptBundleError(f"{where}: {fmt.RECORD_TYPES[h.type]} record payload checksum mismatch")
        if digest_bytes(data) != h.digest:
            raise CorruptBundleError(f"{where}: {fmt.RECORD_TYPES[h.type]} record digest mismatch")
        if h.type == fmt.PLAN:
            walk.plan = fmt.decode_plan(load_json(data, f"{where}: plan", CorruptBundleError, fmt.MAX_INDEX_SIZE), where)
        else:
            walk.signature = (walk.end, data)
    else:
        fh.seek(h.stored_length, 1)
        if fh.tell() > os.fstat(fh.fileno()).st_size:
            raise CorruptBundleError(f"{where}: payload truncated")
    walk.crcs[walk.end] = h.payload_crc
    walk.headers[walk.end] = h
    walk.last_type, walk.last_offset = h.type, walk.end
    walk.end += h.length + h.stored_length
    return True


def header_crcs(walk: PartWalk, doc: IndexDoc, what: str) -> dict[int, int]:
    """The payload CRC of each record the index lists, from the walk, checking that the header
    found at each offset is the record the index describes."""
    crcs = {}
    for c in doc.chunks:
        h = walk.headers.get(c.offset)
        if h is None or h.type != fmt.CONTENT or h != c.header(h.payload_crc):
            raise CorruptBundleError(f"{what}: the index lists a record at offset {c.offset} that is not there")
        crcs[c.offset] = h.payload_crc
    return crcs


def part_plan(doc: IndexDoc, walk: PartWalk) -> BundlePlan | None:
    """The plan a reader of this part uses: the index's (split sets), else its last PLAN record."""
    return doc.plan if doc.plan is not None else walk.plan


# ---- checking ---------------------------------------------------------------------------------


@dataclass
class PartCheck:
    """One part's signature, as found and (with keys) checked."""

    number: int
    path: str
    signed: bool
    key: str | None = None
    algorithm: str | None = None
    statement: bytes = b""  # recomputed from the part
    signed_statement: bytes | None = None
    signature: bytes | None = None
    problem: str | None = None  # why it does not check (with keys), or why it cannot be read
    parts: tuple[IndexDoc, dict[int, int], BundlePlan | None] | None = None  # what the statement is made of
    previous_checked: bool = True  # False: the part before is not present, its link was taken as signed

    def compute(self, previous: str | None) -> None:
        if self.parts is not None:
            self.statement = statement(*self.parts, previous)


def inspect_part(part: LoadedPart) -> PartCheck:
    """Read the signature of a part and what its statement is made of (the statement itself needs
    the previous part's: see ``inspect_bundle``); no key is checked here."""
    what = part.path
    if part.index_problem:
        return PartCheck(part.number, what, False, problem=f"{what}: the index is unusable ({part.index_problem})")
    walk = walk_part(part.path, part.records_end)
    check = PartCheck(part.number, what, False)
    try:
        if walk.problem:
            raise CorruptBundleError(walk.problem)
        if walk.end != part.records_end or not walk.stopped_at_index:
            raise CorruptBundleError(f"{what}: the records do not end where the index starts (a signing was "
                                     "interrupted? sign it again)")
        check.parts = (part.doc, header_crcs(walk, part.doc, what), part_plan(part.doc, walk))
        if walk.signature is None:
            check.problem = f"{what}: not signed (no signature record)"
            return check
        if not walk.signed_last:
            check.problem = f"{what}: records were added after the signature (it is not the last record before the index)"
            return check
        signed = decode_signature(walk.signature[1], what)
    except (CorruptBundleError, SignatureError) as exc:
        check.problem = str(exc)
        return check
    check.signed, check.key, check.algorithm = True, signed.key, signed.algorithm
    check.signed_statement, check.signature = signed.statement, signed.signature
    return check


def check_part(check: PartCheck, keys: Sequence[PublicKey]) -> None:
    """Raise SignatureError unless the part is signed by one of ``keys`` and its recomputed
    statement is the signed one, byte for byte."""
    from transfer import keys as keymod

    if check.problem is not None:
        raise SignatureError(check.problem)
    assert check.signed_statement is not None and check.signature is not None and check.key is not None
    if check.signed_statement != check.statement:
        raise SignatureError(f"{check.path}: the bundle does not match what was signed: "
                             f"{statement_difference(check.signed_statement, check.statement)}")
    try:
        found = keymod.verify_any(keys, check.signature, check.signed_statement, fingerprint=check.key)
    except SignatureError as exc:
        raise SignatureError(f"{check.path}: {exc}") from None
    if found.algorithm != check.algorithm:
        raise SignatureError(f"{check.path}: the signature record names {check.algorithm}, but key {found.fingerprint} is {found.algorithm}")


def inspect_bundle(reader: BundleReader, only: str | None = None) -> list[PartCheck]:
    """Every part present (or only the part at ``only``), each with its statement recomputed. A
    part's statement names the previous part's: where that part is present, from its recomputed
    statement; where it is not, the link the part claims is taken (and ``previous_checked`` says so)."""
    checks, previous = [], None
    numbers = {p.number for p in reader.parts}
    for part in reader.parts:
        check = inspect_part(part)
        if part.number > 1 and part.number - 1 not in numbers:
            previous = _claimed_previous(check.signed_statement) if check.signed_statement else None
            check.previous_checked = False
        check.compute(previous if part.number > 1 else None)
        previous = statement_digest(check.statement) if check.parts is not None else None
        if only is None or part.path == only:
            checks.append(check)
    return checks


def _claimed_previous(signed: bytes) -> str | None:
    try:
        obj = load_json(signed, "statement", CorruptBundleError, fmt.MAX_INDEX_SIZE)
    except CorruptBundleError:
        return None
    prev = obj.get("previous") if isinstance(obj, dict) else None
    return prev if isinstance(prev, str) else None


def check_bundle(reader: BundleReader, keys: Sequence[PublicKey], only: str | None = None) -> list[PartCheck]:
    """Check the signature of every part present (or of ``only``); SignatureError at the first
    part that is unsigned, signed by another key, or does not match what was signed."""
    checks = inspect_bundle(reader, only)
    for check in checks:
        check_part(check, keys)
    return checks


def status(checks: list[PartCheck], *, checked: bool) -> SignatureStatus:
    """The report's ``signature`` for the parts inspected (``checked``: with trusted keys, all passed)."""
    from transfer.reports import SignatureStatus

    notes = [f"part {c.number}: the part before it is not here, so the link to it was not checked"
             for c in checks if not c.previous_checked]
    if not checked and any(c.signed for c in checks):
        notes.append("the signature was not checked: pass --key PUB (keys=) to check it")
    return SignatureStatus(signed=bool(checks) and all(c.signed for c in checks), checked=checked,
                           keys=sorted({c.key for c in checks if c.key}),
                           algorithm=next((c.algorithm for c in checks if c.algorithm), None),
                           parts=[c.number for c in checks], notes=notes)


def found_signature(checks: list[PartCheck]) -> SignatureStatus | None:
    """What ``ls`` says of the parts' signatures: None when no part carries one (not checked)."""
    if not any(c.signed for c in checks):
        return None
    found = status(checks, checked=False)
    found.notes[:0] = [f"part {c.number}: {c.problem}" for c in checks if not c.signed and c.problem]
    return found


class StreamParts:
    """Signatures of a bundle read front to back (``verify -``): what each part's records said,
    checked when its INDEX arrives."""

    def __init__(self) -> None:
        self.checks: list[PartCheck] = []
        self._reset(0)
        self._previous: str | None = None

    def _reset(self, number: int) -> None:
        self.number, self.crcs = number, dict[int, int]()
        self.plan: BundlePlan | None = None
        self.signature: bytes | None = None
        self.last_type: int | None = None

    def record(self, part: int, offset: int, h: RecordHeader, data: bytes | None, plan: BundlePlan | None) -> None:
        """A record other than INDEX (``data``: the payload of a small record, ``plan``: the plan
        a PLAN record holds)."""
        if part != self.number:
            self._reset(part)
        if h.type == fmt.CONTENT:
            self.crcs[offset] = h.payload_crc
        elif h.type == fmt.SIGNATURE:
            self.signature = data
        elif h.type == fmt.PLAN:
            self.plan = plan
        self.last_type = h.type

    def index(self, name: str, doc: IndexDoc) -> PartCheck:
        """The part's INDEX arrived: its signature as found, its statement recomputed."""
        what = f"{name} part {doc.part}"
        check = PartCheck(doc.part, what, False)
        try:
            check.statement = statement(doc, self.crcs, doc.plan if doc.plan is not None else self.plan,
                                        self._previous if doc.part > 1 else None)
            self._previous = statement_digest(check.statement)
            if self.signature is None:
                check.problem = f"{what}: not signed (no signature record)"
            elif self.last_type != fmt.SIGNATURE:
                check.problem = f"{what}: records were added after the signature (it is not the last record before the index)"
            else:
                signed = decode_signature(self.signature, what)
                check.signed, check.key, check.algorithm = True, signed.key, signed.algorithm
                check.signed_statement, check.signature = signed.statement, signed.signature
        except (CorruptBundleError, SignatureError) as exc:
            check.problem = str(exc)
        self.checks.append(check)
        self._reset(0)
        return check


# ---- signing ----------------------------------------------------------------------------------


def write_tail(path: str, start: int, doc: IndexDoc, payload: bytes) -> None:
    """Replace everything of the part at ``path`` from ``start`` (after its last record, or where
    its old signature begins) with a SIGNATURE record, the INDEX record and the trailer, so that a
    kill at any moment leaves a part that still reads (by its trailer) and can be signed again:
    first the new tail goes after the current end (beyond where the final one will end), then the
    final tail is written at ``start`` and the file is cut after it."""
    from transfer.bundle.writer import index_bytes

    sig = signature_record(payload)
    index = fmt.encode_index(doc)
    flags = fmt.TRAILER_COMPLETE | fmt.TRAILER_FINAL if doc.complete else 0

    def tail(at: int) -> bytes:
        return sig + index_bytes(index, at + len(sig), flags)

    final = tail(start)
    with open(path, "r+b") as fh:
        size = os.fstat(fh.fileno()).st_size
        far = max(size, start + len(final))
        fh.seek(far)
        fh.write(tail(far))
        fh.flush()
        os.fsync(fh.fileno())
        fh.seek(start)
        fh.write(final)
        fh.flush()
        os.fsync(fh.fileno())
        fh.truncate(start + len(final))
        fh.flush()
        os.fsync(fh.fileno())


def sign_part(part: LoadedPart, key: PrivateKey, previous: str | None) -> tuple[bytes, bool]:
    """Sign one part in place (replacing its signature); (its statement, whether it replaced one)."""
    what = part.path
    walk = walk_part(part.path, part.records_end)
    body = statement(part.doc, header_crcs(walk, part.doc, what), part_plan(part.doc, walk), previous)
    replaced = walk.signed_last
    start = walk.last_offset if replaced else walk.end
    if max((c.end for c in part.doc.chunks), default=0) > start:
        raise CorruptBundleError(f"{what}: the index lists records after the last one found")
    write_tail(part.path, start, part.doc, signature_payload(key, body))
    return body, replaced


def sign_bundle(path: str | os.PathLike[str], key: PrivateKey) -> tuple[list[int], int]:
    """Sign every part of the complete bundle at ``path`` (holding its lock); (the parts signed,
    how many already had a signature, now replaced)."""
    from transfer.bundle.lock import BundleLock
    from transfer.bundle.reader import BundleReader, find_parts

    with BundleLock(find_parts(path)[0]):
        reader = BundleReader(path)
        if not reader.info.complete:
            raise BundleError(f"{reader.path}: only a complete bundle can be signed ("
                              + "; ".join(reader.info.why_incomplete) + ")")
        if reader.info.version < 2:
            raise BundleError(f"{reader.path}: format version {reader.info.version} has no signature record; "
                              "export it again with this version of transfer to sign it")
        previous, replaced = None, 0
        for part in reader.parts:
            body, again = sign_part(part, key, previous)
            previous, replaced = statement_digest(body), replaced + again
        return [p.number for p in reader.parts], replaced


def load_signing_key(key: Any) -> PrivateKey:
    """A private key: a path (its passphrase from the environment, the terminal or standard
    input), or a ``transfer.keys.PrivateKey`` already loaded."""
    from transfer.keys import PrivateKey, load_private_key

    return key if isinstance(key, PrivateKey) else load_private_key(key)


def load_trusted_keys(keys: Sequence[Any]) -> list[PublicKey]:
    """Public keys: paths, or ``transfer.keys.PublicKey`` objects already loaded."""
    from transfer.keys import PublicKey, load_public_key

    found: dict[str, PublicKey] = {}
    for k in keys:
        pk = k if isinstance(k, PublicKey) else load_public_key(k)
        found.setdefault(pk.fingerprint, pk)
    return list(found.values())
