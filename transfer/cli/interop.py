"""transfer unpack: a bundle -> an OCI image layout (skopeo, crane, oras, docker) or a ``docker
load`` tar (transfer.api.unpack; the naming rules are in transfer.interop)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from transfer.cli.common import options, run_job, summary_lines

if TYPE_CHECKING:
    from transfer.reports import UnpackReport


def cmd_unpack(args: argparse.Namespace) -> int:
    import transfer.api
    from transfer.options import UnpackOptions

    opts = options(UnpackOptions, platforms=args.platform or [], prefix=args.prefix,
                   allow_incomplete=args.allow_incomplete)
    hint = (f"run the same command again to continue {args.oci}" if args.oci
            else "run the same command again" if args.docker_archive == "-"
            else f"nothing was left at {args.docker_archive}; run the same command again")

    def job(progress):  # type: ignore[no-untyped-def]
        archive = sys.stdout.buffer if args.docker_archive == "-" else args.docker_archive
        return transfer.api.unpack(args.bundle, oci=args.oci, docker_archive=archive, images=args.refs,
                                   options=opts, progress=progress)

    return run_job(args, "unpack", hint, job, _unpack_lines)


def _unpack_lines(report: UnpackReport) -> list[str]:
    lines = summary_lines("unpacked", report) + [f"note: {n}" for n in report.notes]
    oci = report.format == "oci"
    lines.append(f"wrote {report.output}; " + (f"read with oci:{report.output}:NAME, NAME one of: " if oci
                                                 else "images: ") + ", ".join(report.names))
    return lines


class IntermixedParser(argparse.ArgumentParser):
    """Parses positionals that come after options (``BUNDLE --oci DIR REF``), which plain
    argparse refuses once a ``*`` positional has matched nothing."""

    _inner = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._inner:  # parse_known_intermixed_args calls back into this method
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


UNPACK_EPILOG = """\
examples:
  transfer unpack site.bundle --oci ./layout                          every image
  transfer unpack site.bundle --oci ./layout sample/app:1.0           one image (and its signatures)
  skopeo copy oci:./layout:1.0 docker://registry.local:5000/app:1.0   read it with skopeo
        (NAME in oci:DIR:NAME is the tag while the layout holds one repository, else the full
        name, e.g. oci:./layout:docker.io/sample/app:1.0; unpack prints the names it wrote)
  transfer unpack site.bundle --docker-archive app.tar sample/app:1.0 --platform linux/arm64
  docker load -i app.tar
  transfer unpack site.bundle --docker-archive all.tar --prefix registry.local:5000
  transfer unpack site.bundle --docker-archive - | docker load

A layout holds everything (indexes, signatures, artifacts) byte for byte. A docker archive holds
container images only: one platform of a multi-platform image (default this machine's), without
signatures or artifacts (skipped with a note). Name images as 'transfer ls BUNDLE' lists them.
"""


def register(subparsers, parents) -> None:
    p = subparsers.add_parser(
        "unpack", parents=parents, help="bundle -> OCI layout or docker archive (for skopeo, crane, oras, docker)",
        description="Write images of a bundle as a standard OCI image layout directory or as a tar "
        "'docker load' reads, digests unchanged (except where --platform narrows an index).",
        epilog=UNPACK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.__class__ = IntermixedParser  # REFs may follow --oci DIR (add_parser takes no class)
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("refs", nargs="*", metavar="REF",
                   help="images as 'transfer ls' lists them: REPOSITORY:TAG or REPOSITORY@DIGEST (default: all)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--oci", metavar="DIR", help="write (or add to) an OCI image layout directory")
    out.add_argument("--docker-archive", metavar="FILE",
                     help="write a tar for 'docker load'; '-' writes it to standard output (| docker load)")
    p.add_argument("--platform", action="append", metavar="OS/ARCH[/VARIANT]",
                   help="the platform of multi-platform images (docker archive: one; default this machine's; "
                   "OCI layout: keep only these, default all)")
    p.add_argument("--prefix", metavar="HOST[:PORT][/PATH]",
                   help="name images PREFIX/REPOSITORY:TAG, e.g. the registry they will be pushed to")
    p.add_argument("--allow-incomplete", action="store_true", help="unpack what an unfinished bundle holds")
    p.set_defaults(func=cmd_unpack)
