"""``RegistryStore``: one registry as a transfer.store Source, Target and Catalog.

Blob pushes go HEAD (skip if present) -> best-effort cross-repository mount -> upload. The mount
comes from a repository this run saw holding the blob, else from a hinted one (``add_homes``: the
bundle's sibling repositories, an inventory of the registry) that a HEAD finds holding it. The upload
itself is delegated to a ``BlobUploader``: ``MonolithicUploader`` (POST + one streamed PUT, the
default) or ``ChunkedUploader`` (upload.py: chunked and resumable, what the commands use).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import ClassVar, Iterable, Mapping, Protocol

from transfer.digest import VerifyingReader, digest_bytes
from transfer.models import MANIFEST_TYPES, MAX_MANIFEST_SIZE, SCHEMA1_TYPES, Descriptor
from transfer.errors import (IntegrityError, NotFoundError, RegistryError, RegistryUnreachableError, TransferError,
                             UnsupportedManifestError, UploadError)
from transfer.registry.client import RegistryClient, UploadStatus
from transfer.registry.cursor import OpenAt
from transfer.registry.upload import OpenSession, RangeUpload
from transfer.store import BlobOpener, Traits

MANIFEST_CACHE = 64  # recently pushed manifests kept for tag() (each at most MAX_MANIFEST_SIZE)
MOUNT_PROBES = 4  # hinted repositories asked (HEAD) for a blob before uploading it
# a digest no registry holds: deleting it answers 404 where deletes are allowed, 405 where not
PROBE_DIGEST = "sha256:" + "0" * 64


class BlobUploader(Protocol):
    def upload(self, client: RegistryClient, repo: str, desc: Descriptor, open_blob: BlobOpener,
               open_session: OpenSession, *, may_stall: bool = False) -> None:
        """Upload ``desc`` to ``repo``. Call ``open_session()`` for a fresh session (again after
        losing one); a session with ``mounted`` set means the blob is already there.
        ``may_stall``: reading ``open_blob`` may pause (see Target.push)."""

    def upload_range(self, client: RegistryClient, repo: str, desc: Descriptor, open_at: OpenAt,
                     start: int, end: int, open_session: OpenSession) -> RangeUpload:
        """Send the bytes ``[start, end)`` of ``desc`` (a blob spanning bundle parts), leaving
        the session open for the next bytes unless ``end`` completes the blob; or refuse with
        an UploadError where the uploader cannot."""

    def forget(self, client: RegistryClient, repo: str, digest: str) -> None:
        """The blob is in ``repo``: drop whatever was saved to continue uploading it."""


class MonolithicUploader:
    """POST, then one PUT ``<Location>&digest=`` streaming the whole blob with Content-Length.
    The stream is verified while sent, so wrong source bytes fail before the registry commits.
    It streams whether or not the source ``may_stall`` (use ChunkedUploader where that matters)."""

    def upload(self, client: RegistryClient, repo: str, desc: Descriptor, open_blob: BlobOpener,
               open_session: OpenSession, *, may_stall: bool = False) -> None:
        session = open_session()
        if session.mounted:
            return

        def body() -> VerifyingReader:
            return VerifyingReader(open_blob(), desc.digest, desc.size, what=f"blob {desc.digest}")

        client.finish_upload(session.location, repo, desc.digest, body=body, length=desc.size)

    def upload_range(self, client: RegistryClient, repo: str, desc: Descriptor, open_at: OpenAt,
                     start: int, end: int, open_session: OpenSession) -> RangeUpload:
        raise UploadError(f"{client.host}: pushing part of a blob needs the chunked uploader")

    def forget(self, client: RegistryClient, repo: str, digest: str) -> None:
        pass  # nothing is saved


class RegistryStore:
    """Source, Target and Catalog over one registry (``client.host``)."""

    # blobs may be pushed from several threads at once, each repository holds its own; reads may
    # stall (uploads elsewhere spool its chunks, see BlobCursor)
    traits: ClassVar[Traits] = Traits(concurrent_push=True, blobs_per_repository=True, may_stall=True)

    def __init__(self, client: RegistryClient, *, uploader: BlobUploader | None = None) -> None:
        self.client = client
        self.uploader = uploader or MonolithicUploader()
        self._manifests: OrderedDict[str, bytes] = OrderedDict()
        self._homes: dict[str, str] = {}  # blob digest -> a repository here known to hold it
        self._hints: dict[str, list[str]] = {}  # blob digest -> repositories that may hold it
        self._lock = threading.Lock()
        self.mounted = 0  # blobs cross-mounted instead of uploaded
        self._absent: set[tuple[str, str]] = set()  # (repo, digest) exists() just found missing
        self.confirmed_tags: set[tuple[str, str]] = set()  # (repo, tag) a PUT answered with the right digest
        self.empty: frozenset[str] = frozenset()  # repositories the catalog said did not exist (learn_empty)
        self._referrers_api: bool | None = None  # None: not asked yet this run
        self._referrers_probe = threading.Lock()

    def close(self) -> None:
        self.client.close()

    # Source / Catalog
    def resolve(self, repo: str, ref: str) -> Descriptor:
        return self._carried(repo, ref, self.client.head_manifest(repo, ref))

    def resolve_read(self, repo: str, ref: str) -> tuple[Descriptor, bytes]:
        """One GET: the root's descriptor and exact bytes (where a HEAD would be followed by a
        GET by digest for them)."""
        manifest = self.client.get_manifest(repo, ref)
        return self._carried(repo, ref, manifest.descriptor), manifest.data

    def _carried(self, repo: str, ref: str, desc: Descriptor) -> Descriptor:
        """``desc`` if transfer can carry it (OCI or Docker v2); UnsupportedManifestError if not."""
        if desc.media_type in SCHEMA1_TYPES:
            raise UnsupportedManifestError(
                f"{self.client.host}/{repo}:{ref} is a Docker schema1 manifest, which cannot be carried "
                "without changing its digest; convert it at the source first (e.g. push it again with docker 1.10+)")
        if desc.media_type not in MANIFEST_TYPES:
            raise UnsupportedManifestError(
                f"{self.client.host}/{repo}:{ref} has media type {desc.media_type or '(none)'}, "
                "which is not an OCI or Docker v2 manifest or index")
        return desc

    def fetch(self, repo: str, desc: Descriptor) -> VerifyingReader:
        if desc.is_manifest:
            data = self.client.get_manifest(repo, desc.digest).data
            return VerifyingReader(io.BytesIO(data), desc.digest, desc.size, what=f"manifest {desc.digest}")
        return self.client.get_blob(repo, desc.digest, desc.size)

    def tags(self, repo: str) -> list[str]:
        return self.client.tags(repo)

    def repositories(self) -> list[str]:
        return self.client.catalog()

    def referrers(self, repo: str, digest: str) -> list[Descriptor]:
        """Referrers by the OCI API; empty where the registry lacks it (the export then relies on
        the fallback and cosign-style tags, which it finds in the tag list). A registry that
        answered 404 (no API) is asked once per run: threads asking together wait for that answer."""
        if self._referrers_api is None:
            with self._referrers_probe:
                if self._referrers_api is None:
                    found = self.client.referrers(repo, digest)
                    self._referrers_api = found is not None
                    return found or []
        if not self._referrers_api:
            return []
        return self.client.referrers(repo, digest) or []

    # Target
    def learn_empty(self, repos: Iterable[str]) -> frozenset[str]:
        """Ask the catalog (one request per 1,000 repositories, and no more pages than 1 + one
        per 100 of ``repos``) which of ``repos`` do not exist yet: they hold no blob, manifest or
        tag (distribution lists every repository holding a blob), so ``exists`` answers False for
        them without asking. Learns nothing where the catalog is refused, missing or too long.
        Only ever saves questions: a registry whose catalog leaves a repository out gets a blob
        or manifest uploaded that it had already (the same bytes again)."""
        wanted = set(repos)
        try:
            listed = self.client.catalog_within(1 + len(wanted) // 100) if wanted else None
        except RegistryUnreachableError:
            raise
        except RegistryError:
            listed = None
        if listed is not None:
            self.empty = frozenset(wanted.difference(listed))
        return self.empty

    def _not_empty(self, repo: str) -> None:
        """``repo`` got content outside the copy engine's order (which never asks about what it
        pushed): ``exists`` asks about it again."""
        with self._lock:
            if repo in self.empty:
                self.empty = self.empty - {repo}

    def exists(self, repo: str, desc: Descriptor) -> bool:
        if repo in self.empty:  # nothing was there when the run began, and a push comes next
            with self._lock:
                self._absent.add((repo, desc.digest))
            return False
        present = (self._manifest_present if desc.is_manifest else self._blob_present)(repo, desc.digest)
        if not present:  # a push that follows need not ask again
            with self._lock:
                self._absent.add((repo, desc.digest))
        return present

    def _asked_absent(self, repo: str, digest: str) -> bool:
        """True once if exists() just found ``digest`` missing in ``repo`` (saves a HEAD)."""
        with self._lock:
            if (repo, digest) in self._absent:
                self._absent.discard((repo, digest))
                return True
        return False

    def _manifest_present(self, repo: str, digest: str) -> bool:
        try:
            self.client.head_manifest(repo, digest)
        except NotFoundError:
            return False
        return True

    def _blob_present(self, repo: str, digest: str) -> bool:
        present = self.client.blob_size(repo, digest) is not None
        if present:
            self._homes.setdefault(digest, repo)
            self.uploader.forget(self.client, repo, digest)
        return present

    def push(self, repo: str, desc: Descriptor, open_blob: BlobOpener, *, mount_from: str | None = None,
             may_stall: bool = False) -> None:
        """Push a blob or a manifest (by digest); a no-op when already present. A blob seen in
        another repository of this registry during this run (or in ``mount_from``) is
        cross-mounted from there first; any mount failure falls back to an upload. ``may_stall``:
        see Target.push."""
        if desc.is_manifest:
            self._push_manifest(repo, desc, open_blob)
            return
        if mount_from:  # a mount outside the engine's order (delta, a blob spanning parts): the repository holds it
            self._not_empty(repo)
        if not self._asked_absent(repo, desc.digest) and self._blob_present(repo, desc.digest):
            return
        source = mount_from or self._homes.get(desc.digest) or self.find_home(repo, desc.digest)

        def open_session() -> UploadStatus:
            session = self.client.start_upload(repo, mount=desc.digest, from_repo=source)
            if session.mounted:
                with self._lock:
                    self.mounted += 1
            return session

        self.uploader.upload(self.client, repo, desc, open_blob, open_session, may_stall=may_stall)
        self._homes.setdefault(desc.digest, repo)

    def add_homes(self, homes: Mapping[str, Iterable[str]]) -> None:
        """Hints: repositories of this registry that may hold each blob (digest -> names); a push
        asks them (HEAD) before uploading, and mounts from the first that holds it."""
        with self._lock:
            for digest, repos in homes.items():
                if repos := list(repos):  # no entry for none: one per blob of a run would stay to its end
                    known = self._hints.setdefault(digest, [])
                    known += [r for r in repos if r not in known]

    def find_home(self, repo: str, digest: str) -> str | None:
        """A repository other than ``repo`` known (this run) or hinted and found (HEAD) to hold
        ``digest``, None if none is."""
        with self._lock:
            known = self._homes.get(digest)
        if known and known != repo:
            return known
        with self._lock:
            candidates = [r for r in self._hints.get(digest, []) if r != repo][:MOUNT_PROBES]
        for candidate in candidates:
            try:
                if self.client.blob_size(candidate, digest) is not None:
                    return candidate
            except RegistryError:  # not readable there (auth, a bad name): try the next one
                continue
        return None

    # Deletes (prune, rm)
    def check_delete(self, repo: str) -> None:
        """Raise TransferError, before anything is deleted, where the registry does not allow
        deleting manifests in ``repo`` (405 / UNSUPPORTED, or no permission)."""
        try:
            self.client.delete_manifest(repo, PROBE_DIGEST)
        except NotFoundError:
            return  # deletes are allowed; the probe digest just is not there
        except RegistryError as exc:
            if exc.status == 405 or "UNSUPPORTED" in exc.codes:
                raise TransferError(f"{self.client.host}/{repo}: the registry does not allow deleting manifests "
                                    "(405 UNSUPPORTED; distribution needs storage.delete.enabled: true); "
                                    "nothing was deleted") from None
            raise TransferError(f"{self.client.host}/{repo}: deleting is refused ({exc}); nothing was deleted") from None
        raise TransferError(f"{self.client.host}/{repo}: the registry accepted deleting a manifest that cannot exist "
                            f"({PROBE_DIGEST}); refusing to delete anything there")

    def delete(self, repo: str, digest: str) -> bool:
        """DELETE the manifest ``digest`` (and so every tag pointing at it); False if absent."""
        try:
            self.client.delete_manifest(repo, digest)
        except NotFoundError:
            return False
        with self._lock:
            self._manifests.pop(digest, None)
        return True

    def push_range(self, repo: str, desc: Descriptor, open_at: OpenAt, start: int, end: int) -> RangeUpload:
        """Push the bytes ``[start, end)`` of a blob whose other bytes are not at hand (a blob
        spanning bundle parts): the upload session is continued from the journal and left open
        for the next run unless ``end`` completes the blob (see ChunkedUploader.upload_range)."""
        self._not_empty(repo)
        if self._blob_present(repo, desc.digest):
            return RangeUpload(desc.size)

        def open_session() -> UploadStatus:
            return self.client.start_upload(repo)

        return self.uploader.upload_range(self.client, repo, desc, open_at, start, end, open_session)

    def _push_manifest(self, repo: str, desc: Descriptor, open_blob: BlobOpener) -> None:
        with VerifyingReader(open_blob(), desc.digest, desc.size, what=f"manifest {desc.digest}") as reader:
            data = reader.read_all(MAX_MANIFEST_SIZE)
        self._remember(desc.digest, data)
        if self._asked_absent(repo, desc.digest) or not self._manifest_present(repo, desc.digest):
            self.client.put_manifest(repo, desc.digest, data, desc.media_type)

    def _remember(self, digest: str, data: bytes) -> None:
        with self._lock:  # images are finished by several threads
            self._manifests[digest] = data
            self._manifests.move_to_end(digest)
            while len(self._manifests) > MANIFEST_CACHE:
                self._manifests.popitem(last=False)

    def push_tagged(self, repo: str, desc: Descriptor, raw: bytes, tag: str) -> None:
        """PUT the manifest by ``tag``: the registry stores it (by digest too) and tags it."""
        if digest_bytes(raw) != desc.digest:
            raise IntegrityError(f"manifest for {repo}:{tag}", desc.digest, digest_bytes(raw))
        self._remember(desc.digest, raw)
        self._put_tag(repo, desc, tag, raw)

    def _put_tag(self, repo: str, desc: Descriptor, tag: str, data: bytes) -> None:
        if self.client.put_manifest(repo, tag, data, desc.media_type) == desc.digest:
            with self._lock:  # the registry said it holds these bytes under the tag
                self.confirmed_tags.add((repo, tag))

    def tag(self, repo: str, desc: Descriptor, tag: str) -> None:
        """PUT the manifest's exact bytes under ``tag`` (bytes from this run, or fetched)."""
        with self._lock:
            data = self._manifests.get(desc.digest)
        if data is None:
            data = self.client.get_manifest(repo, desc.digest).data
        self._put_tag(repo, desc, tag, data)
