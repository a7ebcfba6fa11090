"""Digests (OCI image-spec ``descriptor.md``) and a reader that verifies what it streams."""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO, Callable, Protocol

from transfer.errors import IntegrityError, InvalidDigestError

# algorithm -> (hashlib name, encoded length). Only registered algorithms are accepted, so a digest
# can safely become a file name (no path characters, fixed length, lower-case hex).
ALGORITHMS = {"sha256": ("sha256", 64), "sha512": ("sha512", 128)}
_DIGEST_RE = re.compile(r"\A(sha256|sha512):([a-f0-9]+)\Z")  # \Z: no trailing newline either

EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
READ_SIZE = 1 << 20
SNAPSHOT_EVERY = 64 << 20  # a rewindable VerifyingReader saves its hash state this often


def validate_digest(value: str) -> str:
    """Return ``value`` if it is a well-formed digest, else raise InvalidDigestError naming it."""
    if not isinstance(value, str):
        raise InvalidDigestError(f"invalid digest {value!r}: not a string")
    m = _DIGEST_RE.fullmatch(value)
    if not m or len(m.group(2)) != ALGORITHMS[m.group(1)][1]:
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InvalidDigestError(
            f"invalid digest {shown!r}: expected sha256:<64 hex> or sha512:<128 hex>, lower case"
        )
    return value


def is_digest(value: str) -> bool:
    try:
        validate_digest(value)
    except InvalidDigestError:
        return False
    return True


class Digester:
    """Incremental hash for one digest algorithm."""

    def __init__(self, algorithm: str = "sha256") -> None:
        self.algorithm = algorithm
        self._h = hashlib.new(ALGORITHMS[algorithm][0])
        self.size = 0

    @classmethod
    def for_digest(cls, digest: str) -> "Digester":
        return cls(validate_digest(digest).split(":", 1)[0])

    def update(self, data: bytes) -> None:
        self._h.update(data)
        self.size += len(data)

    def digest(self) -> str:
        return f"{self.algorithm}:{self._h.hexdigest()}"

    def copy(self) -> "Digester":
        other = Digester.__new__(Digester)
        other.algorithm, other._h, other.size = self.algorithm, self._h.copy(), self.size
        return other


