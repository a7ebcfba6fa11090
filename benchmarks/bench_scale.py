"""Many small images (issue 11): ``transfer`` against ``crane pull --format oci`` and ``skopeo sync``
for export, import and the no-op import, on loopback and through a latency proxy, with the floor:
the minimal request sequence for the same job sent by a bare ``requests.Session`` (keep-alive, the
same parallelism as transfer's planning, no planning logic).

Content: N images (default 1,000) in N/2 repositories ``scale/rNNNN`` x 2 tags ``t0``/``t1``; each
image is a 2 MiB base layer shared by all, its own 4 KiB layer and its own config. Seeded once
with a bare HTTP client (16 threads: the base is uploaded once and cross-mounted into every
repository) into a registry whose storage is cached under ``--cache``.

    BENCH_PYTHON=/work/main/.venv/bin/python python -m benchmarks.bench_scale [--images 1000] \\
        [--rounds 3] [--proxy-images 200] [--delay-ms 10] [--tools transfer,crane,skopeo,floor]

Rounds alternate the tools' order; medians are printed with ratios (peer time / transfer time:
above 1, transfer is faster) and each child's peak RSS (GNU time).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from benchmarks.common import Registry, Run, machine, measure, median, mib, remove, table, transfer_cmd
from benchmarks.peers import crane, skopeo
from tests.bed.proxy import FaultProxy

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
BASE_SIZE, LAYER_SIZE = 2 << 20, 4 << 10
THREADS = 16  # the floor's parallelism: transfer's --lookups default
NS = "scale"


# -- content -----------------------------------------------------------------------------------

def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Content:
    """The synthetic images, made on demand from their index (same bytes every time)."""

    def __init__(self, images: int) -> None:
        self.count = images
        self.base = random.Random("base").randbytes(BASE_SIZE)
        self.base_digest = digest(self.base)

    def ref(self, i: int) -> tuple[str, str]:
        return f"{NS}/r{i // 2:04d}", f"t{i % 2}"

    @property
    def repos(self) -> list[str]:
        return sorted({self.ref(i)[0] for i in range(self.count)})

    def image(self, i: int) -> tuple[bytes, bytes, bytes]:
        """(layer, config, manifest) of image ``i``."""
        layer = random.Random(f"layer{i}").randbytes(LAYER_SIZE)
        config = json.dumps({"architecture": "amd64", "os": "linux", "created": f"image {i}",
                             "rootfs": {"type": "layers", "diff_ids": [self.base_digest, digest(layer)]}}).encode()
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": OCI_CONFIG, "digest": digest(config), "size": len(config)},
                               "layers": [{"mediaType": OCI_LAYER, "digest": self.base_digest, "size": BASE_SIZE},
                                          {"mediaType": OCI_LAYER, "digest": digest(layer), "size": len(layer)}]},
                              indent=2).encode()
        return layer, config, manifest


# -- a bare client: seeding and the floor ------------------------------------------------------

class Bare:
    """requests.Session with keep-alive and a pool of THREADS connections."""

    def __init__(self, host: str) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self.base = f"http://{host}/v2/"
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(pool_maxsize=THREADS, pool_connections=THREADS))

    def call(self, method: str, path: str, ok: tuple[int, ...] = (200, 201, 202), **kw):
        url = path if path.startswith("http") else self.base + path
        r = self.session.request(method, url, **kw)
        if r.status_code not in ok:
            raise SystemExit(f"{method} {path}: {r.status_code} {r.text[:200]}")
        return r

    def upload(self, repo: str, data: bytes) -> None:
        location = self.call("POST", f"{repo}/blobs/uploads/").headers["Location"]
        if location.startswith("/"):
            location = self.base[:-4] + location
        self.call("PUT", location, params={"digest": digest(data)}, data=data)

    def mount(self, repo: str, blob: str, source: str) -> None:
        self.call("POST", f"{repo}/blobs/uploads/", params={"mount": blob, "from": source}, ok=(201,))


def run_all(fn: Callable[[int], object], items: range | list, threads: int = THREADS) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, items))


def push_images(client: Bare, content: Content, images: range) -> None:
    """The minimal requests for an import: per repository one mount of the base, per image two
    uploads (POST + PUT each) and the manifest PUT by tag."""
    repos = sorted({content.ref(i)[0] for i in images})
    first = repos[0]
    client.upload(first, content.base)
    run_all(lambda repo: client.mount(repo, content.base_digest, first), repos[1:])

    def one(i: int) -> None:
        repo, tag = content.ref(i)
        layer, config, manifest = content.image(i)
        client.upload(repo, layer)
        client.upload(repo, config)
        client.call("PUT", f"{repo}/manifests/{tag}", data=manifest, headers={"Content-Type": OCI_MANIFEST})

    run_all(one, images)


def floor_export(host: str, content: Content, images: int) -> float:
    """List each repository's tags, GET each manifest by tag, then each blob once."""
    client, began = Bare(host), time.perf_counter()
    repos = sorted({content.ref(i)[0] for i in range(images)})
    run_all(lambda repo: client.call("GET", f"{repo}/tags/list"), repos)
    blobs: dict[str, str] = {}
    lock = threading.Lock()

    def manifest(i: int) -> None:
        repo, tag = content.ref(i)
        doc = client.call("GET", f"{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}).json()
        with lock:
            for d in [doc["config"], *doc["layers"]]:
                blobs.setdefault(d["digest"], repo)

    run_all(manifest, range(images))
    run_all(lambda item: client.call("GET", f"{item[1]}/blobs/{item[0]}").content, list(blobs.items()))
    return time.perf_counter() - began


def floor_import(host: str, content: Content, images: int) -> float:
    began = time.perf_counter()
    push_images(Bare(host), content, range(images))
    return time.perf_counter() - began


def floor_noop(host: str, content: Content, images: int) -> float:
    client, began = Bare(host), time.perf_counter()
    run_all(lambda i: client.call("HEAD", "{}/manifests/{}".format(*content.ref(i)),
                                  headers={"Accept": OCI_MANIFEST}), range(images))
    return time.perf_counter() - began


def seeded(cache: Path, content: Content) -> Registry:
    """The source registry (its storage cached; seeded once)."""
    registry = Registry(cache / f"scale-{content.count}", "plain").start()
    marker = cache / f"scale-{content.count}" / "seeded.json"
    if not marker.exists():
        began = time.monotonic()
        push_images(Bare(registry.host), content, range(content.count))
        marker.write_text(json.dumps({"images": content.count}))
        print(f"seeded {content.count} images in {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
    return registry


# -- the tools ---------------------------------------------------------------------------------

def include_glob(images: int) -> list[str]:
    """transfer's --include for the first ``images`` images (whole hundreds of repositories)."""
    return [] if images % 200 else [f"--include={NS}/r{h:02d}??" for h in range(images // 200)]


def transfer_export(host: str, out: Path, images: int, total: int) -> Run:
    extra = include_glob(images) if images < total else []
    run = measure(transfer_cmd("--json", "export", "--catalog", host, *extra, "-o", str(out)))
    got = json.loads(run.stdout)["images"]
    if got != images:
        raise SystemExit(f"transfer export: {got} images, expected {images}")
    return run


def crane_export(host: str, out: Path, content: Content, images: int) -> Run:
    refs = ["{}/{}:{}".format(host, *content.ref(i)) for i in range(images)]
    return measure([crane(), "pull", "--insecure", "--format", "oci", *refs, str(out)])


def skopeo_yaml(host: str, content: Content, images: int, work: Path) -> Path:
    repos = sorted({content.ref(i)[0] for i in range(images)})
    lines = [f"{host}:", "  tls-verify: false", "  images-by-tag-regex:"] + [f"    {r}: '.*'" for r in repos]
    path = work / f"skopeo-{images}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def skopeo_export(host: str, out: Path, content: Content, images: int, work: Path) -> Run:
    return measure([skopeo(), "sync", "--src", "yaml", "--dest", "dir", "--scoped", "--all", "--preserve-digests",
                    str(skopeo_yaml(host, content, images, work)), str(out)])


def transfer_import(bundle: Path, host: str, images: int, work: Path) -> Run:
    run = measure(transfer_cmd("--json", "import", str(bundle), host, "--journal", str(work / "journal.json")))
    if json.loads(run.stdout)["images"] != images:
        raise SystemExit(f"transfer import: {run.stdout[:300]}")
    return run


def skopeo_import(skopeo_dir: Path, host: str) -> Run:
    return measure([skopeo(), "sync", "--src", "dir", "--dest", "docker", "--all", "--preserve-digests",
                    "--dest-tls-verify=false", str(skopeo_dir / NS), f"{host}/{NS}"])


# -- rounds ------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.content = Content(args.images)
        self.tools = args.tools.split(",")
        self.results: dict[tuple[str, str], list[Run]] = {}

    def record(self, job: str, tool: str, run: Run | float) -> None:
        self.results.setdefault((job, tool), []).append(run if isinstance(run, Run) else Run(run, 0))

    def fresh(self, name: str) -> Registry:
        remove(self.work / name)
        return Registry(self.work / name, "plain").start()

    def via(self, registry: Registry, delayed: bool) -> tuple[str, FaultProxy | None]:
        if not delayed:
            return registry.host, None
        proxy = FaultProxy(registry.host, delay=self.args.delay_ms / 1000).start()
        return proxy.host, proxy

    def round(self, source: Registry, images: int, label: str, delayed: bool, order: int) -> None:
        outs = self.export_round(source, images, label, delayed, order)
        self.import_round(images, label, delayed, order, outs)
        for path in outs.values():
            remove(path)

    def export_round(self, source: Registry, images: int, label: str, delayed: bool, order: int) -> dict[str, Path]:
        host, proxy = self.via(source, delayed)
        outs = {"transfer": self.work / "out.bundle", "crane": self.work / "crane-oci", "skopeo": self.work / "skopeo-dir"}
        steps: dict[str, Callable[[], Run | float]] = {
            "transfer": lambda: transfer_export(host, outs["transfer"], images, self.content.count),
            "crane": lambda: crane_export(host, outs["crane"], self.content, images),
            "skopeo": lambda: skopeo_export(host, outs["skopeo"], self.content, images, self.work),
            "floor": lambda: floor_export(host, self.content, images)}
        try:
            for tool in self.ordered(steps, order):
                self.record(f"export {label}", tool, steps[tool]())
        finally:
            if proxy:
                proxy.stop()
        return outs

    def import_round(self, images: int, label: str, delayed: bool, order: int, outs: dict[str, Path]) -> None:
        steps: dict[str, Callable[[str], Run | float]] = {
            "transfer": lambda host: transfer_import(outs["transfer"], host, images, self.work),
            "skopeo": lambda host: skopeo_import(next(outs["skopeo"].iterdir()), host),
            "floor": lambda host: floor_import(host, self.content, images)}
        noop: dict[str, Callable[[str], Run | float]] = dict(steps, floor=lambda host: floor_noop(host, self.content, images))
        for tool in self.ordered(steps, order):
            dest = self.fresh("dest")
            host, proxy = self.via(dest, delayed)
            try:
                self.record(f"import {label}", tool, steps[tool](host))
                self.record(f"no-op import {label}", tool, noop[tool](host))
            finally:
                if proxy:
                    proxy.stop()
                dest.stop()

    def ordered(self, steps: dict, order: int) -> list[str]:
        tools = [t for t in steps if t in self.tools]
        return tools if order % 2 == 0 else tools[::-1]


def report(bench: Bench, args: argparse.Namespace) -> None:
    rows = []
    for job in dict.fromkeys(j for j, _ in bench.results):
        base = bench.results.get((job, "transfer"))
        t = median([r.seconds for r in base]) if base else 0.0
        row = [job, f"{t:.2f} s" if base else "-", mib(max(r.max_rss for r in base)) if base else "-"]
        for peer in ("crane", "skopeo", "floor"):
            runs = bench.results.get((job, peer))
            if not runs:
                row.append("-")
                continue
            p = median([r.seconds for r in runs])
            rss = f", {mib(max(r.max_rss for r in runs))}" if peer != "floor" else ""
            row.append(f"{p:.2f} s ({p / t:.2f}x{rss})" if t else f"{p:.2f} s")
        rows.append(row)
    print(f"\n{machine()}, {args.rounds} round(s), medians; peers: time (peer / transfer, peak RSS)")
    print(table(["job", "transfer", "peak RSS", "crane", "skopeo", "floor (bare requests)"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="images to seed (2 tags per repository)")
    parser.add_argument("--proxy-images", type=int, default=200, help="images moved through the latency proxy (0: none)")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="proxy delay each way (10 ms = 20 ms RTT)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tools", default="transfer,crane,skopeo,floor")
    parser.add_argument("--local", action=argparse.BooleanOptionalAction, default=True, help="the loopback runs")
    parser.add_argument("--cache", default="/tmp/transfer-bench-cache")
    args = parser.parse_args()
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        bench = Bench(args, Path(tmp))
        source = seeded(Path(args.cache), bench.content)
        try:
            for n in range(args.rounds):
                if args.local:
                    bench.round(source, args.images, f"{args.images} images", False, n)
                if args.proxy_images:
                    bench.round(source, args.proxy_images, f"{args.proxy_images} images, {2 * args.delay_ms:g} ms RTT", True, n)
                print(f"round {n + 1} done", file=sys.stderr, flush=True)
        finally:
            source.stop()
        report(bench, args)


if __name__ == "__main__":
    main()
