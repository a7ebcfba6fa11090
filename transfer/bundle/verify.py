"""Verification of a bundle: every record's bytes against its checksum, length and digest, every
index against its checksum, and every manifest's children present (or expected at destination)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from pydantic import BaseModel, Field, computed_field

from transfer.bundle import format as fmt
from transfer.bundle.format import ChunkEntry, IndexDoc
from transfer.bundle.reader import BundleReader, LoadedPart
from transfer.bundle.stream import Record, apply_small_record, iter_records, open_content
from transfer.digest import READ_SIZE, Digester, Readable
from transfer.errors import TransferError
from transfer.models import MAX_MANIFEST_SIZE, is_manifest_type, parse_manifest
from transfer.reports import SignatureStatus
from transfer.store import read_manifest


class Problem(BaseModel):
    digest: str | None  # the content at fault, when one is
    message: str

    def __str__(self) -> str:
        return f"{self.digest}: {self.message}" if self.digest else self.message


class VerifyReport(BaseModel):
    """What ``transfer.verify`` found; its JSON is what ``transfer verify --json`` prints."""

    bundle: str
    problems: list[Problem] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # not errors: e.g. parts not present here
    records: int = 0
    bytes: int = 0
    complete: bool = False
    damaged_index: bool = Field(default=False, exclude=True)  # an index is missing or damaged (recover rebuilds it)
    repaired_parts: list[int] = Field(default_factory=list, exclude=True)  # parts whose index --repair rebuilt
    signature: SignatureStatus | None = None  # None: not signed, and no key given

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)


def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Check the bundle at ``path``. Given one part ``NAME.00N`` of a split set, check that part's
    records (children found in other parts present count as present)."""
    reader = BundleReader(path, recover=True)
    report = VerifyReport(bundle=reader.path, complete=reader.complete)
    only = reader.path if reader.split and reader.path != reader.base else None
    spanning: dict[str, Digester] = {}
    for part in reader.parts:
        if only and part.path != only:
            continue
        if part.index_problem:
            report.damaged_index = True
            report.problems.append(Problem(digest=None, message=f"index unusable: {part.index_problem}"))
        if part.scan and part.scan.problem:
            report.problems.append(Problem(digest=None, message=f"records after offset {part.scan.end} lost: {part.scan.problem}"))
        for entry in sorted(part.doc.chunks, key=lambda c: c.offset):
            _check_chunk(part, entry, spanning, report)
    _check_completeness(reader, only, report)
    all_parts = not reader.split or reader.info.parts_expected == len(reader.parts)
    _check_graph(reader, report, strict=all_parts and not only)
    return report


def _check_chunk(part: LoadedPart, entry: ChunkEntry, spanning: dict[str, Digester], report: VerifyReport) -> None:
    digester = Digester.for_digest(entry.digest) if entry.chunk_offset == 0 else spanning.pop(entry.digest, None)
    try:
        reader = open_content(part.path, entry, 0, part.path)
        try:
            while data := reader.read(READ_SIZE):
                if digester is not None:
                    digester.update(data)
        finally:
            reader.close()
    except TransferError as exc:
        report.problems.append(Problem(digest=entry.digest, message=str(exc)))
        return
    report.records += 1
    report.bytes += entry.chunk_length
    if digester is None:
        return
    if entry.chunk_offset + entry.chunk_length < entry.size:
        spanning[entry.digest] = digester
    elif digester.digest() != entry.digest:
        report.problems.append(Problem(digest=entry.digest, message=f"content does not match its digest (got {digester.digest()})"))


def _check_completeness(reader: BundleReader, only: str | None, report: VerifyReport) -> None:
    info = reader.info
    if info.complete:
        return
    if reader.split and not any(p.index_problem for p in reader.parts) and info.parts_expected is None:
        report.notes.append(
            f"parts present: {', '.join(map(str, info.parts_present))}; the last part is not here "
            "(or the export did not finish): checked what is present"
        )
        return
    for why in info.why_incomplete:
        if only:
            report.notes.append(f"INCOMPLETE: {why}")
        else:
            report.problems.append(Problem(digest=None, message=f"INCOMPLETE: {why}"))


def _check_graph(reader: BundleReader, report: VerifyReport, strict: bool) -> None:
    """Every manifest's children must be stored or expected; every root must be stored."""
    expected = {d.digest for d in reader.expected}
    for entry in reader.entries:
        if not reader.has(entry.digest):
            _missing(report, strict, Problem(digest=entry.digest, message=f"root {entry.repository}:{entry.tag or entry.digest} is not in the bundle"))
    for digest in reader.digests():
        desc = reader.descriptor(digest)
        if not desc.is_manifest or not reader.has(digest):
            continue
        try:
            view = parse_manifest(read_manifest(reader, "", desc, MAX_MANIFEST_SIZE), desc.media_type, digest)
        except TransferError as exc:
            report.problems.append(Problem(digest=digest, message=f"manifest unreadable: {exc}"))
            continue
        for child in view.children():
            if not reader.has(child.digest) and child.digest not in expected:
                _missing(report, strict, Problem(digest=child.digest, message=f"missing: referenced by manifest {digest}"))


def _missing(report: VerifyReport, strict: bool, problem: Problem) -> None:
    if strict:
        report.problems.append(problem)
    else:
        report.notes.append(f"{problem} (may be in a part not present)")