def digest_bytes(data: bytes, algorithm: str = "sha256") -> str:
    d = Digester(algorithm)
    d.update(data)
    return d.digest()


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class VerifyingReader:
    """Wrap a raw stream; fail as soon as it yields more than ``size`` bytes, and at EOF unless the
    byte count equals ``size`` and the digest equals ``digest``.

    ``size`` may be None when unknown (then only the digest is checked). Reading is never buffered
    beyond the caller's ``n``, so memory stays bounded. A raw stream that already verifies the same
    digest and size (its ``verifies`` attribute says so) is not hashed a second time: it raises
    before it ends if the bytes are wrong.
    """

    def __init__(self, raw: Readable, digest: str, size: int | None, what: str = "", *,
                 reopen: Callable[[int], Readable] | None = None, snapshot_every: int = SNAPSHOT_EVERY) -> None:
        self._raw = raw
        self.expected_digest = validate_digest(digest)
        self.expected_size = size
        self.what = what or digest
        self._trusted = getattr(raw, "verifies", None) == (self.expected_digest, size) and size is not None
        self._digester = None if self._trusted else Digester.for_digest(digest)
        self._unverified = False  # skip_unverified() was used: only the size is checked
        self._count = 0
        self._done = False
        # rewind(): the raw bytes from an offset, and the hash state saved every snapshot_every bytes
        self._reopen, self._snapshot_every = reopen, snapshot_every
        self._snapshots: list[tuple[int, Digester]] = []

    @property
    def unverified(self) -> bool:
        """True after skip_unverified() (here or below) until a rewind to byte 0."""
        return bool(getattr(self._raw, "unverified", False)) if self._trusted else self._unverified

    @property
    def verifies(self) -> tuple[str, int | None]:
        """What this reader guarantees by the time it returns EOF."""
        return (self.expected_digest, self.expected_size)

    @property
    def position(self) -> int:
        return self._count

    def read(self, n: int = -1) -> bytes:
        if self._done:
            return b""
        n = self._remaining_limit(n)
        saving = self._reopen is not None and self._digester is not None
        if saving:  # stop at the next multiple of snapshot_every, where the hash state is saved
            n = min(n, self._snapshot_every - self._count % self._snapshot_every)
        data = self._raw.read(n)
        if data:
            self._count += len(data)
            if self._digester:
                self._digester.update(data)
                if saving and self._count % self._snapshot_every == 0:
                    self._snapshots.append((self._count, self._digester.copy()))
            if self.expected_size is not None and self._count > self.expected_size:
                raise IntegrityError(
                    self.what, f"{self.expected_size} bytes", f"more than {self.expected_size} bytes"
                )
            return data
        self._done = True
        self._check_eof()
        return b""

    def _remaining_limit(self, n: int) -> int:
        if n is None or n < 0:
            n = READ_SIZE
        if self.expected_size is not None:
            # Ask for one byte past the declared size so an overlong stream is noticed.
            n = min(n, self.expected_size - self._count + 1)
        return max(n, 1)

    def _check_eof(self) -> None:
        if self.expected_size is not None and self._count != self.expected_size:
            raise IntegrityError(self.what, f"{self.expected_size} bytes", f"{self._count} bytes")
        if self._digester and (actual := self._digester.digest()) != self.expected_digest:
            raise IntegrityError(self.what, self.expected_digest, actual)

    def read_all(self, limit: int) -> bytes:
        """Read the whole (small) stream, refusing more than ``limit`` bytes."""
        parts, total = [], 0
        while chunk := self.read(READ_SIZE):
            total += len(chunk)
            if total > limit:
                raise IntegrityError(self.what, f"at most {limit} bytes", f"more than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def rewind(self, offset: int) -> bool:
        """Go on reading from ``offset`` (an earlier position, typically) without reading from the
        start again: the source is reopened at the last hash state saved at or before ``offset``
        and read forward from there, so at most ``snapshot_every`` bytes are read twice. False
        when this reader cannot (it was given no ``reopen``; or it trusts a stream below it that
        cannot rewind): the caller then opens the blob again from its start."""
        if self._trusted:  # the stream below verifies: it has to rewind
            return self._below("rewind", offset)
        if not self._can_reopen(offset):
            return False
        if self._unverified and offset > 0:
            self._jump(offset)
            return True
        self._unverified = False
        self._snapshots = [(p, d) for p, d in self._snapshots if p <= offset]
        position, state = self._snapshots[-1] if self._snapshots else (0, None)
        self._jump(position)
        self._digester = state.copy() if state else Digester.for_digest(self.expected_digest)
        while self._count < offset:
            if not self.read(min(READ_SIZE, offset - self._count)):
                break  # a short source: read() has raised
        return True

    def skip_unverified(self, offset: int) -> bool:
        """Go on from ``offset`` without reading the bytes before it, and so without checking
        the digest: only for a receiver that checks it itself (a registry completing an upload
        that an earlier process began: it refuses a wrong digest, and the blob is then sent again
        from byte 0, verified here). A rewind to byte 0 turns checking on again. False when the
        source cannot be reopened at an offset."""
        if self._trusted:  # the stream below checks: it skips, and rewinds later
            return self._below("skip_unverified", offset)
        if not self._can_reopen(offset):
            return False
        self._jump(offset)
        self._digester, self._unverified, self._snapshots = None, True, []
        return True

    def _can_reopen(self, offset: int) -> bool:
        return self._reopen is not None and 0 <= offset and (self.expected_size is None or offset <= self.expected_size)

    def _jump(self, offset: int) -> None:
        """Reopen the source at ``offset`` (the hash state is the caller's business)."""
        assert self._reopen is not None
        self.close()
        self._raw = self._reopen(offset)
        self._count, self._done = offset, False

    def _below(self, method: str, offset: int) -> bool:
        """Ask the (verifying) stream below to go to ``offset``."""
        call = getattr(self._raw, method, None)
        if call is None or not call(offset):
            return False
        self._count, self._done = offset, False
        return True

    def drain(self) -> None:
        """Read to EOF (verifying) and discard."""
        while self.read(READ_SIZE):
            pass

    def close(self) -> None:
        close = getattr(self._raw, "close", None)
        if close:
            close()

    def __enter__(self) -> "VerifyingReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def copy_stream(src: Readable, dst: BinaryIO, chunk: int = READ_SIZE) -> int:
    """Copy src to dst in bounded chunks; return the byte count."""
    total = 0
    while data := src.read(chunk):
        dst.write(data)
        total += len(data)
    return total
