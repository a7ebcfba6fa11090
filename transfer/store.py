"""The store protocol every place images live implements (registry, bundle, OCI layout, docker
archive), so that moving images is one algorithm (``transfer.copy``) over any two stores.

Blobs and manifests share the verbs; a store routes by ``desc.is_manifest`` where it must.
``repo`` is the repository name inside the store (a bundle or layout may hold many).
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

from transfer.digest import Readable, VerifyingReader
from transfer.models import Descriptor

# Returns a fresh stream of the blob's bytes from offset 0. A target may call it more than once
# (to restart a blob, or to read past a prefix the destination already holds).
BlobOpener = Callable[[], Readable]


@runtime_checkable
class Source(Protocol):
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
    def exists(self, repo: str, desc: Descriptor) -> bool:
        """True if ``desc`` is present (and so need not be pushed)."""

    def push(self, repo: str, desc: Descriptor, open_blob: BlobOpener) -> None:
        """Store the content; verify before committing; pushing twice is a no-op."""

    def tag(self, repo: str, desc: Descriptor, tag: str) -> None:
        """Point ``tag`` at the manifest ``desc`` (already pushed)."""


def read_manifest(source: Source, repo: str, desc: Descriptor, limit: int) -> bytes:
    """Fetch a manifest's exact bytes, verified, refusing more than ``limit`` bytes."""
    with source.fetch(repo, desc) as reader:
        return reader.read_all(limit)

