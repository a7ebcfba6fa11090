"""The ``docker save`` / ``docker load`` tar as a store.

Writing (``DockerArchiveWriter``): the Docker >= 25 combined layout, one tar that serves both
``docker load`` and OCI readers: ``oci-layout``, ``index.json`` and ``blobs/sha256/*`` (manifests,
configs and layers byte-exact as pushed), plus ``manifest.json`` whose ``Config`` and ``Layers``
point into ``blobs/``, plus the legacy ``repositories``. Gzip and zstd layers stay compressed
(docker load and skopeo decompress them); every layer is decompressed once while it streams in, to
check that it is a tar and to compute its diff_id, and ``tag`` refuses an image whose config
``rootfs.diff_ids`` disagree (docker load would refuse it on the far side of the air gap).

Reading (``DockerArchive``): tars from ``docker save`` (legacy ``<id>/layer.tar`` and the Docker 25
OCI-in-tar layout) and from ``skopeo copy ... docker-archive:``. Where the tar holds ``index.json``
its manifests are used as they are. A legacy archive holds no registry manifest, so one is
synthesised: an OCI image manifest (compact JSON, fixed key order) whose config is the archive's
config bytes unchanged (``application/vnd.oci.image.config.v1+json``) and whose layers are the
archive's layer files as they are: an uncompressed tar is ``application/vnd.oci.image.layer.v1.tar``
with digest = its diff_id (nothing is recompressed or rehashed up front; fetch verifies), a gzip or
zstd file gets its own media type and digest. The same archive always gives the same manifest
digest. ``RepoTags`` give repositories (full names, ``nginx:1`` -> ``docker.io/library/nginx``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import zstandard

from transfer.bundle.writer import StreamOut
from transfer.digest import READ_SIZE, Digester, VerifyingReader, digest_bytes, validate_digest
from transfer.errors import InvalidReferenceError, LayoutError, NotFoundError
from transfer.layout import (
    IMAGE_NAME,
    INDEX_FILE,
    LAYOUT_FILE,
    LAYOUT_VERSION,
    IndexedSource,
    blob_path,
    canonical_repository,
    check_layout_version,
    name_entries,
    parse_index,
    tagged_entry,
)
from transfer.models import (
    DOCKER_CONFIG,
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    MAX_MANIFEST_SIZE,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Descriptor,
    ManifestView,
    parse_manifest,
)
from transfer.reference import Reference, familiar_name
from transfer.store import BlobOpener, Traits, check_output_file
from transfer.untrusted import load_json

MANIFEST_FILE = "manifest.json"
MAX_CONFIG_SIZE = MAX_MANIFEST_SIZE
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
_MAX_LINKS = 16
GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


def layer_format(head: bytes) -> str:
    """``gzip``, ``zstd`` or ``tar`` (anything else is taken for an uncompressed tar here and
    checked by its digest) from a layer's first bytes."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "tar"


_LAYER_TYPES = {"tar": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}


def clean_member_path(name: str, what: str) -> str:
    """A tar path normalised (``./a//b`` -> ``a/b``), refusing absolute paths and ``..``."""
    norm = posixpath.normpath(name)
    if name.startswith("/") or norm == ".." or norm.startswith("../") or "\x00" in name:
        raise LayoutError(f"{what}: path {name!r} leads outside the archive")
    return norm


@dataclass
class _Member:
    offset: int
    size: int
    kind: str  # "file", "symlink", "hardlink", "other"
    link: str = ""


