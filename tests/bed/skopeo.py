"""skopeo 1.9.3 as an independent client: seed registries from generated layouts, read manifests
back, copy images out into OCI layouts.

Seeding uses ``skopeo copy --all --preserve-digests`` (no format conversion: the copy fails rather
than change a digest) from a *view* of the layout: a temporary directory sharing ``blobs/`` whose
``index.json`` holds just the one ref, listed with the OCI media type, because skopeo's OCI layout
reader only finds OCI-typed entries. The manifest bytes are unchanged, and skopeo pushes them with
the media type written inside them, so a Docker schema2 image keeps its Docker media type and
digest. Docker manifest lists cannot be seeded by skopeo 1.9.3 from a layout at all; they go up
through ``tests.bed.push`` (raw HTTP). Artifacts with ``subject`` and an empty config, and
cosign-style signatures, copy fine with skopeo. Every seed is checked: the digest skopeo then
reads from the registry must equal the generator's digest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.bed.images import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, REF_NAME, Layout, Manifest
from tests.bed.push import push_tree
from tests.bed.registry import Registry

SKOPEO_BIN = "skopeo"
TIMEOUT = 120
_OCI_TYPE = {DOCKER_MANIFEST: OCI_MANIFEST, DOCKER_LIST: OCI_INDEX}


class SkopeoError(RuntimeError):
    """skopeo failed; the message holds the command and its stderr."""


class Skopeo:
    """Runs skopeo with an empty auth file (the user's credentials never leak in)."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which(SKOPEO_BIN) is None:
            raise SkopeoError("skopeo not found: install it with `apt-get install skopeo`")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.authfile = self.workdir / "auth.json"
        self.authfile.write_text('{"auths": {}}')

    def run(self, *args: str, timeout: float = TIMEOUT) -> bytes:
        cmd = [SKOPEO_BIN, *args]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise SkopeoError(f"{' '.join(_redact(cmd))} timed out after {timeout} s") from exc
        if done.returncode != 0:
            raise SkopeoError(f"{' '.join(_redact(cmd))} failed ({done.returncode}): "
                              f"{done.stderr.decode(errors='replace').strip()}")
        return done.stdout

    @staticmethod
    def flags(registry: Registry, side: str) -> list[str]:
        """TLS and credential flags for ``side`` in ("src", "dest", "") (plain ``inspect`` etc.)."""
        prefix = f"--{side}-" if side else "--"
        out = [f"{prefix}tls-verify={'true' if registry.tls else 'false'}"]
        if registry.cert_dir:
            out.append(f"{prefix}cert-dir={registry.cert_dir}")
        if registry.auth:
            out.append(f"{prefix}creds={registry.username}:{registry.password}")
        return out

    def copy_to_registry(self, layout_dir: Path, ref: str, registry: Registry, image: str) -> None:
        """``skopeo copy --all --preserve-digests oci:DIR:REF docker://HOST/IMAGE``."""
        self.run("copy", "--all", "--preserve-digests", "-q", f"--authfile={self.authfile}",
                 *self.flags(registry, "dest"), f"oci:{layout_dir}:{ref}", f"docker://{registry.host}/{image}")

    def copy_from_registry(self, registry: Registry, image: str, layout_dir: Path, ref: str) -> Path:
        """Copy ``image`` (``repo:tag`` or ``repo@digest``), all platforms, into an OCI layout."""
        self.run("copy", "--all", "--preserve-digests", "-q", f"--authfile={self.authfile}",
                 *self.flags(registry, "src"), f"docker://{registry.host}/{image}", f"oci:{layout_dir}:{ref}")
        return Path(layout_dir)

    def inspect_raw(self, registry: Registry, image: str) -> bytes:
        """The manifest bytes the registry serves for ``image``."""
        return self.run("inspect", "--raw", f"--authfile={self.authfile}", *self.flags(registry, ""),
                        f"docker://{registry.host}/{image}")

    def digest(self, registry: Registry, image: str) -> str:
        return "sha256:" + hashlib.sha256(self.inspect_raw(registry, image)).hexdigest()

    def list_tags(self, registry: Registry, repo: str) -> list[str]:
        out = self.run("list-tags", f"--authfile={self.authfile}", *self.flags(registry, ""),
                       f"docker://{registry.host}/{repo}")
        return sorted(json.loads(out)["Tags"])

    def seed(self, registry: Registry, layout: Layout, manifest: Manifest, repo: str, tag: str) -> str:
        """Put ``manifest`` (and everything under it) at ``repo:tag``; checks and returns its digest."""
        if manifest.media_type == DOCKER_LIST:
            push_tree(registry, layout, manifest, repo, tag)
        else:
            with tempfile.TemporaryDirectory(dir=self.workdir) as view:
                _layout_view(layout, manifest, Path(view))
                self.copy_to_registry(Path(view), "seed", registry, f"{repo}:{tag}")
        seen = self.digest(registry, f"{repo}:{tag}")
        if seen != manifest.digest:
            raise SkopeoError(f"seeded {repo}:{tag} but the registry serves {seen}, expected {manifest.digest}")
        return seen


def _layout_view(layout: Layout, manifest: Manifest, view: Path) -> None:
    """An OCI layout at ``view`` sharing ``layout``'s blobs, with only ``manifest`` as ref ``seed``."""
    (view / "blobs").symlink_to(layout.root.resolve() / "blobs")
    (view / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    entry = manifest.descriptor(annotations={REF_NAME: "seed"})
    entry["mediaType"] = _OCI_TYPE.get(manifest.media_type, manifest.media_type)
    (view / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


def _redact(cmd: list[str]) -> list[str]:
    return [a.split("=")[0] + "=***" if "creds=" in a else a for a in cmd]


@dataclass(frozen=True)
class Seeded:
    """Where a sample manifest was put: ``repo:tag`` and the generated manifest (digest etc.)."""

    repo: str
    tag: str
    manifest: Manifest

    @property
    def image(self) -> str:
        return f"{self.repo}:{self.tag}"


def seed_sample_set(skopeo: Skopeo, registry: Registry, layout: Layout,
                    refs: dict[str, Manifest]) -> dict[str, Seeded]:
    """Seed ``images.sample_set`` as ``sample/<ref>:<ref>``; the artifact (``sbom``) and the
    signature go into ``sample/app`` beside their subject. Keyed like ``refs``."""
    seeded = {}
    for ref, manifest in refs.items():
        repo = "sample/app" if manifest.subject is not None or ref.endswith(".sig") else f"sample/{ref}"
        skopeo.seed(registry, layout, manifest, repo, ref)
        seeded[ref] = Seeded(repo, ref, manifest)
    return seeded
