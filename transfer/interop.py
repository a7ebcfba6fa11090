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

import json
import os
import shutil
import sys
import tempfile
import platform as host_platform
from pathlib import Path
from typing import Any, ClassVar

from transfer.bundle import BundleReader
from transfer.bundle.format import CatalogEntry
from transfer.digest import VerifyingReader
from transfer.docker_archive import CONFIG_TYPES, DockerArchive
from transfer.errors import NotFoundError, TransferError, UsageError
from transfer.layout import REF_NAME, UNNAMED, OciLayout, canonical_repository
from transfer.models import (DOCKER_LAYER_GZIP, MAX_MANIFEST_SIZE, OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD,
                             Descriptor, ManifestView, Platform, parse_manifest)
from transfer.reference import TAG_RE, Reference, validate_repository
from transfer.selection import (CatalogFilter, Selection, is_referrer_tag, platform_notes, plan_exports,
                                select_repositories)
from transfer.store import ImagePlan, Traits, plan_image, read_manifest

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

    traits: ClassVar[Traits] = Traits()

    def __init__(self, inner: OciLayout | DockerArchive, names: dict[str, str], spool: Any = None) -> None:
        self.inner, self.names, self._spool = inner, names, spool  # spool: a tar read from stdin

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
        if self._spool is not None:
            self._spool.close()  # a temporary file: removed on close


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


def _unnamed_repository(repository: str | None, path: str) -> str:
    name = repository or default_repository(path)
    try:
        return validate_repository(name)
    except TransferError:
        raise UsageError(f"{name!r} is not a valid repository name for the entries that carry only a tag; "
                         "name it with --repository NAME (e.g. --repository team/app)") from None


def export_source(source: str, repository: str | None, filt: CatalogFilter) -> tuple[RenamedSource, list[Selection], str]:
    """For ``export --from``: the source store, what to take from it, and the bundle's source name."""
    kind, path, ref = parse_from(source)
    spool = _spool_stdin() if (kind, path) == ("docker-archive", "-") else None
    inner = OciLayout(path) if kind == "oci" else DockerArchive(spool.name if spool else path)
    needs_name = UNNAMED in inner.repositories() or (not ref and inner.untagged())
    unnamed_as = _unnamed_repository(repository, path) if needs_name or repository else None
    src = RenamedSource(inner, bundle_names(inner, unnamed_as, f"{kind}:{path}"), spool)
    outer = {v: k for k, v in src.names.items()}
    if ref:
        selections = [_select_one(inner, kind, ref, outer)]
    else:
        selections = select_repositories(src, src.repositories(), filt)
        selections += [Selection(unnamed_as, d.digest) for d in inner.untagged()]
    return src, selections, f"{kind}:{path}"


def _spool_stdin() -> Any:
    """``docker save IMG | transfer export --from docker-archive:-``: a tar names its images in
    manifest.json, which ``docker save`` writes last, so standard input is copied to a temporary
    file (in $TMPDIR, removed afterwards) before anything is read from it."""
    spool = tempfile.NamedTemporaryFile(prefix="transfer-stdin-", suffix=".tar")
    try:
        shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
        spool.flush()
    except BaseException:
        spool.close()
        raise
    return spool


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


# -- unpack: bundle -> OCI layout or docker archive ---------------------------------------------

def select_entries(reader: BundleReader, refs: list[str]) -> list[CatalogEntry]:
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


def docker_plans(reader: BundleReader, entries: list[CatalogEntry], wanted: Platform | None) -> tuple[list[ImagePlan], list[str]]:
    """One plan per single-platform image; indexes narrowed to one platform, the rest skipped."""
    plans: dict[tuple[str, str], ImagePlan] = {}
    notes: list[str] = []
    for e in entries:
        label = f"{e.repository}:{e.tag}" if e.tag else f"{e.repository}@{e.digest}"
        if not e.tag:
            notes.append(f"{label}: skipped: untagged, and docker load names images by repo:tag")
            continue
        if is_referrer_tag(e.tag):
            notes.append(f"{label}: skipped: a signature, attestation or other referrer (they travel with "
                         "their image in a bundle or an OCI layout, not in a docker archive)")
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


def check_not_delta(reader: BundleReader, plans: list[ImagePlan]) -> None:
    expected = {d.digest for d in reader.expected}
    left_out = sorted({b.digest for p in plans for b in p.blobs if b.digest in expected})
    if left_out:
        raise TransferError(f"{reader.path} is a delta bundle: {len(left_out)} blob(s) these images need were left "
                            f"out (e.g. {left_out[0]}), so it can only be imported into the registry that has them")


def unpack_plans(reader: BundleReader, refs: list[str], platforms: list[Platform] | None,
                 oci: bool) -> tuple[list[ImagePlan], list[str]]:
    entries = select_entries(reader, refs)
    if oci:
        selections = [Selection(e.repository, e.tag or e.digest) for e in entries]
        plans = plan_exports(reader, selections, platforms=platforms, referrers=True)
        return plans, platform_notes(plans)
    if platforms and len(platforms) > 1:
        raise UsageError("a docker archive holds one platform of each image: give --platform once")
    return docker_plans(reader, entries, platforms[0] if platforms else None)


def apply_prefix(plans: list[ImagePlan], prefix: str | None) -> None:
    for plan in plans:
        if prefix:
            plan.dst_repo = f"{prefix.strip('/')}/{plan.dst_repo}"
        canonical_repository(plan.dst_repo)  # refuse a bad name before anything is written


def layout_names(path: str) -> list[str]:
    """The ``ref.name`` of every entry of a layout's index.json (what ``oci:DIR:REF`` takes)."""
    index = json.loads((Path(path) / "index.json").read_bytes())
    return [m["annotations"][REF_NAME] for m in index["manifests"] if REF_NAME in (m.get("annotations") or {})]


