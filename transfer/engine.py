"""The one copy algorithm, over any two stores (transfer.store).

``Copier.execute`` moves a set of image plans (``transfer.store.plan_image``) children first: blobs
(in parallel where the target takes it, skipping what the target has), then child manifests by
digest, then roots, then tags. A manifest is never pushed before everything it references is
present, so an interrupted run leaves nothing dangling, and running the same copy again is the
resume: finished work is skipped by digest.

A source that holds only some content now (``transfer.store.Partial``: the parts of a split bundle
that have arrived) is the same algorithm with a gate: content not there holds its image back, and
the image is reported as waiting for it instead of failing.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, TypeVar

from transfer.digest import READ_SIZE, Readable, VerifyingReader
from transfer.errors import TransferError, TransferInterrupted
from transfer.interrupt import STOP, check as check_stop
from transfer.models import MAX_MANIFEST_SIZE, Descriptor
from transfer.progress import NullProgress, Progress
from transfer.store import BlobOpener, ImagePlan, Partial, PushByTag, RootRecorder, Source, Target, read_manifest

PREFETCH_MAX = 1 << 20  # blobs up to this size are fetched ahead in parallel for one-at-a-time targets (configs,
# small layers: a round trip each would cost more than the bytes); 8 MiB cost a lab export 17 MiB of peak RSS
BATCH = 256  # plans run together: their blobs, then their manifests and tags


@dataclass
class CopyStats:
    images: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    manifests_copied: int = 0
    manifests_skipped: int = 0
    bytes_copied: int = 0
    bytes_skipped: int = 0
    tags_written: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (image label, error)
    waiting: list[tuple[str, str]] = field(default_factory=list)  # (image label, what it waits for)
    complete: list[str] = field(default_factory=list)  # labels of the images finished at the target


class _ProgressReader:
    """Report bytes read from a blob stream; a reopened stream rewinds what was reported."""

    def __init__(self, raw: VerifyingReader, key: str, progress: Progress) -> None:
        self._raw, self._key, self._progress, self.count = raw, key, progress, 0
        self.verifies = raw.verifies  # the stream below checks digest and size: no second hash

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self.count += len(data)
            self._progress.advance(self._key, len(data))
        return data

    def rewind(self, offset: int) -> bool:
        """Go on from ``offset`` if the stream below can (VerifyingReader.rewind)."""
        return self._go("rewind", offset)

    def skip_unverified(self, offset: int) -> bool:
        """VerifyingReader.skip_unverified, the skipped bytes counted as done."""
        return self._go("skip_unverified", offset)

    @property
    def unverified(self) -> bool:
        return self._raw.unverified

    def _go(self, method: str, offset: int) -> bool:
        if not (self._raw.rewind if method == "rewind" else self._raw.skip_unverified)(offset):
            return False
        self._progress.advance(self._key, offset - self.count)
        self.count = offset
        return True

    def read_all(self) -> bytes:
        parts = []
        while chunk := self.read(READ_SIZE):
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> "_ProgressReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bytes_opener(desc: Descriptor, raw: bytes) -> BlobOpener:
    """A BlobOpener over bytes already in memory (a manifest, a prefetched small blob)."""
    kind = "manifest" if desc.is_manifest else "blob"
    return lambda: VerifyingReader(io.BytesIO(raw), desc.digest, desc.size, f"{kind} {desc.digest}")


T = TypeVar("T")
R = TypeVar("R")


def parallel_map(fn: Callable[[T], R], items: list[T], jobs: int) -> list[R]:
    """``[fn(x) for x in items]``, up to ``jobs`` at a time (for requests that wait on the network)."""
    if jobs <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(jobs, len(items)), thread_name_prefix="ask") as pool:
        return list(pool.map(fn, items))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], jobs: int, ahead: int) -> Iterator[R]:
    """``fn(x)`` for each item, up to ``jobs`` at a time and at most ``ahead`` results waiting,
    yielded in the order of ``items`` as they come (a pipeline stage: the consumer works on the
    first results while later ones are computed). Closing the iterator cancels what is queued."""
    if jobs <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(jobs, thread_name_prefix="plan")
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            while len(pending) >= max(ahead, jobs):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch



class Copier:
    """Runs plans against one source and one target.

    ``tagged``: (target repository, tag) pairs already known to point at their plan's root (an
    import asked before it began); they are not written again, and an image whose tags all are
    is not checked further (its root is there, so its whole graph is). ``tags_asked``: every tag
    of the plans was asked (``tagged`` holds all that are right), so a root whose tag is not
    there goes up under that tag at once where the target can (PushByTag).
    """

    def __init__(self, src: Source, dst: Target, *, progress: Progress | None = None, jobs: int = 4,
                 keep_going: bool = False, tagged: Iterable[tuple[str, str]] = (), tags_asked: bool = False) -> None:
        self.src, self.dst = src, dst
        self.progress = progress or NullProgress()
        self.jobs = max(1, jobs)
        # Parallel pushes only into targets that take them (a bundle appends to one file); for
        # the others, small blobs from a network source are fetched ahead in parallel.
        self.push_jobs = self.jobs if dst.traits.concurrent_push else 1
        self.fetch_jobs = self.jobs if self.push_jobs == 1 and src.traits.may_stall else 1
        self.keep_going = keep_going
        self.tagged = tagged if isinstance(tagged, (set, frozenset)) else set(tagged)  # only read: not copied
        self.stats = CopyStats()
        self._partial = src if isinstance(src, Partial) else None
        self._roots = dst if isinstance(dst, RootRecorder) else None
        self._by_tag = dst if isinstance(dst, PushByTag) and tags_asked else None
        self._lock = threading.Lock()
        self._failed_blobs: dict[tuple[str, str], str] = {}  # (repository key, digest) -> why
        self._waiting_blobs: set[tuple[str, str]] = set()  # (repository key, digest) not at the source yet
        self._manifest_locks: dict[tuple[str, str], threading.Lock] = {}  # of the batch finishing
        self._settled: set[tuple[str, str]] = set()  # blob keys copied or found present already

    def execute(self, plans: Iterable[ImagePlan]) -> CopyStats:
        """Run ``plans`` (a list, or an iterator yielding them while planning goes on) in
        batches of BATCH in their order: each batch's blobs, then its manifests and tags. So the
        first blobs move while later images are still being read, memory stays bounded, and the
        same plan order writes the same bytes into a one-push-at-a-time target."""
        for batch in batched(plans, BATCH):
            self._run(batch)
        return self.stats

    def _run(self, plans: list[ImagePlan]) -> None:
        plans = [plan for plan in plans if not self._already_there(plan)]
        blobs = self._unique_blobs(plans)
        self._copy_blobs(blobs)
        with self._lock:
            self._settled.update(self._key(plan, blob) for plan, blob in blobs
                                 if self._key(plan, blob) not in self._failed_blobs and self._key(plan, blob) not in self._waiting_blobs)
        if self.push_jobs > 1:  # each image's manifests in order (children, root, tags); images side by side
            self._in_pool(lambda pool: [pool.submit(self._finish_image, plan) for plan in plans])
        else:
            for plan in plans:
                self._finish_image(plan)
        self._manifest_locks.clear()  # only images finishing side by side share them: none of the next batch

    def _already_there(self, plan: ImagePlan) -> bool:
        """Every tag of ``plan`` already points at its root (``tagged``): the root is there, so
        its whole graph is (a manifest is never pushed before its children): nothing to ask."""
        if not plan.tags or any((plan.dst_repo, tag) not in self.tagged for tag in plan.tags):
            return False
        for desc in plan.manifests:
            self._count_skip(desc, manifest=True)
        for blob in plan.blobs:
            if self._key(plan, blob) not in self._settled:
                self._settled.add(self._key(plan, blob))
                self._count_skip(blob, manifest=False)
        with self._lock:
            self.stats.images += 1
            self.stats.complete.append(plan.label)
        return True

    def _available(self, digest: str) -> bool:
        """The source can give the whole content now (always, but for a Partial source)."""
        return self._partial is None or self._partial.has(digest)

    def _unique_blobs(self, plans: list[ImagePlan]) -> list[tuple[ImagePlan, Descriptor]]:
        """Each blob once per repository, or once at all where the target keeps one copy for
        every repository (a bundle, a layout)."""
        seen: set[tuple[str, str]] = set()
        out = []
        for plan in plans:
            for blob in plan.blobs:
                key = self._key(plan, blob)
                if key not in seen and key not in self._settled:
                    seen.add(key)
                    out.append((plan, blob))
        return out

    def _key(self, plan: ImagePlan, blob: Descriptor) -> tuple[str, str]:
        return (plan.dst_repo if self.dst.traits.blobs_per_repository else "", blob.digest)

    def _copy_blobs(self, blobs: list[tuple[ImagePlan, Descriptor]]) -> None:
        todo = []
        for (plan, blob), present in zip(blobs, self._presence(blobs)):
            if present:
                self._count_skip(blob, manifest=False)
            elif not self._available(blob.digest):
                self._waiting_blobs.add(self._key(plan, blob))
            else:
                self.progress.planned(blob.digest, blob.size, blob.short())
                todo.append((plan, blob))
        if self.push_jobs > 1:
            self._in_pool(lambda pool: [pool.submit(self._copy_group, group) for group in self._by_blob(todo)])
        elif self.fetch_jobs > 1 and len(todo) > 1:
            self._in_pool(lambda pool: self._push_in_order(pool, todo))
        else:
            for plan, blob in todo:
                self._guard(plan, blob, self._copy_blob)

    @staticmethod
    def _by_blob(todo: list[tuple[ImagePlan, Descriptor]]) -> list[list[tuple[ImagePlan, Descriptor]]]:
        """The copies of each blob (one per repository) together, largest blob first: the longest
        upload is the critical path, so it must not start last; and a blob's later copies come after
        its first, so the target can cross-mount them instead of receiving the bytes again."""
        groups: dict[str, list[tuple[ImagePlan, Descriptor]]] = {}
        for plan, blob in todo:
            groups.setdefault(blob.digest, []).append((plan, blob))
        return sorted(groups.values(), key=lambda group: -group[0][1].size)

    def _copy_group(self, group: list[tuple[ImagePlan, Descriptor]]) -> None:
        for plan, blob in group:
            self._guard(plan, blob, self._copy_blob)

    def _presence(self, blobs: list[tuple[ImagePlan, Descriptor]]) -> list[bool]:
        """Which blobs the target has; asked in parallel where the target allows it (HEADs)."""
        return parallel_map(lambda item: self.dst.exists(item[0].dst_repo, item[1]), blobs, self.push_jobs)

    def _in_pool(self, submit: Callable[[ThreadPoolExecutor], list[Future[Any]]]) -> None:
        """Run ``submit(pool) -> futures`` and wait; on failure start nothing new."""
        pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="copy")
        try:
            for f in as_completed(submit(pool)):
                f.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # blobs in flight finish or fail; no new ones
            raise
        pool.shutdown(wait=True)

    def _push_in_order(self, pool: ThreadPoolExecutor, todo: list[tuple[ImagePlan, Descriptor]]) -> list[Future[Any]]:
        """For a target that takes one push at a time (a bundle): small blobs ahead are fetched in
        parallel into memory (a window of at most 2 x jobs x PREFETCH_MAX bytes) while this thread
        writes in plan order, so the output stays deterministic; large blobs stream straight in."""
        ahead: dict[int, Future[bytes | None]] = {}
        for i, (plan, blob) in enumerate(todo):
            for j in range(i, min(len(todo), i + 2 * self.jobs)):
                if j not in ahead and todo[j][1].size <= PREFETCH_MAX:
                    ahead[j] = pool.submit(self._prefetch, *todo[j])
            future = ahead.pop(i, None)
            self._guard(plan, blob, lambda p, b: self._copy_blob(p, b, future.result() if future else None))
        return []

    def _prefetch(self, plan: ImagePlan, blob: Descriptor) -> bytes | None:
        """Download a small blob (verified); None if that failed (the push then fetches it again
        and reports the error in order)."""
        if STOP.is_set():
            return None
        try:
            with _ProgressReader(self.src.fetch(plan.src_repo, blob), blob.digest, self.progress) as r:
                data = r.read_all()
        except TransferError:
            return None
        return data

    def _guard(self, plan: ImagePlan, blob: Descriptor, fn: Callable[[ImagePlan, Descriptor], None]) -> None:
        try:
            fn(plan, blob)
        except TransferError as exc:
            if not self.keep_going or isinstance(exc, TransferInterrupted):
                raise
            with self._lock:
                self._failed_blobs[self._key(plan, blob)] = str(exc)

    def _copy_blob(self, plan: ImagePlan, blob: Descriptor, data: bytes | None = None) -> None:
        check_stop()
        self.progress.started(blob.digest)
        readers: list[_ProgressReader] = []

        def opener() -> Readable:
            if data is not None:  # prefetched and verified already (and reported)
                return bytes_opener(blob, data)()
            if readers:  # the target restarts the blob: take back what was reported
                self.progress.advance(blob.digest, -readers[-1].count)
            readers.append(_ProgressReader(self.src.fetch(plan.src_repo, blob), blob.digest, self.progress))
            return readers[-1]

        # a source over the network may stall: the uploader reads each chunk whole before sending it
        try:
            self.dst.push(plan.dst_repo, blob, opener, may_stall=data is None and self.src.traits.may_stall)
        finally:
            for r in readers:
                r.close()
        reported = blob.size if data is not None else readers[-1].count if readers else 0
        if reported < blob.size:  # cross-mounted (nothing read), or found there after all
            self.progress.advance(blob.digest, blob.size - reported)
        self.progress.finished(blob.digest)
        self._add(blobs_copied=1, bytes_copied=blob.size)

    def _count_skip(self, desc: Descriptor, manifest: bool) -> None:
        self.progress.skipped(desc.digest, desc.size, "present")
        if manifest:
            self._add(manifests_skipped=1)
        else:
            self._add(blobs_skipped=1, bytes_skipped=desc.size)

    def _finish_image(self, plan: ImagePlan) -> None:
        check_stop()
        missing = [self._key(plan, b) for b in plan.blobs if self._key(plan, b) in self._failed_blobs]
        if missing:
            self._failed(plan, f"blob {missing[0][1]}: {self._failed_blobs[missing[0]]}")
            return
        blob_waits = next((b.digest for b in plan.blobs if self._key(plan, b) in self._waiting_blobs), None)
        try:
            waits = f"blob {blob_waits}" if blob_waits else self._push_manifests(plan)
        except TransferError as exc:
            if not self.keep_going or isinstance(exc, TransferInterrupted):
                raise
            self._failed(plan, str(exc))
            return
        with self._lock:
            if waits:
                self.stats.waiting.append((plan.label, waits))
                return
            self.stats.images += 1
            self.stats.complete.append(plan.label)

    def _failed(self, plan: ImagePlan, reason: str) -> None:
        with self._lock:
            self.stats.failures.append((plan.label, reason))

    def _add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)

    def _push_manifests(self, plan: ImagePlan) -> str | None:
        """Children first, the root last, then the tags; returns what the image waits for (a
        manifest the source does not hold yet), None once it is finished."""
        for desc in plan.manifests:
            # Images finishing side by side may share a manifest (an index's child): one pushes
            # it, the other then finds it there.
            with self._lock:
                lock = self._manifest_locks.setdefault((plan.dst_repo, desc.digest), threading.Lock())
            with lock:
                if desc.digest == plan.root.digest and self._push_by_tag(plan):
                    return None
                if self.dst.exists(plan.dst_repo, desc):
                    self._count_skip(desc, manifest=True)
                elif not self._available(desc.digest):
                    return f"manifest {desc.digest}"
                else:
                    self.dst.push(plan.dst_repo, desc, bytes_opener(desc, self._manifest_bytes(plan, desc)))
                    self._add(manifests_copied=1)
        self._write_tags(plan)
        return None

    def _push_by_tag(self, plan: ImagePlan) -> bool:
        """Where the target can (PushByTag), the root goes up under its first tag in one request
        (written again if it was there: as cheap as asking), then the other tags."""
        first = plan.tags[0] if plan.tags else None
        if (self._by_tag is None or first is None or (plan.dst_repo, first) in self.tagged
                or not self._available(plan.root.digest)):
            return False
        self._by_tag.push_tagged(plan.dst_repo, plan.root, self._manifest_bytes(plan, plan.root), first)
        self._add(manifests_copied=1, tags_written=1)
        self._write_tags(plan, plan.tags[1:])
        return True

    def _manifest_bytes(self, plan: ImagePlan, desc: Descriptor) -> bytes:
        raw = plan.raw.get(desc.digest)
        return raw if raw is not None else read_manifest(self.src, plan.src_repo, desc, MAX_MANIFEST_SIZE)

    def _write_tags(self, plan: ImagePlan, tags: list[str] | None = None) -> None:
        for tag in plan.tags if tags is None else tags:
            if (plan.dst_repo, tag) not in self.tagged:
                self.dst.tag(plan.dst_repo, plan.root, tag)
                self._add(tags_written=1)
        if not plan.tags and self._roots is not None:
            self._roots.add_root(plan.dst_repo, plan.root)
