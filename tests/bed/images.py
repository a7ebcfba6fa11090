"""Deterministic test images written as OCI image layouts (directories), from a seed.

``Layout(root)`` writes blobs as they are made and ``index.json`` on ``save()``; each tag becomes an
``org.opencontainers.image.ref.name`` entry, the ``REF`` of skopeo's ``oci:DIR:REF``. Layers are
real gzip tar archives (``tarfile``; gzip with ``mtime=0``) of reproducible random files, configs
carry correct ``rootfs.diff_ids``. Manifests are written with ``indent=3`` and a trailing newline
(not canonical JSON on purpose: a tool that re-serialises a manifest changes its digest).

Every returned object knows its manifest bytes and digest, tags and blob digests, so tests compare
what a registry or a bundle holds with what was generated.

``python -m tests.bed.images OUTDIR`` writes the sample set (``sample_set``) and prints its refs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
COSIGN_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"
EMPTY_JSON = b"{}"
REF_NAME = "org.opencontainers.image.ref.name"
AMD64 = {"architecture": "amd64", "os": "linux"}
ARM64 = {"architecture": "arm64", "os": "linux", "variant": "v8"}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def dump(obj: Any) -> bytes:
    """Manifest/config bytes as the generator writes them (indent 3, trailing newline)."""
    return json.dumps(obj, indent=3).encode() + b"\n"


@dataclass(frozen=True)
class Blob:
    media_type: str
    digest: str
    size: int

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True)
class Layer(Blob):
    diff_id: str = ""  # digest of the uncompressed tar


@dataclass
class Manifest:
    """An image, artifact or index as generated: exact bytes, digest and what it refers to."""

    media_type: str
    raw: bytes
    tags: list[str] = field(default_factory=list)
    config: Blob | None = None
    layers: list[Blob] = field(default_factory=list)
    children: list["Manifest"] = field(default_factory=list)
    platform: dict[str, str] | None = None
    artifact_type: str | None = None
    subject: "Manifest | None" = None

    @property
    def digest(self) -> str:
        return sha256(self.raw)

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def is_index(self) -> bool:
        return self.media_type in (OCI_INDEX, DOCKER_LIST)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}

    def blob_digests(self) -> set[str]:
        """Config and layer digests of this manifest and of every child, recursively."""
        own = {b.digest for b in ([self.config] if self.config else []) + self.layers}
        return own.union(*(c.blob_digests() for c in self.children))

    def manifest_digests(self) -> set[str]:
        """This manifest's digest and its children's, recursively."""
        return {self.digest}.union(*(c.manifest_digests() for c in self.children))

    def all_bytes(self) -> int:
        """Manifest plus blob sizes over the whole tree (shared blobs once)."""
        blobs: dict[str, int] = {}
        self._collect_blobs(blobs)
        return sum(blobs.values())

    def _collect_blobs(self, into: dict[str, int]) -> None:
        into[self.digest] = self.size
        for blob in ([self.config] if self.config else []) + self.layers:
            into[blob.digest] = blob.size
        for child in self.children:
            child._collect_blobs(into)


def layer_tar(seed: str, size: int, files: int = 3, *, folder: str = "data", content=None) -> bytes:
    """An uncompressed tar of ``files`` reproducible files holding ``size`` bytes in all, under
    ``folder/seed/``; ``content(rng, n)`` gives each file's stream (default: random bytes)."""
    rng = random.Random(f"layer:{seed}")
    make = content or (lambda r, n: io.BytesIO(r.randbytes(n)))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for index in range(files):
            part = size // files + (1 if index < size % files else 0)
            info = tarfile.TarInfo(f"{folder}/{seed}/file{index}.bin")
            info.size, info.mtime, info.mode = part, 0, 0o644
            tar.addfile(info, make(rng, part))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", mtime=0, compresslevel=1) as gz:
        gz.write(data)
    return buf.getvalue()