def verify_stream(stream: Readable, name: str = "-", keys: Sequence[Any] = ()) -> VerifyReport:
    """Check a bundle read once, front to back (a pipe): every record's checksum, length and
    digest, every index against the records met, and every manifest's children present (or
    expected). Memory: one record at a time, and the children of each manifest. ``keys``
    (``transfer.keys.PublicKey``): every part must be signed by one of them, its statement
    recomputed from the records met equal to the signed one."""
    from transfer.bundle.signing import StreamParts

    report = VerifyReport(bundle=name)
    seen = _StreamSeen(signatures=StreamParts())
    try:
        for rec in iter_records(stream, name):
            _check_record(rec, seen, report)
    except TransferError as exc:
        report.problems.append(Problem(digest=None, message=f"stream cut short or damaged: {exc}"))
        return report
    _stream_signatures(seen, report, keys)
    report.complete = seen.index is not None and seen.index.complete
    if not report.complete:
        report.problems.append(Problem(digest=None, message="INCOMPLETE: the export did not finish (no index marked complete)"))
    _check_stream_graph(seen, report)
    return report


@dataclass
class _StreamSeen:
    stored: dict[str, int] = field(default_factory=dict)  # digest -> bytes seen from 0
    children: dict[str, list[str]] = field(default_factory=dict)  # manifest -> its children
    listed: list[tuple[int, int, str, int]] = field(default_factory=list)  # (part, offset, digest, chunk offset)
    index: IndexDoc | None = None
    doc: IndexDoc = field(default_factory=lambda: IndexDoc(1, "", False, False, None, "", "", "", [], [], []))
    digester: tuple[str, Digester] | None = None
    signatures: Any = None  # transfer.bundle.signing.StreamParts


def _check_record(rec: Record, seen: _StreamSeen, report: VerifyReport) -> None:
    h = rec.header
    if h.type == fmt.INDEX:
        seen.index = fmt.decode_index(rec.read_small(), rec.offset, report.bundle)
        met = {(p, o, d, c) for p, o, d, c in seen.listed if p == rec.part}
        if {(rec.part, c.offset, c.digest, c.chunk_offset) for c in seen.index.chunks} != met:
            report.problems.append(Problem(digest=None, message=f"part {rec.part}: the index does not list the records met"))
        seen.signatures.index(report.bundle, seen.index)
        return
    if h.type != fmt.CONTENT:
        small = rec.read_small()
        apply_small_record(seen.doc, h, small, f"{report.bundle} offset {rec.offset}")
        seen.signatures.record(rec.part, rec.offset, h, small, seen.doc.plan)
        return
    seen.signatures.record(rec.part, rec.offset, h, None, None)
    if h.chunk_offset == 0:
        seen.digester = (h.digest, Digester.for_digest(h.digest))
    keep = is_manifest_type(h.media_type) and h.size <= MAX_MANIFEST_SIZE
    data = _read_chunk(rec, seen, keep)
    seen.listed.append((rec.part, rec.offset, h.digest, h.chunk_offset))
    report.records += 1
    report.bytes += h.chunk_length
    if seen.stored.get(h.digest, 0) == h.chunk_offset:
        seen.stored[h.digest] = h.chunk_offset + h.chunk_length
    if h.chunk_offset + h.chunk_length == h.size and seen.digester and seen.digester[0] == h.digest:
        if (actual := seen.digester[1].digest()) != h.digest:
            report.problems.append(Problem(digest=h.digest, message=f"content does not match its digest (got {actual})"))
            seen.stored.pop(h.digest, None)
        elif keep and data is not None:
            view = parse_manifest(data, h.media_type, h.digest)
            seen.children[h.digest] = [c.digest for c in view.children()]


def _stream_signatures(seen: _StreamSeen, report: VerifyReport, keys: Sequence[Any]) -> None:
    from transfer.bundle.signing import check_part, status

    checks = seen.signatures.checks
    if not keys and not any(c.signed for c in checks):
        return
    failed = False
    for check in checks if keys else ():
        try:
            check_part(check, keys)
        except TransferError as exc:
            failed = True
            report.problems.append(Problem(digest=None, message=f"signature: {exc}"))
    report.signature = status(checks, checked=bool(keys) and not failed)


def _read_chunk(rec: Record, seen: _StreamSeen, keep: bool) -> bytes | None:
    reader, pieces = rec.open(), []
    while data := reader.read(READ_SIZE):
        if seen.digester is not None:
            seen.digester[1].update(data)
        if keep:
            pieces.append(data)
    return b"".join(pieces) if keep and rec.header.whole else None


def _check_stream_graph(seen: _StreamSeen, report: VerifyReport) -> None:
    expected = {d["digest"] for d in seen.doc.expected}
    have = {d for d, n in seen.stored.items() if seen.index is None or any(
        c.digest == d and c.chunk_offset + c.chunk_length == c.size == n for c in seen.index.chunks)}
    for entry in seen.doc.catalog:
        if entry.digest not in have:
            report.problems.append(Problem(digest=entry.digest, message=f"root {entry.repository}:{entry.tag or entry.digest} is not in the bundle"))
    for digest, children in seen.children.items():
        for child in children:
            if child not in have and child not in expected:
                report.problems.append(Problem(digest=child, message=f"missing: referenced by manifest {digest}"))
