"""Helpers for the layout and docker-archive tests: small hand-made images written straight to disk
(independent of transfer.layout), a minimal graph copy through the store verbs, and skopeo."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

from transfer.models import DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, parse_manifest
from transfer.store import read_manifest

SKOPEO = "/usr/bin/skopeo"


def skopeo(*args: str, timeout: float = 60) -> str:
    proc = subprocess.run([SKOPEO, "--insecure-policy", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"skopeo {' '.join(args)} failed: {proc.stderr.strip()}"
    return proc.stdout


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(content), 0
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class HandLayout:
    """Writes an OCI layout by hand (plain file writes) so tests of transfer.layout do not
    depend on transfer.layout itself."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        (self.path / "blobs/sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.entries: list[dict] = []
        self.flush()

    def blob(self, data: bytes, media_type: str) -> dict:
        digest = sha(data)
        (self.path / "blobs/sha256" / digest[7:]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def image(self, seed: str, *, docker: bool = False, arch: str = "amd64", layers: int = 2) -> dict:
        raws = [layer_tar({f"{seed}/{i}.txt": f"{seed} layer {i}\n".encode() * (i + 1)}) for i in range(layers)]
        config = {"architecture": arch, "os": "linux", "config": {"Env": [f"SEED={seed}"]},
                  "rootfs": {"type": "layers", "diff_ids": [sha(r) for r in raws]}}
        layer_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
            "config": self.blob(json.dumps(config).encode(), DOCKER_CONFIG if docker else OCI_CONFIG),
            "layers": [self.blob(gzip.compress(r, mtime=0), layer_type) for r in raws],
        }
        return self.blob(json.dumps(manifest, indent=1).encode(), manifest["mediaType"])

    def index(self, seed: str, arches=("amd64", "arm64")) -> dict:
        children = [dict(self.image(f"{seed}-{a}", arch=a), platform={"os": "linux", "architecture": a}) for a in arches]
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
        return self.blob(json.dumps(body).encode(), OCI_INDEX)

    def add(self, desc: dict, **annotations: str) -> dict:
        entry = dict(desc, annotations=annotations) if annotations else dict(desc)
        self.entries.append(entry)
        self.flush()
        return desc

    def flush(self) -> None:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.entries}
        (self.path / "index.json").write_text(json.dumps(index))


def copy_image(src, src_repo: str, ref: str, dst, dst_repo: str, tag: str | None = None):
    """A minimal children-first graph copy through the store verbs (the real one is transfer.copy)."""
    root = src.resolve(src_repo, ref)
    _copy_node(src, src_repo, dst, dst_repo, root)
    if tag:
        dst.tag(dst_repo, root, tag)
    return root


def _copy_node(src, src_repo, dst, dst_repo, desc) -> None:
    if desc.is_manifest:
        raw = read_manifest(src, src_repo, desc, 8 << 20)
        for child in parse_manifest(raw, desc.media_type).children():
            _copy_node(src, src_repo, dst, dst_repo, child)
    if not dst.exists(dst_repo, desc):
        dst.push(dst_repo, desc, lambda: src.fetch(src_repo, desc))


def all_blobs(path: Path) -> dict[str, int]:
    """digest -> size of every blob file under an OCI layout."""
    out = {}
    for alg in os.listdir(path / "blobs"):
        for name in os.listdir(path / "blobs" / alg):
            if not name.startswith("."):
                out[f"{alg}:{name}"] = (path / "blobs" / alg / name).stat().st_size
    return out
