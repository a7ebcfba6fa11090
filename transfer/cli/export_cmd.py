"""transfer export (registry, OCI layout or docker archive -> bundle) and transfer inventory (what a
registry holds, for delta exports)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from transfer.cli.common import (access, add_repository_filters, add_selection_options, add_transfer_options,
                                 count_arg, emit, options, run_job, selection_options, split_size_arg, summary_lines)
from transfer.cli.remote import registry_options

if TYPE_CHECKING:
    from transfer.reports import ExportReport


def cmd_export(args: argparse.Namespace) -> int:
    import transfer.api
    from transfer.options import ExportOptions

    opts = options(ExportOptions, **selection_options(args), all_tags=args.all_tags, have=args.have,
                   since=args.since, split_size=args.split_size, level=args.level, threads=args.threads,
                   repository=args.repository)
    creds = access(args)

    def job(progress):  # type: ignore[no-untyped-def]
        return transfer.api.export(args.refs, args.output, catalog=args.catalog, source=args.source,
                                   reference_files=args.ref_file or [], options=opts, access=creds, progress=progress,
                                   sign=args.sign)

    return run_job(args, "export", f"run the same command again to continue {args.output}", job, _export_lines)


def _export_lines(report: ExportReport) -> list[str]:
    lines = summary_lines("exported", report) + report.platform_notes
    if report.signature is not None:
        lines.append(f"signed every part with key {report.signature.keys[0]} ({report.signature.algorithm})")
    if report.expected_at_destination:
        lines.append(f"{report.expected_at_destination} blob(s) left out: expected at the destination (delta)")
    return lines


def cmd_inventory(args: argparse.Namespace) -> int:
    import transfer.api
    from transfer.options import InventoryOptions

    report = transfer.api.inventory(args.host, args.output, options=InventoryOptions(include=args.include, exclude=args.exclude),
                                    access=access(args))
    emit(args, report, [f"wrote {report.output}: {report.repositories} repositories, {report.blobs} blobs; "
                        "carry it to the source site and pass it to export --have"])
    return 0


EXPORT_EPILOG = """\
examples:
  transfer export localhost:5000/app:1.0 localhost:5000/db@sha256:... -o site.bundle
  transfer export -f images.txt --platform linux/amd64 -o site.bundle
  transfer export --all-tags localhost:5000/app -o app.bundle
  transfer export --catalog localhost:5000 --exclude 'tmp/*' -o backup.bundle
  transfer export --catalog src:5000 --have dest-inventory.json -o delta.bundle
  transfer export ... --split-size 4G -o site.bundle       (site.bundle.001, .002, ...)
  transfer export --from oci:./layout -o site.bundle       an OCI layout (skopeo, crane, oras)
  transfer export --from docker-archive:app.tar -o app.bundle   a 'docker save' tar
  docker save app:1.0 | transfer export --from docker-archive:- -o app.bundle
  transfer export localhost:5000/app:1.0 -o - | ssh gate transfer import - registry.local:5000
                                                           through a pipe: no file on either side
  transfer export localhost:5000/app:1.0 --sign site.key -o app.bundle
                                                           signed (transfer keygen site); import --key site.pub

Interrupted? Run the same command again: stored blobs are kept and not fetched again.
"""


def register(subparsers, parents) -> None:
    reg = registry_options()
    p = subparsers.add_parser(
        "export", parents=parents + [reg], help="registry -> bundle file",
        description="Export images from a registry into one compressed, digest-indexed bundle.",
        epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("refs", nargs="*", metavar="REF", help="image reference (tag or digest; default tag latest)")
    p.add_argument("-o", "--output", required=True, metavar="BUNDLE",
                   help="bundle file to write or continue; '-' writes it to standard output (a pipe: one part, "
                   "progress and report on standard error; a file named '-' is ./-)")
    p.add_argument("-f", "--from-file", dest="ref_file", action="append", metavar="FILE",
                   help="read references from FILE (one a line, '#' comments)")
    p.add_argument("--all-tags", action="store_true", help="every tag of each named repository")
    p.add_argument("--catalog", metavar="HOST[:PORT]", help="the whole registry: every repository and tag")
    add_selection_options(p)
    p.add_argument("--have", metavar="INVENTORY", help="delta: leave out blobs this inventory lists")
    p.add_argument("--since", metavar="OLD_BUNDLE", help="delta: leave out blobs an earlier bundle carried")
    p.add_argument("--split-size", type=split_size_arg, metavar="SIZE", help="split into parts of at most SIZE (e.g. 4G)")
    p.add_argument("--level", type=int, default=3, help="zstd level for compressible blobs (default 3)")
    p.add_argument("--threads", type=count_arg, default=0, help="zstd threads (default 0: in the calling thread)")
    p.add_argument("--sign", metavar="KEY", help="sign every part with this PEM private key (see 'transfer keygen'; "
                   "an encrypted key's passphrase from $TRANSFER_KEY_PASSPHRASE or a prompt)")
    add_transfer_options(p)
    _add_source_options(p)
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser(
        "inventory", parents=parents + [reg], help="record what a registry holds (for delta exports)",
        description="Record every repository, tag, manifest and blob digest a registry holds. Run it at "
        "the destination site, carry the small file back, and pass it to 'transfer export --have'.")
    p.add_argument("host", metavar="HOST[:PORT][/REPO]", help="the registry, or one repository of it")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="inventory file to write (JSON)")
    add_repository_filters(p)
    p.set_defaults(func=cmd_inventory)


def _add_source_options(p: argparse.ArgumentParser) -> None:
    """``--from`` and ``--repository``: another tool's files as the source."""
    g = p.add_argument_group("from another tool's files")
    g.add_argument("--from", dest="source", metavar="oci:DIR[:REF] | docker-archive:FILE[:REF]",
                   help="pack an OCI image layout (skopeo/crane/oras/docker) or a 'docker save' tar instead "
                   "of a registry: every image, or the one REF names (a layout's ref.name, an archive's repo:tag); "
                   "docker-archive:- reads the tar from standard input (copied to a temporary file first: "
                   "docker save writes the list of its images last)")
    g.add_argument("--repository", metavar="NAME",
                   help="with --from: the bundle repository for images named by a tag only (as skopeo, "
                   "crane and oras write them); default: the directory's or file's name")
