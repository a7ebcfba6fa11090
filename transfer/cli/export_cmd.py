"""transfer export (registry, OCI layout or docker archive -> bundle) and transfer inventory (what a
registry holds, for delta exports)."""

from __future__ import annotations

import argparse
import time
from contextlib import closing

from transfer.bundle import BundleWriter
from transfer.cli.common import (add_repository_filters, add_selection_options, add_transfer_options, emit,
                                 parse_platforms, platform_notes, size_arg, stop_on_signals, summary_lines)
from transfer.cli.interop import add_export_source_options, export_source
from transfer.cli.progress import close_progress, make_progress
from transfer.cli.remote import registry_options, registry_store
from transfer.copy import Copier
from transfer.errors import TransferError, UsageError
from transfer.export import (CatalogFilter, Selection, bundle_plan, declare_expected, parse_reference_file,
                             plan_exports, select_repositories)
from transfer.inventory import build_inventory, load_have, write_inventory
from transfer.reference import Reference, RegistryPath


def _export_selections(args, src) -> list[Selection]:
    if args.catalog:
        repos = src.repositories()
        return select_repositories(src, repos, CatalogFilter(args.include, args.exclude, args.tags))
    refs = _parsed_refs(args)
    selections = []
    for ref in refs:
        if args.all_tags:
            filt = CatalogFilter(tag_regex=args.tags)
            selections += select_repositories(src, [ref.repository], filt)
        else:
            selections.append(Selection(ref.repository, ref.digest or ref.tag))
    return selections


def _parsed_refs(args) -> list[Reference]:
    texts = list(args.refs)
    for path in args.ref_file or []:
        texts += parse_reference_file(path)
    if not texts:
        raise UsageError("nothing to export: name images (REF ...), -f FILE, --catalog HOST or --from oci:DIR")
    refs = [Reference.parse(t) for t in texts]
    hosts = sorted({r.registry for r in refs})
    if len(hosts) > 1:
        raise UsageError(f"one source registry per bundle, got {', '.join(hosts)}; export them separately")
    return refs


def _source_host(args) -> str:
    if args.catalog:
        if args.refs or args.ref_file:
            raise UsageError("--catalog HOST exports a whole registry; do not name images with it")
        return RegistryPath.parse(args.catalog).registry
    return _parsed_refs(args)[0].registry


def _export_source(args):
    """(source store, selections, source name): a registry, or with --from a layout or archive."""
    if args.source:
        return export_source(args)
    host = _source_host(args)
    src = registry_store(args, host)
    try:
        return src, _export_selections(args, src), host
    except BaseException:
        src.close()
        raise


def cmd_export(args) -> int:
    started = time.monotonic()
    failures: list[tuple[str, str]] = []
    src, selections, host = _export_source(args)
    with closing(src):
        plans = plan_exports(src, selections, platforms=parse_platforms(args.platform),
                             referrers=not args.no_referrers, keep_going=args.keep_going, failures=failures)
        notes = platform_notes(plans)
        progress = make_progress(args, "export")
        with stop_on_signals(f"run the same command again to continue {args.output}"):
            writer = BundleWriter(args.output, split_size=args.split_size, level=args.level,
                                  threads=args.threads, source_registry=host)
            with writer:
                if args.split_size:  # every part then shows where its blobs belong (import part by part)
                    writer.set_plan(bundle_plan(plans))
                expected = declare_expected(writer, plans, load_have(args.have, args.since)) if args.have or args.since else 0
                for note in notes:
                    progress.message(note)
                copier = Copier(src, writer, progress=progress, jobs=args.jobs, keep_going=args.keep_going)
                try:
                    stats = copier.execute(plans)
                finally:
                    close_progress(progress)
                stats.failures[:0] = failures
                raise_partial = bool(stats.failures)
                if raise_partial:
                    writer.abort()  # what was stored stays, but the bundle never looks complete
    seconds = time.monotonic() - started
    summary = dict(stats.as_dict(), bundle=args.output, expected_at_destination=expected,
                   bytes_written=getattr(writer, "bytes_written", None), seconds=round(seconds, 3),
                   platform_notes=notes, complete=not raise_partial)
    lines = summary_lines("exported", stats, seconds) + notes
    if expected:
        lines.append(f"{expected} blob(s) left out: expected at the destination (delta)")
    emit(args, summary, lines)
    if raise_partial:
        raise TransferError(f"{len(stats.failures)} image(s) failed; {args.output} is left incomplete "
                            "(fix the cause and run the same command again to finish it)")
    return 0


def cmd_inventory(args) -> int:
    target = RegistryPath.parse(args.host)
    with closing(registry_store(args, target.registry)) as store:
        inventory = build_inventory(store, target, include=args.include, exclude=args.exclude)
    write_inventory(inventory, args.output)
    emit(args, {"output": args.output, "repositories": len(inventory["repositories"]),
                 "blobs": len(inventory["blobs"])},
          [f"wrote {args.output}: {len(inventory['repositories'])} repositories, "
           f"{len(inventory['blobs'])} blobs; carry it to the source site and pass it to export --have"])
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

Interrupted? Run the same command again: stored blobs are kept and not fetched again.
"""


def register(subparsers, parents) -> None:
    reg = registry_options()
    p = subparsers.add_parser(
        "export", parents=parents + [reg], help="registry -> bundle file",
        description="Export images from a registry into one compressed, digest-indexed bundle.",
        epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("refs", nargs="*", metavar="REF", help="image reference (tag or digest; default tag latest)")
    p.add_argument("-o", "--output", required=True, metavar="BUNDLE", help="bundle file to write or continue")
    p.add_argument("-f", "--from-file", dest="ref_file", action="append", metavar="FILE",
                   help="read references from FILE (one a line, '#' comments)")
    p.add_argument("--all-tags", action="store_true", help="every tag of each named repository")
    p.add_argument("--catalog", metavar="HOST[:PORT]", help="the whole registry: every repository and tag")
    add_selection_options(p)
    p.add_argument("--have", metavar="INVENTORY", help="delta: leave out blobs this inventory lists")
    p.add_argument("--since", metavar="OLD_BUNDLE", help="delta: leave out blobs an earlier bundle carried")
    p.add_argument("--split-size", type=size_arg, metavar="SIZE", help="split into parts of at most SIZE (e.g. 4G)")
    p.add_argument("--level", type=int, default=3, help="zstd level for compressible blobs (default 3)")
    p.add_argument("--threads", type=int, default=0, help="zstd threads (default 0: in the calling thread)")
    add_transfer_options(p)
    add_export_source_options(p)
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser(
        "inventory", parents=parents + [reg], help="record what a registry holds (for delta exports)",
        description="Record every repository, tag, manifest and blob digest a registry holds. Run it at "
        "the destination site, carry the small file back, and pass it to 'transfer export --have'.")
    p.add_argument("host", metavar="HOST[:PORT][/REPO]", help="the registry, or one repository of it")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="inventory file to write (JSON)")
    add_repository_filters(p)
    p.set_defaults(func=cmd_inventory)
