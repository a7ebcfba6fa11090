"""Draws library progress (transfer.progress.Progress) for people: tqdm bars on a terminal, plain
periodic lines otherwise, nothing with --quiet."""

from __future__ import annotations

import sys
import threading
import time

from transfer.progress import NullProgress, Progress
from transfer.sizes import format_size

BAR_MIN_BYTES = 4 << 20  # blobs smaller than this get no bar of their own
MAX_BARS = 4


class TqdmProgress:
    """An overall bar in bytes (rate, ETA) plus a bar for each large blob in flight."""

    def __init__(self, title: str, stream=None) -> None:
        from tqdm import tqdm  # only when a terminal shows bars: importing it costs ~70 ms a run

        self._tqdm = tqdm
        self._stream = stream or sys.stderr
        self._title = title
        self._lock = threading.Lock()
        self._total = 0
        self._overall = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=title,
                             file=self._stream, position=0, dynamic_ncols=True, leave=True)
        self._sizes: dict[str, int] = {}
        self._bars: dict = {}

    def planned(self, key: str, total: int, label: str = "") -> None:
        with self._lock:
            self._sizes[key] = total
            self._overall.total = self._overall.total + total
            self._overall.refresh()

    def started(self, key: str) -> None:
        with self._lock:
            size = self._sizes.get(key, 0)
            if size >= BAR_MIN_BYTES and len(self._bars) < MAX_BARS:
                self._bars[key] = self._tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024,
                                       desc=key.split(":")[-1][:12], file=self._stream, leave=False,
                                       position=len(self._bars) + 1, dynamic_ncols=True)

    def advance(self, key: str, n: int) -> None:
        with self._lock:
            self._overall.update(n)
            if key in self._bars:
                self._bars[key].update(n)

    def skipped(self, key: str, total: int, reason: str = "") -> None:
        pass  # skipped work was never planned, so the bar shows only real transfer

    def finished(self, key: str) -> None:
        with self._lock:
            bar = self._bars.pop(key, None)
            if bar:
                bar.close()

    def message(self, text: str) -> None:
        with self._lock:
            self._tqdm.write(text, file=self._stream)

    def images(self, found: int, planned: int) -> None:
        with self._lock:  # the overall bar's title counts images while planning goes on
            self._overall.set_description_str(f"{self._title} ({planned}/{found} images planned)",
                                              refresh=planned % 50 == 0 or planned == found)

    def close(self) -> None:
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            self._overall.close()


class LineProgress:
    """For logs and CI: a line every ``interval`` seconds, and one at the end."""

    def __init__(self, title: str, stream=None, interval: float = 10.0) -> None:
        self._stream = stream or sys.stderr
        self._title, self._interval = title, interval
        self._lock = threading.Lock()
        self._total = self._done = 0
        self._found = self._planned = 0
        self._start = self._last = time.monotonic()

    def planned(self, key: str, total: int, label: str = "") -> None:
        with self._lock:
            self._total += total

    def started(self, key: str) -> None:
        pass

    def advance(self, key: str, n: int) -> None:
        with self._lock:
            self._done += n
            now = time.monotonic()
            if now - self._last >= self._interval:
                self._last = now
                self._line(now)

    def _line(self, now: float) -> None:
        rate = self._done / max(now - self._start, 1e-6)
        eta = (self._total - self._done) / rate if rate > 0 else 0
        print(f"{self._title}: {format_size(self._done)} of {format_size(self._total)}, {format_size(int(rate))}/s, "
              f"eta {eta:.0f}s", file=self._stream, flush=True)

    def skipped(self, key: str, total: int, reason: str = "") -> None:
        pass

    def finished(self, key: str) -> None:
        pass

    def message(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    def images(self, found: int, planned: int) -> None:
        with self._lock:
            self._found, self._planned = found, planned
            now = time.monotonic()
            if now - self._last >= self._interval:
                self._last = now
                print(f"{self._title}: {found} images found, {planned} planned", file=self._stream, flush=True)

    def close(self) -> None:
        if self._total:
            self._line(time.monotonic())


def make_progress(args, title: str) -> Progress:
    """The renderer that fits the terminal and the flags."""
    if args.quiet:
        return NullProgress()
    if sys.stderr.isatty():
        return TqdmProgress(title)
    return LineProgress(title)


def close_progress(progress: Progress) -> None:
    close = getattr(progress, "close", None)
    if close:
        close()
