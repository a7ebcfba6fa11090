"""Interop with other tools: ``unpack`` a bundle into an OCI image layout (skopeo, crane, oras,
docker) or a ``docker load`` tar, and ``export --from oci:DIR | docker-archive:FILE`` (the source
side: a layout or tar another tool wrote, packed into a bundle).

Names: a bundle's repositories are registry paths (``sample/app``, as ``transfer ls`` shows them).
Unpacking names each image ``[PREFIX/]REPO:TAG`` by the layout store's rules (transfer.layout).
Packing maps a layout's full names back to paths (``docker.io/sample/app`` -> ``sample/app``); the
entries skopeo, crane and oras write carry only a tag, and go into the repository named by
``--repository`` (default: the directory's or file's name).
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import time
from pathlib import Path

from transfer.bundle import BundleReader
from transfer.cli.progress import close_progress, make_progress
from transfer.cli.common import emit, parse_platforms, platform_notes, stop_on_signals, summary_lines
from transfer.copy import Copier, ImagePlan, plan_image
from transfer.digest import VerifyingReader
from transfer.docker_archive import CONFIG_TYPES, DockerArchive, DockerArchiveWriter
from transfer.errors import NotFoundError, TransferError, UsageError
from transfer.export import CatalogFilter, Selection, plan_exports, select_repositories
from transfer.layout import REF_NAME, UNNAMED, OciLayout, canonical_repository
from transfer.models import (DOCKER_LAYER_GZIP, MAX_MANIFEST_SIZE, OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD,
                             Descriptor, ManifestView, Platform, parse_manifest)
from transfer.reference import TAG_RE, Reference, validate_repository
from transfer.store import read_manifest

LAYER_TYPES = frozenset({OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER_GZIP,
                         "application/vnd.docker.image.rootfs.diff.tar"})
_MACHINE_ARCH = {"x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", None),
                 "arm64": ("arm64", None), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
                 "i686": ("386", None), "i386": ("386", None), "ppc64le": ("ppc64le", None),
                 "s390x": ("s390x", None), "riscv64": ("riscv64", None)}
FROM_KINDS = ("oci", "docker-archive")


# -- export --from: a layout or docker archive as the source ------------------------------------

class RenamedSource:
    """A layout or docker archive seen with bundle repository names (registry paths): ``names``
    maps each outer name to the store's own (a full name, or UNNAMED for bare-tag entries)."""

    def __init__(self, inner: OciLayout | DockerArchive, names: dict[str, str]) -> None:
        self.inner, self.names = inner, names

    def _inner(self, repo: str) -> str:
        if repo not in self.names:
            raise NotFoundError(f"{self.inner.what}: no repository {repo!r} (it holds {', '.join(sorted(self.names)) or 'none'})")
        return self.names[repo]

    def repositories(self) -> list[str]:
        return sorted(self.names)

    def tags(self, repo: str) -> list[str]:
        return self.inner.tags(self._inner(repo)) if repo in self.names else []

    def resolve(self, repo: str, ref: str) -> Descriptor:
        return self.inner.resolve(self._inner(repo), ref)

    def fetch(self, repo: str, desc: Descriptor) -> VerifyingReader:
        return self.inner.fetch(self.names.get(repo, UNNAMED), desc)

    def close(self) -> None:
        pass


