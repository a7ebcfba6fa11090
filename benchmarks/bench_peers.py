"""Export side by side with every peer and the floor, same registry, same run (issue 16):

    python -m benchmarks.bench_peers [--repeat 5] [--scale 1] [--large 400MiB]

- transfer: ``python -m transfer export --catalog HOST -o BUNDLE`` (defaults; ends with an fsync);
- crane: ``crane pull --insecure --format oci REF... DIR`` (every image into one OCI layout);
- skopeo: ``skopeo sync --src docker --dest dir`` per repository (as bench_export.py);
- floor: ``curl`` of every distinct blob in parallel into files, then ``sha256sum`` of them.

Each round runs the four in a fresh process each, the order rotating between rounds (the machine
is shared: read the medians and the ratios, not one run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_export import export_skopeo, export_transfer
from benchmarks.common import (Content, Registry, Run, build_content, common_args, machine, measure, median, mib,
                               remove, seeded_registry, table, warm_bytecode)
from benchmarks.peers import crane


def export_crane(registry: Registry, content: Content, out: Path) -> Run:
    refs = [f"{registry.host}/{i.repo}:{i.tag}" for i in content.images]
    return measure([crane(), "pull", "--insecure", "--format", "oci", *refs, str(out)])


def floor(registry: Registry, content: Content, out: Path) -> Run:
    """curl of every distinct blob (config and layers), all in parallel, then sha256sum of them."""
    blobs: dict[str, str] = {}
    for image in content.images:
        for digest in image.manifest.blob_digests():
            blobs.setdefault(digest, image.repo)
    out.mkdir()
    urls = " ".join(f"-o {out}/{d.split(':')[1]} http://{registry.host}/v2/{repo}/blobs/{d}" for d, repo in blobs.items())
    script = f"curl -sSf --parallel --parallel-max {len(blobs)} {urls} && sha256sum {out}/* > /dev/null"
    return measure(["sh", "-c", script])


TOOLS = {"transfer": export_transfer, "crane": export_crane, "skopeo": export_skopeo, "floor": floor}
SUFFIX = {"transfer": "bundle", "crane": "oci", "skopeo": "dir", "floor": "blobs"}


def rounds(registry: Registry, content: Content, work: Path, repeat: int) -> dict[str, list[Run]]:
    results: dict[str, list[Run]] = {name: [] for name in TOOLS}
    names = list(TOOLS)
    for i in range(repeat):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            out = work / f"{name}-{i}.{SUFFIX[name]}"
            remove(out)
            run = TOOLS[name](registry, content, out)
            remove(out)
            remove(Path(f"{out}.lock"))
            results[name].append(run)
            print(f"  round {i + 1} {name}: {run.seconds:.2f} s, peak {mib(run.max_rss)}", file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(parser)
    args = parser.parse_args()
    content = build_content(args.cache, scale=args.scale, large=args.large)
    registry = seeded_registry(content)
    warm_bytecode()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-peers-", dir=args.workdir) as tmp:
            results = rounds(registry, content, Path(tmp), args.repeat)
    finally:
        registry.stop()
    base = median([r.seconds for r in results["transfer"]])
    rows = [[name, f"{median([r.seconds for r in runs]):.2f}",
             f"{min(r.seconds for r in runs):.2f}..{max(r.seconds for r in runs):.2f}",
             f"{median([r.seconds for r in runs]) / base:.2f}", mib(max(r.max_rss for r in runs))]
            for name, runs in results.items()]
    print(f"\n### Export with the peers, {dt.date.today()}, {machine()}, {args.repeat} rounds\n")
    print(f"Content: {content.describe()}.\n")
    print(table(["tool", "median s", "min..max s", "time / transfer's", "peak RSS"], rows))


if __name__ == "__main__":
    main()
