"""Importing a split bundle part by part: each run pushes what the parts present allow.

A split set records its export plan in every part (docs/bundle-format.md, "Plan"), so a part alone
tells which repositories each of its blobs belongs to. ``PartImport.run`` then:

1. continues the upload of a blob that began in an earlier part (its session is in the upload
   journal) with the bytes of this part, and refuses, before pushing anything, a part whose
   predecessor was not imported;
2. pushes every blob the parts present hold whole to every repository the plan lists for it
   (skipping what the destination has), and the first bytes of a blob that goes on in a later part;
3. pushes the manifests (children first) and tags of every image whose references are all at the
   destination now: HEAD-checked, except what this run pushed;
4. reports what waits for which part. With the last part present every tag is checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transfer.bundle import BundleReader
from transfer.bundle.format import PlanContent, PlanImage
from transfer.copy import Copier, CopyStats, ImagePlan, bytes_opener
from transfer.errors import BundleError, TransferError
from transfer.import_ import (RepositoryMapping, apply_on_existing, check_expected, current_digest,
                              tag_conflicts, verify_tags)
from transfer.models import MAX_MANIFEST_SIZE, Descriptor, parse_manifest
from transfer.progress import NullProgress, Progress
from transfer.registry import RegistryStore
from transfer.store import read_manifest


class PartOrderError(TransferError):
    """A part was given before the part it continues was imported; ``needed`` is that part."""

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


@dataclass
class SpanningBlob:
    """A blob only partly in the parts present, and where its upload stands after this run."""

    digest: str
    repository: str
    size: int
    present: tuple[int, int]  # the bytes the parts present hold
    held: int  # bytes at the destination after this run (size once complete)
    part: int  # the part holding the first of the bytes present
    restarted: bool = False  # its upload session was lost: it starts over from byte 0

    @property
    def needs_earlier(self) -> bool:
        """The destination holds less than the bytes before those present: an earlier part must
        come again (after a lost session)."""
        return self.held < self.present[0]

    def as_dict(self) -> dict:
        return {"digest": self.digest, "repository": self.repository, "size": self.size, "part": self.part,
                "present": list(self.present), "held": self.held, "restarted": self.restarted}


@dataclass
class PartReport:
    """What one part-by-part run did and what waits."""

    parts: list[int]
    final: bool  # the bundle's last part was among those present
    stats: CopyStats
    spanning: list[SpanningBlob] = field(default_factory=list)
    complete: list[str] = field(default_factory=list)  # images whose root is at the destination
    waiting: list[tuple[str, str]] = field(default_factory=list)  # (image, what it waits for)
    notes: list[str] = field(default_factory=list)  # tag decisions, lost sessions
    tag_problems: list[str] = field(default_factory=list)

    @property
    def next_part(self) -> int | None:
        """The part to insert next: the one before a blob whose session was lost, else the one
        after those present; None with the last part present, or when nothing waits."""
        again = [s.part - 1 for s in self.spanning if s.needs_earlier]
        if again:
            return min(again)
        pending = self.waiting or any(s.held < s.size for s in self.spanning)
        return None if self.final or not pending else max(self.parts) + 1


def _desc(c: PlanContent) -> Descriptor:
    return Descriptor(mediaType=c.media_type, digest=c.digest, size=c.size)


def _label(image: PlanImage, repo: str) -> str:
    return f"{repo}:{image.tags[0]}" if image.tags else f"{repo}@{image.root.digest}"


class PartImport:
    """One run over the parts present of a split bundle into a registry."""

    def __init__(self, reader: BundleReader, dst: RegistryStore, mapping: RepositoryMapping, *,
                 on_existing: str = "overwrite", progress: Progress | None = None, jobs: int = 4) -> None:
        if reader.plan is None:
            raise BundleError(f"{reader.path}: this split bundle records no export plan (written by an older "
                              "transfer), so its parts cannot be imported one by one: bring all parts together")
        self.reader, self.dst, self.on_existing = reader, dst, on_existing
        self.progress, self.jobs = progress or NullProgress(), jobs
        self.images = [(i, mapping.target(i.repository)) for i in reader.plan.images]
        self.known: set[tuple[str, str]] = set()  # (repository, digest) at the destination
        last = reader.parts[-1].doc
        self.report = PartReport([p.number for p in reader.parts], last.final, CopyStats())

    def run(self) -> PartReport:
        users = self._blob_users()
        spanning = {d: c for d, c in users.items() if not self.reader.has(d) and self.reader.covered(d)}
        for digest in sorted(spanning, key=lambda d: -self.reader.covered(d)[0][0]):  # continuations first
            self._push_spanning(spanning[digest][0], spanning[digest][1])
        self._check_expected()
        self._push_whole(users)
        for image, repo in self.images:
            self._push_image(image, repo)
        if self.report.final:
            self._check_all_tags()
        return self.report

    def _blob_users(self) -> dict[str, tuple[PlanContent, list[str]]]:
        """Every blob of the plan with the repositories that need it, in plan order."""
        users: dict[str, tuple[PlanContent, list[str]]] = {}
        for image, repo in self.images:
            for blob in image.blobs:
                repos = users.setdefault(blob.digest, (blob, []))[1]
                if repo not in repos:
                    repos.append(repo)
        return users

    # -- blobs -----------------------------------------------------------------------------------
    def _push_spanning(self, blob: PlanContent, repos: list[str]) -> None:
        start, end = self.reader.covered(blob.digest)[0]
        desc, primary = _desc(blob), repos[0]
        result = self.dst.push_range(primary, desc, lambda at: self.reader.open_range(blob.digest, at), start, end)
        if result.held < start and not result.restarted:
            self._out_of_order(blob, primary, start, result.held)
        part = self.reader.part_at(blob.digest, start) or 1
        self.report.spanning.append(
            SpanningBlob(blob.digest, primary, blob.size, (start, end), result.held, part, result.restarted))
        if result.restarted:
            self.report.notes.append(
                f"the upload session of blob {blob.digest} at {self.dst.client.host}/{primary} was lost (the "
                "registry restarted without a fixed http.secret, or purged its uploads): the blob starts over "
                + (f"when its first bytes are imported again (part {part - 1} or earlier, then part {part})"
                   if start else "from byte 0"))
        if result.held == blob.size:
            self.known.add((primary, blob.digest))
            for repo in repos[1:]:
                self._mount(desc, repo, primary)

    def _out_of_order(self, blob: PlanContent, repo: str, start: int, held: int) -> None:
        part = self.reader.part_at(blob.digest, start) or 1
        raise PartOrderError(
            f"part {part} continues blob {blob.digest} at byte {start}, but {self.dst.client.host}/{repo} holds "
            f"{held} bytes of it: part {part - 1} must be imported first (nothing was pushed)",
            needed=part - 1)

    def _mount(self, desc: Descriptor, repo: str, source: str) -> None:
        """A blob completed from parts goes to further repositories by a cross-repository mount."""
        def no_bytes():
            raise BundleError(f"{desc.digest}: {self.dst.client.host} did not mount it from {source} into "
                              f"{repo}, and its bytes span parts: import the parts holding it together")

        self.dst.push(repo, desc, no_bytes, mount_from=source)
        self.known.add((repo, desc.digest))

    def _check_expected(self) -> None:
        plans = [ImagePlan(i.repository, repo, _desc(i.root), [], blobs=[_desc(b) for b in i.blobs])
                 for i, repo in self.images]
        check_expected(self.dst, plans, {d.digest for d in self.reader.expected})

    def _push_whole(self, users: dict[str, tuple[PlanContent, list[str]]]) -> None:
        """Every blob the parts present hold whole, to every repository that needs it."""
        by_repo: dict[str, ImagePlan] = {}
        for digest, (blob, repos) in users.items():
            if not self.reader.has(digest):
                continue
            for repo in repos:
                plan = by_repo.setdefault(repo, ImagePlan(repo, repo, _desc(blob), [], label=repo))
                plan.blobs.append(_desc(blob))
        plans = list(by_repo.values())
        copier = Copier(self.reader, self.dst, progress=self.progress, jobs=self.jobs)
        copier.execute(plans)  # no manifests, no tags: blobs only
        copier.stats.images = 0
        self.report.stats = copier.stats
        self.known.update((p.dst_repo, b.digest) for p in plans for b in p.blobs)

    # -- manifests and tags ----------------------------------------------------------------------
    def _at_dst(self, repo: str, desc: Descriptor) -> bool:
        if (repo, desc.digest) not in self.known and self.dst.exists(repo, desc):
            self.known.add((repo, desc.digest))
        return (repo, desc.digest) in self.known

    def _push_image(self, image: PlanImage, repo: str) -> None:
        """Manifests children first, each only once all it references is at the destination."""
        label = _label(image, repo)
        for m in image.manifests:
            desc = _desc(m)
            if self._at_dst(repo, desc):
                continue
            if not self.reader.has(m.digest):
                self.report.waiting.append((label, f"manifest {m.digest}"))
                return
            raw = read_manifest(self.reader, "", desc, MAX_MANIFEST_SIZE)
            missing = [c for c in parse_manifest(raw, m.media_type, m.digest).children() if not self._at_dst(repo, c)]
            if missing:
                self.report.waiting.append((label, f"{'manifest' if missing[0].is_manifest else 'blob'} {missing[0].digest}"))
                return
            self.dst.push(repo, desc, bytes_opener(desc, raw))
            self.known.add((repo, m.digest))
            self.report.stats.manifests_copied += 1
        self._tag(image, repo)
        self.report.complete.append(label)
        self.report.stats.images += 1

    def _tag(self, image: PlanImage, repo: str) -> None:
        """Tags as --on-existing decides; a tag already at the root is not written again."""
        plan = ImagePlan(image.repository, repo, _desc(image.root), list(image.tags))
        self.report.notes += apply_on_existing([plan], tag_conflicts(self.dst, [plan]), self.on_existing)
        for tag in plan.tags:
            if current_digest(self.dst, repo, tag) != plan.root.digest:
                self.dst.tag(repo, plan.root, tag)
                self.report.stats.tags_written += 1

    def _check_all_tags(self) -> None:
        """With the last part present: every tag of the images complete at the destination must
        point at the bundle's digest (tags kept by --on-existing skip excepted)."""
        waiting = {label for label, _ in self.report.waiting}
        plans = []
        for image, repo in self.images:
            root = _desc(image.root)
            if _label(image, repo) in waiting:
                continue
            tags = [t for t in image.tags if self.on_existing != "skip" or current_digest(self.dst, repo, t) in (None, root.digest)]
            plans.append(ImagePlan(image.repository, repo, root, tags))
        self.report.tag_problems = verify_tags(self.dst, plans)