def parse_from(text: str) -> tuple[str, str, str | None]:
    """``oci:DIR[:REF]`` or ``docker-archive:FILE[:REF]`` -> (kind, path, ref); split as skopeo
    does, at the first colon after the path."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in FROM_KINDS or not rest:
        raise UsageError(f"invalid --from {text!r}: expected oci:DIR[:REF] or docker-archive:FILE[:REF]")
    path, sep, ref = rest.partition(":")
    if not path or (sep and not ref):
        raise UsageError(f"invalid --from {text!r}: empty path or reference")
    return kind, path, ref or None


def default_repository(path: str) -> str:
    """The directory's or file's name (``.tar`` dropped): the repository for bare-tag entries."""
    name = os.path.basename(os.path.abspath(path))
    return name[: -len(".tar")] if name.endswith(".tar") else name


def bundle_names(inner: OciLayout | DockerArchive, unnamed_as: str | None, what: str) -> dict[str, str]:
    """Bundle repository -> the store's repository, refusing two that would share a name."""
    names: dict[str, str] = {}
    for repo in inner.repositories():
        outer = Reference.parse(repo, default_tag=None).repository if repo != UNNAMED else unnamed_as
        if outer is None:
            continue
        if outer in names:
            shown = names[outer] or "entries named by a tag only"
            raise UsageError(f"{what}: {shown} and {repo or 'entries named by a tag only'} would both be "
                             f"{outer!r} in the bundle; pick one with {what}:REF or rename with --repository")
        names[outer] = repo
    if unnamed_as is not None:
        names.setdefault(unnamed_as, UNNAMED)  # untagged entries go here; they resolve by digest
    return names


def _unnamed_repository(args, path: str) -> str:
    name = args.repository or default_repository(path)
    try:
        return validate_repository(name)
    except TransferError:
        raise UsageError(f"{name!r} is not a valid repository name for the entries that carry only a tag; "
                         "name it with --repository NAME (e.g. --repository team/app)") from None


def export_source(args) -> tuple[RenamedSource, list[Selection], str]:
    """For ``export --from``: the source store, what to take from it, and the bundle's source name."""
    if args.refs or args.ref_file or args.catalog or args.all_tags:
        raise UsageError("--from names the source on its own: drop REF, -f, --catalog and --all-tags "
                         "(select one image with --from oci:DIR:REF)")
    kind, path, ref = parse_from(args.source)
    inner = OciLayout(path) if kind == "oci" else DockerArchive(path)
    needs_name = UNNAMED in inner.repositories() or (not ref and inner.untagged())
    unnamed_as = _unnamed_repository(args, path) if needs_name or args.repository else None
    src = RenamedSource(inner, bundle_names(inner, unnamed_as, f"{kind}:{path}"))
    outer = {v: k for k, v in src.names.items()}
    if ref:
        selections = [_select_one(inner, kind, ref, outer)]
    else:
        selections = select_repositories(src, src.repositories(), CatalogFilter(args.include, args.exclude, args.tags))
        selections += [Selection(unnamed_as, d.digest) for d in inner.untagged()]
    return src, selections, f"{kind}:{path}"


def _select_one(inner: OciLayout | DockerArchive, kind: str, ref: str, outer: dict[str, str]) -> Selection:
    """The image REF names: a layout's ``ref.name`` (as skopeo reads it), an archive's ``repo:tag``."""
    if kind == "oci":
        repo, desc = inner.resolve_name(ref)
        tag = ref if TAG_RE.match(ref) else Reference.parse(ref, default_tag=None).tag
        return Selection(outer[repo], tag or desc.digest)
    parsed = Reference.parse(ref, default_tag=None)
    if not parsed.tag and not parsed.digest:
        raise UsageError(f"docker-archive reference {ref!r} needs a tag (repo:tag, as docker save wrote it)")
    inner.resolve(parsed.name, parsed.tag or parsed.digest)
    return Selection(outer[parsed.name], parsed.tag or parsed.digest)


def add_export_source_options(p: argparse.ArgumentParser) -> None:
    """The ``export`` options of this module (``--from``, ``--repository``)."""
    g = p.add_argument_group("from another tool's files")
    g.add_argument("--from", dest="source", metavar="oci:DIR[:REF] | docker-archive:FILE[:REF]",
                   help="pack an OCI image layout (skopeo/crane/oras/docker) or a 'docker save' tar instead "
                   "of a registry: every image, or the one REF names (a layout's ref.name, an archive's repo:tag)")
    g.add_argument("--repository", metavar="NAME",
                   help="with --from: the bundle repository for images named by a tag only (as skopeo, "
                   "crane and oras write them); default: the directory's or file's name")


# -- unpack: bundle -> OCI layout or docker archive ---------------------------------------------

