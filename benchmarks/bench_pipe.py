"""export | import through an OS pipe, against export to a file then import of that file.

Both move the standard content (benchmarks/common.py) from a seeded source registry into a fresh
empty registry each round; the order alternates between rounds. Reported: wall seconds of the
whole transfer, peak RSS of each process, and the ratio pipe / (export + import), medians.

    python benchmarks/bench_pipe.py [--scale 0.5 --large 200MiB --repeat 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (TIME_BIN, build_content, common_args, machine, measure_all, median, mib, remove,  # noqa: E402
                    revision, seeded_registry, table, transfer_cmd)

from tests.bed.registry import Registry  # noqa: E402


def piped(src: str, dst: str, refs: list[str]) -> tuple[float, int, int]:
    """(seconds, export peak RSS, import peak RSS) of `export ... -o - | import - DST`."""
    rss = [tempfile.NamedTemporaryFile("r", suffix=".time") for _ in range(2)]
    timed = lambda f, cmd: [TIME_BIN, "-f", "%M", "-o", f.name, *cmd]  # noqa: E731
    began = time.perf_counter()
    exp = subprocess.Popen(timed(rss[0], transfer_cmd("export", *refs, "-o", "-", "-q")), stdout=subprocess.PIPE)
    imp = subprocess.run(timed(rss[1], transfer_cmd("import", "-", dst, "-q")), stdin=exp.stdout)
    exp.stdout.close()
    if exp.wait() or imp.returncode:
        raise SystemExit("the piped transfer failed")
    seconds = time.perf_counter() - began
    peaks = [int(f.read().strip().splitlines()[-1]) * 1024 for f in rss]
    return seconds, peaks[0], peaks[1]


def two_steps(src: str, dst: str, refs: list[str], work: Path) -> tuple[float, int]:
    bundle = work / "site.bundle"
    run = measure_all([transfer_cmd("export", *refs, "-o", str(bundle), "-q"),
                       transfer_cmd("import", str(bundle), dst, "-q")])
    remove(bundle)
    return run.seconds, run.max_rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(parser)
    args = parser.parse_args()
    content = build_content(args.cache, scale=args.scale, large=args.large)
    source = seeded_registry(content)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-pipe-"))
    refs = [f"{source.host}/{i.repo}:{i.tag}" for i in content.images]
    pipe_s, file_s, ratios, peaks = [], [], [], []
    try:
        for round_ in range(args.repeat):
            for kind in (("pipe", "file") if round_ % 2 == 0 else ("file", "pipe")):
                dest = Registry(work / f"dest-{round_}-{kind}", "plain").start()
                try:
                    if kind == "pipe":
                        seconds, exp_rss, imp_rss = piped(source.host, dest.host, refs)
                        pipe_s.append(seconds)
                        peaks.append((exp_rss, imp_rss))
                    else:
                        file_s.append(two_steps(source.host, dest.host, refs, work)[0])
                finally:
                    dest.stop()
                    remove(work / f"dest-{round_}-{kind}")
            ratios.append(pipe_s[-1] / file_s[-1])
    finally:
        source.stop()
    print(f"# export | import vs export then import ({revision()}; {machine()}; {content.describe()})")
    print(table(["way", "median s", "runs"], [
        ["pipe", f"{median(pipe_s):.1f}", " ".join(f"{s:.1f}" for s in pipe_s)],
        ["file, then import", f"{median(file_s):.1f}", " ".join(f"{s:.1f}" for s in file_s)]]))
    print(f"pipe / two steps, median of per-round ratios: {median(ratios):.2f}")
    print(f"peak RSS through the pipe: export {mib(max(p[0] for p in peaks))}, import {mib(max(p[1] for p in peaks))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
