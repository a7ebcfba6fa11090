"""transfer copy: registry -> registry directly, for connected networks."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from transfer.cli.common import (access, add_selection_options, add_signature_policy, add_transfer_options,
                                 add_upload_options, options, run_job, selection_options, signature_lines, summary_lines,
                                 upload_lines, upload_options)
from transfer.cli.remote import registry_options
from transfer.cli.restore_cmd import prune_lines

if TYPE_CHECKING:
    from transfer.reports import CopyReport


def cmd_copy(args: argparse.Namespace) -> int:
    """Registry to registry, for connected networks: the same plans and uploads as export/import."""
    import transfer.api
    from transfer.options import CopyOptions

    opts = options(CopyOptions, **selection_options(args), **upload_options(args), prune=args.prune, have=args.have,
                   require_signed=args.require_signed)
    creds = access(args)

    def job(progress):  # type: ignore[no-untyped-def]
        return transfer.api.copy(args.src, args.dst, catalog=args.catalog, options=opts, access=creds,
                                 progress=progress)

    return run_job(args, "copy", "run the same command again to continue the copy", job, _copy_lines)


def _copy_lines(report: CopyReport) -> list[str]:
    return (summary_lines("copied", report) + signature_lines(report) + upload_lines(report) + report.platform_notes + report.tag_problems
            + prune_lines(report.prune))


def register(subparsers, parents) -> None:
    reg = registry_options()
    p = subparsers.add_parser(
        "copy", parents=parents + [reg], help="registry -> registry directly (connected networks)",
        description="Copy an image (or with --catalog a whole registry) between registries, digests "
        "unchanged, with the same resumable uploads as import.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  transfer copy src:5000/app:1.0 dst:5000/app:1.0\n"
               "  transfer copy --catalog src:5000 dst:5000/mirror\n"
               "  transfer copy --catalog src:5000 dst:5000 --prune      mirror: dst's copies equal src\n"
               "  transfer copy src:5000/app:1.0 dst:5000/app:1.0 --require-signed cosign.pub\n")
    p.add_argument("src", metavar="SRC", help="source image reference (or HOST with --catalog)")
    p.add_argument("dst", metavar="DST", help="destination reference; without a tag the source tag is kept "
                   "(or HOST[/PREFIX] with --catalog)")
    p.add_argument("--catalog", action="store_true", help="copy every repository and tag of SRC")
    p.add_argument("--prune", action="store_true",
                   help="with --catalog, mirror: then delete the tags and manifests of the destination's copied "
                   "repositories that SRC lacks (only tags --tags selects; other repositories never touched)")
    p.add_argument("--have", metavar="INVENTORY",
                   help="an inventory of DST: blobs it holds anywhere are cross-mounted instead of uploaded")
    add_selection_options(p)
    add_signature_policy(p)
    add_upload_options(p)
    add_transfer_options(p)
    p.set_defaults(func=cmd_copy)
