"""Shared parts of the side-by-side benchmarks (bench_export, bench_import): realistic registry
content, cached; a seeded source registry; timed runs of a child process with its peak memory;
bytes on disk; tables.

Content (``build_content``): 6 images in 5 repositories, made with ``tests.bed.images.Layout``:

- ``base/os:1.0``       the 60 MiB base layer alone
- ``apps/web:1.0``      base + 20 MiB + 5 MiB
- ``apps/web:1.1``      base + 20 MiB (same layer as 1.0) + 8 MiB
- ``apps/api:2.0``      base + 30 MiB + 12 MiB
- ``apps/worker:3``     Docker schema2: its own 15 MiB base + 10 MiB
- ``data/model:v1``     a 5 MiB layer + the large layer (``large``, default 400 MiB)

Sizes are of the uncompressed layer contents, multiplied by ``scale`` (the large layer is not
scaled). Layers are gzip (level 6, like ``docker push``) tars whose files are half random bytes
(incompressible, like binaries) and half text in 256 KiB runs, so gzip works as on real layers
(compressed size about 80 % of the tar). Generating takes a while, so each content is kept in
``cache/<name>/layout`` (a ``content.json`` marks it complete) and the seeded registry storage in
``cache/<name>/registry`` (``seeded.json`` marks it seeded); later runs reuse both.
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.bed.images import DOCKER_LAYER_GZIP, OCI_LAYER_GZIP, Layer, Layout, Manifest, layer_tar, sha256  # noqa: E402
from tests.bed.registry import Registry  # noqa: E402
from tests.bed.skopeo import Skopeo  # noqa: E402
from transfer.sizes import format_size, parse_size  # noqa: E402

MiB = 1 << 20
DEFAULT_CACHE = "/tmp/transfer-bench-cache"
PYTHON = os.environ.get("BENCH_PYTHON", "/work/venv/bin/python")
TIME_BIN = "/usr/bin/time"
RUN_BYTES = 256 << 10  # runs of random or text bytes inside a layer file
TEXT_CORPUS = 4 * MiB
GZIP_LEVEL = 6
CONTENT_VERSION = 1  # bump when the generator changes: old caches are not reused


# -- layer bytes -------------------------------------------------------------------------------

def _corpus(seed: str) -> bytes:
    """A few MiB of word salad (gzip takes it to about half)."""
    rng = random.Random(f"corpus:{seed}")
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(5000)]
    lines, size = [], 0
    while size < TEXT_CORPUS:
        line = " ".join(rng.choices(words, k=rng.randint(4, 14))) + "\n"
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()


class MixedReader(io.RawIOBase):
    """``size`` reproducible bytes: runs of random bytes alternating with slices of a text corpus."""

    def __init__(self, rng: random.Random, corpus: bytes, size: int) -> None:
        self._rng, self._corpus, self._left, self._text = rng, corpus, size, False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = min(RUN_BYTES if n is None or n < 0 else n, RUN_BYTES, self._left)
        if n <= 0:
            return b""
        self._left -= n
        self._text = not self._text
        if not self._text:
            return self._rng.randbytes(n)
        start = self._rng.randrange(len(self._corpus) - n)
        return self._corpus[start:start + n]


def mixed_layer_tar(seed: str, size: int, corpus: bytes, files: int = 4) -> bytes:
    return layer_tar(seed, size, files, folder="usr/lib", content=lambda rng, n: MixedReader(rng, corpus, n))


def gzip_fast(data: bytes) -> bytes:
    """A gzip member (mtime 0, no name), like ``gzip.compress(data, 6, mtime=0)``."""
    z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return z.compress(data) + z.flush()


class BenchLayout(Layout):
    """``tests.bed.images.Layout`` with partly compressible layers."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.corpus = _corpus(str(root.name))

    def layer(self, seed: str, size: int, docker: bool = False) -> Layer:
        tar = mixed_layer_tar(seed, size, self.corpus)
        data = gzip_fast(tar)
        media_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
        return Layer(media_type, self.put(data), len(data), sha256(tar))


# -- content -----------------------------------------------------------------------------------

@dataclass
class Image:
    repo: str
    tag: str
    manifest: Manifest

    @property
    def ref(self) -> str:
        return f"{self.repo}:{self.tag}"


