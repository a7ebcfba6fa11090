"""Helpers for the layout and docker-archive tests: copying an image through the copy engine, and skopeo. Test images come from tests.bed.images."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.bed.images import sha256 as sha  # noqa: F401  (re-exported for the tests)
from transfer.engine import Copier
from transfer.store import plan_image

SKOPEO = "/usr/bin/skopeo"


def skopeo(*args: str, timeout: float = 60) -> str:
    proc = subprocess.run([SKOPEO, "--insecure-policy", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"skopeo {' '.join(args)} failed: {proc.stderr.strip()}"
    return proc.stdout


def copy_image(src, src_repo: str, ref: str, dst, dst_repo: str, tag: str | None = None):
    """Copy one image through the copy engine (the one algorithm) and return its root descriptor."""
    root = src.resolve(src_repo, ref)
    plan = plan_image(src, src_repo, root, dst_repo=dst_repo, tags=[tag] if tag else [])
    Copier(src, dst).execute([plan])
    return root


def all_blobs(path: Path) -> dict[str, int]:
    """digest -> size of every blob file under an OCI layout."""
    out = {}
    for alg in os.listdir(path / "blobs"):
        for name in os.listdir(path / "blobs" / alg):
            if not name.startswith("."):
                out[f"{alg}:{name}"] = (path / "blobs" / alg / name).stat().st_size
    return out
