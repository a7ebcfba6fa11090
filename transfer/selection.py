"""Selection: what to take from a source store, as image plans for the copy engine.

Selecting is kept apart from moving: ``select_images`` turns references, ``--all-tags`` and catalog
filters into (repository, tag-or-digest) pairs; ``plan_exports`` reads their manifests, adds
referrers (cosign-style tags and the OCI referrers API), and returns plans the copier runs into a
bundle (or a registry, for copy).
"""

from __future__ import annotations

import fnmatch
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from transfer.digest import is_digest
from transfer.errors import NotFoundError, TransferError, UsageError
from transfer.models import Descriptor, Platform, referrers_tag
from transfer.engine import ordered_map
from transfer.options import DEFAULT_LOOKUPS
from transfer.progress import NullProgress, Progress
from transfer.store import ImagePlan, Referrers, ResolvesWithBytes, Source, plan_image

COSIGN_SUFFIXES = (".sig", ".att", ".sbom")
MAX_REFERRER_DEPTH = 3


@dataclass
class Selection:
    """One thing to export: a repository and a tag or digest."""

    repository: str
    ref: str  # tag or digest

    @property
    def label(self) -> str:
        return f"{self.repository}{'@' if is_digest(self.ref) else ':'}{self.ref}"


class Selections(list[Selection]):
    """Selections, with the tags lists read to make them (repository -> every tag, referrer tags
    too), so planning need not ask for them again."""

    def __init__(self, items: Iterable[Selection] = (), tags: dict[str, list[str]] | None = None) -> None:
        super().__init__(items)
        self.tags: dict[str, list[str]] = tags if tags is not None else {}


@dataclass
class CatalogFilter:
    include: list[str] = field(default_factory=list)  # globs on repository names
    exclude: list[str] = field(default_factory=list)
    tag_regex: str | None = None

    def repository_ok(self, name: str) -> bool:
        if self.include and not any(fnmatch.fnmatchcase(name, g) for g in self.include):
            return False
        return not any(fnmatch.fnmatchcase(name, g) for g in self.exclude)

    def tag_ok(self, tag: str) -> bool:
        if not self.tag_regex:
            return True
        try:
            return re.fullmatch(self.tag_regex, tag) is not None
        except re.error as exc:
            raise UsageError(f"invalid --tags regular expression {self.tag_regex!r}: {exc}") from None


def select_repositories(src: Source, repositories: list[str], filt: CatalogFilter, *,
                        lookups: int = DEFAULT_LOOKUPS) -> list[Selection]:
    """Every tag of each repository that passes the filter (the --all-tags and --catalog paths);
    the tags lists are read ``lookups`` at a time (and kept: ``Selections.tags``)."""
    wanted = [repo for repo in repositories if filt.repository_ok(repo)]
    out = Selections()
    for repo, tags in zip(wanted, ordered_map(src.tags, wanted, lookups, 4 * lookups)):
        out.tags[repo] = tags
        out += [Selection(repo, t) for t in tags if filt.tag_ok(t) and not is_referrer_tag(t)]
    return out


def is_referrer_tag(tag: str) -> bool:
    """Cosign-style and fallback referrer tags travel with their subject, not as images."""
    base = tag
    for suffix in COSIGN_SUFFIXES:
        base = base.removesuffix(suffix)
    return base.startswith("sha256-") and len(base) == 7 + 64


def plan_exports(src: Source, selections: list[Selection], **kw: Any) -> list[ImagePlan]:
    """Every plan ``iter_plans`` yields, as a list."""
    return list(iter_plans(src, selections, **kw))


def iter_plans(
    src: Source,
    selections: list[Selection],
    *,
    platforms: list[Platform] | None = None,
    referrers: bool = True,
    keep_going: bool = False,
    failures: list[tuple[str, str]] | None = None,
    lookups: int = DEFAULT_LOOKUPS,
    progress: Progress | None = None,
) -> Iterator[ImagePlan]:
    """Read every selected image's manifests and referrers, ``lookups`` requests at a time, and
    yield the plans in selection order as they are ready (each image, then its referrers), so
    the copy starts while later images are read. Tags of one root in one repository make one
    plan: every reference is resolved (in parallel) before the first plan is read."""
    progress = progress or NullProgress()
    raws: dict[tuple[str, str], bytes] = {}  # (repo, digest) -> the root's bytes, read while resolving
    roots = _resolve(src, selections, lookups, keep_going, failures, progress, raws)  # now: a bad reference fails first
    planner = _Planner(src, platforms, referrers, {root.digest for root, _, _ in roots.values()}, raws,
                       selections.tags if isinstance(selections, Selections) else None)
    return _read_plans(planner, roots, lookups, keep_going, failures, progress)


