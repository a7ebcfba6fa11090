"""Helpers for the layout and docker-archive tests: a minimal graph copy through the store verbs
(the real one is transfer.copy), and skopeo. Test images come from tests.bed.images."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.bed.images import sha256 as sha  # noqa: F401  (re-exported for the tests)
from transfer.models import parse_manifest
from transfer.store import read_manifest

SKOPEO = "/usr/bin/skopeo"


def skopeo(*args: str, timeout: float = 60) -> str:
    proc = subprocess.run([SKOPEO, "--insecure-policy", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"skopeo {' '.join(args)} failed: {proc.stderr.strip()}"
    return proc.stdout


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
