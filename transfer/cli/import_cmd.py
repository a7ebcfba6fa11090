"""transfer import: a bundle (or the parts of a split bundle present) -> registry, resumable."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from contextlib import closing

from transfer.bundle import BundleReader
from transfer.cli.common import (add_transfer_options, add_upload_options, emit, stop_on_signals, summary_lines,
                                 upload_store, upload_summary)
from transfer.cli.progress import close_progress, human, make_progress
from transfer.cli.remote import registry_options
from transfer.copy import Copier, CopyStats, ImagePlan
from transfer.errors import TransferError, UsageError
from transfer.import_ import (ON_EXISTING, RepositoryMapping, apply_on_existing, check_expected, plan_imports,
                              push_plan, tag_conflicts, verify_tags)
from transfer.import_parts import PartImport, PartOrderError
from transfer.reference import RegistryPath
from transfer.sizes import format_size


def cmd_import(args) -> int:
    started = time.monotonic()
    target = RegistryPath.parse(args.target)
    mapping = RepositoryMapping.parse(target.path, args.map or [])
    with BundleReader(args.bundle) as reader:
        if reader.split and not reader.info.complete and reader.plan is not None:
            return _import_parts(args, reader, target, mapping, started)
        if not reader.info.complete and not args.allow_incomplete:
            raise TransferError(f"{args.bundle} is incomplete (its export did not finish); finish the "
                                "export, or pass --allow-incomplete to import what it holds")
        plans = plan_imports(reader, reader.entries, mapping)
        with closing(upload_store(args, target.registry, os.path.abspath(args.bundle))) as dst:
            _import_checks(args, reader, dst, plans)
            if args.dry_run:
                return _print_plan(args, dst, plans)
            stats = _run_import(args, reader, dst, plans)
            problems = verify_tags(dst, plans, args.jobs)
            upload, upload_lines = upload_summary(dst)
    seconds = time.monotonic() - started
    summary = dict(stats.as_dict(), **upload, target=str(target), seconds=round(seconds, 3), tag_problems=problems)
    emit(args, summary, summary_lines("imported", stats, seconds) + upload_lines + problems)
    if problems:
        raise TransferError(f"{len(problems)} tag(s) do not point at the bundle's digest after the import")
    if stats.failures:
        raise TransferError(f"{len(stats.failures)} image(s) failed to import; run the same command again")
    return 0


def part_path(bundle: str, number: int) -> str:
    """The path of part ``number`` next to the part (or set) the user named."""
    m = re.match(r"^(.*)\.\d{3}$", bundle)
    return f"{m.group(1) if m else bundle}.{number:03d}"


def _import_parts(args, reader, target: RegistryPath, mapping, started: float) -> int:
    """A split set with parts missing: import what the parts present allow (see import_parts)."""
    if args.dry_run:
        raise UsageError("--dry-run needs every part of a split bundle together")
    progress = make_progress(args, "import")
    with closing(upload_store(args, target.registry, os.path.abspath(args.bundle))) as dst:
        with stop_on_signals(f"run the same command again to resume the import of {args.bundle}"):
            try:
                report = PartImport(reader, dst, mapping, on_existing=args.on_existing, progress=progress,
                                    jobs=args.jobs).run()
            except PartOrderError as exc:
                raise TransferError(f"{exc}; insert part {exc.needed} and run: transfer import "
                                    f"{part_path(args.bundle, exc.needed)} {args.target}") from None
            finally:
                close_progress(progress)
        upload, upload_lines = upload_summary(dst)
    seconds = time.monotonic() - started
    summary, lines = _part_summary(args, report)
    summary.update(report.stats.as_dict(), **upload, target=str(target), seconds=round(seconds, 3))
    emit(args, summary, summary_lines("imported", report.stats, seconds) + upload_lines + lines)
    if report.final and report.waiting:
        raise TransferError(f"the import is incomplete: {len(report.waiting)} image(s) wait for content that is in "
                            "none of the parts imported (import the part(s) holding it, then the last part again)")
    if report.tag_problems:
        raise TransferError(f"{len(report.tag_problems)} tag(s) do not point at the bundle's digest after the import")
    return 0


def _part_summary(args, report) -> tuple[dict, list[str]]:
    parts = ", ".join(map(str, report.parts))
    lines = [f"parts present: {parts}" + (" (the last part of the bundle)" if report.final else "")]
    for s in report.spanning:
        state = "complete" if s.held == s.size else f"{format_size(s.held)} of {format_size(s.size)} at the destination"
        lines.append(f"blob {s.digest} spanning parts ({format_size(s.size)}) to {s.repository}: {state}")
    lines += report.notes
    if report.waiting:
        shown = ", ".join(label for label, _ in report.waiting[:5]) + (" ..." if len(report.waiting) > 5 else "")
        where = "content of parts not imported" if report.final else "later parts"
        lines.append(f"{len(report.waiting)} image(s) wait for {where}: {shown}")
    command = None
    if report.next_part is not None:
        command = f"transfer import {part_path(args.bundle, report.next_part)} {args.target}"
        lines.append(f"insert part {report.next_part} and run: {command}")
    elif report.final:
        lines.append("all parts imported: every tag checked against the bundle's digest")
    else:
        lines.append("nothing waits: every image of the bundle's plan is at the destination")
    lines += report.tag_problems
    summary = {"parts_present": report.parts, "final": report.final, "next_part": report.next_part,
               "next_command": command, "spanning": [s.as_dict() for s in report.spanning],
               "images_complete": report.complete, "notes": report.notes, "tag_problems": report.tag_problems,
               "images_waiting": [{"image": label, "waits_for": what} for label, what in report.waiting]}
    return summary, lines


def _import_checks(args, reader, dst, plans: list[ImagePlan]) -> None:
    check_expected(dst, plans, {d.digest for d in reader.expected})
    for line in apply_on_existing(plans, tag_conflicts(dst, plans, args.jobs), args.on_existing):
        if not args.quiet:
            print(line, file=sys.stderr)


def _run_import(args, reader, dst, plans: list[ImagePlan]) -> CopyStats:
    progress = make_progress(args, "import")
    with stop_on_signals(f"run the same command again to resume the import of {args.bundle}"):
        try:
            return Copier(reader, dst, progress=progress, jobs=args.jobs, keep_going=args.keep_going).execute(plans)
        finally:
            close_progress(progress)


def _print_plan(args, dst, plans: list[ImagePlan]) -> int:
    summary = push_plan(dst, plans)
    lines = [f"would push {summary['blobs_to_push']} blob(s) ({human(summary['bytes_to_push'])}); "
             f"{summary['blobs_present']} already present", *[f"would tag {t}" for t in summary["tags"]]]
    emit(args, summary, lines)
    return 0


def register(subparsers, parents) -> None:
    reg = registry_options()
    p = subparsers.add_parser(
        "import", parents=parents + [reg], help="bundle file -> registry (resumable)",
        description="Import a bundle into a registry. Interrupted? Run the same command again: it "
        "continues where the registry stands, down to the chunk.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  transfer import site.bundle registry.local:5000\n"
               "  transfer import site.bundle registry.local:5000/mirror --map library=base\n"
               "  transfer import site.bundle registry.local:5000 --dry-run\n")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("target", metavar="HOST[:PORT][/PREFIX]", help="registry, optionally a prefix for every repository")
    p.add_argument("--map", action="append", metavar="FROM=TO", help="rename repository prefix FROM to TO (repeatable)")
    p.add_argument("--on-existing", choices=ON_EXISTING, default="overwrite",
                   help="a tag that already points elsewhere: overwrite (default, and say so), skip, or fail")
    p.add_argument("--dry-run", action="store_true", help="print what would be pushed and tagged; write nothing")
    p.add_argument("--allow-incomplete", action="store_true", help="import what an unfinished bundle holds")
    add_upload_options(p)
    add_transfer_options(p)
    p.set_defaults(func=cmd_import)