def _read_plans(planner: "_Planner", roots: "Rooted", lookups: int, keep_going: bool,
                failures: list[tuple[str, str]] | None, progress: Progress) -> Iterator[ImagePlan]:
    emitted: set[str] = set()
    results = ordered_map(planner.try_plan, list(roots.items()), lookups, 8 * lookups)
    for done, (label, outcome) in enumerate(results, 1):
        progress.images(len(roots), done)
        if isinstance(outcome, TransferError):
            if not keep_going or failures is None:
                raise outcome
            failures.append((label, str(outcome)))
            continue
        yield outcome[0]
        for plan in outcome[1:]:  # its referrers, each once (images may share children)
            if plan.root.digest not in emitted:
                emitted.add(plan.root.digest)
                yield plan


Rooted = dict[tuple[str, str], tuple[Descriptor, list[str], str]]  # (repo, digest) -> (root, tags, label)


def _resolve(src: Source, selections: list[Selection], lookups: int, keep_going: bool,
             failures: list[tuple[str, str]] | None, progress: Progress, raws: dict[tuple[str, str], bytes]) -> Rooted:
    """Every selection's root, ``lookups`` at a time; tags of one root grouped, in order. A source
    that answers a reference with the manifest (ResolvesWithBytes) gives the root's bytes in the
    same request: they go into ``raws`` for planning (no second request for them)."""
    def resolve(sel: Selection) -> tuple[Descriptor, bytes | None] | TransferError:
        try:
            return _resolve_one(src, sel.repository, sel.ref)
        except TransferError as exc:
            return exc

    roots: Rooted = {}
    for found, (sel, got) in enumerate(zip(selections, ordered_map(resolve, selections, lookups, 8 * lookups)), 1):
        if found % 100 == 0 or found == len(selections):
            progress.images(found, 0)
        if isinstance(got, TransferError):
            if not keep_going or failures is None:
                raise got
            failures.append((sel.label, str(got)))
            continue
        root, raw = got
        if raw is not None:
            raws.setdefault((sel.repository, root.digest), raw)
        entry = roots.setdefault((sel.repository, root.digest), (root, [], sel.label))
        if not is_digest(sel.ref):
            entry[1].append(sel.ref)
    return roots


def _resolve_one(src: Source, repo: str, ref: str) -> tuple[Descriptor, bytes | None]:
    """A reference's root, with its bytes where the source gives them in the same request."""
    if isinstance(src, ResolvesWithBytes):
        return src.resolve_read(repo, ref)
    return src.resolve(repo, ref), None


class TagLists:
    """The tags of each repository of ``src`` (``known``: lists read already), each asked at most
    once however many threads want it (they wait for the one answer); a repository the source does
    not have has none."""

    def __init__(self, src: Source, known: dict[str, list[str]] | None = None) -> None:
        self.src = src
        self._tags: dict[str, set[str]] = {repo: set(names) for repo, names in (known or {}).items()}
        self._lock = threading.Lock()
        self._repo_locks: dict[str, threading.Lock] = {}

    def __call__(self, repo: str) -> set[str]:
        with self._lock:
            if repo in self._tags:
                return self._tags[repo]
            lock = self._repo_locks.setdefault(repo, threading.Lock())
        with lock:
            with self._lock:
                if repo in self._tags:
                    return self._tags[repo]
            try:
                tags = set(self.src.tags(repo))
            except NotFoundError:
                tags = set()
            with self._lock:
                return self._tags.setdefault(repo, tags)


