"""The OCI image layout (image-spec ``image-layout.md``) as a store: ``oci-layout``, ``index.json``
and ``blobs/<alg>/<hex>``, read and written so that skopeo, crane, oras and docker agree with us.

Naming convention (how store repositories map onto ``index.json`` entries):

* Each tagged entry we write carries ``io.containerd.image.name`` = ``registry/repo:tag`` (as
  Docker >= 25 writes it, so ``docker load`` of the layout as a tar names the image) and
  ``org.opencontainers.image.ref.name``:
  - the bare tag (``1.25``) while the layout's named entries belong to one repository: what
    ``skopeo oci:DIR:1.25``, crane, oras and docker expect;
  - the full name (``docker.io/library/nginx:1.25``) as soon as entries of more than one
    repository share the layout. skopeo 1.9.3 addresses it as ``oci:DIR:docker.io/library/nginx:1.25``
    (it splits ``oci:DIR:REF`` at the first colon after DIR and accepts ``/``, ``:`` and ``@`` in REF).
  The rule is applied to every entry that carries ``io.containerd.image.name`` each time the index
  is written, so the names depend only on what the layout holds, not on the order of writes.
* Reading: an entry's repository and tag come from ``io.containerd.image.name`` if present, else
  from a full-name ``ref.name``; an entry with only a bare tag (skopeo, crane and oras write these)
  belongs to the unnamed repository ``UNNAMED`` (``""``). ``resolve_name`` finds an entry by its
  ``ref.name`` string exactly as skopeo does.
* Note: skopeo 1.9.3 only looks up OCI manifests and indexes by name; a Docker schema2 manifest
  kept byte-exact in a layout is readable by digest but not by ``oci:DIR:TAG`` in that version.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Iterator

from transfer.digest import VerifyingReader, copy_stream, validate_digest
from transfer.errors import InvalidReferenceError, LayoutError, NotFoundError
from transfer.interrupt import check as check_stop
from transfer.models import MANIFEST_TYPES, MAX_MANIFEST_SIZE, OCI_INDEX, OCI_MANIFEST, Descriptor
from transfer.reference import TAG_RE, Reference, validate_tag
from transfer.store import BlobOpener, Traits
from transfer.untrusted import MAX_JSON_FILE, load_json, validate

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"
REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_NAME = "io.containerd.image.name"
UNNAMED = ""  # the repository of entries that carry nothing but a bare tag
_NAMING = (REF_NAME, IMAGE_NAME)
MIN_BATCH = 256  # batched index.json entries: write when this many, or as many as it holds, wait


def blob_path(digest: str) -> str:
    """``blobs/<alg>/<hex>``; safe because validate_digest admits no path characters."""
    alg, _, encoded = validate_digest(digest).partition(":")
    return f"blobs/{alg}/{encoded}"


def canonical_repository(repo: str) -> str:
    """The full name (``docker.io/library/nginx``) of ``repo``, or UNNAMED for ``""``."""
    if repo == UNNAMED:
        return UNNAMED
    ref = Reference.parse(repo, default_tag=None)
    if ref.tag or ref.digest:
        raise InvalidReferenceError(f"repository name {repo!r} must not carry a tag or digest")
    return ref.name


def entry_name(annotations: dict[str, Any] | None) -> tuple[str, str] | None:
    """(repository, tag) of an index.json entry, or None if it is untagged."""
    ann = annotations or {}
    for key in (IMAGE_NAME, REF_NAME):
        value = ann.get(key)
        if not isinstance(value, str) or not value:
            continue
        if key == REF_NAME and TAG_RE.match(value):
            return UNNAMED, value
        try:
            ref = Reference.parse(value, default_tag=None)
        except InvalidReferenceError:
            continue
        if ref.tag and not ref.digest:
            return ref.name, ref.tag
    return None


def name_entries(entries: list[dict[str, Any]]) -> None:
    """Set ``ref.name`` of every entry that carries ``io.containerd.image.name`` by the module's
    convention: the bare tag while one repository is named, else the full name."""
    named = [(e, entry_name(e.get("annotations"))) for e in entries]
    repos = {n[0] for _, n in named if n}
    for entry, name in named:
        ann = entry.get("annotations") or {}
        if name and IMAGE_NAME in ann:
            ann[REF_NAME] = name[1] if len(repos) <= 1 else f"{name[0]}:{name[1]}"


def tagged_entry(desc: Descriptor, repo: str, tag: str) -> dict[str, Any]:
    """The index.json entry for ``desc`` tagged ``repo:tag`` (ref.name set by name_entries)."""
    entry = desc.model_dump(by_alias=True, exclude_none=True, mode="json")
    annotations = {k: v for k, v in (desc.annotations or {}).items() if k not in _NAMING}
    if repo != UNNAMED:
        annotations[IMAGE_NAME] = f"{repo}:{tag}"
    annotations[REF_NAME] = tag
    entry["annotations"] = annotations
    return entry


def check_layout_version(raw: bytes, what: str) -> None:
    """Refuse an ``oci-layout`` file other than ``{"imageLayoutVersion": "1.0.0"}``."""
    try:
        data = load_json(raw, f"{what}: {LAYOUT_FILE}", LayoutError, 4096)
    except LayoutError:
        data = None
    version = data.get("imageLayoutVersion") if isinstance(data, dict) else None
    if version != LAYOUT_VERSION:
        raise LayoutError(f"{what}: unsupported {LAYOUT_FILE} (imageLayoutVersion {version!r}, expected {LAYOUT_VERSION!r})")


def parse_index(raw: bytes, what: str) -> tuple[dict[str, Any], list[Descriptor]]:
    """Parse index.json: the whole object (to rewrite it) and its entries as descriptors."""
    data = load_json(raw, what, LayoutError, MAX_JSON_FILE)
    manifests = data.get("manifests") if isinstance(data, dict) else None
    if not isinstance(manifests, list) or data.get("schemaVersion") != 2:
        raise LayoutError(f"{what} is not an image index (schemaVersion 2 with a manifests list)")
    entries = [validate(Descriptor, item, f"{what}: entry {i} is not a valid descriptor", LayoutError)
               for i, item in enumerate(manifests)]
    for i, desc in enumerate(entries):
        check_naming(desc.annotations, f"{what}: entry {i}")
    return data, entries


def check_naming(annotations: dict[str, Any] | None, what: str) -> None:
    """Refuse a name annotation with control or non-ASCII characters (``v1\n``, terminal
    escapes): it could reach a terminal, a file name or a URL. Other names that are not
    references only leave the entry unnamed (see ``entry_name``)."""
    for key in _NAMING:
        value = (annotations or {}).get(key)
        if value is not None and not (value.isascii() and value.isprintable() and " " not in value):
            raise LayoutError(f"{what}: malformed {key} {value[:80]!r}")


def sniff_manifest_type(raw: bytes, what: str) -> str:
    """The media type a stored manifest declares (inferred for an old body without one)."""
    try:
        data = load_json(raw, what, LayoutError, MAX_MANIFEST_SIZE)
    except LayoutError:
        raise NotFoundError(f"{what} is not a manifest (not JSON)") from None
    if not isinstance(data, dict) or data.get("schemaVersion") != 2:
        raise NotFoundError(f"{what} is not a manifest")
    media_type = data.get("mediaType") or (OCI_INDEX if "manifests" in data else OCI_MANIFEST)
    if media_type not in MANIFEST_TYPES:
        raise NotFoundError(f"{what} is not a manifest (media type {str(media_type)[:80]!r})")
    return media_type


def merge_entries(manifests: list[dict[str, Any]], entries: list[Descriptor],
                  added: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """index.json's ``manifests`` (parsed as ``entries``) after adding ``added`` in order, in one
    pass: a tagged entry replaces the entries of its name and the untagged ones of its digest;
    an untagged entry is added only if no entry lists its digest. Then named by name_entries."""
    out: list[dict[str, Any] | None] = list(manifests)
    digests = [d.digest for d in entries]
    listed = Counter(digests)  # digest -> entries listing it
    named: dict[tuple[str, str], list[int]] = {}
    untagged: dict[str, list[int]] = {}
    for i, desc in enumerate(entries):
        _note(i, desc.digest, entry_name(desc.annotations), named, untagged)
    for raw in added:
        digest, name = raw["digest"], entry_name(raw.get("annotations"))
        if name is None and listed[digest]:
            continue
        if name is not None:
            for i in untagged.pop(digest, []) + named.pop(name, []):
                out[i] = None
                listed[digests[i]] -= 1
        out.append(raw)
        digests.append(digest)
        listed[digest] += 1
        _note(len(out) - 1, digest, name, named, untagged)
    result = [e for e in out if e is not None]
    name_entries(result)
    return result


def _note(i: int, digest: str, name: tuple[str, str] | None, named: dict, untagged: dict) -> None:
    if name is None:
        untagged.setdefault(digest, []).append(i)
    else:
        named.setdefault(name, []).append(i)


def public_descriptor(desc: Descriptor) -> Descriptor:
    """``desc`` without the layout's naming annotations (they must not travel to another store)."""
    rest = {k: v for k, v in (desc.annotations or {}).items() if k not in _NAMING}
    return desc.model_copy(update={"annotations": rest or None})


