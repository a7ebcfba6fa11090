"""Commands that look at a bundle file: ls, verify, recover."""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TYPE_CHECKING, Any

from transfer.cli import printable
from transfer.sizes import format_size

if TYPE_CHECKING:  # the bundle code is imported where a command runs: '--help' loads no zstandard
    from transfer.bundle.verify import VerifyReport
    from transfer.reports import BundleListing

BUNDLE_HELP = ("the bundle file, a split set's name (NAME for NAME.001, NAME.002, ...) or one part NAME.00N; "
               "'-' reads it from standard input (a file named '-' is ./-)")


COMMANDS = {
    "ls": dict(
        help="list the images in a bundle",
        description="List every repository, tag (or untagged root), platforms and size in a bundle, "
        "and say loudly if the bundle is incomplete (an export that did not finish, or parts missing).",
        epilog="examples:\n  transfer ls app.bundle\n  transfer ls --json dvd.bundle.001",
    ),
    "verify": dict(
        help="check every byte of a bundle",
        description="Read every record of the bundle and check its checksum, size and digest; check "
        "the index checksum; and check that every manifest's children are in the bundle (or declared "
        "expected at the destination). Prints each problem with the digest at fault; exits 1 if "
        "there is any. Given one part NAME.00N of a split set, checks that part on its own.",
        epilog="examples:\n  transfer verify app.bundle\n  transfer verify app.bundle.002      "
        "one part, e.g. as soon as a DVD is burnt\n  transfer verify --repair app.bundle  "
        "also rebuild a damaged index (same as 'transfer recover')\n  transfer verify app.bundle --key site.pub  "
        "also check its signature\n  transfer verify app.bundle --print-statement st  then check it with openssl:\n"
        "      openssl dgst -sha256 -verify site.pub -signature st.sig st          (ECDSA P-256)\n"
        "      openssl pkeyutl -verify -pubin -inkey site.pub -rawin -in st -sigfile st.sig   (Ed25519)",
    ),
    "recover": dict(
        help="rebuild the index of a damaged or interrupted bundle",
        description="Scan the records of a bundle whose index is missing or damaged (a crash, a full "
        "disk, a cut copy), keep every complete record, drop a torn tail and write a valid index. "
        "The result is marked incomplete: run the same export again to finish it (it continues "
        "the file), or, once 'transfer verify' is clean, pass --mark-complete.",
        epilog="example:\n  transfer recover app.bundle && transfer verify app.bundle",
    ),
}


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    funcs = {"ls": cmd_ls, "verify": cmd_verify, "recover": cmd_recover}
    parsers = {}
    for name, texts in COMMANDS.items():
        texts = dict(texts, description=textwrap.fill(texts["description"], 78))
        p = subparsers.add_parser(name, parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter, **texts)
        p.add_argument("bundle", metavar="BUNDLE", help=BUNDLE_HELP)
        p.set_defaults(func=funcs[name])
        parsers[name] = p
    parsers["verify"].add_argument("--repair", action="store_true",
                                   help="rebuild a missing or damaged index from the records")
    parsers["verify"].add_argument("--key", action="append", metavar="PUB",
                                   help="trusted public key (repeatable: any of them): every part must be signed by one, "
                                   "and the statement recomputed from the bundle must equal the signed one")
    parsers["verify"].add_argument("--print-statement", metavar="FILE",
                                   help="write the signed statement to FILE and its signature to FILE.sig (a split set: "
                                   "FILE.00N and FILE.00N.sig per part), for openssl or cosign verify-blob")
    parsers["recover"].add_argument("--mark-complete", action="store_true",
                                    help="mark the recovered bundle complete (only if you know the export had finished)")


def _open_listing(path: str) -> BundleListing:
    from transfer.bundle import BundleReader
    from transfer.bundle.sequential import BundleStream, stream_input

    stream = stream_input(path)  # "-", a FIFO, <(...)
    if stream is not None:
        return BundleStream(*stream).listing()
    with BundleReader(path, recover=True) as reader:  # a damaged index: list what the records hold
        return reader.listing()


def cmd_ls(args: argparse.Namespace) -> int:
    listing = _open_listing(args.bundle)
    if args.json:
        print(listing.to_json())
        return 0
    info = listing.info
    parts = f", parts {','.join(map(str, info['parts_present']))} of {info['parts_expected'] or '?'}" if info["split"] else ""
    state = "complete" if listing.complete else "INCOMPLETE: " + "; ".join(info["why_incomplete"])
    print(printable(f"{listing.bundle}: {state}"))
    print(printable(f"created {info['created']} by transfer {info['tool_version']} from "
                    f"{info['source_registry'] or '(unknown)'}{parts}"))
    if listing.signature is not None:
        sig = listing.signature
        print(printable(f"{'signed' if sig.signed else 'PARTLY signed'} by {', '.join(sig.keys)} ({sig.algorithm}); "
                        "not checked here: transfer verify --key PUB checks it"))
        for note in sig.notes if not sig.signed else ():
            print(printable(f"  {note}"))
    table = [("REPOSITORY", "TAG", "DIGEST", "PLATFORMS", "SIZE")]
    for e in listing.images:
        table.append(tuple(map(printable, (e.repository, e.tag or "<none>", e.digest[:19],
                                           ",".join(e.platforms) or "-", format_size(e.total_size)))))
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import transfer.api

    report = transfer.api.verify(args.bundle, repair=args.repair, keys=args.key or (), statement=args.print_statement)
    if args.json:
        print(report.to_json())
    else:
        _print_report(report, args.quiet)
    if report.repaired_parts and not args.quiet and not args.json:
        print(f"repaired: wrote a new index for part(s) {', '.join(map(str, report.repaired_parts))}")
    return 0 if report.ok else 1


def _print_report(report: VerifyReport, quiet: bool) -> None:
    for p in report.problems:
        print(printable(f"PROBLEM {p}"), file=sys.stdout)
    if quiet:
        return
    for note in report.notes:
        print(printable(f"note: {note}"))
    sig = report.signature
    if sig is not None:
        print(printable(f"signature: {'checked, ' if sig.checked else ''}signed by {', '.join(sig.keys) or 'nobody'}"
                        f" ({sig.algorithm or '-'}), part(s) {', '.join(map(str, sig.parts))}"))
        for note in sig.notes:
            print(printable(f"note: {note}"))
    verdict = "OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)"
    state = "complete" if report.complete else "INCOMPLETE"
    print(f"{report.bundle}: {verdict}; {report.records} records, {format_size(report.bytes)} checked; bundle {state}")


def cmd_recover(args: argparse.Namespace) -> int:
    import transfer.api

    report = transfer.api.recover(args.bundle, mark_complete=args.mark_complete)
    summary = report.model_dump()
    if args.json:
        print(report.to_json())
        return 0
    if not summary["parts"]:
        print(f"{args.bundle}: every index is valid; nothing to recover")
        return 0
    for problem in summary["problems"]:
        print(printable(f"found: {problem}"))
    print(f"recovered {summary['records']} complete records, dropped {format_size(summary['dropped_bytes'])} of torn tail; "
          f"wrote a new index for part(s) {', '.join(map(str, summary['parts']))}"
          + ("" if args.mark_complete else " (marked incomplete: run the export again to finish it)"))
    return 0
