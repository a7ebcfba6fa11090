"""The import floor (issue 16): what docker-registry itself allows for the lab content. A bare
``requests`` client uploads every distinct blob in one POST + PUT (largest first, 16 at once) into
a fresh registry, mounts each blob into the other repositories that hold it, then PUTs every
manifest (children first, the root by its tag). No bundle to read, no journal, no checks: the
time to compare with ``bench_import``'s. Median of the rounds.

    python -m benchmarks.floor_import [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import DEFAULT_CACHE, MiB, Content, build_content, machine, median  # noqa: E402
from tests.bed.registry import Registry  # noqa: E402

THREADS = 16


def _walk(manifest, blobs: list[str], manifests: list) -> None:
    """A manifest's children first, then its blobs and itself."""
    for child in manifest.children or []:
        _walk(child, blobs, manifests)
    blobs.extend(manifest.blob_digests() if callable(manifest.blob_digests) else manifest.blob_digests)
    manifests.append(manifest)


class Job:
    def __init__(self, content: Content) -> None:
        self.blobs_dir = content.layout_dir / "blobs" / "sha256"
        self.first: dict[str, str] = {}  # blob -> the repository it is uploaded to
        self.mounts: list[tuple[str, str]] = []  # (repository, blob) mounted from there
        self.images: list[tuple[str, str, list]] = []  # (repository, tag, manifests children first)
        for image in content.images:
            blobs: list[str] = []
            manifests: list = []
            _walk(image.manifest, blobs, manifests)
            for blob in dict.fromkeys(blobs):
                if blob not in self.first:
                    self.first[blob] = image.repo
                elif self.first[blob] != image.repo:
                    self.mounts.append((image.repo, blob))
            self.images.append((image.repo, image.tag, manifests))

    def path(self, digest: str) -> Path:
        return self.blobs_dir / digest.split(":", 1)[1]

    def run(self, host: str) -> float:
        session = requests.Session()
        session.trust_env = False
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=THREADS))
        base = f"http://{host}/v2"

        def upload(item: tuple[str, str]) -> None:
            blob, repo = item
            answer = session.post(f"{base}/{repo}/blobs/uploads/")
            answer.raise_for_status()
            location = answer.headers["Location"]
            location = location if location.startswith("http") else f"http://{host}{location}"
            with open(self.path(blob), "rb") as data:
                session.put(f"{location}{'&' if '?' in location else '?'}digest={blob}", data=data,
                            headers={"Content-Type": "application/octet-stream"}).raise_for_status()

        def mount(item: tuple[str, str]) -> None:
            repo, blob = item
            session.post(f"{base}/{repo}/blobs/uploads/?mount={blob}&from={self.first[blob]}").raise_for_status()

        def push(item: tuple[str, str, list]) -> None:
            repo, tag, manifests = item
            for manifest in manifests:
                ref = tag if manifest is manifests[-1] else manifest.digest
                session.put(f"{base}/{repo}/manifests/{ref}", data=manifest.raw,
                            headers={"Content-Type": manifest.media_type}).raise_for_status()

        began = time.perf_counter()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(upload, sorted(self.first.items(), key=lambda kv: -self.path(kv[0]).stat().st_size)))
            list(pool.map(mount, self.mounts))
            list(pool.map(push, self.images))
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    content = build_content(DEFAULT_CACHE, scale=1.0, large=400 * MiB)
    job = Job(content)
    times = []
    with tempfile.TemporaryDirectory(prefix="floor-import-") as tmp:
        for round_ in range(args.repeat):
            registry = Registry(Path(tmp) / f"r{round_}", "plain").start()
            try:
                times.append(job.run(registry.host))
            finally:
                registry.stop()
            print(f"  round {round_ + 1}: {times[-1]:.2f} s", file=sys.stderr, flush=True)
    print(f"# import floor, {machine()}; {content.describe()}")
    print(f"median {median(times):.2f} s of {args.repeat} ({' '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
