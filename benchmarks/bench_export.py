"""Export side by side: ``transfer export --catalog`` against ``skopeo sync --dest dir``.

    python -m benchmarks.bench_export [--repeat 3] [--scale 1] [--large 400MiB]
                                      [--scaling-sizes 100MiB,400MiB] [--cache DIR]

One plain docker-registry on 127.0.0.1 holds the content of ``benchmarks.common.build_content``
(seeded once by skopeo, cached). Each round runs both tools in fresh processes, the order
alternating between rounds:

- transfer: ``python -m transfer export --catalog HOST -o BUNDLE`` (default options);
- skopeo 1.9.3: ``skopeo sync --src docker --dest dir --scoped --all --preserve-digests
  --src-tls-verify=false HOST/REPO DIR`` for each repository (skopeo has no catalog listing; it
  is given the repository names, its time is the sum of the runs).

Reported: median wall time, the ratio skopeo/transfer (above 1: transfer is faster), peak memory
(max RSS from GNU time, for skopeo the largest of its runs), bytes on disk of each result. Then
peak memory when the one image is a single large layer of each ``--scaling-sizes`` size, to show
whether memory grows with layer size. Results are checked (image count, complete bundle) and
deleted after each round.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (Content, Registry, Run, build_content, common_args, disk_usage, machine,
                               measure, measure_all, median, mib, remove, seeded_registry, size_arg, table,
                               transfer_cmd, warm_bytecode)

SKOPEO_SYNC = ["skopeo", "sync", "--src", "docker", "--dest", "dir", "--scoped", "--all",
               "--preserve-digests", "--src-tls-verify=false"]


def export_transfer(registry: Registry, content: Content, bundle: Path) -> Run:
    run = measure(transfer_cmd("--json", "export", "--catalog", registry.host, "-o", str(bundle)))
    summary = json.loads(run.stdout)
    if summary["images"] != len(content.images) or not summary["complete"]:
        raise SystemExit(f"transfer export: {summary['images']} images, complete={summary['complete']}; "
                         f"expected {len(content.images)}, complete")
    return run


def export_skopeo(registry: Registry, content: Content, out: Path) -> Run:
    run = measure_all([[*SKOPEO_SYNC, f"{registry.host}/{repo}", str(out)] for repo in content.repos])
    written = list(out.glob(f"{registry.host}/**/manifest.json"))
    if len(written) != len(content.images):
        raise SystemExit(f"skopeo sync wrote {len(written)} images, expected {len(content.images)}")
    return run


TOOLS = {"transfer": (export_transfer, "bundle"), "skopeo": (export_skopeo, "dir")}


def rounds(registry: Registry, content: Content, work: Path, repeat: int) -> dict[str, list[tuple[Run, int]]]:
    """``repeat`` rounds of both tools, alternating which goes first: (run, bytes on disk) each."""
    results: dict[str, list[tuple[Run, int]]] = {name: [] for name in TOOLS}
    for i in range(repeat):
        order = list(TOOLS) if i % 2 == 0 else list(reversed(TOOLS))
        for name in order:
            fn, suffix = TOOLS[name]
            out = work / f"{name}-{i}.{suffix}"
            remove(out)
            run = fn(registry, content, out)
            results[name].append((run, disk_usage(out)[0]))
            remove(out)
            print(f"  round {i + 1} {name}: {run.seconds:.2f} s, peak {mib(run.max_rss)}", file=sys.stderr, flush=True)
    return results


def summary_rows(results: dict[str, list[tuple[Run, int]]], payload: int) -> list[list[str]]:
    base = median([r.seconds for r, _ in results["transfer"]])
    rows = []
    for name, runs in results.items():
        secs = [r.seconds for r, _ in runs]
        t = median(secs)
        rows.append([name, f"{t:.2f}", f"{min(secs):.2f}..{max(secs):.2f}", f"{payload / t / 1e6:.0f}",
                     f"{t / base:.2f}", mib(max(r.max_rss for r, _ in runs)), mib(runs[0][1])])
    return rows


HEADERS = ["tool", "median s", "min..max s", "MB/s", "time / transfer's", "peak RSS", "on disk"]


def seeded_rounds(content, work: Path, repeat: int, label: str) -> dict:
    """Seed a registry with ``content`` and run the export rounds against it."""
    registry = seeded_registry(content)
    try:
        print(label, file=sys.stderr)
        return rounds(registry, content, work, repeat)
    finally:
        registry.stop()


def scaling(args, work: Path) -> list[list[str]]:
    """Peak memory exporting one image whose only layer has each of the sizes."""
    rows = []
    for size in args.scaling_sizes:
        content = build_content(args.cache, large=size, kind="large-only")
        results = seeded_rounds(content, work, args.repeat,
                                f"scaling: one {mib(size)} layer ({mib(content.unique_bytes())} compressed)")
        for name, runs in results.items():
            rows.append([mib(size), name, f"{median([r.seconds for r, _ in runs]):.2f}",
                         mib(max(r.max_rss for r, _ in runs))])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(parser)
    parser.add_argument("--scaling-sizes", default="100MiB,400MiB",
                        help="large-layer sizes for the memory scaling runs ('' to skip)")
    args = parser.parse_args()
    args.scaling_sizes = [size_arg(s) for s in args.scaling_sizes.split(",") if s]
    warm_bytecode()
    content = build_content(args.cache, scale=args.scale, large=args.large)
    with tempfile.TemporaryDirectory(prefix="bench-export-", dir=args.workdir) as tmp:
        work = Path(tmp)
        results = seeded_rounds(content, work, args.repeat, f"export: {content.describe()}")
        scale_rows = scaling(args, work)
    print(f"\n### Export, {dt.date.today()}, {machine()}, {args.repeat} rounds\n")
    print(f"Content: {content.describe()}; large layer {mib(args.large)}.\n")
    print(table(HEADERS, summary_rows(results, content.unique_bytes())))
    t, s = (median([r.seconds for r, _ in results[n]]) for n in ("transfer", "skopeo"))
    print(f"\nskopeo / transfer time ratio: {s / t:.2f} (goal: at least 3)")
    if scale_rows:
        print("\nPeak memory by layer size (one image, one layer):\n")
        print(table(["layer", "tool", "median s", "peak RSS"], scale_rows))


if __name__ == "__main__":
    main()
