"""transfer import: a bundle (or the parts of a split bundle present) -> registry, resumable."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from transfer.cli.common import (access, add_lookups, add_signature_policy, add_transfer_options, add_upload_options, emit, options,
                                 run_job, signature_lines, summary_lines, upload_lines, upload_options)
from transfer.cli.remote import registry_options
from transfer.cli.restore_cmd import prune_lines
from transfer.errors import PartOrderError, TransferError
from transfer.limits import DEFAULT_LOOKUPS
from transfer.sizes import format_size

if TYPE_CHECKING:
    from transfer.reports import ImportPlanReport, ImportReport, PartImportReport

ON_EXISTING = ("overwrite", "skip", "fail")


def cmd_import(args: argparse.Namespace) -> int:
    import transfer.api
    from transfer.options import ImportOptions

    opts = options(ImportOptions, **upload_options(args), map=args.map or [], on_existing=args.on_existing,
                   allow_incomplete=args.allow_incomplete, jobs=args.jobs, keep_going=args.keep_going,
                   lookups=args.lookups, prune=args.prune, have=args.have, require_signed=args.require_signed)
    creds = access(args)
    if args.dry_run:
        plan = transfer.api.import_plan(args.bundle, args.target, options=opts, access=creds, keys=args.key or ())
        if plan.notes and not args.quiet and not args.json:
            print("\n".join(plan.notes), file=sys.stderr)
        emit(args, plan, _plan_lines(plan))
        return 0

    def job(progress):  # type: ignore[no-untyped-def]
        try:
            return transfer.api.import_bundle(args.bundle, args.target, options=opts, access=creds, progress=progress,
                                              keys=args.key or ())
        except PartOrderError as exc:
            raise TransferError(f"{exc}; insert part {exc.needed} and run: transfer import "
                                f"{transfer.api.part_path(args.bundle, exc.needed)} {args.target}") from None

    return run_job(args, "import", f"run the same command again to resume the import of {args.bundle}", job,
                   _import_lines)


def _import_lines(report: ImportReport) -> list[str]:
    from transfer.reports import PartImportReport

    lines = summary_lines("imported", report) + signature_lines(report) + upload_lines(report)
    if report.signature is not None and report.signature.checked:
        lines.append(f"signature checked: signed by {', '.join(report.signature.keys)}, every record as signed")
    if isinstance(report, PartImportReport):
        return lines + _part_lines(report)
    return lines + report.tag_problems + prune_lines(report.prune)  # the notes were shown as they were decided


def _part_lines(report: PartImportReport) -> list[str]:
    parts = ", ".join(map(str, report.parts_present))
    lines = [f"parts present: {parts}" + (" (the last part of the bundle)" if report.final else "")]
    for s in report.spanning:
        state = "complete" if s.held == s.size else f"{format_size(s.held)} of {format_size(s.size)} at the destination"
        lines.append(f"blob {s.digest} spanning parts ({format_size(s.size)}) to {s.repository}: {state}")
    lines += report.notes
    if report.images_waiting:
        shown = ", ".join(w.image for w in report.images_waiting[:5]) + (" ..." if len(report.images_waiting) > 5 else "")
        where = "content of parts not imported" if report.final else "later parts"
        lines.append(f"{len(report.images_waiting)} image(s) wait for {where}: {shown}")
    if report.next_command:
        lines.append(f"insert part {report.next_part} and run: {report.next_command}")
    elif report.final:
        lines.append("all parts imported: every tag checked against the bundle's digest")
    else:
        lines.append("nothing waits: every image of the bundle's plan is at the destination")
    return lines + report.tag_problems


def _plan_lines(plan: ImportPlanReport) -> list[str]:
    return [f"would push {plan.blobs_to_push} blob(s) ({format_size(plan.bytes_to_push)}); "
            f"{plan.blobs_present} already present", *[f"would tag {t}" for t in plan.tags],
            *prune_lines(plan.prune)]


def register(subparsers, parents) -> None:
    reg = registry_options()
    p = subparsers.add_parser(
        "import", parents=parents + [reg], help="bundle file -> registry (resumable)",
        description="Import a bundle into a registry. Interrupted? Run the same command again: it "
        "continues where the registry stands, down to the chunk.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  transfer import site.bundle registry.local:5000\n"
               "  transfer import site.bundle registry.local:5000/mirror --map library=base\n"
               "  transfer import site.bundle registry.local:5000 --dry-run\n"
               "  transfer export SRC:5000/app:1.0 -o - | ssh gate transfer import - registry.local:5000\n"
               "  transfer import backup.bundle registry.local:5000 --prune --dry-run   restore: what goes\n"
               "  transfer import site.bundle registry.local:5000 --require-signed cosign.pub\n"
               "\nFrom a stream ('-', a FIFO, <(...)) blobs are uploaded as they pass and each image is\n"
               "finished as soon as its last blob has. A stream cut short keeps what reached the registry;\n"
               "send it again (or import the file) and only what is missing is uploaded.\n")
    p.add_argument("bundle", metavar="BUNDLE", help="bundle file, split set or part; '-' reads it from standard input")
    p.add_argument("target", metavar="HOST[:PORT][/PREFIX]", help="registry, optionally a prefix for every repository")
    p.add_argument("--map", action="append", metavar="FROM=TO", help="rename repository prefix FROM to TO (repeatable)")
    p.add_argument("--on-existing", choices=ON_EXISTING, default="overwrite",
                   help="a tag that already points elsewhere: overwrite (default, and say so), skip, or fail")
    p.add_argument("--dry-run", action="store_true", help="print what would be pushed and tagged; write nothing")
    p.add_argument("--allow-incomplete", action="store_true", help="import what an unfinished bundle holds")
    p.add_argument("--prune", action="store_true",
                   help="restore: then delete the tags and manifests of the repositories the bundle covers that "
                   "it does not hold, so they equal the bundle (other repositories are never touched; a "
                   "registry without delete is refused before anything is written; see `transfer diff`)")
    p.add_argument("--have", metavar="INVENTORY",
                   help="an inventory of the target (transfer inventory): blobs it holds anywhere are "
                   "cross-mounted from there instead of uploaded")
    p.add_argument("--key", action="append", metavar="PUB",
                   help="trusted public key (repeatable: any of them): the bundle must be signed by one, and every "
                   "record is read back against what was signed before anything is pushed (the bundle is read "
                   "twice); an unsigned bundle, another key or any mismatch is refused. Not with a stream '-'")
    add_signature_policy(p)
    add_upload_options(p)
    add_transfer_options(p)
    add_lookups(p, "questions to the target in flight (which tags are there already, the check of every tag "
                   f"after), alongside the --jobs transfers (default {DEFAULT_LOOKUPS})")
    p.set_defaults(func=cmd_import)