class _Planner:
    """Reads one image's plan and its referrers' plans (run from several threads)."""

    def __init__(self, src: Source, platforms: list[Platform] | None, referrers: bool, roots: set[str],
                 raws: dict[tuple[str, str], bytes], tags: dict[str, list[str]] | None = None) -> None:
        self.src, self.platforms, self.referrers, self.roots = src, platforms, referrers, roots
        self._raws = raws
        self._repo_tags = TagLists(src, tags)  # the selection's lists, else asked once per repository
        self._lock = threading.Lock()

    def try_plan(self, item: tuple[tuple[str, str], tuple[Descriptor, list[str], str]]) -> tuple[str, list[ImagePlan] | TransferError]:
        (repo, digest), (root, tags, label) = item
        with self._lock:
            raw = self._raws.pop((repo, digest), None)  # read while resolving; not kept after
        try:
            plan = plan_image(self.src, repo, root, platforms=self.platforms, label=label, raw=raw)
            plan.tags = list(tags)
            return label, [plan] + (self._referrer_plans(plan) if self.referrers else [])
        except TransferError as exc:
            return label, exc

    def _referrer_plans(self, plan: ImagePlan) -> list[ImagePlan]:
        """Plans for signatures, attestations, SBOMs and other referrers of ``plan``'s manifests."""
        seen = set(self.roots)
        out: list[ImagePlan] = []
        frontier = [plan]
        for _ in range(MAX_REFERRER_DEPTH):
            found = [p for f in frontier for m in f.manifests for p in self._referrers_of(f.src_repo, m.digest, seen)]
            out += found
            frontier = found
            if not found:
                break
        return out

    def _referrers_of(self, repo: str, digest: str, seen: set[str]) -> list[ImagePlan]:
        tags = self._repo_tags(repo)
        base = referrers_tag(digest)
        found: list[ImagePlan] = []
        for tag in [base + s for s in COSIGN_SUFFIXES] + [base]:
            if tag in tags:
                desc, raw = _resolve_one(self.src, repo, tag)
                found += _new_plan(self.src, repo, desc, [tag], seen, f"{repo}:{tag}", raw)
        if isinstance(self.src, Referrers):
            for desc in self.src.referrers(repo, digest):
                found += _new_plan(self.src, repo, desc, [], seen, f"{repo}@{desc.digest} (referrer)")
        return found


def _new_plan(src: Source, repo: str, desc: Descriptor, tags: list[str], seen: set[str], label: str,
              raw: bytes | None = None) -> list[ImagePlan]:
    if desc.digest in seen:
        return []
    seen.add(desc.digest)
    return [plan_image(src, repo, desc, tags=tags, label=label, raw=raw)]


def parse_reference_file(path: str) -> list[str]:
    """References from a file: one a line, '#' starts a comment, blank lines ignored."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read reference file {path}: {exc.strerror}") from None
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


MOUNT_FROM = "mountFrom"  # an expected entry's repositories at the destination holding the blob


def declare_expected(writer, plans: list[ImagePlan], have: dict[str, set[str]]) -> int:
    """Delta: record as expected at the destination (not stored) every blob it holds in any
    repository (``have``: digest -> repositories), with those repositories (``mountFrom``, at most
    8) for the import to cross-mount it from where it is needed elsewhere; return how many."""
    blobs = {blob.digest: blob for plan in plans for blob in plan.blobs}
    count = 0
    for digest, blob in blobs.items():
        if have.get(digest) and not writer.stored(digest):
            writer.expect(Descriptor.model_validate(
                dict(blob.model_dump(mode="json", by_alias=True, exclude_none=True),
                     **{MOUNT_FROM: sorted(have[digest])[:8]})))
            count += 1
    return count


def parse_platforms(values: list[str] | None) -> list[Platform] | None:
    """``["linux/amd64", ...]`` as platforms (None for none given: every platform)."""
    try:
        return [Platform.parse(v) for v in values] if values else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def noting_platforms(plans: Iterable[ImagePlan], notes: list[str], progress: Progress) -> Iterator[ImagePlan]:
    """``plans`` as they come; a root that --platform changed is noted (``notes``) and shown."""
    for plan in plans:
        for note in platform_notes([plan]):
            notes.append(note)
            progress.message(note)
        yield plan


def platform_notes(plans: list[ImagePlan]) -> list[str]:
    """One line per image whose root digest --platform changed."""
    return [f"{p.label}: --platform keeps a subset, so the root digest changes from {p.original_root} "
            f"to {p.root.digest}" for p in plans if p.original_root]