class IndexedSource:
    """Source + Catalog over an index of entries and a blob opener; shared by OciLayout and
    DockerArchive. Subclasses provide ``_entries``, ``_open_blob`` and ``_blob_size``."""

    what = "image layout"
    traits: ClassVar[Traits] = Traits()

    def _entries(self) -> list[Descriptor]:
        raise NotImplementedError

    def _open_blob(self, digest: str) -> BinaryIO:
        """The stored bytes of ``digest`` (NotFoundError if absent)."""
        raise NotImplementedError

    def _blob_size(self, digest: str) -> int | None:
        raise NotImplementedError

    def repositories(self) -> list[str]:
        names = (entry_name(d.annotations) for d in self._entries())
        return sorted({n[0] for n in names if n})

    def tags(self, repo: str) -> list[str]:
        repo = canonical_repository(repo)
        names = (entry_name(d.annotations) for d in self._entries())
        return sorted({n[1] for n in names if n and n[0] == repo})

    def resolve(self, repo: str, ref: str) -> Descriptor:
        if ":" in ref:  # a tag cannot hold a colon
            return self._resolve_digest(validate_digest(ref))
        wanted = (canonical_repository(repo), validate_tag(ref))
        for desc in self._entries():
            if entry_name(desc.annotations) == wanted:
                return public_descriptor(desc)
        shown = f"{wanted[0]}:{ref}" if wanted[0] else ref
        raise NotFoundError(f"{self.what}: no image tagged {shown}")

    def resolve_name(self, ref_name: str) -> tuple[str, Descriptor]:
        """Find an entry by its ``ref.name`` exactly as ``skopeo oci:DIR:REF`` does (the first
        match); return its repository (UNNAMED if unknown) and descriptor."""
        for desc in self._entries():
            if (desc.annotations or {}).get(REF_NAME) == ref_name:
                name = entry_name(desc.annotations)
                return (name[0] if name else UNNAMED), public_descriptor(desc)
        raise NotFoundError(f"{self.what}: no entry named {ref_name!r}")

    def untagged(self) -> list[Descriptor]:
        """The entries that carry no name (roots kept by digest only)."""
        return [public_descriptor(d) for d in self._entries() if entry_name(d.annotations) is None]

    def _resolve_digest(self, digest: str) -> Descriptor:
        for desc in self._entries():
            if desc.digest == digest:
                return public_descriptor(desc)
        size = self._blob_size(digest)
        if size is None or size > MAX_MANIFEST_SIZE:
            raise NotFoundError(f"{self.what}: no manifest {digest}")
        what = f"{self.what} blob {digest}"
        with VerifyingReader(self._open_blob(digest), digest, size, what) as reader:
            media_type = sniff_manifest_type(reader.read_all(MAX_MANIFEST_SIZE), what)
        return Descriptor(mediaType=media_type, digest=digest, size=size)

    def fetch(self, repo: str, desc: Descriptor) -> VerifyingReader:
        what = f"{self.what} blob {desc.digest}"
        return VerifyingReader(self._open_blob(desc.digest), desc.digest, desc.size, what)


