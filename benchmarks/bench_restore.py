"""Restores side by side: what ``transfer import`` sends against ``skopeo sync --src dir --dest
docker`` when the destination already holds the content.

    python -m benchmarks.bench_restore [--repeat 3] [--scale 0.25] [--large 40MiB] [--cache DIR]

The content of ``benchmarks.common.build_content`` is exported once by each tool (as in
bench_import). Each round starts a fresh registry B, imports the bundle into it (untimed: B then
holds every image in its own repositories) and puts a counting proxy (``tests.bed.proxy``) in
front of it. Then, the order alternating between rounds:

- "new prefix": the same images restored under another prefix (``restored-N/...``), where every
  layer is already in B in another repository: ``transfer import BUNDLE B/restored-N`` against
  ``skopeo sync ... DIR/NS B/restored-N/NS`` per namespace;
- "no-op": the same images restored again where they are: ``transfer import BUNDLE B --prune``
  against ``skopeo sync ... DIR/NS B/NS``.

Reported per tool and case: median wall time, bytes sent to blob upload sessions (PATCH and PUT
bodies under /blobs/uploads/), requests and PUT requests, as counted at the proxy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_import import SKOPEO_IMPORT, prepare
from benchmarks.common import (MiB, Registry, build_content, common_args, machine, measure, measure_all, median,
                               mib, table, transfer_cmd)
from tests.bed.proxy import FaultProxy


def upload_bytes(proxy: FaultProxy) -> int:
    return sum(proxy.stats(m, r"/blobs/uploads/.").request_bytes for m in ("PATCH", "PUT"))


def cases(bundle: Path, skopeo_dir: Path, namespaces: list[str], work: Path):
    """(case, tool) -> function(proxy host, round) -> seconds."""
    def transfer(*extra: str, prefix: bool):
        def run(host: str, i: int) -> float:
            target = f"{host}/restored-{i}" if prefix else host
            return measure(transfer_cmd("-q", "import", str(bundle), target, "--journal",
                                        str(work / "journal.json"), *extra)).seconds
        return run

    def skopeo(prefix: bool):
        def run(host: str, i: int) -> float:
            base = f"{host}/restored-s{i}" if prefix else host
            return measure_all([[*SKOPEO_IMPORT, str(skopeo_dir / ns), f"{base}/{ns}"] for ns in namespaces]).seconds
        return run

    return {("new prefix", "transfer"): transfer(prefix=True), ("new prefix", "skopeo"): skopeo(True),
            ("no-op", "transfer"): transfer("--prune", prefix=False), ("no-op", "skopeo"): skopeo(False)}


def one_round(i: int, tools: dict, bundle: Path, work: Path) -> dict:
    out = {}
    dst_dir = work / f"dst-{i}"
    with Registry(dst_dir, "plain") as dst:
        measure(transfer_cmd("-q", "import", str(bundle), dst.host, "--journal", str(work / "seed.json")))
        names = list(tools)  # transfer first in even rounds, skopeo first in odd ones
        for key in names if i % 2 == 0 else [names[1], names[0], names[3], names[2]]:
            proxy = FaultProxy(dst.host).start()
            try:
                seconds = tools[key](proxy.host, i)
                out[key] = (seconds, upload_bytes(proxy), proxy.stats().requests, proxy.stats("PUT").requests)
            finally:
                proxy.stop()
            print(f"  round {i + 1} {key}: {seconds:.2f} s, {mib(out[key][1])} uploaded, "
                  f"{out[key][2]} requests", file=sys.stderr, flush=True)
    shutil.rmtree(dst_dir)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(parser)
    parser.set_defaults(scale=0.25, large=40 * MiB)
    args = parser.parse_args()
    content = build_content(args.cache, scale=args.scale, large=args.large)
    namespaces = sorted({repo.split("/")[0] for repo in content.repos})
    with tempfile.TemporaryDirectory(prefix="bench-restore-", dir=args.workdir) as tmp:
        work = Path(tmp)
        bundle, skopeo_dir = prepare(content, work)
        tools = cases(bundle, skopeo_dir, namespaces, work)
        runs = [one_round(i, tools, bundle, work) for i in range(args.repeat)]
    rows = []
    for key in tools:
        vals = [r[key] for r in runs]
        rows.append([*key, f"{median([v[0] for v in vals]):.2f}", mib(median([v[1] for v in vals])),
                     str(int(median([v[2] for v in vals]))), str(int(median([v[3] for v in vals])))])
    print(f"\n### Restore, {dt.date.today()}, {machine()}, {args.repeat} rounds (shared machine)\n")
    print(f"Content: {content.describe()}.\n")
    print(table(["case", "tool", "median s", "uploaded", "requests", "PUTs"], rows))


if __name__ == "__main__":
    main()
