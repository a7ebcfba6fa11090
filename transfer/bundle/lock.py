"""One writer at a time per bundle: an exclusive ``flock`` on ``NAME.lock`` beside the bundle
``NAME`` (the one lock covers every part of a split set ``NAME.001``, ``NAME.002``, ...).

The kernel drops the lock when its holder dies, so a killed export never blocks the next run; the
lock file names the holder's pid for the message a second writer gets, and is removed on release.
"""

from __future__ import annotations

import fcntl
import os
import time

from transfer.errors import BundleBusyError


def _holder(fd: int) -> str:
    """The pid the holder wrote (it writes it just after it took the lock: wait a moment)."""
    for _ in range(40):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text:
            return text
        time.sleep(0.025)
    return "unknown"


class BundleLock:
    """``with BundleLock(path):`` -- or acquire() / release(). Fails at once when it is taken."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.lock_path = self.path + ".lock"
        self._fd: int | None = None

    def acquire(self) -> "BundleLock":
        while self._fd is None:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise BundleBusyError(f"{self.path} is being written by another transfer (pid {holder}); "
                                      "wait for it to finish") from None
            if self._is_current(fd):
                self._fd = fd
            else:  # the holder before us removed the file between our open and our flock
                os.close(fd)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())
        return self

    def _is_current(self, fd: int) -> bool:
        try:
            return os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.lock_path)  # while still held: a newcomer that opened it sees it is stale
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "BundleLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
