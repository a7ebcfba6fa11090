"""Import side by side: ``transfer import`` against ``skopeo sync --src dir --dest docker``.

    python -m benchmarks.bench_import [--repeat 3] [--scale 1] [--large 400MiB]
                                      [--chunk-sizes 4MiB,64MiB] [--cache DIR]

The content of ``benchmarks.common.build_content`` is exported once (untimed) from a seeded
source registry by each tool: a bundle by ``transfer export --catalog``, per-image directories by
``skopeo sync --dest dir --scoped``. Each round then imports both into fresh, empty plain
docker-registry processes on 127.0.0.1 (started before the clock starts), in fresh processes,
the order rotating between rounds:

- transfer: ``python -m transfer import BUNDLE HOST`` (default options: 4 jobs, chunks sized by time),
  and once per ``--chunk-sizes`` value with ``--chunk-size``;
- skopeo 1.9.3: ``skopeo sync --src dir --dest docker --all --preserve-digests
  --dest-tls-verify=false DIR/NS HOST/NS`` for each top-level namespace (``apps``, ``base``,
  ``data``: this keeps the repository names), the time being the sum.

Every import is checked: skopeo reads each tag back and its digest must be the generated one.
Reported: median wall time, the ratio to transfer's default run, peak memory (max RSS).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_export import SKOPEO_SYNC
from benchmarks.common import (Content, Registry, Run, Skopeo, baseline_label, baseline_run, build_content, common_args,
                               machine, measure, measure_all, median, mib, seeded_registry, size_arg, table, transfer_cmd,
                               warm_bytecode, warm_tree)
from benchmarks.floor_import import Job as FloorJob
from transfer.sizes import format_size

SKOPEO_IMPORT = ["skopeo", "sync", "--src", "dir", "--dest", "docker", "--all", "--preserve-digests",
                 "--dest-tls-verify=false"]


def prepare(content: Content, work: Path, baseline: str | None = None) -> tuple[Path, Path]:
    """Export once with each tool: (bundle, skopeo's directory for the source host). With a
    baseline tree, it exports its own bundle too (``baseline.bundle``: an older build may not read
    this one's format version)."""
    registry = seeded_registry(content)
    try:
        bundle, out = work / "content.bundle", work / "skopeo-dir"
        measure(transfer_cmd("-q", "export", "--catalog", registry.host, "-o", str(bundle)))
        if baseline:
            baseline_run(baseline, "-q", "export", "--catalog", registry.host, "-o", str(work / "baseline.bundle"))
        measure_all([[*SKOPEO_SYNC, f"{registry.host}/{repo}", str(out)] for repo in content.repos])
        return bundle, out / registry.host
    finally:
        registry.stop()


def importers(bundle: Path, skopeo_dir: Path, content: Content, work: Path, chunk_sizes: list[int],
              baseline: str | None = None):
    """name -> function(destination registry) -> Run."""
    def transfer(*extra: str):
        journal = work / "journal.json"
        return lambda dst: measure(transfer_cmd("-q", "import", str(bundle), dst.host, "--journal", str(journal), *extra))

    def skopeo(dst: Registry) -> Run:
        namespaces = sorted({repo.split("/")[0] for repo in content.repos})
        return measure_all([[*SKOPEO_IMPORT, str(skopeo_dir / ns), f"{dst.host}/{ns}"] for ns in namespaces])

    floor = FloorJob(content)
    tools = {"transfer": transfer(), "skopeo": skopeo,
             # what the registry itself allows: a bare client's POST + PUT per blob, mounts, manifests
             "floor (benchmarks/floor_import.py)": lambda dst: Run(floor.run(dst.host), 0, "")}
    if baseline:
        warm_tree(baseline)
        journal = work / "journal-baseline.json"
        tools[baseline_label(baseline)] = lambda dst: baseline_run(baseline, "-q", "import", str(work / "baseline.bundle"),
                                                                   dst.host, "--journal", str(journal))
    for size in chunk_sizes:
        tools[f"transfer --chunk-size {format_size(size)}"] = transfer("--chunk-size", str(size))
    return tools


def check(dst: Registry, content: Content, checker: Skopeo, name: str) -> None:
    for image in content.images:
        seen = checker.digest(dst, image.ref)
        if seen != image.manifest.digest:
            raise SystemExit(f"{name}: {image.ref} at the destination is {seen}, expected {image.manifest.digest}")


def rounds(tools: dict, content: Content, work: Path, repeat: int) -> dict[str, list[Run]]:
    results: dict[str, list[Run]] = {name: [] for name in tools}
    checker = Skopeo(work / "checker")
    names = list(tools)
    for i in range(repeat):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            dst_dir = work / f"dst-{i}-{len(results[name])}-{name.split()[0]}"
            with Registry(dst_dir, "plain") as dst:
                run = tools[name](dst)
                check(dst, content, checker, name)
            shutil.rmtree(dst_dir)
            results[name].append(run)
            print(f"  round {i + 1} {name}: {run.seconds:.2f} s, peak {mib(run.max_rss)}", file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(parser)
    parser.add_argument("--chunk-sizes", default="8MiB",
                        help="also run transfer import with each --chunk-size ('' to skip)")
    args = parser.parse_args()
    chunk_sizes = [size_arg(s) for s in args.chunk_sizes.split(",") if s]
    warm_bytecode()
    content = build_content(args.cache, scale=args.scale, large=args.large)
    with tempfile.TemporaryDirectory(prefix="bench-import-", dir=args.workdir) as tmp:
        work = Path(tmp)
        bundle, skopeo_dir = prepare(content, work, args.baseline)
        print(f"import: {content.describe()}", file=sys.stderr)
        results = rounds(importers(bundle, skopeo_dir, content, work, chunk_sizes, args.baseline), content, work,
                         args.repeat)
    base = median([r.seconds for r in results["transfer"]])
    rows = []
    for name, runs in results.items():
        secs = [r.seconds for r in runs]
        t = median(secs)
        rows.append([name, f"{t:.2f}", f"{min(secs):.2f}..{max(secs):.2f}",
                     f"{content.unique_bytes() / t / 1e6:.0f}", f"{t / base:.2f}", mib(max(r.max_rss for r in runs))])
    print(f"\n### Import, {dt.date.today()}, {machine()}, {args.repeat} rounds, "
          f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print(f"Content: {content.describe()}; large layer {mib(args.large)}.\n")
    print(table(["tool", "median s", "min..max s", "MB/s", "time / transfer's", "peak RSS"], rows))
    s = median([r.seconds for r in results["skopeo"]])
    print(f"\nskopeo / transfer time ratio: {s / base:.2f} (goal: at least 1)")


if __name__ == "__main__":
    main()
