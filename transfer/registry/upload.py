"""``ChunkedUploader``: resumable blob uploads (a ``BlobUploader`` for ``RegistryStore``).

Small blobs go up in one PUT; large ones in sequential PATCH chunks (``Content-Range: a-b``),
always following the newest Location, then ``PUT ?digest=`` (empty, or carrying the last chunk).
Chunks are sized by time unless a size is given (see CHUNK_SECONDS) and read from the source by
a ``BlobCursor`` (cursor.py): streamed into the requests, or spooled first when the source may
stall (a registry being copied from). The offset is kept on the client side; ``Range`` answers
are advisory (followed when they say the registry holds fewer bytes, ignored when absent or the
ambiguous ``0-0``). A 413 halves the request bodies (``ChunkedUploader.too_large``).

After every acknowledged chunk the session (Location, offset) is saved in an ``UploadJournal``, so
a new process continues the blob from where the registry stands, reading the source from there
on (the registry checks the whole digest at the end). A chunk that breaks midway
(connection lost, 5xx, 416) leads to ``GET <Location>``: its Range says where to continue. When the
registry cannot say (distribution 2.8 answers 404 BLOB_UPLOAD_INVALID once a PATCH broke) or the
session expired, the session is cancelled (best effort) and that one blob restarts from a new
POST. Everything is bounded: failures in a row per blob, restarts per blob, backoff between.

Per-registry quirks (chunk minimum and maximum, monolithic only, last chunk in the PUT, whether
Range can be believed) come from ``RegistrySettings`` (settings.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, TypeVar

from transfer.errors import NotFoundError, RegistryError, UploadError, UsageError
from transfer.interrupt import check
from transfer.models import Descriptor
from transfer.registry.client import RegistryClient, UploadStatus
from transfer.registry.cursor import SPOOL_IN_MEMORY, BlobCursor, OpenAt, SourceFailed
from transfer.registry.journal import JournalEntry, UploadJournal
from transfer.registry.settings import (
    MAX_CHUNK_MIN,
    RegistrySettings,
    check_chunk_size,
    effective_chunk_size,
    settings_for,
)
from transfer.sizes import format_size
from transfer.store import BlobOpener

# Without --chunk-size, chunks are sized by time: each about CHUNK_SECONDS of sending at the rate
# the last acknowledged requests showed, from FIRST_CHUNK (before any rate is known; it satisfies
# ECR's 5 MiB minimum) up to MAX_AUTO_CHUNK. On a slow link that keeps what an interruption or a
# SIGINT costs to seconds; on a fast one it keeps the requests few, since every request costs the
# registry time (distribution 2.8 syncs the upload file to disk at the end of each PATCH).
# benchmarks/bench_chunk_size.py, 320 MiB blob into docker-registry 2.8: 8 MiB chunks 157 MB/s,
# 32 MiB 182, 128 MiB 209, sized by time 210, one request 220.
FIRST_CHUNK = 8 << 20
MAX_AUTO_CHUNK = 1 << 30
from transfer.limits import CHUNK_SECONDS  # noqa: E402
MIN_BODY_LIMIT = 1 << 20  # a 413 halves the request bodies down to this, then it is an error
MAX_BACKOFF = 30.0

OpenSession = Callable[[], UploadStatus]  # a new session (or the blob mounted)
T = TypeVar("T")


@dataclass(frozen=True)
class RangeUpload:
    """Where a blob stands after ``ChunkedUploader.upload_range``."""

    held: int  # bytes the registry holds (the blob's size once it is complete)
    restarted: bool = False  # the saved session was lost: the blob starts over from byte 0


# -- statistics --------------------------------------------------------------------------------

@dataclass
class UploadStats:
    """What the uploader did (for the import summary). Byte counts are request bodies the
    registry acknowledged."""

    blobs: int = 0  # blobs completed (chunked or monolithic; mounts are not counted)
    monolithic: int = 0  # of which in one PUT
    chunks_sent: int = 0  # acknowledged PATCHes, plus final PUTs that carried bytes
    bytes_sent: int = 0
    bytes_resumed: int = 0  # bytes a journal resume did not send again
    blobs_resumed: int = 0  # blobs continued from the journal
    blobs_restarted: int = 0  # times a blob was restarted from a new POST
    status_queries: int = 0  # GET <Location> asked after a failure or on resume


class _Counters:
    def __init__(self) -> None:
        self.stats = UploadStats()
        self.lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)


# -- the uploader ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Session:
    location: str
    offset: int  # bytes the registry holds (as far as we know)
    min_chunk: int | None = None


class _SessionLost(Exception):
    """The upload session cannot be continued: restart the blob from a new POST."""


class ChunkedUploader:
    """A resumable ``BlobUploader``. ``chunk_size``: PATCH size before per-registry limits (None:
    sized by time, see CHUNK_SECONDS); ``threshold``: largest blob sent in one PUT (default: the
    chunk size at the time); ``settings``: host glob
    -> RegistrySettings (before the built-in ones); ``journal``: where sessions in flight are
    saved; ``source``: the caller's id for the bytes, stored in journal entries."""

    def __init__(self, chunk_size: int | None = None, *, threshold: int | None = None,
                 settings: Mapping[str, RegistrySettings] | None = None,
                 journal: UploadJournal | None = None, source: str = "", max_restarts: int = 3,
                 max_failures: int = 5, backoff: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.chunk_size = None if chunk_size is None else check_chunk_size(chunk_size)
        self._raised: dict[str, int] = {}  # host -> the chunk size its minimum raised chunk_size to
        self._rate: float | None = None  # bytes/s of one upload, learned from acknowledged requests
        self._body_limit: int | None = None  # learned from a 413
        self.threshold = threshold
        self.settings = dict(settings or {})
        self.journal = journal
        self.source = source
        self.max_restarts = max_restarts
        self.max_failures = max_failures
        self.backoff = backoff
        self.sleep = sleep
        self.clock = clock
        self._counters = _Counters()

    @property
    def stats(self) -> UploadStats:
        return self._counters.stats

    def count(self, **counts: int) -> None:
        self._counters.add(**counts)

    @property
    def notes(self) -> list[str]:
        """What the user should know about the chunk size asked for (raised to a registry's minimum)."""
        with self._counters.lock:
            raised = sorted(self._raised.items())
        return [f"chunk size {format_size(self.chunk_size or 0)} raised to {format_size(size)} for {host}, "
                "the smallest chunk it takes" for host, size in raised]

    def note_chunk(self, host: str, size: int) -> None:
        """A chunk of ``size`` bytes goes to ``host``: noted if over the chunk size asked for."""
        if self.chunk_size is not None and size > self.chunk_size:
            with self._counters.lock:
                self._raised[host] = max(size, self._raised.get(host, 0))

    def next_chunk(self) -> int:
        """The chunk size to use now, before per-registry limits."""
        if self.chunk_size is not None:
            return self.chunk_size
        rate = self._rate
        if rate is None:
            return FIRST_CHUNK
        return int(min(MAX_AUTO_CHUNK, max(FIRST_CHUNK, rate * CHUNK_SECONDS)))

    @property
    def body_limit(self) -> int | None:
        """The largest request body to send, once one was refused as too large (413)."""
        return self._body_limit

    def too_large(self, exc: RegistryError, length: int) -> bool:
        """True if ``exc`` refused a body of ``length`` bytes as too large (413, from the registry
        or a proxy before it: nginx client_max_body_size, a CDN's limit) and a smaller one may go:
        from now on bodies are at most half of it (not under 1 MiB). A refusal of a body sent
        before the limit was lowered (another upload's, in flight) leaves the limit as it is."""
        if exc.status != 413 or length <= MIN_BODY_LIMIT:
            return False
        with self._counters.lock:
            half = max(MIN_BODY_LIMIT, length // 2)
            self._body_limit = min(self._body_limit or half, half)
        return True

    def learn(self, sent: int, seconds: float) -> None:
        """An acknowledged request carried ``sent`` bytes in ``seconds``: update the rate (the
        mean of the old estimate and this sample; samples under 1 MiB say more about latency)."""
        if sent < (1 << 20) or seconds <= 0:
            return
        sample = sent / seconds
        with self._counters.lock:
            self._rate = sample if self._rate is None else (self._rate + sample) / 2

    def pause(self, attempt: int, retry_after: float | None = None) -> None:
        """Back off before retry number ``attempt`` (0: no wait), at least as long as the
        registry's ``Retry-After`` asked, never more than MAX_BACKOFF."""
        if attempt > 0:
            self.sleep(min(MAX_BACKOFF, max(self.backoff * 2 ** (attempt - 1), retry_after or 0)))

    def upload(self, client: RegistryClient, repo: str, desc: Descriptor, open_blob: BlobOpener,
               open_session: OpenSession, *, may_stall: bool = False) -> None:
        """Upload ``desc`` (see BlobUploader.upload); chunks of a source that ``may_stall`` are
        read whole before they are sent (BlobCursor)."""
        blob = _BlobUpload(self, client, repo, desc, open_blob, open_session, may_stall=may_stall)
        try:
            blob.run()
        except SourceFailed as failed:
            raise failed.error from None
        finally:
            blob.cursor.close()

    def forget(self, client: RegistryClient, repo: str, digest: str) -> None:
        """The blob is in ``repo``: a journal entry for it is stale (a run killed after its final
        PUT landed, or the blob pushed by someone else): drop it."""
        if self.journal is not None:
            self.journal.remove(client.host, repo, digest)

    def upload_range(self, client: RegistryClient, repo: str, desc: Descriptor, open_at: OpenAt,
                     start: int, end: int, open_session: OpenSession) -> RangeUpload:
        """Send the bytes ``[start, end)`` of ``desc`` that the registry does not hold yet, in
        chunks, continuing the journal's session; without the final PUT unless ``end`` is the
        blob's end. The session stays in the journal for the run that has the next bytes. Sends
        nothing when the registry holds fewer than ``start`` bytes (the bytes between are
        elsewhere); a new session is opened only from ``start == 0``."""
        if self.journal is None:
            raise UsageError("uploading part of a blob needs an upload journal")
        if not 0 <= start <= end <= desc.size:
            raise UsageError(f"invalid byte range {start}-{end} of a {desc.size}-byte blob")
        blob = _BlobUpload(self, client, repo, desc, None, open_session, open_at=open_at)
        try:
            return blob.run_range(start, end)
        except SourceFailed as failed:
            raise failed.error from None
        finally:
            blob.cursor.close()


class _BlobUpload:
    """One blob's upload: sessions, chunks, recovery and journal entries."""

    def __init__(self, up: ChunkedUploader, client: RegistryClient, repo: str, desc: Descriptor,
                 open_blob: BlobOpener | None, open_session: OpenSession, open_at: OpenAt | None = None,
                 *, may_stall: bool = False) -> None:
        self.up, self.client, self.repo, self.desc = up, client, repo, desc
        self.open_session = open_session
        self.settings = settings_for(client.host, up.settings)
        self.cursor = BlobCursor(open_blob, desc, open_at, may_stall=may_stall)
        self.lost = False  # the blob started over: a saved session could not be continued, or was lost
        self.failures = 0  # failures in a row since the last acknowledged request
        self.resumed = 0
        self.location: str | None = None  # the newest Location of the session in use

    @property
    def what(self) -> str:
        return f"blob {self.desc.digest} ({format_size(self.desc.size)}) to {self.client.host}/{self.repo}"

    def run(self) -> None:
        self._restarting(self._upload)

    def run_range(self, start: int, end: int) -> RangeUpload:
        if self.settings.monolithic_only:
            raise UploadError(f"{self.client.host} takes whole blobs only: {self.what} spans bundle parts, "
                              "so import the parts that hold it together")
        done = self._restarting(lambda session: self._upload_range(session, start, end))
        return done or RangeUpload(self.desc.size, self.lost)

    def _restarting(self, attempt: Callable[[_Session | None], T]) -> T | None:
        """The one restart path: ``attempt`` the upload from the journal's session (None: from
        a new one), and each time the session is lost, again from a new one after a restart (at
        most max_restarts); None when a lost session turns out to have completed the blob."""
        session, last_reason = self._resumed(), ""
        for n in range(self.up.max_restarts + 1):
            if n:
                self._restart(n)
                session = None
            try:
                return attempt(session)
            except _SessionLost as lost:
                last_reason = str(lost)
            if self._landed():
                self._forget()
                return None
        self._cancel()
        raise UploadError(f"upload of {self.what} failed: the session was lost "
                          f"{self.up.max_restarts + 1} times; last: {last_reason}")

    def _upload_range(self, session: _Session | None, start: int, end: int) -> RangeUpload:
        """Send ``[start, end)`` from ``session``; a new session is opened only from byte 0."""
        if session is None and start > 0:
            return RangeUpload(0, self.lost)
        session = session or self._new_session()
        if session is None:  # mounted
            return RangeUpload(self.desc.size, self.lost)
        if session.offset < start:
            return RangeUpload(session.offset, self.lost)
        held = self._send_chunks(session, stop=end)
        if held == self.desc.size:
            self._forget()
            self.up.count(blobs=1)
        return RangeUpload(held, self.lost)

    def _new_session(self) -> _Session | None:
        """POST a session (saved in the journal); None when the registry mounted the blob."""
        status = self.open_session()
        if status.mounted:
            return None
        session = _Session(status.location, 0, status.min_chunk)
        self._save(session)
        return session

    def _upload(self, session: _Session | None) -> None:
        """The whole blob from ``session`` (None: a new one); its journal entry dropped at the end."""
        if session is None:
            status = self.open_session()
            if status.mounted:
                return
            session = _Session(status.location, 0, status.min_chunk)
            self.location = session.location
        whole = self._monolithic(session) and session.offset == 0
        if not whole or not self._put_whole(session):  # (too large for the registry: in chunks)
            if self.settings.monolithic_only:
                raise UploadError(f"upload of {self.what} refused: the body is too large (413) for "
                                  f"{self.client.host}, which takes whole blobs only")
            self._save(session)
            self._send_chunks(session)
        self.up.count(blobs=1)
        self._forget()

    def _chunk(self, session: _Session) -> int:
        wanted = self.up.next_chunk()
        if self.cursor.may_stall and self.up.chunk_size is None:
            # a spooled chunk is read whole before it is sent, the next one read meanwhile: chunks
            # that fit the spool's memory keep reading and sending side by side (one 400 MB chunk
            # was read from a pipe, then sent, in turn)
            wanted = min(wanted, SPOOL_IN_MEMORY)
        size = effective_chunk_size(wanted, self.settings, session.min_chunk)
        limit = self.up.body_limit
        if limit and limit < size:  # but not under the minimum chunk the registry asks for
            size = max(limit, self.settings.min_chunk or 0, min(session.min_chunk or 0, MAX_CHUNK_MIN))
        return size

    def _monolithic(self, session: _Session) -> bool:
        threshold = self.up.threshold if self.up.threshold is not None else self._chunk(session)
        return self.settings.monolithic_only or self.desc.size <= threshold

    def _cancel(self) -> None:
        """Give up the session in use: DELETE it (best effort) and drop its journal entry."""
        if self.location is not None:
            self.client.cancel_upload(self.location, self.repo)
        self.location = None
        self._forget()

    def _restart(self, attempt: int) -> None:
        self._cancel()
        self.up.count(blobs_restarted=1, bytes_resumed=-self.resumed)
        self.resumed, self.failures, self.cursor.held_before, self.lost = 0, 0, 0, True
        self.up.pause(attempt)

    # -- journal --------------------------------------------------------------------------------
    @property
    def _key(self) -> tuple[str, str, str]:
        return (self.client.host, self.repo, self.desc.digest)

    def _save(self, session: _Session) -> None:
        self.location = session.location
        if self.up.journal is not None:
            self.up.journal.save(JournalEntry(*self._key, location=session.location, offset=session.offset,
                                              size=self.desc.size, source=self.up.source,
                                              min_chunk=session.min_chunk))

    def _forget(self) -> None:
        if self.up.journal is not None:
            self.up.journal.remove(*self._key)

    def _resumed(self) -> _Session | None:
        """The journal's session for this blob, where the registry says it stands; None (and the
        entry dropped, the session cancelled) when it cannot be continued."""
        entry = self.up.journal.get(*self._key) if self.up.journal else None
        if entry is None:
            return None
        try:
            self.up.count(status_queries=1)
            status = self.client.upload_status(entry.location, self.repo)
            held = self._held(status, entry.offset, after_failure=False)
        except (RegistryError, _SessionLost):
            self.client.cancel_upload(entry.location, self.repo)
            self._forget()
            self.lost = True
            self.up.count(blobs_restarted=1)  # from a new POST, as after a session lost in this run
            return None
        self.resumed, self.location, self.cursor.held_before = held, status.location, held
        self.up.count(blobs_resumed=1, bytes_resumed=held)
        return _Session(status.location, held, entry.min_chunk)

    # -- sending --------------------------------------------------------------------------------
    def _put_whole(self, session: _Session) -> bool:
        """Send the blob in one PUT; False when the registry (or a proxy before it) found the
        body too large (413): the session is left for chunks."""
        began = self.up.clock()
        try:
            self.client.finish_upload(session.location, self.repo, self.desc.digest,
                                      body=self.cursor.body(0, self.desc.size), length=self.desc.size)
        except RegistryError as exc:
            if self.up.too_large(exc, self.desc.size):
                return False
            if exc.retryable or exc.status in (400, 404, 416):
                raise _SessionLost(str(exc)) from None
            raise
        self.up.learn(self.desc.size, self.up.clock() - began)
        self.up.count(monolithic=1, chunks_sent=1, bytes_sent=self.desc.size)
        return True

    def _send_chunks(self, session: _Session, stop: int | None = None) -> int:
        """PATCH from the session's offset up to ``stop`` (default: the blob's end, then PUT);
        return the bytes the registry holds (the size once the blob is complete)."""
        size = self.desc.size
        stop = size if stop is None else stop
        while True:
            if stop < size and session.offset >= stop:
                return session.offset  # the rest of the blob is not available yet
            if session.offset < size:
                check(f"upload of blob {self.desc.digest}")
                chunk = self._chunk(session)
                self.up.note_chunk(self.client.host, chunk)
                # a chunk already being read ahead is sent as it was cut (its size came from the
                # rate known one chunk earlier)
                end = self.cursor.ahead_end(session.offset) or self._chunk_end(session, chunk, stop)
                end = min(end, stop)
            else:
                end = size
            if end == size and (session.offset == size or self.settings.last_chunk_in_put):
                next_session = self._finish(session)
                if next_session is None:
                    return size
                session = next_session
                continue
            session = self._patch(session, end, self._next_end(session, end, stop))
            self._save(session)

    def _next_end(self, session: _Session, end: int, stop: int) -> int | None:
        """Where the chunk after ``[offset, end)`` would end at the rate known now (None: none
        follows before ``stop``)."""
        if end >= stop:
            return None
        following = _Session(session.location, end, session.min_chunk)
        return self._chunk_end(following, self._chunk(following), stop)

    def _chunk_end(self, session: _Session, chunk: int, stop: int) -> int:
        """Where the next chunk ends: ``chunk`` bytes on, at most ``stop``; when stopping early
        and the bytes left before ``stop`` would make a chunk under the registry's minimum, they
        go along (every PATCH but the blob's last must reach the minimum)."""
        end = min(session.offset + chunk, stop)
        least = max(self.settings.min_chunk or 0, session.min_chunk or 0)
        if stop < self.desc.size and 0 < stop - end < least:
            end = stop
        return end

    def _patch(self, session: _Session, end: int, then: int | None = None) -> _Session:
        start, began = session.offset, self.up.clock()
        try:
            status = self.client.patch_upload(session.location, self.repo, self.cursor.body(start, end, then),
                                              start, end - start)
        except RegistryError as exc:
            if self._smaller(exc, end - start):
                return session  # the same bytes again, in smaller chunks
            return self._recover(session, exc)
        self.up.learn(end - start, self.up.clock() - began)
        self.failures = 0
        self.up.count(chunks_sent=1, bytes_sent=end - start)
        held = self._held(status, end, after_failure=False)
        if held > end:
            raise _SessionLost(f"the registry says it holds {held} bytes after {end} were sent")
        return _Session(status.location, held, session.min_chunk)

    def _finish(self, session: _Session) -> _Session | None:
        """PUT ``?digest=`` (with the rest of the blob, if any): None when the blob is complete,
        else the session to continue from."""
        start, size = session.offset, self.desc.size
        body = self.cursor.body(start, size) if start < size else None
        try:
            self.client.finish_upload(session.location, self.repo, self.desc.digest, body=body, length=size - start)
        except RegistryError as exc:
            if body is not None and self._smaller(exc, size - start):
                return session  # the rest in chunks under the limit (the last one in the PUT)
            if self._landed():
                return None
            if exc.status == 400:  # DIGEST_INVALID: distribution has cancelled the session
                raise _SessionLost(str(exc)) from None
            return self._recover(session, exc)
        self.up.count(chunks_sent=1 if body else 0, bytes_sent=size - start)
        return None

    # -- recovery -------------------------------------------------------------------------------
    def _smaller(self, exc: RegistryError, length: int) -> bool:
        """A body of ``length`` bytes refused as too large (413): True to send the same bytes
        again under a lower limit; a failure in a row all the same (bounded by max_failures)."""
        if not self.up.too_large(exc, length):
            return False
        self.failures += 1
        if self.failures > self.up.max_failures:
            raise UploadError(f"upload of {self.what} failed: {self.client.host} (or a proxy before it) "
                              f"refused {self.failures} request bodies in a row as too large (413); "
                              f"the last had {format_size(length)}") from None
        return True

    def _recover(self, session: _Session, exc: RegistryError) -> _Session:
        """After a failed PATCH or PUT: ask the registry where the upload stands."""
        if isinstance(exc, NotFoundError):
            raise _SessionLost(str(exc))
        if not (exc.retryable or exc.status == 416):
            raise exc
        while True:
            self.failures += 1
            if self.failures > self.up.max_failures:
                raise _SessionLost(f"{self.failures - 1} failures in a row; last: {exc}")
            self.up.pause(self.failures, getattr(exc, "retry_after", None))
            self.up.count(status_queries=1)
            try:
                status = self.client.upload_status(session.location, self.repo)
            except RegistryError as query_exc:
                if isinstance(query_exc, NotFoundError) or not query_exc.retryable:
                    raise _SessionLost(str(query_exc)) from None
                exc = query_exc
                continue
            held = self._held(status, session.offset, after_failure=True)
            self.location = status.location
            return _Session(status.location, held, session.min_chunk)

    def _held(self, status: UploadStatus, own: int, *, after_failure: bool) -> int:
        """Bytes the registry holds per ``status``. Without a believable Range (absent, not
        trusted by the settings) that is ``own`` (the journal's count) on a resume, but unknown
        after a failure; the ambiguous ``0-0`` keeps ``own``."""
        end = status.range_end
        if end is None or not self.settings.trust_range:
            if after_failure:
                raise _SessionLost("the registry did not say how many bytes it holds")
            return own
        if end == 0:
            return own
        if end + 1 > self.desc.size:
            raise _SessionLost(f"the registry says it holds {end + 1} bytes of a {self.desc.size}-byte blob")
        return end + 1

    def _landed(self) -> bool:
        """Is the blob in the repository already (a PUT whose answer was lost)?"""
        try:
            return self.client.blob_size(self.repo, self.desc.digest) == self.desc.size
        except RegistryError:
            return False