def select_entries(reader: BundleReader, refs: list[str]) -> list:
    """The bundle's catalog entries REFs name (``repo:tag`` or ``repo@digest``), default all."""
    if not refs:
        return reader.entries
    out = []
    for ref in refs:
        repo, at, digest = ref.partition("@")
        if not at:
            repo, _, tag = ref.rpartition(":")
        found = [e for e in reader.entries if e.repository == repo
                 and (e.digest == digest if at else e.tag == tag)]
        if not found:
            raise UsageError(f"{ref} is not in {reader.path}: name images as 'transfer ls' lists "
                             "them (REPOSITORY:TAG or REPOSITORY@DIGEST)")
        out += [e for e in found if e not in out]
    return out


def is_container_image(view: ManifestView) -> str | None:
    """None for an image docker can run, else why it is not one."""
    if view.is_index:
        return "a multi-platform index"
    if view.subject is not None or view.artifact_type:
        return "an artifact or signature that refers to an image"
    if view.config is None or view.config.media_type not in CONFIG_TYPES:
        return f"not a container image (config {view.config.media_type if view.config else 'missing'})"
    odd = [layer.media_type for layer in view.layers if layer.media_type not in LAYER_TYPES]
    return f"not a container image (layer type {odd[0]})" if odd else None


def machine_platform() -> Platform:
    """This machine's platform as docker would pull it (linux/amd64 on an x86-64 host)."""
    arch, variant = _MACHINE_ARCH.get(host_platform.machine().lower(), ("amd64", None))
    return Platform(os="linux", architecture=arch, variant=variant)


def choose_platform(view: ManifestView, wanted: Platform | None, label: str) -> tuple[Descriptor, str | None]:
    """The index entry for ``wanted`` (default this machine's platform), and a note if defaulted."""
    entries = [m for m in view.manifests if m.platform and m.platform.os != "unknown"]
    choices = ", ".join(str(m.platform) for m in entries) or "none"
    want = wanted or machine_platform()
    match = next((m for m in entries if m.platform.matches(want)), None)
    if match is None:
        raise UsageError(f"{label} is multi-platform ({choices}) and has no {want}; a docker archive "
                         f"holds one platform: choose it with --platform, e.g. --platform {entries[0].platform if entries else 'linux/amd64'}")
    note = None if wanted else f"{label}: multi-platform; took {match.platform} of {choices} (--platform picks another)"
    return match, note


def docker_plans(reader: BundleReader, entries: list, wanted: Platform | None) -> tuple[list[ImagePlan], list[str]]:
    """One plan per single-platform image; indexes narrowed to one platform, the rest skipped."""
    plans: dict[tuple[str, str], ImagePlan] = {}
    notes: list[str] = []
    for e in entries:
        label = f"{e.repository}:{e.tag}" if e.tag else f"{e.repository}@{e.digest}"
        if not e.tag:
            notes.append(f"{label}: skipped: untagged, and docker load names images by repo:tag")
            continue
        root = reader.resolve(e.repository, e.tag)
        view = parse_manifest(read_manifest(reader, e.repository, root, MAX_MANIFEST_SIZE), root.media_type, label)
        if view.is_index:
            root, note = choose_platform(view, wanted, label)
            notes += [note] if note else []
            view = parse_manifest(read_manifest(reader, e.repository, root, MAX_MANIFEST_SIZE), root.media_type, label)
        why = is_container_image(view)
        if why:
            notes.append(f"{label}: skipped: {why}; a docker archive holds container images only (--oci keeps it)")
            continue
        key = (e.repository, root.digest)
        if key not in plans:
            plans[key] = plan_image(reader, e.repository, root, label=label)
        plans[key].tags.append(e.tag)
    return list(plans.values()), notes


def _check_complete(args, reader: BundleReader) -> None:
    if not reader.info.complete and not args.allow_incomplete:
        raise TransferError(f"{args.bundle} is incomplete (its export did not finish); finish the export, "
                            "or pass --allow-incomplete to unpack what it holds")


def _check_not_delta(args, reader: BundleReader, plans: list[ImagePlan]) -> None:
    expected = {d.digest for d in reader.expected}
    left_out = sorted({b.digest for p in plans for b in p.blobs if b.digest in expected})
    if left_out:
        raise TransferError(f"{args.bundle} is a delta bundle: {len(left_out)} blob(s) these images need were left "
                            f"out (e.g. {left_out[0]}), so it can only be imported into the registry that has them")