class Layout:
    """An OCI image layout directory being written."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.refs: dict[str, Manifest] = {}

    def put(self, data: bytes) -> str:
        """Store a blob (idempotent); returns its digest."""
        digest = sha256(data)
        path = self.root / "blobs" / "sha256" / digest.split(":")[1]
        if not path.exists():
            path.write_bytes(data)
        return digest

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest.split(":")[1]

    def layer(self, seed: str, size: int, docker: bool = False) -> Layer:
        tar = layer_tar(seed, size)
        data = gzip_bytes(tar)
        media_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
        return Layer(media_type, self.put(data), len(data), sha256(tar))

    def _config(self, seed: str, layers: list[Layer], platform: dict[str, str], docker: bool) -> Blob:
        config = {**platform, "created": "1970-01-01T00:00:00Z",
                  "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"],
                             "Labels": {"transfer.test.seed": seed}},
                  "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
                  "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"layer {i}"}
                              for i in range(len(layers))]}
        data = dump(config)
        return Blob(DOCKER_CONFIG if docker else OCI_CONFIG, self.put(data), len(data))

    def image(self, seed: str, layer_sizes: list[int] = (20_000,), *, docker: bool = False,
              platform: dict[str, str] | None = None, base: list[Layer] = (),
              tag: str | None = None) -> Manifest:
        """An image: ``base`` layers (shared with other images) then new layers from the seed."""
        layers = list(base) + [self.layer(f"{seed}/{i}", size, docker) for i, size in enumerate(layer_sizes)]
        config = self._config(seed, layers, platform or AMD64, docker)
        body = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
                "config": config.descriptor(), "layers": [layer.descriptor() for layer in layers]}
        return self._manifest(body, tag, config=config, layers=layers, platform=platform or AMD64)

    def index(self, children: list[Manifest], *, docker: bool = False, tag: str | None = None) -> Manifest:
        """An OCI index (or, ``docker=True``, a Docker manifest list) of platform images."""
        media_type = DOCKER_LIST if docker else OCI_INDEX
        body = {"schemaVersion": 2, "mediaType": media_type,
                "manifests": [c.descriptor(platform=c.platform) for c in children]}
        return self._manifest(body, tag, children=children)

    def artifact(self, subject: Manifest, *, artifact_type: str = "application/vnd.example.sbom.v1",
                 payload: bytes = b'{"sbom": "example"}\n', tag: str | None = None) -> Manifest:
        """An OCI artifact: empty config, one payload layer, ``subject`` pointing at an image."""
        empty = Blob(OCI_EMPTY, self.put(EMPTY_JSON), len(EMPTY_JSON))
        layer = Blob(artifact_type + "+json", self.put(payload), len(payload))
        body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                "config": empty.descriptor(data="e30="), "layers": [layer.descriptor()],
                "subject": subject.descriptor(),
                "annotations": {"org.opencontainers.image.created": "1970-01-01T00:00:00Z"}}
        return self._manifest(body, tag, config=empty, layers=[layer], artifact_type=artifact_type,
                              subject=subject)

    def signature(self, subject: Manifest) -> Manifest:
        """A cosign-style signature: an OCI image manifest tagged ``sha256-<hex>.sig``."""
        payload = json.dumps({"critical": {"image": {"docker-manifest-digest": subject.digest},
                                           "type": "cosign container image signature"}}).encode()
        layer = Blob(COSIGN_LAYER, self.put(payload), len(payload))
        config_data = dump({"architecture": "", "os": "", "rootfs": {"type": "layers", "diff_ids": [layer.digest]}})
        config = Blob(OCI_CONFIG, self.put(config_data), len(config_data))
        body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
                "layers": [layer.descriptor(annotations={
                    "dev.cosignproject.cosign/signature": "MEUCIQDtest-signature"})]}
        tag = subject.digest.replace(":", "-") + ".sig"
        return self._manifest(body, tag, config=config, layers=[layer])

    def _manifest(self, body: dict[str, Any], tag: str | None, **fields: Any) -> Manifest:
        raw = dump(body)
        self.put(raw)
        manifest = Manifest(body["mediaType"], raw, **fields)
        if tag:
            self.tag(manifest, tag)
        return manifest

    def tag(self, manifest: Manifest, tag: str) -> None:
        manifest.tags.append(tag)
        self.refs[tag] = manifest

    def save(self) -> "Layout":
        """Write ``index.json``: one entry per tag."""
        entries = [m.descriptor(annotations={REF_NAME: ref}) for ref, m in self.refs.items()]
        (self.root / "index.json").write_text(json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, indent=1))
        return self


def sample_set(root: Path, scale: int = 1) -> tuple[Layout, dict[str, Manifest]]:
    """The standard set, keyed by layout ref (also the intended repository name):

    - ``small``: OCI image, one small layer; ``app``: OCI image sharing ``small``'s layer plus two;
    - ``docker``: Docker schema2 image; ``multi``: OCI index (linux/amd64, linux/arm64/v8);
    - ``dockerlist``: Docker manifest list of two Docker images;
    - ``sbom``: artifact whose subject is ``app``; ``sha256-<app hex>.sig``: signature of ``app``.

    ``scale`` multiplies layer sizes (1: about 1.5 MiB in all)."""
    layout = Layout(root)
    small = layout.image("small", [30_000 * scale], tag="small")
    app = layout.image("app", [200_000 * scale, 600_000 * scale], base=small.layers, tag="app")
    docker = layout.image("docker", [50_000 * scale], docker=True, tag="docker")
    amd = layout.image("multi-amd64", [100_000 * scale], platform=AMD64)
    arm = layout.image("multi-arm64", [100_000 * scale], platform=ARM64)
    multi = layout.index([amd, arm], tag="multi")
    d_amd = layout.image("dl-amd64", [40_000 * scale], docker=True, platform=AMD64)
    d_arm = layout.image("dl-arm64", [40_000 * scale], docker=True, platform=ARM64)
    dockerlist = layout.index([d_amd, d_arm], docker=True, tag="dockerlist")
    sbom = layout.artifact(app, tag="sbom")
    sig = layout.signature(app)
    layout.save()
    return layout, {"small": small, "app": app, "docker": docker, "multi": multi,
                    "dockerlist": dockerlist, "sbom": sbom, sig.tags[0]: sig}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.bed.images OUTDIR", file=sys.stderr)
        return 2
    _, refs = sample_set(Path(argv[0]))
    for ref, manifest in refs.items():
        print(f"{argv[0]}:{ref}\t{manifest.media_type}\t{manifest.digest}\t{manifest.all_bytes()} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
