"""What the transfer commands (export, import, copy, inventory, unpack) share: option groups,
signal handling, upload stores and output."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from contextlib import contextmanager

from transfer.cli.progress import human
from transfer.cli.remote import registry_client
from transfer.copy import CopyStats, ImagePlan
from transfer.errors import TransferError, UsageError
from transfer.interrupt import STOP
from transfer.models import Platform
from transfer.registry import RegistryStore
from transfer.registry.journal import UploadJournal
from transfer.registry.upload import CHUNK_SECONDS, ChunkedUploader, load_registry_settings
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


def parse_platforms(values: list[str] | None) -> list[Platform] | None:
    try:
        return [Platform.parse(v) for v in values] if values else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def emit(args, summary: dict, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    elif not args.quiet:
        for line in lines:
            print(line)


def summary_lines(verb: str, stats: CopyStats, seconds: float) -> list[str]:
    rate = stats.bytes_copied / seconds if seconds > 0 else 0
    lines = [f"{verb} {stats.images} image(s): {stats.blobs_copied} blob(s) copied "
             f"({human(stats.bytes_copied)}, {human(rate)}/s), {stats.blobs_skipped} blob(s) "
             f"already present ({human(stats.bytes_skipped)}), {stats.manifests_copied} manifest(s), "
             f"{stats.tags_written} tag(s) in {seconds:.1f}s"]
    lines += [f"FAILED {image}: {error}" for image, error in stats.failures]
    return lines


def platform_notes(plans: list[ImagePlan]) -> list[str]:
    return [f"{p.label}: --platform keeps a subset, so the root digest changes from {p.original_root} "
            f"to {p.root.digest}" for p in plans if p.original_root]


def default_journal() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "transfer", "uploads.json")


def upload_store(args, host: str, source_id: str) -> RegistryStore:
    """A registry store whose blob pushes are chunked and resumable through the journal."""
    settings = load_registry_settings(args.registry_config) if args.registry_config else None
    journal = UploadJournal(args.journal or default_journal())
    journal.prune(JOURNAL_MAX_AGE)
    uploader = ChunkedUploader(args.chunk_size or None, settings=settings, journal=journal,
                               source=source_id)
    return RegistryStore(registry_client(args, host), uploader=uploader)


def upload_summary(store: RegistryStore) -> tuple[dict, list[str]]:
    stats = store.uploader.stats
    lines = []
    if store.mounted:
        lines.append(f"mounted {store.mounted} blob(s) from other repositories instead of uploading them")
    if stats.bytes_resumed or stats.blobs_restarted:
        lines.append(f"resumed {stats.blobs_resumed} blob(s) from the journal: {format_size(stats.bytes_resumed)} "
                     f"not sent again; {stats.blobs_restarted} blob restart(s)")
    return {"upload": dict(stats.__dict__, mounted=store.mounted)}, lines


def size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except (TransferError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_upload_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("uploads")
    g.add_argument("--chunk-size", type=size_arg, metavar="SIZE",
                   help=f"upload chunk size, e.g. 8MiB; smaller blobs go up in one request (default: "
                   f"chunks of about {CHUNK_SECONDS:g} s each at the measured upload rate, from 8 MiB up, "
                   "so an interruption costs seconds and a fast link few requests)")
    g.add_argument("--registry-config", metavar="FILE",
                   help="per-registry upload settings: chunk limits, monolithic only (see samples/registries.json)")
    g.add_argument("--journal", metavar="FILE",
                   help="where uploads in flight are recorded for resuming (default ~/.local/state/transfer/uploads.json)")


def add_repository_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="with a whole registry: only repositories matching (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="with a whole registry: skip repositories matching (repeatable)")


def add_selection_options(p: argparse.ArgumentParser) -> None:
    """Which repositories, tags, platforms and referrers (export and copy)."""
    add_repository_filters(p)
    p.add_argument("--tags", metavar="REGEX", help="with --catalog/--all-tags: only tags fully matching REGEX")
    p.add_argument("--platform", action="append", metavar="OS/ARCH[/VARIANT]",
                   help="keep only these platforms of multi-arch images (repeatable; default all)")
    p.add_argument("--no-referrers", action="store_true", help="leave out signatures, attestations, SBOMs")


def add_transfer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-j", "--jobs", type=int, default=DEFAULT_JOBS, metavar="N",
                   help=f"parallel blob transfers (default {DEFAULT_JOBS})")
    p.add_argument("--keep-going", action="store_true",
                   help="carry on past a failing image, list the failures at the end (exit 1)")
