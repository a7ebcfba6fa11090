"""Recovery: rebuild a valid index for every part whose index is missing or damaged."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from transfer.bundle.format import CatalogEntry
from transfer.bundle.lock import BundleLock
from transfer.bundle.reader import LoadedPart, find_parts, load_part
from transfer.bundle.writer import append_index


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
            _rewrite(part, complete, list(catalog.values()), list(expected.values()), summary)
    return summary


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
