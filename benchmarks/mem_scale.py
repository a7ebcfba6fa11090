"""Memory growth per image (issue 11): peak RSS of ``transfer export --catalog``, ``import`` into a
fresh registry and the no-op import (the same again), at two sizes of the ``bench_scale`` content;
prints KiB per image = (RSS(N2) - RSS(N1)) / (N2 - N1). With ``--trace``, the same three jobs also
run in this process under tracemalloc, a snapshot is taken where a job holds the most (the end of
the copy: every plan, record and report list still alive) and the growth between the two sizes is
printed per source line, in bytes per image.

    BENCH_PYTHON=.venv/bin/python .venv/bin/python -m benchmarks.mem_scale [--sizes 500,2500] \\
        [--cache /tmp/transfer-bench-cache] [--trace] [--top 25]

The source registries are seeded once per size (``bench_scale.push_images``) and kept in the cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import tracemalloc
from pathlib import Path

from benchmarks.bench_scale import Content, seeded
from benchmarks.common import DEFAULT_CACHE, Registry, measure, remove, transfer_cmd, warm_bytecode

KiB = 1024
JOBS = ("export", "import", "no-op import")


def rss_runs(source: Registry, images: int, work: Path) -> dict[str, int]:
    """Peak RSS (KiB) of export, import and no-op import of ``images`` images, each in a fresh process."""
    bundle, journal = work / f"scale-{images}.bundle", work / "journal.json"
    target = Registry(work / f"target-{images}", "plain").start()
    try:
        out: dict[str, int] = {}
        run = measure(transfer_cmd("--json", "export", "--catalog", source.host, "-o", str(bundle)))
        assert json.loads(run.stdout)["images"] == images, run.stdout[:300]
        out["export"] = run.max_rss // KiB
        for job in ("import", "no-op import"):
            run = measure(transfer_cmd("--json", "import", str(bundle), target.host, "--journal", str(journal)))
            assert json.loads(run.stdout)["images"] == images, run.stdout[:300]
            out[job] = run.max_rss // KiB
        return out
    finally:
        target.stop()
        remove(work / f"target-{images}")
        remove(bundle)


class PeakSnapshots:
    """At the end of each copy (``Copier.execute``, patched once): tracemalloc's peak so far and a
    snapshot, dumped to a file at once (a snapshot held in memory would count in what follows)."""

    def __init__(self, work: Path) -> None:
        from transfer import engine

        self.work, self.files, self.peaks = work, list[Path](), list[int]()
        self._peak = 0
        original = engine.Copier.execute

        def execute(copier, plans):  # type: ignore[no-untyped-def]
            stats = original(copier, plans)
            if tracemalloc.is_tracing():
                self._peak = max(self._peak, tracemalloc.get_traced_memory()[1])
                path = self.work / f"snapshot-{len(self.files)}"
                tracemalloc.take_snapshot().dump(str(path))
                self.files.append(path)
                tracemalloc.reset_peak()
            return stats

        engine.Copier.execute = execute  # type: ignore[method-assign]

    def job_done(self) -> None:
        self.peaks.append(max(self._peak, tracemalloc.get_traced_memory()[1]))
        self._peak = 0
        tracemalloc.reset_peak()

    def take(self, count: int) -> tuple[list[Path], list[int]]:
        files, peaks = self.files[-count:], self.peaks[-count:]
        return files, peaks


def traced_runs(recorder: PeakSnapshots, source: Registry, images: int, work: Path,
                trace: bool = True) -> tuple[dict[str, Path], list[int]]:
    """The three jobs in this process (traced unless ``trace`` is False: a warm-up that imports
    every module first, so both sizes are traced alike); per job the snapshot at the end of its
    copy and tracemalloc's peak."""
    import transfer
    from transfer.options import ExportOptions, ImportOptions

    bundle = work / f"traced-{images}.bundle"
    target = Registry(work / f"ttarget-{images}", "plain").start()
    if trace:
        tracemalloc.start(8)
    try:
        transfer.export([], str(bundle), catalog=source.host, options=ExportOptions())
        recorder.job_done()
        opts = ImportOptions(journal=str(work / "traced-journal.json"))
        for _ in range(2):  # the import, then the same again (nothing to do)
            transfer.import_bundle(str(bundle), target.host, options=opts)
            recorder.job_done()
    finally:
        tracemalloc.stop()
        target.stop()
        remove(work / f"ttarget-{images}")
        remove(bundle)
    files, peaks = recorder.take(len(JOBS))
    return dict(zip(JOBS, files)), peaks


def growth(small: Path, large: Path, images: int, top: int) -> list[str]:
    """Source lines whose live memory grew most between the two sizes, in bytes per image."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    a = tracemalloc.Snapshot.load(str(small)).filter_traces(ignore)
    b = tracemalloc.Snapshot.load(str(large)).filter_traces(ignore)
    lines = []
    total = sum(s.size for s in b.statistics("filename")) - sum(s.size for s in a.statistics("filename"))
    lines.append(f"  traced total: {total / images:8.0f} B/image")
    for stat in b.compare_to(a, "traceback")[:top]:
        frames = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in list(stat.traceback)[::-1][:5])
        lines.append(f"  {stat.size_diff / images:8.0f} B/image {stat.count_diff / images:6.2f} obj/image  {frames}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500,2500", help="two image counts (even)")
    parser.add_argument("--cache", default=DEFAULT_CACHE)
    parser.add_argument("--trace", action="store_true", help="also profile in-process with tracemalloc")
    parser.add_argument("--no-rss", action="store_true", help="skip the child-process RSS runs")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    n1, n2 = (int(x) for x in args.sizes.split(","))
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    warm_bytecode()
    sources = {n: seeded(cache, Content(n)) for n in (n1, n2)}
    try:
        with tempfile.TemporaryDirectory(prefix="mem-scale-") as tmp:
            work = Path(tmp)
            if not args.no_rss:
                rss = {n: rss_runs(sources[n], n, work) for n in (n1, n2)}
                print(f"{'job':14} {'RSS ' + str(n1):>12} {'RSS ' + str(n2):>12} {'KiB/image':>10}")
                for job in rss[n1]:
                    per = (rss[n2][job] - rss[n1][job]) / (n2 - n1)
                    print(f"{job:14} {rss[n1][job] / 1024:9.1f} MiB {rss[n2][job] / 1024:9.1f} MiB {per:10.2f}")
                sys.stdout.flush()
            if args.trace:
                recorder = PeakSnapshots(work)
                traced_runs(recorder, sources[n1], n1, work, trace=False)
                traced = {n: traced_runs(recorder, sources[n], n, work) for n in (n1, n2)}
                for i, job in enumerate(JOBS):
                    peak = (traced[n2][1][i] - traced[n1][1][i]) / (n2 - n1)
                    print(f"\n{job}: tracemalloc peak {traced[n1][1][i] >> 20} / {traced[n2][1][i] >> 20} MiB "
                          f"({peak / KiB:.2f} KiB/image); growth from {n1} to {n2} images at the end of the copy:")
                    print("\n".join(growth(traced[n1][0][job], traced[n2][0][job], n2 - n1, args.top)))
    finally:
        for registry in sources.values():
            registry.stop()


if __name__ == "__main__":
    main()
