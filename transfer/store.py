"""The store protocol every place images live implements (registry, bundle, OCI layout, docker
archive), so that moving images is one algorithm (``transfer.engine``) over any two stores, and the
image plan that algorithm runs: the manifest graph under one root, read from a source.

Blobs and manifests share the verbs; a store routes by ``desc.is_manifest`` where it must.
``repo`` is the repository name inside the store (a bundle or layout may hold many).

What a store can do beyond the verbs is declared, never probed by name: a ``Traits`` value on the
class, and small side protocols (``Referrers``, ``RootRecorder``, ``Partial``, ``PushByTag``) the engine checks
once with ``isinstance``.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Protocol, runtime_checkable

from transfer.digest import Readable, VerifyingReader, digest_bytes
from transfer.errors import TransferError, UsageError
from transfer.models import MAX_MANIFEST_SIZE, Descriptor, ManifestView, Platform, parse_manifest

# Returns a fresh stream of the blob's bytes from offset 0. A target may call it more than once
# (to restart a blob, or to read past a prefix the destination already holds).
BlobOpener = Callable[[], Readable]

MAX_MANIFEST_DEPTH = 4  # an index of indexes of ... deeper than this is refused


@dataclass(frozen=True)
class Traits:
    """What a store can do beyond the verbs, declared once on its class."""

    concurrent_push: bool = False  # a target that takes pushes from several threads at once
    blobs_per_repository: bool = True  # False: one stored copy serves every repository (files)
    may_stall: bool = False  # a source whose reads come over a network and may stall


def check_output_file(path: str | os.PathLike[str], what: str) -> str:
    """``path`` as a string if a file can be written there (a store that writes one file checks
    before any work); UsageError naming the path otherwise."""
    path = os.fspath(path)
    if not path:
        raise UsageError(f"{what}: the file name is empty")
    if os.path.isdir(path):
        raise UsageError(f"{what} {path}: is a directory; name a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{what} {path}: folder {folder} does not exist")
    return path


@runtime_checkable
class Source(Protocol):
    traits: ClassVar[Traits]

    def resolve(self, repo: str, ref: str) -> Descriptor:
        """Tag or digest -> root descriptor (NotFoundError if absent)."""

    def fetch(self, repo: str, desc: Descriptor) -> VerifyingReader:
        """A stream of the content whose size and digest are checked at EOF."""

    def tags(self, repo: str) -> list[str]:
        """Every tag of ``repo``, sorted."""


@runtime_checkable
class Catalog(Protocol):
    def repositories(self) -> list[str]:
        """Every repository the store holds, sorted."""


@runtime_checkable
class Target(Protocol):
    traits: ClassVar[Traits]

    def exists(self, repo: str, desc: Descriptor) -> bool:
        """True if ``desc`` is present (and so need not be pushed)."""

    def push(self, repo: str, desc: Descriptor, open_blob: BlobOpener, *, may_stall: bool = False) -> None:
        """Store the content; verify before committing; pushing twice is a no-op. ``may_stall``:
        reading ``open_blob`` may pause (a source over the network), so a target that sends the
        bytes on where an idle request is cut reads ahead of sending."""

    def tag(self, repo: str, desc: Descriptor, tag: str) -> None:
        """Point ``tag`` at the manifest ``desc`` (already pushed)."""


@runtime_checkable
class Referrers(Protocol):
    """A source that answers the OCI referrers API."""

    def referrers(self, repo: str, digest: str) -> list[Descriptor]:
        """Manifests whose subject is ``digest`` (empty where the API is missing)."""


@runtime_checkable
class ResolvesWithBytes(Protocol):
    """A source that answers a reference with the manifest itself (a registry's GET by tag): one
    request instead of a question for the digest and a second one for the bytes."""

    def resolve_read(self, repo: str, ref: str) -> tuple[Descriptor, bytes]:
        """``resolve`` and the root manifest's exact bytes (verified against the digest)."""


@runtime_checkable
class PushByTag(Protocol):
    """A target that stores a manifest and points a tag at it in one request (a registry's PUT
    by tag): a new image's root then costs one request, not a check, a push and a tag."""

    def push_tagged(self, repo: str, desc: Descriptor, raw: bytes, tag: str) -> None:
        """Store the manifest ``raw`` (``desc``; its children already there) under ``tag``."""


@runtime_checkable
class RootRecorder(Protocol):
    """A target that records untagged roots (a bundle's catalog, a layout's index.json)."""

    def add_root(self, repo: str, desc: Descriptor) -> None:
        """Keep the untagged root ``desc`` (already pushed) reachable in ``repo``."""


@runtime_checkable
class Partial(Protocol):
    """A source that may hold only some of the content its images need (the parts of a split
    bundle that have arrived, an unfinished bundle): the engine holds back what is missing."""

    def has(self, digest: str) -> bool:
        """True if the whole content ``digest`` can be fetched now."""


def read_manifest(source: Source, repo: str, desc: Descriptor, limit: int) -> bytes:
    """Fetch a manifest's exact bytes, verified, refusing more than ``limit`` bytes."""
    with source.fetch(repo, desc) as reader:
        return reader.read_all(limit)


@dataclass(slots=True)  # one per image, held for the whole run
class ImagePlan:
    """One root manifest to copy from ``src_repo`` to ``dst_repo`` under ``tags``: its manifests
    children first (the root last) and every blob they reference, each once.

    A plan read from a source carries the manifests' exact bytes (``raw``); a plan recorded in a
    bundle (docs/bundle-format.md, "Plan") does not, and the engine reads them when it pushes.
    """

    src_repo: str
    dst_repo: str
    root: Descriptor
    tags: list[str]
    manifests: list[Descriptor] = field(default_factory=list)
    blobs: list[Descriptor] = field(default_factory=list)
    label: str = field(default="", compare=False)
    original_root: str | None = field(default=None, compare=False)  # set when --platform made a new root
    raw: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.label:
            self.label = f"{self.src_repo}:{self.tags[0]}" if self.tags else f"{self.src_repo}@{self.root.digest}"

    @property
    def blob_bytes(self) -> int:
        return sum(b.size for b in self.blobs)

    def views(self) -> dict[str, ManifestView]:
        """The manifests read while planning, parsed (children first)."""
        return {d.digest: parse_manifest(self.raw[d.digest], d.media_type, f"manifest {d.digest}")
                for d in self.manifests if d.digest in self.raw}


def plan_image(
    src: Source,
    src_repo: str,
    root: Descriptor,
    *,
    dst_repo: str | None = None,
    tags: list[str] | None = None,
    platforms: list[Platform] | None = None,
    label: str = "",
    raw: bytes | None = None,
) -> ImagePlan:
    """Read the manifest graph under ``root`` and list what a copy must move (``raw``: the root's
    bytes where they were read already, verified)."""
    plan = ImagePlan(src_repo, dst_repo or src_repo, root, list(tags or []), label=label or root.digest)
    raw = read_manifest(src, src_repo, root, MAX_MANIFEST_SIZE) if raw is None else raw
    view = parse_manifest(raw, root.media_type, f"{plan.label} ({root.digest})")
    if view.is_index and platforms:
        root, raw, view = _filter_platforms(plan, root, raw, view, platforms)
    _walk(src, src_repo, root, raw, view, plan, depth=0)
    return plan


def _walk(src: Source, repo: str, desc: Descriptor, raw: bytes, view: ManifestView, plan: ImagePlan, depth: int) -> None:
    if depth > MAX_MANIFEST_DEPTH:
        raise TransferError(f"{plan.label}: manifest nesting deeper than {MAX_MANIFEST_DEPTH} levels at {desc.digest}")
    seen_blobs = {b.digest for b in plan.blobs}
    for child in view.children():
        if child.is_manifest:
            if child.digest in plan.raw:
                continue
            child_raw = read_manifest(src, repo, child, MAX_MANIFEST_SIZE)
            child_view = parse_manifest(child_raw, child.media_type, f"{plan.label} child {child.digest}")
            _walk(src, repo, child, child_raw, child_view, plan, depth + 1)
            seen_blobs = {b.digest for b in plan.blobs}
        elif child.digest not in seen_blobs:
            seen_blobs.add(child.digest)
            plan.blobs.append(shared_descriptor(child))
    plan.manifests.append(desc)
    plan.raw[desc.digest] = raw


_SHARED_MAX = 1024
_shared: OrderedDict[tuple[str, str, int], Descriptor] = OrderedDict()
_shared_lock = threading.Lock()


def shared_descriptor(desc: Descriptor) -> Descriptor:
    """One instance of a plain descriptor (digest, media type, size, nothing else) for the images
    read recently: a base layer is in many images, and every plan is held to the end of a run.
    (Descriptors are frozen; the last _SHARED_MAX are remembered.)"""
    if desc.model_extra or desc.annotations is not None or desc.platform is not None \
            or desc.artifact_type is not None or desc.urls is not None:
        return desc
    key = (desc.digest, desc.media_type, desc.size)
    with _shared_lock:
        found = _shared.get(key)
        if found is not None:
            _shared.move_to_end(key)
            return found
        _shared[key] = desc
        if len(_shared) > _SHARED_MAX:
            _shared.popitem(last=False)
    return desc


def _filter_platforms(
    plan: ImagePlan, root: Descriptor, raw: bytes, view: ManifestView, wanted: list[Platform]
) -> tuple[Descriptor, bytes, ManifestView]:
    """Keep only the index entries matching ``wanted``; a changed index is a new manifest."""
    kept = [m for m in view.manifests if m.platform and any(m.platform.matches(w) for w in wanted)]
    if not kept:
        have = ", ".join(str(m.platform) for m in view.manifests if m.platform) or "none"
        raise TransferError(f"{plan.label}: no platform matches {', '.join(map(str, wanted))} (index has {have})")
    if len(kept) == len(view.manifests):
        return root, raw, view
    doc = json.loads(raw)
    kept_digests = {m.digest for m in kept}
    doc["manifests"] = [m for m in doc["manifests"] if m.get("digest") in kept_digests]
    new_raw = json.dumps(doc, indent=3 if raw.startswith(b"{\n") else None).encode()
    new_root = Descriptor(mediaType=root.media_type, digest=digest_bytes(new_raw), size=len(new_raw))
    plan.original_root, plan.root = root.digest, new_root
    return new_root, new_raw, parse_manifest(new_raw, root.media_type)