class _MemberReader:
    """Exactly ``size`` bytes of one tar member, read by seeking in the archive file."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self._file = open(path, "rb")
        self._file.seek(offset)
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._file.read(n)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "_MemberReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TarIndex:
    """The members of an uncompressed tar, indexed once (names and data offsets), never extracted."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self.members: dict[str, _Member] = {}
        with open(path, "rb") as f:
            if f.read(2) == GZIP_MAGIC:
                raise LayoutError(f"{what} is gzip-compressed; decompress it first (gunzip)")
            f.seek(0)
            try:
                with tarfile.open(fileobj=f, mode="r:") as tar:
                    for info in tar:
                        self._add(info)
            except tarfile.TarError as exc:
                raise LayoutError(f"{what} is not a readable tar archive: {exc}") from None

    def _add(self, info: tarfile.TarInfo) -> None:
        name = clean_member_path(info.name, self.what)
        kind = "file" if info.isreg() else "symlink" if info.issym() else "hardlink" if info.islnk() else "other"
        self.members[name] = _Member(info.offset_data, info.size, kind, info.linkname)

    def locate(self, name: str) -> _Member:
        """The regular file ``name`` names, following links that stay inside the archive."""
        path = clean_member_path(name, self.what)
        for _ in range(_MAX_LINKS):
            member = self.members.get(path)
            if member is None:
                raise LayoutError(f"{self.what}: {name!r} is missing from the archive")
            if member.kind == "file":
                return member
            if member.kind == "other":
                raise LayoutError(f"{self.what}: {name!r} is not a regular file")
            base = posixpath.dirname(path) if member.kind == "symlink" else ""
            path = clean_member_path(posixpath.join(base, member.link), self.what)
        raise LayoutError(f"{self.what}: {name!r}: too many levels of links")

    def open(self, name: str) -> tuple[_MemberReader, int]:
        member = self.locate(name)
        return _MemberReader(self.path, member.offset, member.size), member.size

    def read_small(self, name: str, limit: int) -> bytes:
        reader, size = self.open(name)
        if size > limit:
            reader.close()
            raise LayoutError(f"{self.what}: {name!r} is {size} bytes, more than the {limit} allowed")
        with reader:
            return reader.read(size)

    def head(self, name: str, n: int = 4) -> bytes:
        reader, _ = self.open(name)
        with reader:
            return reader.read(n)


def config_diff_ids(config: bytes, what: str) -> list[str]:
    """``rootfs.diff_ids`` of an image config, validated."""
    data = load_json(config, what, LayoutError, MAX_CONFIG_SIZE)
    try:
        diff_ids = data["rootfs"]["diff_ids"]
    except (KeyError, TypeError):
        raise LayoutError(f"{what} is not an image config with rootfs.diff_ids") from None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise LayoutError(f"{what}: rootfs.diff_ids is not a list of digests")
    return [validate_digest(d) for d in diff_ids]


def repo_tag(text: str, what: str) -> tuple[str, str]:
    """(full repository name, tag) of a ``RepoTags`` entry; docker load refuses anything else."""
    try:
        ref = Reference.parse(text, default_tag=None)
    except InvalidReferenceError as exc:
        raise LayoutError(f"{what}: RepoTags entry {text!r}: {exc}") from None
    if not ref.tag or ref.digest:
        raise LayoutError(f"{what}: RepoTags entry {text!r} is not name:tag")
    return ref.name, ref.tag