@dataclass
class Content:
    """Generated images in an OCI layout (``layout_dir``), the ref of each being its index."""

    name: str
    dir: Path
    images: list[Image] = field(default_factory=list)

    @property
    def layout_dir(self) -> Path:
        return self.dir / "layout"

    @property
    def repos(self) -> list[str]:
        return sorted({i.repo for i in self.images})

    def unique_bytes(self) -> int:
        blobs: dict[str, int] = {}
        for image in self.images:
            image.manifest._collect_blobs(blobs)
        return sum(blobs.values())

    def per_image_bytes(self) -> int:
        """Bytes if every image's blobs were stored separately (as per-image directories are)."""
        return sum(i.manifest.all_bytes() for i in self.images)

    def describe(self) -> str:
        return (f"{len(self.images)} images in {len(self.repos)} repositories, "
                f"{format_size(self.unique_bytes())} of distinct blobs "
                f"({format_size(self.per_image_bytes())} counted per image)")


def _standard_images(layout: BenchLayout, scale: float, large: int) -> list[Image]:
    s = lambda mib: max(1, int(mib * MiB * scale))  # noqa: E731
    base = layout.layer("base-os", s(60))
    web_lib = layout.layer("web-lib", s(20))
    worker_base = layout.layer("worker-base", s(15), docker=True)
    specs = [
        ("base/os", "1.0", layout.image("os", [], base=[base])),
        ("apps/web", "1.0", layout.image("web-1.0", [s(5)], base=[base, web_lib])),
        ("apps/web", "1.1", layout.image("web-1.1", [s(8)], base=[base, web_lib])),
        ("apps/api", "2.0", layout.image("api-2.0", [s(30), s(12)], base=[base])),
        ("apps/worker", "3", layout.image("worker-3", [s(10)], docker=True, base=[worker_base])),
        ("data/model", "v1", layout.image("model-v1", [s(5), large])),
    ]
    return [Image(repo, tag, m) for repo, tag, m in specs]


def _large_only_images(layout: BenchLayout, scale: float, large: int) -> list[Image]:
    return [Image("data/model", "v1", layout.image("model-v1", [large]))]


KINDS = {"standard": _standard_images, "large-only": _large_only_images}


def build_content(cache: str | Path, *, scale: float = 1.0, large: int = 400 * MiB,
                  kind: str = "standard") -> Content:
    """The content named by its parameters, generated once into ``cache`` and reused after."""
    name = f"{kind}-v{CONTENT_VERSION}-s{scale:g}-l{large // MiB}M"
    content = Content(name, Path(cache) / name)
    marker = content.dir / "content.json"
    if marker.exists():
        return _load_content(content, marker)
    shutil.rmtree(content.dir, ignore_errors=True)
    began = time.monotonic()
    print(f"generating {name} into {content.dir} (once; cached after) ...", file=sys.stderr, flush=True)
    layout = BenchLayout(content.layout_dir)
    images = KINDS[kind](layout, scale, large)
    for image in images:
        layout.tag(image.manifest, f"{image.repo.replace('/', '_')}_{image.tag}")
    layout.save()
    content.images = images
    marker.write_text(json.dumps([{"repo": i.repo, "tag": i.tag, "media_type": i.manifest.media_type,
                                   "digest": i.manifest.digest} for i in images], indent=1))
    print(f"  done in {time.monotonic() - began:.0f} s: {content.describe()}", file=sys.stderr, flush=True)
    return content


def _load_content(content: Content, marker: Path) -> Content:
    """Rebuild the images (manifest bytes and blob sizes) from a cached layout."""
    blobs = content.layout_dir / "blobs" / "sha256"
    for entry in json.loads(marker.read_text()):
        content.images.append(Image(entry["repo"], entry["tag"],
                                    _load_manifest(blobs, entry["digest"], entry["media_type"])))
    return content


def _load_manifest(blobs: Path, digest: str, media_type: str) -> Manifest:
    raw = (blobs / digest.split(":")[1]).read_bytes()
    doc = json.loads(raw)
    size_of = lambda d: Layer(d["mediaType"], d["digest"], d["size"])  # noqa: E731
    config = size_of(doc["config"]) if "config" in doc else None
    return Manifest(media_type, raw, config=config, layers=[size_of(d) for d in doc.get("layers", [])])


