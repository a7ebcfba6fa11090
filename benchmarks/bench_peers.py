"""Export side by side with every peer and the floor, same registry, same run (issue 16):

    python -m benchmarks.bench_peers [--repeat 5] [--scale 1] [--large 400MiB]

- transfer: ``python -m transfer export --catalog HOST -o BUNDLE`` (defaults; ends with an fsync);
- crane: ``crane pull --insecure --format oci REF... DIR`` (every image into one OCI layout);
- crane + sync: the same, then ``sync`` of every file it wrote (transfer ends with an fsync of the
  bundle, so that it is on the disk when the command returns; crane does not);
- skopeo: ``skopeo sync --src docker --dest dir`` per repository (as bench_export.py);
- floor: ``curl`` of every distinct blob into a file, one process per blob, all at once, then
  the sha256 of the files (``openssl dgst -sha256``), one process per core.

Each round runs them in a fresh process each, the order rotating between rounds, after a ``sync``
(so that no run pays for the previous one's writes; the machine is shared: read the medians and
the ratios, not one run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_export import export_skopeo, export_transfer
from benchmarks.common import (Content, Registry, Run, baseline_label, baseline_run, build_content, common_args, machine,
                               measure, median, mib, remove, seeded_registry, table, warm_bytecode, warm_tree)
from benchmarks.peers import crane


def export_crane(registry: Registry, content: Content, out: Path) -> Run:
    refs = [f"{registry.host}/{i.repo}:{i.tag}" for i in content.images]
    return measure([crane(), "pull", "--insecure", "--format", "oci", *refs, str(out)])


def export_crane_synced(registry: Registry, content: Content, out: Path) -> Run:
    """crane, then its files synced to disk (``sync FILE...``): what transfer's final fsync does."""
    refs = " ".join(f"{registry.host}/{i.repo}:{i.tag}" for i in content.images)
    return measure(["sh", "-c", f"{crane()} pull --insecure --format oci {refs} {out} && find {out} -type f -exec sync {{}} +"])


def floor(registry: Registry, content: Content, out: Path) -> Run:
    """Every distinct blob (configs and layers) fetched by ``curl`` into a file, one process per
    blob, all at once; then the sha256 of the files, one process per core: no tool does less.
    (``openssl dgst``, not coreutils' ``sha256sum``: Debian's runs at 180 MB/s here, OpenSSL's
    uses the CPU's SHA instructions, 1.2 GB/s, as Python's hashlib and Go do.)"""
    blobs: dict[str, str] = {}
    for image in content.images:
        for digest in image.manifest.blob_digests():
            blobs.setdefault(digest, image.repo)
    out.mkdir()
    fetch = " ".join(f"curl -sSf -o {out}/{d.split(':')[1]} http://{registry.host}/v2/{repo}/blobs/{d} &"
                     for d, repo in blobs.items())
    script = (f"{fetch} wait; [ $(ls {out} | wc -l) -eq {len(blobs)} ] && "
              f"ls {out}/* | xargs -P {os.cpu_count()} -n 4 openssl dgst -sha256 > /dev/null")
    return measure(["sh", "-c", script])


TOOLS = {"transfer": export_transfer, "crane": export_crane, "crane + sync": export_crane_synced,
         "skopeo": export_skopeo, "floor": floor}
SUFFIX = {"transfer": "bundle", "crane": "oci", "crane + sync": "oci", "skopeo": "dir", "floor": "blobs"}


def with_baseline(tree: str | None) -> None:
    """Add transfer from ``tree`` (same command and check as transfer) to TOOLS."""
    if not tree:
        return
    name = baseline_label(tree)

    def run(registry: Registry, content: Content, bundle: Path) -> Run:
        got = baseline_run(tree, "--json", "export", "--catalog", registry.host, "-o", str(bundle))
        if json.loads(got.stdout)["images"] != len(content.images):
            raise SystemExit(f"{name}: wrong image count")
        return got

    warm_tree(tree)
    TOOLS[name], SUFFIX[name] = run, "bundle"


def rounds(registry: Registry, content: Content, work: Path, repeat: int) -> dict[str, list[Run]]:
    results: dict[str, list[Run]] = {name: [] for name in TOOLS}
    names = list(TOOLS)
    for i in range(repeat):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            out = work / f"{name.replace(' + ', '-').replace(' ', '-')}-{i}.{SUFFIX[name]}"
            remove(out)
            os.sync()  # the last run's writes are on the disk: none of them slows this one
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
    with_baseline(args.baseline)
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
    print(f"\n### Export with the peers, {dt.date.today()}, {machine()}, {args.repeat} rounds, "
          f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print(f"Content: {content.describe()}.\n")
    print(table(["tool", "median s", "min..max s", "time / transfer's", "peak RSS"], rows))


if __name__ == "__main__":
    main()