def _unpack_plans(args, reader: BundleReader) -> tuple[list[ImagePlan], list[str]]:
    entries = select_entries(reader, args.refs)
    platforms = parse_platforms(args.platform)
    if args.oci:
        selections = [Selection(e.repository, e.tag or e.digest) for e in entries]
        plans = plan_exports(reader, selections, platforms=platforms, referrers=True)
        return plans, platform_notes(plans)
    if platforms and len(platforms) > 1:
        raise UsageError("a docker archive holds one platform of each image: give --platform once")
    return docker_plans(reader, entries, platforms[0] if platforms else None)


def _apply_prefix(plans: list[ImagePlan], prefix: str | None) -> None:
    for plan in plans:
        if prefix:
            plan.dst_repo = f"{prefix.strip('/')}/{plan.dst_repo}"
        canonical_repository(plan.dst_repo)  # refuse a bad name before anything is written


def layout_names(path: str) -> list[str]:
    """The ``ref.name`` of every entry of a layout's index.json (what ``oci:DIR:REF`` takes)."""
    index = json.loads((Path(path) / "index.json").read_bytes())
    return [m["annotations"][REF_NAME] for m in index["manifests"] if REF_NAME in (m.get("annotations") or {})]


def cmd_unpack(args) -> int:
    started = time.monotonic()
    with BundleReader(args.bundle) as reader:
        _check_complete(args, reader)
        plans, notes = _unpack_plans(args, reader)
        _check_not_delta(args, reader, plans)
        _apply_prefix(plans, args.prefix)
        if not plans:
            raise TransferError(f"nothing to write to {args.docker_archive or args.oci}: " + "; ".join(notes or ["no images"]))
        stats = _copy_out(args, reader, plans, notes)
    seconds = time.monotonic() - started
    out = args.oci or args.docker_archive
    names = layout_names(out) if args.oci else [f"{p.dst_repo}:{t}" for p in plans for t in p.tags]
    summary = dict(stats.as_dict(), output=out, format="oci" if args.oci else "docker-archive",
                   names=names, notes=notes, seconds=round(seconds, 3))
    lines = summary_lines("unpacked", stats, seconds) + [f"note: {n}" for n in notes]
    lines.append(f"wrote {out}; " + (f"read with oci:{out}:NAME, NAME one of: " if args.oci else "images: ") + ", ".join(names))
    emit(args, summary, lines)
    return 0


def _copy_out(args, reader: BundleReader, plans: list[ImagePlan], notes: list[str]):
    progress = make_progress(args, "unpack")
    for note in notes:
        progress.message(note)
    hint = (f"run the same command again to continue {args.oci}" if args.oci
            else f"nothing was left at {args.docker_archive}; run the same command again")
    with stop_on_signals(hint):
        try:
            if args.oci:
                return Copier(reader, OciLayout(args.oci, create=True), progress=progress).execute(plans)
            with DockerArchiveWriter(args.docker_archive) as writer:
                return Copier(reader, writer, progress=progress).execute(plans)
        finally:
            close_progress(progress)


class IntermixedParser(argparse.ArgumentParser):
    """Parses positionals that come after options (``BUNDLE --oci DIR REF``), which plain
    argparse refuses once a ``*`` positional has matched nothing."""

    _inner = False

    def parse_known_args(self, args=None, namespace=None):
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
    out.add_argument("--docker-archive", metavar="FILE", help="write a tar for 'docker load'")
    p.add_argument("--platform", action="append", metavar="OS/ARCH[/VARIANT]",
                   help="the platform of multi-platform images (docker archive: one; default this machine's; "
                   "OCI layout: keep only these, default all)")
    p.add_argument("--prefix", metavar="HOST[:PORT][/PATH]",
                   help="name images PREFIX/REPOSITORY:TAG, e.g. the registry they will be pushed to")
    p.add_argument("--allow-incomplete", action="store_true", help="unpack what an unfinished bundle holds")
    p.set_defaults(func=cmd_unpack)