class OciLayout(IndexedSource):
    """An OCI image layout directory as Source, Catalog and Target.

    ``create=True`` makes the directory (and ``oci-layout``, ``index.json``, ``blobs/``) if absent;
    it refuses a non-empty directory that is not a layout. Blobs are written to a temporary file,
    verified, then renamed, so a blob file always matches its name. ``index.json`` is rewritten
    atomically under an exclusive lock on the layout directory, keeping every other entry.
    """

    # one copy serves every repository; blobs go through temporary files, index.json under a lock
    traits: ClassVar[Traits] = Traits(concurrent_push=True, blobs_per_repository=False)

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.path = Path(path)
        self.what = f"OCI layout {self.path}"
        self._pending: list[dict[str, Any]] = []  # index.json entries recorded, not yet written
        self._pending_lock = threading.RLock()
        self._batching, self._indexed = False, 0  # _indexed: entries at the last write
        if create:
            self._create()
        self._check_layout()

    # -- opening ---------------------------------------------------------------------------

    def _create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if (self.path / LAYOUT_FILE).exists():
            return
        if any(self.path.iterdir()):
            raise LayoutError(f"{self.path} is not empty and is not an OCI layout; refusing to write into it")
        (self.path / "blobs").mkdir(exist_ok=True)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        _atomic_write(self.path / INDEX_FILE, json.dumps(index).encode())
        _atomic_write(self.path / LAYOUT_FILE, json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode())

    def _check_layout(self) -> None:
        try:
            raw = (self.path / LAYOUT_FILE).read_bytes()
        except OSError as exc:
            raise LayoutError(f"{self.path} is not an OCI image layout (no readable {LAYOUT_FILE}: {exc.strerror})") from None
        check_layout_version(raw, self.what)
        if not (self.path / INDEX_FILE).is_file():
            raise LayoutError(f"{self.what}: {INDEX_FILE} is missing")
        self._root = os.path.realpath(self.path)

    # -- reading ---------------------------------------------------------------------------

    def _read_index(self) -> tuple[dict[str, Any], list[Descriptor]]:
        """index.json with the entries recorded but not yet written."""
        with self._pending_lock:
            data, entries = self._read_disk_index()
            if self._pending:
                data["manifests"] = merge_entries(data["manifests"], entries, self._pending)
                entries = [Descriptor.model_validate(e) for e in data["manifests"]]
            return data, entries

    def _read_disk_index(self) -> tuple[dict[str, Any], list[Descriptor]]:
        try:
            with open(self.path / INDEX_FILE, "rb") as fh:
                raw = fh.read(MAX_JSON_FILE + 1)  # more is refused by parse_index
        except OSError as exc:
            raise LayoutError(f"{self.what}: cannot read {INDEX_FILE}: {exc.strerror}") from None
        return parse_index(raw, f"{self.what}: {INDEX_FILE}")

    def _entries(self) -> list[Descriptor]:
        return self._read_index()[1]

    def _blob_file(self, digest: str) -> Path:
        """The blob's path, refusing a blobs directory that leads outside the layout."""
        path = self.path / blob_path(digest)
        parent = os.path.realpath(path.parent)
        if os.path.commonpath([parent, self._root]) != self._root:
            raise LayoutError(f"{self.what}: {path.parent} leads outside the layout")
        return path

    def _open_blob(self, digest: str) -> BinaryIO:
        path = self._blob_file(digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise NotFoundError(f"{self.what}: blob {digest} is missing") from None
        except OSError as exc:
            raise LayoutError(f"{self.what}: cannot open blob {digest} (not a regular file?): {exc.strerror}") from None
        return os.fdopen(fd, "rb")

    def _blob_size(self, digest: str) -> int | None:
        try:
            st = os.lstat(self._blob_file(digest))
        except FileNotFoundError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    # -- writing ---------------------------------------------------------------------------

    def exists(self, repo: str, desc: Descriptor) -> bool:
        return self._blob_size(desc.digest) == desc.size

    def push(self, repo: str, desc: Descriptor, open_blob: BlobOpener, *, may_stall: bool = False) -> None:
        if self.exists(repo, desc):
            return
        final = self._blob_file(desc.digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        what = f"blob {desc.digest} for {self.what}"
        with _temporary(final) as (out, tmp):
            with VerifyingReader(open_blob(), desc.digest, desc.size, what) as reader:
                copy_stream(reader, out)
            out.flush()
            os.fsync(out.fileno())
            os.replace(tmp, final)

    def tag(self, repo: str, desc: Descriptor, tag: str) -> None:
        repo, tag = canonical_repository(repo), validate_tag(tag)
        if desc.media_type not in MANIFEST_TYPES:
            raise LayoutError(f"{self.what}: cannot tag {desc.digest}: {desc.media_type} is not a manifest")
        if not self.exists(repo, desc):
            raise NotFoundError(f"{self.what}: cannot tag {desc.digest}: the manifest was not pushed")
        check_stop(f"writing {self.what}")  # a safe point: every tag is independent of the next
        self._record(tagged_entry(desc, repo, tag))

    def add_root(self, repo: str, desc: Descriptor) -> None:
        """Keep the untagged root ``desc`` (already pushed) reachable: an index.json entry without
        a name, unless an entry already lists the digest. The layout cannot record ``repo`` for it."""
        if desc.media_type not in MANIFEST_TYPES or not self.exists(repo, desc):
            raise NotFoundError(f"{self.what}: cannot add root {desc.digest}: no manifest was pushed")
        self._record(public_descriptor(desc).model_dump(by_alias=True, exclude_none=True, mode="json"))

    # -- index.json: written at once, or in growing batches inside ``with layout:`` -------------

    def __enter__(self) -> "OciLayout":
        """Batch the index.json entries of tag() and add_root() (a large unpack writes the index
        a few times, not once per tag); leaving the block writes what is left. A run killed
        inside leaves a valid index.json without the latest entries: running it again adds them."""
        self._batching = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Write the entries recorded since the last write and stop batching."""
        self._batching = False
        self.flush()

    def _record(self, entry: dict[str, Any]) -> None:
        with self._pending_lock:
            self._pending.append(entry)
            due = not self._batching or len(self._pending) >= max(MIN_BATCH, self._indexed)
        if due:
            self.flush()

    def flush(self) -> None:
        """Merge the recorded entries into index.json (under the layout's lock, so entries other
        processes wrote meanwhile are kept) and write it once, atomically."""
        with self._pending_lock:
            if not self._pending:
                return
            with self._locked():
                data, entries = self._read_disk_index()
                data["manifests"] = merge_entries(data["manifests"], entries, self._pending)
                _atomic_write(self.path / INDEX_FILE, json.dumps(data, separators=(",", ":")).encode())
            self._indexed, self._pending = len(data["manifests"]), []

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive flock on the layout directory (between processes and threads alike)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


@contextlib.contextmanager
def _temporary(final: Path) -> Iterator[tuple[BinaryIO, str]]:
    """A temporary file beside ``final``, removed unless the body renamed it into place."""
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name[:16]}.", suffix=".tmp")
    os.fchmod(fd, 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out, tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    with _temporary(path) as (out, tmp):
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
        os.replace(tmp, path)


__all__ = [
    "OciLayout", "IndexedSource", "UNNAMED", "REF_NAME", "IMAGE_NAME", "blob_path", "entry_name",
    "canonical_repository", "check_layout_version", "merge_entries", "name_entries", "tagged_entry", "parse_index", "public_descriptor",
]
