"""Selection: what to take from a source store, as image plans for the copy engine.

Selecting is kept apart from moving: ``select_images`` turns references, ``--all-tags`` and catalog
filters into (repository, tag-or-digest) pairs; ``plan_exports`` reads their manifests, adds
referrers (cosign-style tags and the OCI referrers API), and returns plans the copier runs into a
bundle (or a registry, for copy).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from transfer.digest import is_digest
from transfer.errors import NotFoundError, TransferError, UsageError
from transfer.models import Descriptor, Platform, referrers_tag
from transfer.store import ImagePlan, Referrers, Source, plan_image

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


def select_repositories(src: Source, repositories: list[str], filt: CatalogFilter) -> list[Selection]:
    """Every tag of each repository that passes the filter (the --all-tags and --catalog paths)."""
    out = []
    for repo in repositories:
        if not filt.repository_ok(repo):
            continue
        out += [Selection(repo, t) for t in src.tags(repo) if filt.tag_ok(t) and not is_referrer_tag(t)]
    return out


def is_referrer_tag(tag: str) -> bool:
    """Cosign-style and fallback referrer tags travel with their subject, not as images."""
    base = tag
    for suffix in COSIGN_SUFFIXES:
        base = base.removesuffix(suffix)
    return base.startswith("sha256-") and len(base) == 7 + 64


def plan_exports(
    src: Source,
    selections: list[Selection],
    *,
    platforms: list[Platform] | None = None,
    referrers: bool = True,
    keep_going: bool = False,
    failures: list[tuple[str, str]] | None = None,
) -> list[ImagePlan]:
    """Read every selected image's manifests; group tags of one root into one plan."""
    plans: dict[tuple[str, str], ImagePlan] = {}
    tag_cache: dict[str, set[str]] = {}
    for sel in selections:
        try:
            root = src.resolve(sel.repository, sel.ref)
            key = (sel.repository, root.digest)
            if key not in plans:
                plans[key] = plan_image(src, sel.repository, root, platforms=platforms, label=sel.label)
            if not is_digest(sel.ref):
                plans[key].tags.append(sel.ref)
        except TransferError as exc:
            if not keep_going or failures is None:
                raise
            failures.append((sel.label, str(exc)))
    result = list(plans.values())
    if referrers:
        result += _referrer_plans(src, result, tag_cache)
    return result


def _referrer_plans(src: Source, plans: list[ImagePlan], tag_cache: dict[str, set[str]]) -> list[ImagePlan]:
    """Plans for signatures, attestations, SBOMs and other referrers of the planned manifests."""
    seen = {p.root.digest for p in plans}
    out: list[ImagePlan] = []
    frontier = plans
    for _ in range(MAX_REFERRER_DEPTH):
        found = []
        for plan in frontier:
            for manifest in plan.manifests:
                found += _referrers_of(src, plan.src_repo, manifest.digest, tag_cache, seen)
        frontier = found
        out += found
        if not found:
            break
    return out


def _referrers_of(src: Source, repo: str, digest: str, tag_cache: dict[str, set[str]],
                  seen: set[str]) -> list[ImagePlan]:
    if repo not in tag_cache:
        try:
            tag_cache[repo] = set(src.tags(repo))
        except NotFoundError:
            tag_cache[repo] = set()
    tags = tag_cache[repo]
    base = referrers_tag(digest)
    found: list[ImagePlan] = []
    for tag in [base + s for s in COSIGN_SUFFIXES] + [base]:
        if tag in tags:
            desc = src.resolve(repo, tag)
            found += _new_plan(src, repo, desc, [tag], seen, f"{repo}:{tag}")
    if isinstance(src, Referrers):
        for desc in src.referrers(repo, digest):
            found += _new_plan(src, repo, desc, [], seen, f"{repo}@{desc.digest} (referrer)")
    return found


def _new_plan(src: Source, repo: str, desc: Descriptor, tags: list[str], seen: set[str], label: str) -> list[ImagePlan]:
    if desc.digest in seen:
        return []
    seen.add(desc.digest)
    return [plan_image(src, repo, desc, tags=tags, label=label)]


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


def platform_notes(plans: list[ImagePlan]) -> list[str]:
    """One line per image whose root digest --platform changed."""
    return [f"{p.label}: --platform keeps a subset, so the root digest changes from {p.original_root} "
            f"to {p.root.digest}" for p in plans if p.original_root]
