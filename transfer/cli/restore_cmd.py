"""transfer diff (a bundle against a registry, tag by tag) and transfer rm (delete one manifest),
and how --prune's deletions are shown by import and copy."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from transfer.cli.common import access, emit
from transfer.cli.remote import registry_options
from transfer.errors import UsageError

if TYPE_CHECKING:
    from transfer.reports import Deletion, DiffReport, PruneReport, RmReport


def cmd_diff(args: argparse.Namespace) -> int:
    import transfer.api
    from transfer.options import ImportOptions

    report = transfer.api.diff(args.bundle, args.target, options=ImportOptions(map=args.map or []),
                               access=access(args))
    emit(args, report, _diff_lines(report))
    return 0 if report.equal or not args.exit_code else 1


def _diff_lines(report: DiffReport) -> list[str]:
    signs = {"missing": "+", "extra": "-", "changed": "~"}
    lines = []
    for t in report.tags:
        digest = {"missing": t.bundle_digest, "extra": t.registry_digest}.get(
            t.status, f"{t.registry_digest} -> {t.bundle_digest}")
        lines.append(f"{signs[t.status]} {t.repository}:{t.tag}  {digest}  ({t.status} at {report.target})")
    lines += [f"+ {ref}  (untagged, missing)" for ref in report.untagged_missing]
    lines.append(f"{report.missing} tag(s) missing, {report.extra} extra, {report.changed} changed, "
                 f"{report.same} the same" + (": equal" if report.equal else ""))
    return lines


def prune_lines(prune: PruneReport | None) -> list[str]:
    """One line per deletion of --prune (done, or with --dry-run to be done), then the notes."""
    if prune is None:
        return []
    verb = "would delete" if prune.dry_run else "deleted"
    lines = [deletion_line(verb, d) for d in prune.deletions]
    lines.append(f"prune: {verb} {len(prune.deletions)} manifest(s)")
    return lines + [f"note: {n}" for n in prune.notes]


def deletion_line(verb: str, d: Deletion) -> str:
    tags = f" (tags {', '.join(d.tags)})" if d.tags else " (untagged)"
    line = f"{verb} {d.repository}@{d.digest}{tags}: {d.reason}"
    if d.restored:
        kept = ", ".join(d.restored_tags) or "by digest"
        line += f"; the manifest is kept ({kept}): deleted and put back at once"
    return line


def cmd_rm(args: argparse.Namespace) -> int:
    import transfer.api

    creds = access(args)
    if not args.yes:
        if not sys.stdin.isatty() or args.json:
            raise UsageError(f"rm {args.reference}: confirm with --yes (no terminal to ask on)")
        preview = transfer.api.rm(args.reference, dry_run=True, access=creds)
        print(deletion_line("delete", preview.deletion).replace(": asked", ""), file=sys.stderr)
        if input("Delete it? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)
            return 1
    report = transfer.api.rm(args.reference, access=creds, dry_run=args.dry_run)
    emit(args, report, _rm_lines(report))
    return 0


def _rm_lines(report: RmReport) -> list[str]:
    return [deletion_line("would delete" if report.dry_run else "deleted", report.deletion).replace(": asked", "")]


def register(subparsers, parents) -> None:
    reg = registry_options()
    p = subparsers.add_parser(
        "diff", parents=parents + [reg], help="how a registry differs from a bundle, tag by tag",
        description="Compare the repositories of a registry that a bundle covers with the bundle: tags "
        "missing at the registry (+), extra there (-), or at another digest (~). Reads only. "
        "`transfer import --prune` makes them equal.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  transfer diff site.bundle registry.local:5000\n"
               "  transfer diff site.bundle registry.local:5000/mirror --json\n")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("target", metavar="HOST[:PORT][/PREFIX]", help="the registry, with the prefix an import would use")
    p.add_argument("--map", action="append", metavar="FROM=TO", help="as for import (repeatable)")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when they differ (like git diff --exit-code)")
    p.set_defaults(func=cmd_diff)

    p = subparsers.add_parser(
        "rm", parents=parents + [reg], help="delete one tag's manifest, or a manifest by digest",
        description="Delete a manifest from a registry. A registry deletes by digest, so every tag "
        "pointing at it goes too (they are listed before you confirm). Blobs stay until the "
        "registry's garbage collection. Asks on a terminal unless --yes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  transfer rm registry.local:5000/app:old\n"
               "  transfer rm registry.local:5000/app@sha256:... --yes\n")
    p.add_argument("reference", metavar="HOST/REPO:TAG|HOST/REPO@DIGEST")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask (needed without a terminal)")
    p.add_argument("--dry-run", action="store_true", help="say what would be deleted; delete nothing")
    p.set_defaults(func=cmd_rm)
