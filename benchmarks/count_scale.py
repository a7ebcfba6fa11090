"""Requests per image (issue 11): the bench_scale content (N small images, 2 tags per repository)
through a counting proxy, for export, import, the no-op import, copy and the no-op copy; printed
per job as (method, kind) counts and requests per image. Deterministic, unlike the times.

    /work/main/.venv/bin/python -m benchmarks.count_scale [--images 40]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.bench_scale import Bare, Content, push_images
from benchmarks.common import Registry
from tests.bed.proxy import FaultProxy


def kind(path: str) -> str:
    path = path.split("?")[0]
    for pattern, name in ((r"/blobs/uploads/", "upload"), (r"/blobs/", "blob"), (r"/manifests/sha256:", "manifest@digest"),
                          (r"/manifests/", "manifest:tag"), (r"/tags/list", "tags"), (r"/_catalog", "catalog"),
                          (r"/referrers/", "referrers"), (r"^/v2/?$", "ping")):
        if re.search(pattern, path):
            return name
    return path


def counted(proxy: FaultProxy) -> Counter:
    out: Counter = Counter()
    for ex in proxy.exchanges:
        out[f"{ex.method} {kind(ex.path)}"] += 1
    proxy.exchanges.clear()
    return out


def show(job: str, counts: Counter, images: int) -> None:
    total = sum(counts.values())
    print(f"{job}: {total} requests, {total / images:.2f} per image")
    for key, n in sorted(counts.items()):
        print(f"    {key:28} {n:6d}  {n / images:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()
    from transfer.cli import main as cli

    content = Content(args.images)
    with tempfile.TemporaryDirectory(prefix="count-scale-") as tmp:
        work = Path(tmp)
        source, dest, copied = (Registry(work / n, "plain").start() for n in ("src", "dst", "copy"))
        try:
            push_images(Bare(source.host), content, range(args.images))
            sp, dp, cp = (FaultProxy(r.host).start() for r in (source, dest, copied))
            bundle = str(work / "b.bundle")
            steps = [("export", sp, ["export", "--catalog", sp.host, "-o", bundle, "-q"]),
                     ("import", dp, ["import", bundle, dp.host, "-q", "--journal", str(work / "j.json")]),
                     ("no-op import", dp, ["import", bundle, dp.host, "-q", "--journal", str(work / "j.json")]),
                     ("copy", cp, ["copy", "--catalog", source.host, cp.host, "-q", "--journal", str(work / "j2.json")]),
                     ("no-op copy", cp, ["copy", "--catalog", source.host, cp.host, "-q", "--journal", str(work / "j2.json")])]
            for job, proxy, argv in steps:
                proxy.exchanges.clear()
                if cli(argv) != 0:
                    sys.exit(f"{job} failed")
                show(job, counted(proxy), args.images)
        finally:
            for r in (source, dest, copied):
                r.stop()


if __name__ == "__main__":
    main()
