"""Recovery: rebuild a valid index for every part whose index is missing or damaged."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from transfer.bundle.format import BundlePlan, CatalogEntry, ChunkEntry
from transfer.bundle.lock import BundleLock
from transfer.bundle.reader import LoadedPart, find_parts, load_part
from transfer.bundle.stream import ContentStream
from transfer.bundle.writer import append_index
from transfer.digest import VerifyingReader
from transfer.models import MAX_MANIFEST_SIZE, Platform, parse_manifest


def rewrite_index(path: str | os.PathLike[str], *, mark_complete: bool = False) -> dict[str, Any]:
    """Scan the parts of the bundle at ``path`` whose index is missing or damaged, drop any torn
    tail, and write a valid index (marked incomplete: the export can be continued). With
    ``mark_complete`` the last part's index is marked complete, which an operator may assert
    after ``transfer verify`` found every manifest's children present. Returns a summary."""
    with BundleLock(find_parts(path)[0]):
        return _rewrite_parts(find_parts(path)[2], mark_complete)


def _rewrite_parts(paths: dict[int, str], mark_complete: bool) -> dict[str, Any]:
    catalog: dict[tuple[str, str, str], CatalogEntry] = {}
    expected: dict[str, dict[str, Any]] = {}
    summary: dict[str, Any] = {"parts": [], "records": 0, "dropped_bytes": 0, "problems": []}
    numbers = list(paths)
    plan = None  # a scanned part gets the export plan of the parts before it
    for number, part_path in paths.items():
        part = load_part(part_path, recover=True)
        plan = part.doc.plan or plan
        catalog.update((e.key, e) for e in part.doc.catalog)
        expected.update((d["digest"], d) for d in part.doc.expected)
        last = number == numbers[-1]
        complete = mark_complete and last or (part.doc.complete and not part.index_problem)
        if part.index_problem or complete != part.doc.complete:
            part.doc.plan = part.doc.plan or plan
            if part.index_problem and part.doc.plan is not None:
                catalog.update((e.key, e) for e in salvage(part, part.doc.plan, expected))
            _rewrite(part, complete, list(catalog.values()), list(expected.values()), summary)
    return summary


def salvage(part: LoadedPart, plan: BundlePlan, expected: dict[str, Any]) -> list[CatalogEntry]:
    """Catalog entries for every image of ``plan`` whose manifests and blobs are all in the
    complete records of ``part`` (or expected at the destination): what its ROOT records would
    have said, had the export not been cut short before them."""
    whole = {c.digest: c for c in part.doc.chunks if c.chunk_offset == 0 and c.chunk_length == c.size}
    held: dict[str, int] = {}  # bytes present from 0, over segments
    for c in sorted(part.doc.chunks, key=lambda c: (c.digest, c.chunk_offset)):
        if held.get(c.digest, 0) == c.chunk_offset:
            held[c.digest] = c.chunk_offset + c.chunk_length
    entries = []
    for image in plan.images:
        if all(held.get(d.digest) == d.size or d.digest in expected for d in (*image.manifests, *image.blobs)):
            root = whole.get(image.root.digest)
            if root is None:
                continue
            platforms = _platforms(part.path, whole, root)
            for tag in image.tags or [None]:
                entries.append(CatalogEntry(image.dst_repo, tag, root.digest, root.media_type, platforms, root.size))
    return entries


def _platforms(path: str, whole: dict[str, ChunkEntry], root: ChunkEntry) -> list[str]:
    view = parse_manifest(_read(path, root), root.media_type, root.digest)
    if view.is_index:
        return sorted({str(d.platform) for d in view.manifests if d.platform})
    if view.config is None or view.config.digest not in whole or view.config.size > MAX_MANIFEST_SIZE:
        return []
    try:
        return [str(Platform.model_validate_json(_read(path, whole[view.config.digest])))]
    except ValueError:
        return []


def _read(path: str, entry: ChunkEntry) -> bytes:
    with VerifyingReader(ContentStream([(path, entry)], 0, path), entry.digest, entry.size) as reader:
        return reader.read_all(MAX_MANIFEST_SIZE)


def _rewrite(part: LoadedPart, complete: bool, catalog: list[CatalogEntry], expected: list[dict[str, Any]],
             summary: dict[str, Any]) -> None:
    doc = dataclasses.replace(
        part.doc, complete=complete, final=complete, parts=part.number if complete else None,
        catalog=catalog, expected=expected,
    )
    with open(part.path, "r+b") as fh:
        fh.truncate(part.records_end)
        fh.seek(part.records_end)
        append_index(fh, doc)
    summary["parts"].append(part.number)
    if part.scan:
        summary["records"] += part.scan.records
        summary["dropped_bytes"] += part.scan.dropped_bytes
        summary["problems"].append(part.index_problem)
        if part.scan.problem:
            summary["problems"].append(part.scan.problem)