class DockerArchive(IndexedSource):
    """A ``docker save`` / ``skopeo docker-archive:`` tar as Source and Catalog (read-only).

    The tar's members are indexed once; blobs are streamed from their offsets, never extracted.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(check_output_file(path, "docker archive"))
        self.what = f"docker archive {self.path}"
        self._tar = TarIndex(self.path, self.what)
        self._synthetic: dict[str, bytes] = {}  # synthesised manifest digest -> bytes
        self._files: dict[str, str] = {}  # blob digest -> member path (legacy archives)
        members = self._tar.members
        self.legacy = not (INDEX_FILE in members and LAYOUT_FILE in members)
        self._index = self._load_manifest_json() if self.legacy else self._load_oci_index()

    def _entries(self) -> list[Descriptor]:
        return self._index

    def _load_oci_index(self) -> list[Descriptor]:
        check_layout_version(self._tar.read_small(LAYOUT_FILE, 4096), self.what)
        return parse_index(self._tar.read_small(INDEX_FILE, MAX_MANIFEST_SIZE), f"{self.what}: {INDEX_FILE}")[1]

    def _load_manifest_json(self) -> list[Descriptor]:
        if MANIFEST_FILE not in self._tar.members:
            raise LayoutError(f"{self.what} has neither {MANIFEST_FILE} nor an OCI {INDEX_FILE}: not a docker archive")
        data = load_json(self._tar.read_small(MANIFEST_FILE, MAX_MANIFEST_SIZE), f"{self.what}: {MANIFEST_FILE}",
                         LayoutError, MAX_MANIFEST_SIZE)
        if not isinstance(data, list):
            raise LayoutError(f"{self.what}: {MANIFEST_FILE} is not a list of images")
        entries: list[Descriptor] = []
        for i, item in enumerate(data):
            what = f"{self.what}: {MANIFEST_FILE} entry {i}"
            desc = self._synthesize(item, what)
            tags = [repo_tag(t, what) for t in item.get("RepoTags") or []]
            entries += [desc.model_copy(update={"annotations": {IMAGE_NAME: f"{r}:{t}"}}) for r, t in tags]
            entries += [] if tags else [desc]
        return entries

    def _synthesize(self, item: Any, what: str) -> Descriptor:
        """The OCI manifest for one manifest.json entry (see the module docstring)."""
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str) or not (
            isinstance(item.get("Layers"), list) and all(isinstance(p, str) for p in item["Layers"])
        ) or not isinstance(item.get("RepoTags") or [], list) or not all(
            isinstance(t, str) for t in item.get("RepoTags") or []
        ):
            raise LayoutError(f"{what} lacks Config, Layers or a RepoTags list")
        config = self._tar.read_small(item["Config"], MAX_CONFIG_SIZE)
        config_digest = digest_bytes(config)
        self._files[config_digest] = item["Config"]
        diff_ids = config_diff_ids(config, f"{what}: config {item['Config']}")
        if len(diff_ids) != len(item["Layers"]):
            raise LayoutError(f"{what}: {len(item['Layers'])} layers but {len(diff_ids)} diff_ids in its config")
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [self._layer(path, diff_id) for path, diff_id in zip(item["Layers"], diff_ids)],
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        self._synthetic[digest_bytes(raw)] = raw
        return Descriptor(mediaType=OCI_MANIFEST, digest=digest_bytes(raw), size=len(raw))

    def _layer(self, path: str, diff_id: str) -> dict[str, Any]:
        fmt = layer_format(self._tar.head(path))
        size = self._tar.locate(path).size
        digest = diff_id if fmt == "tar" else self._hash_member(path)
        self._files[digest] = path
        return {"mediaType": _LAYER_TYPES[fmt], "digest": digest, "size": size}

    def _hash_member(self, path: str) -> str:
        digester = Digester()
        reader, _ = self._tar.open(path)
        with reader:
            while chunk := reader.read(READ_SIZE):
                digester.update(chunk)
        return digester.digest()

    def _open_blob(self, digest: str) -> BinaryIO:
        if digest in self._synthetic:
            return io.BytesIO(self._synthetic[digest])
        return self._tar.open(self._member_name(digest))[0]  # type: ignore[return-value]

    def _blob_size(self, digest: str) -> int | None:
        if digest in self._synthetic:
            return len(self._synthetic[digest])
        try:
            return self._tar.locate(self._member_name(digest)).size
        except (NotFoundError, LayoutError):
            return None

    def _member_name(self, digest: str) -> str:
        name = self._files.get(digest) if self.legacy else blob_path(digest)
        if name is None or clean_member_path(name, self.what) not in self._tar.members:
            raise NotFoundError(f"{self.what}: blob {digest} is not in the archive")
        return name


class _TarWriter:
    """An append-only tar stream; a member whose stream fails is cut off again, so the archive
    only ever holds verified members."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._f = fileobj

    def add(self, name: str, size: int, stream: Any) -> None:
        start = self._f.tell() if self._f.seekable() else None
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, 0, 0o644
        try:
            self._f.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
            written = 0
            while chunk := stream.read(READ_SIZE):  # to EOF, so a verifying stream checks itself
                written += len(chunk)
                if written > size:
                    raise LayoutError(f"{name}: more than the declared {size} bytes")
                self._f.write(chunk)
            if written != size:
                raise LayoutError(f"{name}: {written} bytes, expected {size}")
            self._f.write(b"\0" * (-size % tarfile.BLOCKSIZE))
        except BaseException:
            if start is not None:  # a stream (docker load reading a pipe) cannot take it back
                self._f.seek(start)
                self._f.truncate()
            raise

    def finish(self) -> None:
        self._f.write(b"\0" * (2 * tarfile.BLOCKSIZE))
        self._f.write(b"\0" * (-self._f.tell() % tarfile.RECORDSIZE))


class _TarContent:
    """Receives a layer's uncompressed bytes: hashes them (the diff_id) and keeps the first
    block to check that they are a tar."""

    def __init__(self) -> None:
        self.digester = Digester()
        self.head = b""

    def write(self, data: bytes) -> int:
        if len(self.head) < tarfile.BLOCKSIZE:
            self.head += data[: tarfile.BLOCKSIZE - len(self.head)]
        self.digester.update(data)
        return len(data)

    def is_tar(self) -> bool:
        block = self.head
        return len(block) == tarfile.BLOCKSIZE and (block[257:262] == b"ustar" or block == bytes(len(block)))


class _GunzipTo:
    """Push-style gzip decompression (multi-member) into a sink, in bounded pieces."""

    def __init__(self, sink: _TarContent) -> None:
        self._sink = sink
        self._d = zlib.decompressobj(31)
        self._pending = False

    def write(self, data: bytes) -> None:
        while data:
            self._pending = True
            self._sink.write(self._d.decompress(data, READ_SIZE))
            data = self._d.unconsumed_tail
            if self._d.eof:
                data, self._d, self._pending = self._d.unused_data, zlib.decompressobj(31), False

    def close(self) -> None:
        if self._pending:
            raise zlib.error("truncated gzip stream")


