"""Blob download bodies that survive a dropped connection: resume with ``Range: bytes=N-``."""

from __future__ import annotations

import logging
import re
from typing import Callable

import requests
import urllib3

from transfer.errors import RegistryError, RegistryUnreachableError
from transfer.registry.http import StalledError

log = logging.getLogger("transfer.registry")

_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_READ_ERRORS = (urllib3.exceptions.HTTPError, requests.RequestException, OSError)

# Opens the blob again from a byte offset (0 = the whole blob, else a Range request).
Reopen = Callable[[int], requests.Response]


def range_start(response: requests.Response) -> int:
    """Where a response's body starts in the blob: 0 for 200, the Content-Range start for 206."""
    if response.status_code != 206:
        return 0
    m = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", "").strip())
    if not m:
        raise RegistryError(f"GET {response.url.split('?', 1)[0]}: 206 without a valid Content-Range",
                            status=206, method="GET")
    return int(m.group(1))


class ResumingBody:
    """A readable over a blob GET (from byte ``start``) that reopens the download at the current
    offset when the connection drops or ends early, at most ``attempts`` times in a row without
    progress, or when it stalls (below the transport's Pace), at most ``max_stalls`` times. The
    first GET is sent at the first read, so a reader that first moves to an offset asks from there."""

    def __init__(self, reopen: Reopen, size: int | None, what: str, attempts: int = 5,
                 max_resumes: int = 1000, start: int = 0, max_stalls: int = 2) -> None:
        self._reopen = reopen
        self.size = size
        self.what = what
        self.attempts = attempts
        self.max_resumes = max_resumes
        self.position = start
        self.resumes = 0
        self.stalls, self.max_stalls = 0, max_stalls
        self._stalled = 0
        self._response: requests.Response | None = None
        self._skip = 0  # opened by the first read: a reader moved to an offset first asks from there

    def _open(self) -> None:
        """GET from ``position`` (a server that ignores Range sends bytes to drop first)."""
        self._response = self._reopen(self.position)
        begins = range_start(self._response)
        if begins > self.position:
            raise RegistryError(f"resumed download of {self.what} starts at {begins}, not {self.position}")
        self._skip = self.position - begins

    def read(self, n: int = -1) -> bytes:
        n = n if n and n > 0 else 1 << 20
        while True:
            failure = None
            try:
                data = self._read_raw(n)
            except StalledError as exc:  # a stuck connection: another one may move, twice at most
                self.stalls += 1
                if self.stalls > self.max_stalls:
                    raise
                data, failure = b"", exc
            except _READ_ERRORS as exc:
                data, failure = b"", exc
            if data:
                self.position += len(data)
                self._stalled = 0
                return data
            if failure is None and (self.size is None or self.position >= self.size):
                return b""
            self._resume(failure)

    def _read_raw(self, n: int) -> bytes:
        if self._response is None:
            self._open()
            assert self._response is not None
        while self._skip:  # the server ignored our Range: drop what we already have
            dropped = self._response.raw.read(min(self._skip, 1 << 20))
            if not dropped:
                return b""
            self._skip -= len(dropped)
        return self._response.raw.read(n)

    def _resume(self, failure: BaseException | None) -> None:
        self._stalled += 1
        self.resumes += 1
        reason = type(failure).__name__ if failure else "connection closed early"
        if self._stalled > self.attempts or self.resumes > self.max_resumes:
            raise RegistryUnreachableError(
                f"download of {self.what} kept failing at byte {self.position} ({reason}); "
                f"gave up after {self.resumes - 1} resumed attempts")
        log.debug("download of %s broke at byte %d (%s); resuming", self.what, self.position, reason)
        self.close()
        self._open()

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
