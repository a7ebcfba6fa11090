"""transfer copy: registry -> registry directly, for connected networks."""

from __future__ import annotations

import argparse
import time
from contextlib import closing

from transfer.cli.common import (add_selection_options, add_transfer_options, add_upload_options, emit,
                                 parse_platforms, platform_notes, stop_on_signals, summary_lines, upload_store,
                                 upload_summary)
from transfer.cli.progress import close_progress, make_progress
from transfer.cli.remote import registry_options, registry_store
from transfer.copy import Copier
from transfer.errors import TransferError
from transfer.export import CatalogFilter, Selection, plan_exports, select_repositories
from transfer.import_ import RepositoryMapping, verify_tags
from transfer.reference import Reference, RegistryPath


def cmd_copy(args) -> int:
    """Registry to registry, for connected networks: the same plans and uploads as export/import."""
    started = time.monotonic()
    if args.catalog:
        src_host = RegistryPath.parse(args.src).registry
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
        plans = plan_exports(src, selections, platforms=parse_platforms(args.platform),
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
        problems = verify_tags(dst, plans, args.jobs)
        upload, upload_lines = upload_summary(dst)
    stats.failures[:0] = failures
    seconds = time.monotonic() - started
    emit(args, dict(stats.as_dict(), **upload, seconds=round(seconds, 3), tag_problems=problems),
          summary_lines("copied", stats, seconds) + upload_lines + platform_notes(plans) + problems)
    if problems or stats.failures:
        raise TransferError(f"{len(stats.failures)} image(s) failed, {len(problems)} tag problem(s)")
    return 0


def register(subparsers, parents) -> None:
    reg = registry_options()
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
    add_selection_options(p)
    add_upload_options(p)
    add_transfer_options(p)
    p.set_defaults(func=cmd_copy)