class _ZstdTo:
    def __init__(self, sink: _TarContent) -> None:
        self._w = zstandard.ZstdDecompressor().stream_writer(sink, write_size=READ_SIZE, closefd=False)

    def write(self, data: bytes) -> None:
        self._w.write(data)

    def close(self) -> None:
        self._w.flush()


class _PlainTo:
    def __init__(self, sink: _TarContent) -> None:
        self.write, self.close = sink.write, lambda: None


_DECOMPRESSORS = {"gzip": _GunzipTo, "zstd": _ZstdTo, "tar": _PlainTo}


class LayerCheck:
    """Pass a layer's bytes through unchanged while decompressing them once to find the diff_id;
    at EOF raise LayoutError unless they are a (gzip or zstd compressed) tar."""

    def __init__(self, raw: Any, what: str) -> None:
        self._raw, self.what = raw, what
        self._content = _TarContent()
        self._decoder: Any = None
        self._head = b""
        self._error: Exception | None = None
        self.diff_id = ""

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if not data:
            self._finish()
        elif self._error is None:
            try:
                self._feed(data)
            except (zlib.error, zstandard.ZstdError) as exc:
                # Reported at EOF, after the stream's own digest check: bad bytes in transit are
                # an IntegrityError, only verified bytes that do not decompress are a bad layer.
                self._error = exc
        return data

    def _feed(self, data: bytes) -> None:
        if self._decoder is None:
            self._head += data
            if len(self._head) < len(ZSTD_MAGIC):
                return
            data, self._head = self._head, b""
            self._decoder = _DECOMPRESSORS[layer_format(data)](self._content)
        self._decoder.write(data)

    def _finish(self) -> None:
        try:
            self._close_decoder()
        except (zlib.error, zstandard.ZstdError) as exc:
            self._error = self._error or exc
        if self._error is not None:
            raise LayoutError(f"{self.what}: corrupt compressed data: {self._error}")
        if not self._content.is_tar():
            raise LayoutError(f"{self.what} is not a layer: neither a tar archive nor a gzip or zstd compressed one")
        self.diff_id = self._content.digester.digest()

    def _close_decoder(self) -> None:
        if self._decoder is None:
            self._decoder = _PlainTo(self._content)
            self._decoder.write(self._head)
        self._decoder.close()


@dataclass
class _Tagged:
    repo: str
    tag: str
    desc: Descriptor


