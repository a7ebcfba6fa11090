"""The transfer commands: export (registry -> bundle), import (bundle -> registry), inventory
(what a registry holds, for delta bundles) and copy (registry -> registry)."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from contextlib import closing, contextmanager

from transfer.bundle import BundleReader, BundleWriter
from transfer.cli.progress import close_progress, human, make_progress
from transfer.cli.remote import registry_client, registry_options, registry_store
from transfer.copy import Copier, CopyStats, ImagePlan
from transfer.errors import TransferError, UsageError
from transfer.export import (CatalogFilter, Selection, bundle_plan, parse_reference_file, plan_exports,
                             select_repositories)
from transfer.import_ import (ON_EXISTING, RepositoryMapping, apply_on_existing, check_expected, plan_imports,
                              tag_conflicts, verify_tags)
from transfer.import_parts import PartImport, PartOrderError
from transfer.interrupt import STOP
from transfer.inventory import build_inventory, load_have, write_inventory
from transfer.models import Platform
from transfer.reference import Reference, RegistryPath
from transfer.registry import RegistryStore
from transfer.registry.journal import UploadJournal
from transfer.registry.upload import DEFAULT_CHUNK_SIZE, ChunkedUploader, load_registry_settings
from transfer.sizes import format_size, parse_size

DEFAULT_JOBS = 4
JOURNAL_MAX_AGE = 7 * 24 * 3600  # distribution purges unfinished uploads after 168 h


@contextmanager
def stop_on_signals(resume_hint: str):
    """SIGINT/SIGTERM ask the work to stop at the next safe point (state saved), then exit 130."""
    def handler(signum, frame):
        if STOP.is_set():
            raise KeyboardInterrupt
        STOP.set()
        print(f"\ntransfer: stopping after the chunk in flight; {resume_hint}", file=sys.stderr)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        STOP.clear()


def _platforms(values: list[str] | None) -> list[Platform] | None:
    try:
        return [Platform.parse(v) for v in values] if values else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _emit(args, summary: dict, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    elif not args.quiet:
        for line in lines:
            print(line)


def _summary_lines(verb: str, stats: CopyStats, seconds: float) -> list[str]:
    rate = stats.bytes_copied / seconds if seconds > 0 else 0
    lines = [f"{verb} {stats.images} image(s): {stats.blobs_copied} blob(s) copied "
             f"({human(stats.bytes_copied)}, {human(rate)}/s), {stats.blobs_skipped} blob(s) "
             f"already present ({human(stats.bytes_skipped)}), {stats.manifests_copied} manifest(s), "
             f"{stats.tags_written} tag(s) in {seconds:.1f}s"]
    lines += [f"FAILED {image}: {error}" for image, error in stats.failures]
    return lines


def default_journal() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "transfer", "uploads.json")


def upload_store(args, host: str, source_id: str) -> RegistryStore:
    """A registry store whose blob pushes are chunked and resumable through the journal."""
    settings = load_registry_settings(args.registry_config) if args.registry_config else None
    journal = UploadJournal(args.journal or default_journal())
    journal.prune(JOURNAL_MAX_AGE)
    uploader = ChunkedUploader(args.chunk_size or DEFAULT_CHUNK_SIZE, settings=settings, journal=journal,
                               source=source_id)
    return RegistryStore(registry_client(args, host), uploader=uploader)


def _upload_summary(store: RegistryStore) -> tuple[dict, list[str]]:
    stats = store.uploader.stats
    lines = []
    if store.mounted:
        lines.append(f"mounted {store.mounted} blob(s) from other repositories instead of uploading them")
    if stats.bytes_resumed or stats.blobs_restarted:
        lines.append(f"resumed {stats.blobs_resumed} blob(s) from the journal: {format_size(stats.bytes_resumed)} "
                     f"not sent again; {stats.blobs_restarted} blob restart(s)")
    return {"upload": dict(stats.__dict__, mounted=store.mounted)}, lines


# -- export -------------------------------------------------------------------------------------

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


def _platform_notes(plans: list[ImagePlan]) -> list[str]:
    return [f"{p.label}: --platform keeps a subset, so the root digest changes from {p.original_root} "
            f"to {p.root.digest}" for p in plans if p.original_root]


def _export_source(args):
    """(source store, selections, source name): a registry, or with --from a layout or archive."""
    if args.source:
        from transfer.cli.interop import export_source  # interop imports this module
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
        plans = plan_exports(src, selections, platforms=_platforms(args.platform),
                             referrers=not args.no_referrers, keep_going=args.keep_going, failures=failures)
        notes = _platform_notes(plans)
        progress = make_progress(args, "export")
        with stop_on_signals(f"run the same command again to continue {args.output}"):
            writer = BundleWriter(args.output, split_size=args.split_size, level=args.level,
                                  threads=args.threads, source_registry=host)
            with writer:
                if args.split_size:  # every part then shows where its blobs belong (import part by part)
                    writer.set_plan(bundle_plan(plans))
                expected = _declare_expected(writer, plans, args)
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
    lines = _summary_lines("exported", stats, seconds) + notes
    if expected:
        lines.append(f"{expected} blob(s) left out: expected at the destination (delta)")
    _emit(args, summary, lines)
    if raise_partial:
        raise TransferError(f"{len(stats.failures)} image(s) failed; {args.output} is left incomplete "
                            "(fix the cause and run the same command again to finish it)")
    return 0


def _declare_expected(writer, plans: list[ImagePlan], args) -> int:
    """Delta: blobs the destination already has are recorded, not stored."""
    if not (args.have or args.since):
        return 0
    have = load_have(args.have, args.since)
    users: dict[str, tuple[object, set[str]]] = {}
    for plan in plans:
        for blob in plan.blobs:
            users.setdefault(blob.digest, (blob, set()))[1].add(plan.dst_repo)
    count = 0
    for digest, (blob, repos) in users.items():
        # Left out only if every repository that uses it has it at the destination.
        if repos <= have.get(digest, set()) and not writer.stored(digest):
            writer.expect(blob)
            count += 1
    return count


# -- import -------------------------------------------------------------------------------------

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
            problems = verify_tags(dst, plans)
            upload, upload_lines = _upload_summary(dst)
    seconds = time.monotonic() - started
    summary = dict(stats.as_dict(), **upload, target=str(target), seconds=round(seconds, 3), tag_problems=problems)
    _emit(args, summary, _summary_lines("imported", stats, seconds) + upload_lines + problems)
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
        upload, upload_lines = _upload_summary(dst)
    seconds = time.monotonic() - started
    summary, lines = _part_summary(args, report)
    summary.update(report.stats.as_dict(), **upload, target=str(target), seconds=round(seconds, 3))
    _emit(args, summary, _summary_lines("imported", report.stats, seconds) + upload_lines + lines)
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
    for line in apply_on_existing(plans, tag_conflicts(dst, plans), args.on_existing):
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
    todo, present = [], 0
    seen: set[tuple[str, str]] = set()
    for plan in plans:
        for blob in plan.blobs:
            if (plan.dst_repo, blob.digest) in seen:
                continue
            seen.add((plan.dst_repo, blob.digest))
            if dst.exists(plan.dst_repo, blob):
                present += 1
            else:
                todo.append(blob)
    tags = [f"{p.dst_repo}:{t} -> {p.root.digest}" for p in plans for t in p.tags]
    summary = {"blobs_to_push": len(todo), "bytes_to_push": sum(b.size for b in todo),
               "blobs_present": present, "tags": tags, "dry_run": True}
    lines = [f"would push {len(todo)} blob(s) ({human(summary['bytes_to_push'])}); {present} already present",
             *[f"would tag {t}" for t in tags]]
    _emit(args, summary, lines)
    return 0


# -- copy ---------------------------------------------------------------------------------------

def cmd_copy(args) -> int:
    """Registry to registry, for connected networks: the same plans and uploads as export/import."""
    started = time.monotonic()
    if args.catalog:
        src_host, selections_of = RegistryPath.parse(args.src).registry, None
        dst_path = RegistryPath.parse(args.dst)
    else:
        src_ref, dst_ref = Reference.parse(args.src), Reference.parse(args.dst, default_tag=None)
        src_host, dst_path = src_ref.registry, RegistryPath(dst_ref.registry, dst_ref.repository)
    failures: list[tuple[str, str]] = []
    with closing(registry_store(args, src_host)) as src, \
            closing(upload_store(args, dst_path.registry, f"copy from {src_host}")) as dst:
        if args.catalog:
            selections = select_repositories(src, src.repositories(), CatalogFilter(args.include, args.exclude, args.tags))
            mapping = RepositoryMapping.parse(dst_path.path, [])
        else:
            selections = [Selection(src_ref.repository, src_ref.digest or src_ref.tag)]
            mapping = RepositoryMapping.parse("", [f"{src_ref.repository}={dst_path.path}"])
        plans = plan_exports(src, selections, platforms=_platforms(args.platform),
                             referrers=not args.no_referrers, keep_going=args.keep_going, failures=failures)
        for plan in plans:
            plan.dst_repo = mapping.target(plan.src_repo)
        if not args.catalog and dst_ref.tag and plans:
            plans[0].tags = [dst_ref.tag]
        progress = make_progress(args, "copy")
        with stop_on_signals("run the same command again to continue the copy"):
            try:
                stats = Copier(src, dst, progress=progress, jobs=args.jobs, keep_going=args.keep_going).execute(plans)
            finally:
                close_progress(progress)
        problems = verify_tags(dst, plans)
    stats.failures[:0] = failures
    seconds = time.monotonic() - started
    _emit(args, dict(stats.as_dict(), seconds=round(seconds, 3), tag_problems=problems),
          _summary_lines("copied", stats, seconds) + _platform_notes(plans) + problems)
    if problems or stats.failures:
        raise TransferError(f"{len(stats.failures)} image(s) failed, {len(problems)} tag problem(s)")
    return 0


# -- inventory ----------------------------------------------------------------------------------

def cmd_inventory(args) -> int:
    target = RegistryPath.parse(args.host)
    with closing(registry_store(args, target.registry)) as store:
        inventory = build_inventory(store, target, include=args.include, exclude=args.exclude)
    write_inventory(inventory, args.output)
    _emit(args, {"output": args.output, "repositories": len(inventory["repositories"]),
                 "blobs": len(inventory["blobs"])},
          [f"wrote {args.output}: {len(inventory['repositories'])} repositories, "
           f"{len(inventory['blobs'])} blobs; carry it to the source site and pass it to export --have"])
    return 0


# -- wiring -------------------------------------------------------------------------------------

def _size(text: str) -> int:
    try:
        return parse_size(text)
    except (TransferError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_upload_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("uploads")
    g.add_argument("--chunk-size", type=_size, metavar="SIZE",
                   help=f"upload chunk size, e.g. 8MiB (default {format_size(DEFAULT_CHUNK_SIZE)}); "
                   "smaller blobs go up in one request")
    g.add_argument("--registry-config", metavar="FILE",
                   help="per-registry upload settings: chunk limits, monolithic only (see samples/registries.json)")
    g.add_argument("--journal", metavar="FILE",
                   help="where uploads in flight are recorded for resuming (default ~/.local/state/transfer/uploads.json)")


def _add_repository_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="with a whole registry: only repositories matching (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="with a whole registry: skip repositories matching (repeatable)")


def _add_selection_options(p: argparse.ArgumentParser) -> None:
    """Which repositories, tags, platforms and referrers (export and copy)."""
    _add_repository_filters(p)
    p.add_argument("--tags", metavar="REGEX", help="with --catalog/--all-tags: only tags fully matching REGEX")
    p.add_argument("--platform", action="append", metavar="OS/ARCH[/VARIANT]",
                   help="keep only these platforms of multi-arch images (repeatable; default all)")
    p.add_argument("--no-referrers", action="store_true", help="leave out signatures, attestations, SBOMs")


def _add_transfer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-j", "--jobs", type=int, default=DEFAULT_JOBS, metavar="N",
                   help=f"parallel blob transfers (default {DEFAULT_JOBS})")
    p.add_argument("--keep-going", action="store_true",
                   help="carry on past a failing image, list the failures at the end (exit 1)")


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
    _add_selection_options(p)
    p.add_argument("--have", metavar="INVENTORY", help="delta: leave out blobs this inventory lists")
    p.add_argument("--since", metavar="OLD_BUNDLE", help="delta: leave out blobs an earlier bundle carried")
    p.add_argument("--split-size", type=_size, metavar="SIZE", help="split into parts of at most SIZE (e.g. 4G)")
    p.add_argument("--level", type=int, default=3, help="zstd level for compressible blobs (default 3)")
    p.add_argument("--threads", type=int, default=0, help="zstd threads (default 0: in the calling thread)")
    _add_transfer_options(p)
    from transfer.cli.interop import add_export_source_options  # interop imports this module
    add_export_source_options(p)
    p.set_defaults(func=cmd_export)

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
    _add_upload_options(p)
    _add_transfer_options(p)
    p.set_defaults(func=cmd_import)

    p = subparsers.add_parser(
        "copy", parents=parents + [reg], help="registry -> registry directly (connected networks)",
        description="Copy an image (or with --catalog a whole registry) between registries, digests "
        "unchanged, with the same resumable uploads as import.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  transfer copy src:5000/app:1.0 dst:5000/app:1.0\n"
               "  transfer copy --catalog src:5000 dst:5000/mirror\n")
    p.add_argument("src", metavar="SRC", help="source image reference (or HOST with --catalog)")
    p.add_argument("dst", metavar="DST", help="destination reference; without a tag the source tag is kept "
                   "(or HOST[/PREFIX] with --catalog)")
    p.add_argument("--catalog", action="store_true", help="copy every repository and tag of SRC")
    _add_selection_options(p)
    _add_upload_options(p)
    _add_transfer_options(p)
    p.set_defaults(func=cmd_copy)

    p = subparsers.add_parser(
        "inventory", parents=parents + [reg], help="record what a registry holds (for delta exports)",
        description="Record every repository, tag, manifest and blob digest a registry holds. Run it at "
        "the destination site, carry the small file back, and pass it to 'transfer export --have'.")
    p.add_argument("host", metavar="HOST[:PORT][/REPO]", help="the registry, or one repository of it")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="inventory file to write (JSON)")
    _add_repository_filters(p)
    p.set_defaults(func=cmd_inventory)
