"""The upload journal: where each blob upload in flight stands, so a later run continues it.

One JSON file, rewritten atomically (temp file, fsync, rename, fsync of the directory) after every
acknowledged chunk, with mode 0600 because upload Locations may carry signed query strings or
``_state`` tokens. Entries are keyed by (registry host, repository, digest); a finished blob's
entry is removed. Safe for uploads running in several threads of one process.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from transfer.errors import JournalError

JOURNAL_VERSION = 1


@dataclass(frozen=True)
class JournalEntry:
    """One blob upload in flight: continue at ``offset`` with ``location``."""

    registry: str
    repository: str
    digest: str
    location: str
    offset: int
    size: int
    source: str = ""  # the caller's id for where the bytes come from (e.g. a bundle path)
    min_chunk: int | None = None  # OCI-Chunk-Min-Length of the session, if it asked for one
    updated: float = 0.0  # time.time() of the last save

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.registry, self.repository, self.digest)


class UploadJournal:
    """``UploadJournal(path)``: loads the file if it exists; ``get``/``save``/``remove`` entries."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, str], JournalEntry] = self._load()

    def _load(self) -> dict[tuple[str, str, str], JournalEntry]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise JournalError(f"upload journal {self.path}: cannot read it ({exc.strerror})") from None
        try:
            data = json.loads(raw)
            if data.get("version") != JOURNAL_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            names = {f.name for f in fields(JournalEntry)}
            entries = [JournalEntry(**{k: v for k, v in e.items() if k in names}) for e in data["uploads"]]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise JournalError(f"upload journal {self.path} is unreadable ({exc}); "
                               "delete it to start the uploads over") from None
        return {e.key: e for e in entries}

    def get(self, registry: str, repository: str, digest: str) -> JournalEntry | None:
        with self._lock:
            return self._entries.get((registry, repository, digest))

    def entries(self) -> list[JournalEntry]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.key)

    def save(self, entry: JournalEntry) -> JournalEntry:
        """Record ``entry`` (stamped with the current time) and write the file."""
        entry = JournalEntry(**{**asdict(entry), "updated": time.time()})
        with self._lock:
            self._entries[entry.key] = entry
            self._write()
        return entry

    def remove(self, registry: str, repository: str, digest: str) -> None:
        with self._lock:
            if self._entries.pop((registry, repository, digest), None) is not None:
                self._write()

    def prune(self, max_age: float) -> int:
        """Drop entries not updated for ``max_age`` seconds (their sessions are gone by then:
        distribution purges uploads after 7 days); return how many went."""
        cutoff = time.time() - max_age
        with self._lock:
            old = [k for k, e in self._entries.items() if e.updated < cutoff]
            for k in old:
                del self._entries[k]
            if old:
                self._write()
        return len(old)

    def _write(self) -> None:
        data = {"version": JOURNAL_VERSION, "uploads": [asdict(e) for e in self._entries.values()]}
        write_private_atomically(self.path, json.dumps(data, indent=1).encode() + b"\n")


def write_private_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600) so a crash leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise JournalError(f"upload journal {path}: cannot write it ({exc.strerror})") from None
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