class DockerArchiveWriter:
    """Target writing a tar that ``docker load`` (any version) and OCI readers accept.

    Only single-platform images: pushing an index raises LayoutError (narrow a multi-platform
    source to one platform first). Blobs stream into the tar as they are pushed, verified on the
    way (a failed blob is cut off again). The tar is written under a temporary name beside
    ``path`` and renamed by ``close()``; ``abort()`` (or leaving the ``with`` block by an
    exception) removes it, so a half-written archive never looks complete.
    """

    traits: ClassVar[Traits] = Traits(blobs_per_repository=False)  # one copy serves every repository; one push at a time

    def __init__(self, path: str | os.PathLike[str] | BinaryIO) -> None:
        if isinstance(path, (str, os.PathLike)):
            self.path: Path | None = Path(check_output_file(path, "docker archive"))
            self.what = f"docker archive {self.path}"
            fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".partial")
            self._file: Any = os.fdopen(fd, "w+b")
        else:  # a stream (| docker load): written front to back; a failure leaves it cut short
            self.path, self._tmp = None, ""
            self.what = f"docker archive to {getattr(path, 'name', 'a stream')}"
            self._file = StreamOut(path, self.what)
        self._tar = _TarWriter(self._file)
        self._blobs: set[str] = set()
        self._small: dict[str, bytes] = {}  # manifests and configs, digest -> bytes
        self._diff_ids: dict[str, str] = {}  # layer digest -> digest of the uncompressed tar
        self._tagged: list[_Tagged] = []
        self._done = False

    def exists(self, repo: str, desc: Descriptor) -> bool:
        return desc.digest in self._blobs

    def push(self, repo: str, desc: Descriptor, open_blob: BlobOpener, *, may_stall: bool = False) -> None:
        if desc.digest in self._blobs:
            return
        if desc.media_type in INDEX_TYPES:
            raise LayoutError(
                f"{self.what}: {desc.digest} is a multi-platform index; a docker archive holds "
                "single-platform images (choose a platform)"
            )
        what = f"blob {desc.digest} ({desc.media_type}) for {self.what}"
        with VerifyingReader(open_blob(), desc.digest, desc.size, what) as reader:
            if desc.media_type in IMAGE_MANIFEST_TYPES or desc.media_type in CONFIG_TYPES:
                data = reader.read_all(MAX_MANIFEST_SIZE)
                self._tar.add(blob_path(desc.digest), len(data), io.BytesIO(data))
                self._small[desc.digest] = data
            else:
                check = LayerCheck(reader, what)
                self._tar.add(blob_path(desc.digest), desc.size, check)
                self._diff_ids[desc.digest] = check.diff_id
        self._blobs.add(desc.digest)

    def tag(self, repo: str, desc: Descriptor, tag: str) -> None:
        if desc.media_type not in IMAGE_MANIFEST_TYPES:
            raise LayoutError(f"{self.what}: cannot tag {desc.digest}: {desc.media_type} is not an image manifest")
        if canonical_repository(repo) == "":
            raise LayoutError(f"{self.what}: docker load needs a repository name for tag {tag!r}")
        name, tag = repo_tag(f"{canonical_repository(repo)}:{tag}", self.what)
        raw = self._small.get(desc.digest)
        if raw is None:
            raise NotFoundError(f"{self.what}: cannot tag {desc.digest}: the manifest was not pushed")
        self._check_image(parse_manifest(raw, desc.media_type, f"manifest {desc.digest}"), desc.digest)
        self._tagged = [t for t in self._tagged if (t.repo, t.tag) != (name, tag)]
        self._tagged.append(_Tagged(name, tag, desc))

    def _check_image(self, view: ManifestView, digest: str) -> None:
        """The checks docker load makes: an image config whose diff_ids are the layers' own."""
        what = f"image {digest}"
        if view.config is None or view.config.media_type not in CONFIG_TYPES or view.config.digest not in self._small:
            raise LayoutError(f"{self.what}: {what} has no image config (pushed) that docker load could use")
        config = self._small[view.config.digest]
        diff_ids = config_diff_ids(config, f"{what}: config {view.config.digest}")
        actual = [self._diff_ids.get(layer.digest) for layer in view.layers]
        if None in actual:
            raise NotFoundError(f"{self.what}: {what}: layer {view.layers[actual.index(None)].digest} was not pushed")
        if diff_ids != actual:
            raise LayoutError(
                f"{self.what}: {what}: config rootfs.diff_ids {diff_ids} do not match the uncompressed "
                f"layers {actual}; docker load would refuse it"
            )

    def close(self) -> None:
        """Write the index files, finish the tar and move it into place."""
        if self._done:
            return
        try:
            if not self._tagged:
                raise LayoutError(f"{self.what}: no image was tagged; refusing to write an empty archive")
            for name, data in self._metadata():
                self._tar.add(name, len(data), io.BytesIO(data))
            self._tar.finish()
            self._file.flush()
            if self.path is not None:
                os.fsync(self._file.fileno())
                self._file.close()
                os.replace(self._tmp, self.path)
            self._done = True
        finally:
            self.abort()

    def abort(self) -> None:
        """Forget everything written (removes the temporary file); the target path is untouched.
        (A stream keeps what it was sent: its reader sees an archive cut short.)"""
        if self.path is None:
            self._done = True
            return
        self._file.close()
        if not self._done:
            self._done = True
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)

    def __enter__(self) -> "DockerArchiveWriter":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.abort() if exc_type else self.close()

    def _metadata(self) -> list[tuple[str, bytes]]:
        entries = [tagged_entry(t.desc, t.repo, t.tag) for t in self._tagged]
        name_entries(entries)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        images: dict[str, dict[str, Any]] = {}
        repositories: dict[str, dict[str, str]] = {}
        for t in self._tagged:
            view = parse_manifest(self._small[t.desc.digest], t.desc.media_type)
            layers = [blob_path(layer.digest) for layer in view.layers]
            image = images.setdefault(t.desc.digest, {"Config": blob_path(view.config.digest), "RepoTags": [], "Layers": layers})
            image["RepoTags"].append(f"{familiar_name(t.repo)}:{t.tag}")
            if view.layers:
                repositories.setdefault(familiar_name(t.repo), {})[t.tag] = view.layers[-1].digest.split(":")[1]
        return [
            (LAYOUT_FILE, json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode()),
            (INDEX_FILE, json.dumps(index, separators=(",", ":")).encode()),
            (MANIFEST_FILE, json.dumps(list(images.values()), separators=(",", ":")).encode()),
            ("repositories", json.dumps(repositories, separators=(",", ":")).encode()),
        ]
