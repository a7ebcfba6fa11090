"""What the transfer commands (export, import, copy, inventory, unpack) share: option groups,
signal handling, running a job of the API (transfer.api) and printing its report."""

from __future__ import annotations

import argparse
import signal
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from transfer.cli.progress import close_progress, make_progress
from transfer.errors import IncompleteError, TransferError, UsageError
from transfer.interrupt import STOP
from transfer.limits import CHUNK_SECONDS, DEFAULT_JOBS, DEFAULT_LOOKUPS, MIN_CHUNK_SIZE, MIN_SPLIT_SIZE, check_chunk_size
from transfer.sizes import format_size, parse_size

if TYPE_CHECKING:  # the command modules import these where a command runs: '--help' loads none of them
    from transfer.options import RegistryAccess
    from transfer.progress import Progress
    from transfer.reports import CopyCounts, ImportReport, Report

R = TypeVar("R", bound="Report")


@contextmanager
def stop_on_signals(resume_hint: str) -> Iterator[None]:
    """SIGINT/SIGTERM ask the work to stop at the next safe point (state saved), then exit 130."""
    def handler(signum: int, frame: object) -> None:
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


def run_job(args: argparse.Namespace, title: str, resume_hint: str, job: Callable[[Progress], R],
            render: Callable[[R], list[str]]) -> int:
    """Run one job of the API with progress drawn for ``args`` and SIGINT/SIGTERM asking it to stop
    at a safe point; print its report (lines, or JSON with --json), also when it did not finish."""
    progress = make_progress(args, title)
    try:
        with stop_on_signals(resume_hint):
            try:
                report = job(progress)
            finally:
                close_progress(progress)
    except IncompleteError as exc:
        emit(args, exc.report, render(exc.report))
        raise
    emit(args, report, render(report))
    return 0


def emit(args: argparse.Namespace, report: Any, lines: list[str]) -> None:
    """The report as JSON (--json), or its lines for people (control characters escaped: names and
    errors may come from a registry or a bundle); on standard error when the job writes its output
    to standard output (``-o -``, ``--docker-archive -``)."""
    from transfer.cli import printable

    out = sys.stderr if "-" in (vars(args).get("output"), vars(args).get("docker_archive")) else sys.stdout
    if args.json:
        print(report.to_json(), file=out)
    elif not args.quiet:
        for line in lines:
            print(printable(line), file=out)


def summary_lines(verb: str, stats: CopyCounts) -> list[str]:
    seconds = stats.seconds
    rate = stats.bytes_copied / seconds if seconds > 0 else 0
    lines = [f"{verb} {stats.images} image(s): {stats.blobs_copied} blob(s) copied "
             f"({format_size(stats.bytes_copied)}, {format_size(int(rate))}/s), {stats.blobs_skipped} blob(s) "
             f"already present ({format_size(stats.bytes_skipped)}), {stats.manifests_copied} manifest(s), "
             f"{stats.tags_written} tag(s) in {seconds:.1f}s"]
    lines += [f"FAILED {f.image}: {f.error}" for f in stats.failures]
    return lines


def upload_lines(report: ImportReport | Any) -> list[str]:
    """What the uploader did, for people (resumes, mounts)."""
    up, lines = report.upload, []
    if up.mounted:
        lines.append(f"mounted {up.mounted} blob(s) from other repositories instead of uploading them")
    if up.bytes_resumed or up.blobs_restarted:
        lines.append(f"resumed {up.blobs_resumed} blob(s) from the journal: {format_size(up.bytes_resumed)} "
                     f"not sent again; {up.blobs_restarted} blob restart(s)")
    return lines + [f"note: {note}" for note in up.notes]


def upload_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(chunk_size=args.chunk_size or None, registry_config=args.registry_config, journal=args.journal)


def selection_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(include=args.include, exclude=args.exclude, tags=args.tags, platforms=args.platform or [],
                referrers=not args.no_referrers, jobs=args.jobs, keep_going=args.keep_going, lookups=args.lookups)


def size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except (TransferError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def chunk_size_arg(text: str) -> int:
    try:
        return check_chunk_size(size_arg(text))
    except TransferError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def split_size_arg(text: str) -> int:
    size = size_arg(text)
    if size < MIN_SPLIT_SIZE:
        raise argparse.ArgumentTypeError(f"split size {text!r} is too small (at least {format_size(MIN_SPLIT_SIZE)})")
    return size


def count_arg(text: str, least: int = 0) -> int:
    """A whole number of at least ``least`` (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{text!r} is too small (at least {least})")
    return value


def positive_int(text: str) -> int:
    return count_arg(text, 1)


def add_upload_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("uploads")
    g.add_argument("--chunk-size", type=chunk_size_arg, metavar="SIZE",
                   help=f"upload chunk size, e.g. 8MiB, at least {format_size(MIN_CHUNK_SIZE)}; smaller blobs "
                   f"go up in one request (default: chunks of about {CHUNK_SECONDS:g} s each at the measured "
                   "upload rate, from 8 MiB up, so an interruption costs seconds and a fast link few requests)")
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
    add_lookups(p, "manifest, tag and referrer requests in flight while planning, alongside the --jobs transfers "
                   f"(default {DEFAULT_LOOKUPS}; 1 reads one image at a time)")


def add_lookups(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--lookups", type=positive_int, default=DEFAULT_LOOKUPS, metavar="N", help=text)


def add_signature_policy(p: argparse.ArgumentParser) -> None:
    """--require-signed PUB (import and copy): the image-signature policy (transfer/cosign.py)."""
    p.add_argument("--require-signed", action="append", default=[], metavar="PUB",
                   help="push only images carrying a valid cosign signature by this public key (PEM, e.g. "
                   "cosign.pub; repeatable: any of them): a sha256-<digest>.sig tag or a signature referrer. "
                   "Others are refused before anything is pushed (with --keep-going the rest proceed)")


def signature_lines(report: Any) -> list[str]:
    """One line per image the signature policy passed (refusals are among the failures)."""
    return [f"signed: {s.image} by key {s.key} ({s.signature})" for s in report.image_signatures if s.verified]


def add_transfer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-j", "--jobs", type=positive_int, default=DEFAULT_JOBS, metavar="N",
                   help=f"parallel blob transfers (default {DEFAULT_JOBS})")
    p.add_argument("--keep-going", action="store_true",
                   help="carry on past a failing image, list the failures at the end (exit 1)")


def options(cls: type[Any], **fields: Any) -> Any:
    """The job's options from the command line's values; a value out of range is a usage error."""
    from pydantic import ValidationError

    try:
        return cls(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "--" + "-".join(str(p) for p in first["loc"]).replace("_", "-")
        raise UsageError(f"invalid {name}: {first['msg']}") from None


def access(args: argparse.Namespace) -> RegistryAccess:
    """Credentials and trust from the registry options (see transfer.cli.remote)."""
    from transfer.cli.remote import registry_access

    return registry_access(args)