def seeded_registry(content: Content, *, keep: bool = True) -> Registry:
    """A started plain registry holding ``content``. Its storage lives in the cache and is seeded
    by skopeo once (every seed checked by digest); later runs start it on the seeded storage."""
    registry = Registry(content.dir / "registry", "plain").start()
    marker = content.dir / "registry" / "seeded.json"
    if marker.exists():
        return registry
    skopeo = Skopeo(content.dir / "skopeo")
    began = time.monotonic()
    for image in content.images:
        skopeo.seed(registry, Layout(content.layout_dir), image.manifest, image.repo, image.tag)
    marker.write_text(json.dumps([i.ref for i in content.images]))
    print(f"seeded {registry.host} with skopeo in {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
    return registry


# -- measuring ---------------------------------------------------------------------------------

@dataclass
class Run:
    seconds: float
    max_rss: int  # bytes: peak resident set of the child (and its waited-for children)
    stdout: str = ""


class RunFailed(RuntimeError):
    pass


def child_env() -> dict[str, str]:
    """The environment of a measured process: Python's bytecode cached (in the bench cache, not in
    the source tree) as an installed tool has it, even where PYTHONDONTWRITEBYTECODE is set;
    otherwise every run would compile transfer's modules again (about 0.15 s)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.setdefault("PYTHONPYCACHEPREFIX", os.path.join(DEFAULT_CACHE, "pycache"))
    return env


def warm_bytecode() -> None:
    """Compile transfer's modules once into the cache child_env names (as an install does)."""
    tree = Path(__file__).resolve().parent.parent / "transfer"
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(tree)], env=child_env(), check=True)


def measure(cmd: list[str], *, timeout: float = 1800, env: dict | None = None) -> Run:
    """Run ``cmd`` in a fresh process; wall time and peak memory (GNU time's %M, else rusage)."""
    env = child_env() if env is None else env
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        wrapped = [TIME_BIN, "-f", "%M", "-o", tf.name, *cmd] if os.path.exists(TIME_BIN) else cmd
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        began = time.perf_counter()
        done = subprocess.run(wrapped, capture_output=True, text=True, timeout=timeout, env=env)
        seconds = time.perf_counter() - began
        if done.returncode != 0:
            raise RunFailed(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        if wrapped is cmd:
            rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            if rss_kib <= before:
                raise RunFailed("cannot tell this run's peak memory (install GNU time: apt-get install time)")
        else:
            rss_kib = int(tf.read().strip().splitlines()[-1])
    return Run(seconds, rss_kib * 1024, done.stdout)


def measure_all(cmds: list[list[str]]) -> Run:
    """Several commands one after the other, as one step: times add up, peak is the largest."""
    runs = [measure(c) for c in cmds]
    return Run(sum(r.seconds for r in runs), max(r.max_rss for r in runs), "".join(r.stdout for r in runs))


def transfer_cmd(*args: str) -> list[str]:
    return [PYTHON, "-m", "transfer", *args]


def baseline_run(tree: str | Path, *args: str) -> Run:
    """``transfer ARGS`` from another source tree (e.g. a worktree at main's commit: ``git worktree
    add /tmp/wt-base main``), measured as transfer_cmd is: the tree comes first on sys.path (-P:
    not the current directory), its bytecode cached beside this tree's."""
    env = dict(child_env(), PYTHONPATH=str(Path(tree).resolve()))
    return measure([PYTHON, "-P", "-m", "transfer", *args], env=env)


def baseline_label(tree: str | Path) -> str:
    rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return f"transfer at {rev.stdout.strip() or tree}"


def warm_tree(tree: str | Path) -> None:
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(Path(tree) / "transfer")], env=child_env(), check=True)


def disk_usage(path: Path) -> tuple[int, int]:
    """(allocated bytes, apparent bytes) of a file or a tree."""
    path = Path(path)
    paths = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    stats = [p.stat() for p in paths]
    return sum(s.st_blocks * 512 for s in stats), sum(s.st_size for s in stats)


def remove(path: Path) -> None:
    if Path(path).is_dir():
        shutil.rmtree(path)
    elif Path(path).exists():
        Path(path).unlink()


# -- reporting ---------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values)


def mib(n: float) -> str:
    return f"{n / MiB:.0f} MiB"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (pastes into benchmarks/README.md as is)."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def revision() -> str:
    """The commit of the tree measured (``+`` when it has local changes)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> str:
    return f"commit {revision()}, {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / (1 << 30):.0f} GiB, loopback"


def size_arg(text: str) -> int:
    return parse_size(text, "size")


def common_args(parser) -> None:
    parser.add_argument("--cache", default=DEFAULT_CACHE, help=f"generated content and seeded registries (default {DEFAULT_CACHE})")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the base/app layer sizes (default 1)")
    parser.add_argument("--large", type=size_arg, default=400 * MiB, help="size of the large layer (default 400MiB)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool, alternating order (default 3)")
    parser.add_argument("--workdir", help="where results are written (default: a temporary directory under /tmp)")
    parser.add_argument("--baseline", metavar="TREE",
                        help="also run transfer from this source tree (e.g. a worktree of main) in the same rounds")
