"""Verification of a bundle: every record's bytes against its checksum, length and digest, every
index against its checksum, and every manifest's children present (or expected at destination)."""

from __future__ import annotations

import json
import os

from pydantic import BaseModel, Field, computed_field

from transfer.bundle.format import ChunkEntry
from transfer.bundle.reader import BundleReader, LoadedPart
from transfer.bundle.stream import open_content
from transfer.digest import READ_SIZE, Digester
from transfer.errors import TransferError
from transfer.models import MAX_MANIFEST_SIZE, parse_manifest
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
