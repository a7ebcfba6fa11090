"""Benchmark: write and read a bundle of realistic layers, against `cp` of the same bytes.

Generates already-gzipped tar layers (half random, half text; one large layer) plus one
uncompressed tar layer (zstd-compressed by the bundle), then measures in the same run:

  cp       `cp` of the layer files into another folder, then fsync (the floor for these bytes)
  write    BundleWriter.push of every layer (hash + stored or zstd + write)
  read     BundleReader.fetch of every layer, verified (decompress + hash)
  memory   tracemalloc peak while pushing a small and the large layer (must not grow with size),
           and the process's peak RSS (resource.getrusage)

Run:  python benchmarks/bench_bundle.py [--total-mib 720] [--large-mib 400]  (MiB of tar content; gzip
      makes about 0.55 of it: ~400 MiB of layers)
      [--dir /tmp] [--split-mib N]
Each figure is the best of 3 runs, each after `sync`; files are in the page cache (warm), so
this measures CPU cost per byte, not a USB disk. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transfer.bundle import BundleReader, BundleWriter  # noqa: E402
from transfer.models import OCI_LAYER, OCI_LAYER_GZIP, Descriptor  # noqa: E402

MiB = 1 << 20
WORDS = [b"usr", b"lib", b"bin", b"share", b"python3", b"site-packages", b"locale", b"\n", b"conf"]


class _Content(io.RawIOBase):
    """``size`` bytes: blocks alternating random and text, produced on the fly."""

    def __init__(self, size: int, seed: int) -> None:
        self.left, self.rng, self.n = size, random.Random(seed), 0
        self.text = b" ".join(self.rng.choice(WORDS) for _ in range(200_000))[: MiB]

    def read(self, n: int = -1) -> bytes:
        n = min(self.left, MiB if n is None or n < 0 else n)
        self.left -= n
        self.n += 1
        return os.urandom(n) if self.n % 2 else self.text[:n]


def make_layer(path: str, size: int, seed: int, gz: bool) -> Descriptor:
    with tarfile.open(path, "w:gz" if gz else "w", **({"compresslevel": 1} if gz else {})) as tar:
        info = tarfile.TarInfo(f"layer-{seed}/data.bin")
        info.size = size
        tar.addfile(info, _Content(size, seed))
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return Descriptor(media_type=OCI_LAYER_GZIP if gz else OCI_LAYER, digest="sha256:" + h.hexdigest(),
                      size=os.path.getsize(path))


def timed(fn, repeat: int = 3) -> float:
    """Best of ``repeat`` runs, each started after ``sync`` so earlier writes are not billed."""
    best = float("inf")
    for _ in range(repeat):
        os.sync()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def cp(files: list[str], dst: str) -> None:
    """`cp` then fsync of the copies: the bundle writer fsyncs too."""
    subprocess.run(["cp", *files, dst], check=True)
    for name in os.listdir(dst):
        fd = os.open(os.path.join(dst, name), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def push_all(bundle: str, layers: list[tuple[str, Descriptor]], split: int | None) -> None:
    with BundleWriter(bundle, split_size=split, overwrite=True) as w:
        for path, d in layers:
            w.push("bench", d, lambda p=path: open(p, "rb"))


def read_all(bundle: str, layers: list[tuple[str, Descriptor]]) -> None:
    with BundleReader(bundle) as r:
        for _, d in layers:
            with r.fetch("bench", d) as s:
                s.drain()


def traced_peak(bundle: str, layer: tuple[str, Descriptor]) -> int:
    tracemalloc.start()
    try:
        push_all(bundle, [layer], None)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--total-mib", type=int, default=720)
    ap.add_argument("--large-mib", type=int, default=400)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--split-mib", type=int, default=None)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-bundle-", dir=args.dir)
    try:
        run(args, work)
    finally:
        shutil.rmtree(work)


def run(args: argparse.Namespace, work: str) -> None:
    sizes = [args.large_mib] + [20] * ((args.total_mib - args.large_mib - 40) // 20)
    src = os.path.join(work, "src")
    os.mkdir(src)
    layers = [(os.path.join(src, f"l{i}.tar.gz"), 0) for i in range(len(sizes))]
    layers = [(p, make_layer(p, s * MiB, i, True)) for i, ((p, _), s) in enumerate(zip(layers, sizes))]
    plain = os.path.join(src, "plain.tar")
    layers.append((plain, make_layer(plain, 40 * MiB, 99, False)))
    total = sum(d.size for _, d in layers)
    gz_total = total - layers[-1][1].size
    print(f"layers: {len(layers)} ({len(layers) - 1} gzip incl. one of {layers[0][1].size / MiB:.0f} MiB, "
          f"1 plain tar of {layers[-1][1].size / MiB:.0f} MiB); {total / MiB:.0f} MiB in all")
    dst = os.path.join(work, "cp")
    os.mkdir(dst)
    t_cp = timed(lambda: cp([p for p, _ in layers], dst))
    shutil.rmtree(dst)
    os.mkdir(dst)
    t_cp_gz = timed(lambda: cp([p for p, _ in layers[:-1]], dst))
    shutil.rmtree(dst)
    bundle = os.path.join(work, "b.bundle")
    split = args.split_mib * MiB if args.split_mib else None
    t_gz = timed(lambda: push_all(bundle, layers[:-1], split))
    t_write = timed(lambda: push_all(bundle, layers, split))
    size = sum(os.path.getsize(os.path.join(work, f)) for f in os.listdir(work) if f.startswith("b.bundle"))
    t_read = timed(lambda: read_all(bundle, layers))
    report(total, gz_total, size, t_cp, t_cp_gz, t_gz, t_write, t_read)
    by_size = sorted(layers, key=lambda l: l[1].size)
    peaks = [f"{d.size / MiB:.0f} MiB layer -> {traced_peak(bundle, (p, d)) / MiB:.2f} MiB"
             for p, d in (by_size[0], by_size[len(by_size) // 2], by_size[-1])]
    print("tracemalloc peak while pushing: " + "; ".join(peaks))
    print("  (bound: 4 pieces of 1 MiB queued for the writer thread + 3 in hand, whatever the blob size)")
    print(f"peak RSS of the whole run: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def report(total: int, gz_total: int, size: int, t_cp: float, t_cp_gz: float, t_gz: float, t_write: float,
           t_read: float) -> None:
    def rate(n: int, t: float) -> str:
        return f"{n / MiB / t:7.0f} MiB/s ({t:5.2f} s)"

    print(f"cp of all layer files         {rate(total, t_cp)}")
    print(f"cp of the gzip layers         {rate(gz_total, t_cp_gz)}")
    print(f"bundle write, gzip layers     {rate(gz_total, t_gz)}  = {t_cp_gz / t_gz:.0%} of cp speed")
    print(f"bundle write, all layers      {rate(total, t_write)}  bundle {size / MiB:.0f} MiB")
    print(f"bundle read+verify, all       {rate(total, t_read)}")


if __name__ == "__main__":
    main()
