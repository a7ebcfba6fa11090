"""Restore and mirror: how a registry's repositories differ from a set of image plans (a bundle's,
or a source registry's), and the deletions that make them equal (``--prune``).

A registry is asked once before anything is pushed: the tags of every covered repository and the
digest each points at (``registry_tags``). ``diff_tags`` compares that with the plans;
``plan_prune`` turns it into manifest deletions, run after the copy (``run_prune``).

Deleting a tag means deleting its manifest by digest (distribution 2.8 answers 400 to a DELETE by
tag), which drops every tag pointing at it. So a manifest the plans keep (a root or a child of an
image they carry) is never deleted outright: an extra tag on it is removed by deleting the digest
and putting the manifest back at once, with the tags the plans keep on it. A manifest not carried
is deleted, with the child manifests of it nothing kept references. An index the registry holds
under a tag whose new root carries only some of its platforms (a ``--platform`` export) is kept:
the plans did not carry its other platforms, so they are not the plans' to delete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from transfer.engine import parallel_map
from transfer.errors import NotFoundError, RegistryError, TransferError
from transfer.models import MAX_MANIFEST_SIZE, ManifestView, parse_manifest
from transfer.registry import RegistryStore
from transfer.reports import Deletion, PruneReport, TagDiff
from transfer.store import ImagePlan

TagState = dict[str, dict[str, str]]  # repository -> tag -> digest


def registry_tags(dst: RegistryStore, repos: list[str], jobs: int = 4) -> TagState:
    """Every tag of each repository (none for a repository the registry does not have) and the
    digest it points at now."""
    listed = parallel_map(lambda repo: _tags_or_none(dst, repo), repos, jobs)
    pairs = [(repo, tag) for repo, tags in zip(repos, listed) for tag in tags]
    digests = parallel_map(lambda pair: _digest_or_none(dst, *pair), pairs, jobs)
    state: TagState = {repo: {} for repo in repos}
    for (repo, tag), digest in zip(pairs, digests):
        if digest:
            state[repo][tag] = digest
    return state


def _tags_or_none(dst: RegistryStore, repo: str) -> list[str]:
    try:
        return dst.tags(repo)
    except NotFoundError:
        return []


def _digest_or_none(dst: RegistryStore, repo: str, ref: str) -> str | None:
    try:
        return dst.client.head_manifest(repo, ref).digest
    except NotFoundError:
        return None


def wanted_tags(plans: list[ImagePlan]) -> TagState:
    """repository -> tag -> root digest, as the plans will leave them."""
    state: TagState = {}
    for plan in plans:
        repo = state.setdefault(plan.dst_repo, {})
        for tag in plan.tags:
            repo[tag] = plan.root.digest
    return state


def diff_tags(plans: list[ImagePlan], state: TagState) -> list[TagDiff]:
    """Per repository and tag: what the registry lacks (missing), has extra, has at another
    digest (changed), or has right (same)."""
    out = []
    for repo, want in sorted(wanted_tags(plans).items()):
        have = state.get(repo, {})
        for tag in sorted(set(want) | set(have)):
            ours, theirs = want.get(tag), have.get(tag)
            status = "missing" if theirs is None else "extra" if ours is None else \
                "same" if ours == theirs else "changed"
            out.append(TagDiff(repository=repo, tag=tag, status=status, bundle_digest=ours, registry_digest=theirs))
    return out


@dataclass
class _RepoPrune:
    """The deletions planned in one repository."""

    repo: str
    keep: set[str]  # manifests the plans carry here: never deleted outright
    want: dict[str, str]  # tag -> digest the plans leave here
    tags_at: dict[str, list[str]] = field(default_factory=dict)  # digest -> tags pointing at it now
    deletions: list[Deletion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def plan_prune(dst: RegistryStore, plans: list[ImagePlan], state: TagState,
               tag_ok: Callable[[str], bool] = lambda tag: True) -> PruneReport:
    """The deletions that leave each repository of the plans with exactly their tags and
    manifests (``state``: the registry's tags before the copy). ``tag_ok``: the tags the plans
    speak for (a copy's --tags filter); the others are left alone."""
    want = wanted_tags(plans)
    report = PruneReport(dry_run=True)
    for repo in sorted(want):
        keep = {m.digest for p in plans if p.dst_repo == repo for m in p.manifests} | {
            p.root.digest for p in plans if p.dst_repo == repo}
        rp = _RepoPrune(repo, keep, want[repo])
        for tag, digest in state.get(repo, {}).items():
            rp.tags_at.setdefault(digest, []).append(tag)
        _plan_repo(dst, rp, state.get(repo, {}), {p.root.digest: p for p in plans if p.dst_repo == repo},
                   tag_ok)
        report.deletions += rp.deletions
        report.notes += rp.notes
    return report


def _plan_repo(dst: RegistryStore, rp: _RepoPrune, have: dict[str, str], roots: dict[str, ImagePlan],
               tag_ok: Callable[[str], bool]) -> None:
    want = rp.want
    # Tags outside the selection (copy --tags) are not the run's to delete: what they point at stays.
    for digest in {d for t, d in have.items() if t not in want and not tag_ok(t)}:
        rp.keep.add(digest)
        rp.keep.update(_children(dst, rp.repo, digest))
    candidates: dict[str, str] = {}  # digest -> why
    for tag, digest in sorted(have.items()):
        if tag not in want and tag_ok(tag):
            candidates.setdefault(digest, "extra tag")
        elif tag in want and want[tag] != digest:
            if _holds_more_platforms(dst, rp.repo, digest, roots[want[tag]]):
                rp.notes.append(f"kept {rp.repo}@{digest} (was {rp.repo}:{tag}): the new root carries only some of "
                                "its platforms (a --platform export), so the others are not the bundle's to delete")
                rp.keep.add(digest)
                rp.keep.update(_children(dst, rp.repo, digest))
                continue
            candidates.setdefault(digest, f"replaced under {tag}")
    for digest, why in candidates.items():
        if digest in rp.keep:
            _untag(rp, digest, want, tag_ok)
        else:
            _delete(dst, rp, digest, why)


def _untag(rp: _RepoPrune, digest: str, want: dict[str, str], tag_ok: Callable[[str], bool]) -> None:
    """An extra tag on a manifest that is kept: delete it, put it back with the kept tags (those
    the bundle wants, and those outside the selection)."""
    tags = rp.tags_at.get(digest, [])
    dropped = [t for t in tags if t not in want and tag_ok(t)]
    restore = sorted({t for t, d in want.items() if d == digest} | {t for t in tags if t not in want and not tag_ok(t)})
    if dropped:
        rp.deletions.append(Deletion(repository=rp.repo, digest=digest, tags=sorted(dropped), reason="extra tag",
                                     restored_tags=restore, restored=True))


def _delete(dst: RegistryStore, rp: _RepoPrune, digest: str, why: str) -> None:
    """Delete ``digest`` and the child manifests under it that nothing kept references."""
    for target, reason in [(digest, why)] + [(c, f"child of {digest}") for c in _children(dst, rp.repo, digest)]:
        if target in rp.keep or target in {d.digest for d in rp.deletions}:
            continue
        tags = sorted(t for t in rp.tags_at.get(target, []) if t not in rp.want)
        rp.deletions.append(Deletion(repository=rp.repo, digest=target, tags=tags, reason=reason))


def _children(dst: RegistryStore, repo: str, digest: str, depth: int = 0) -> list[str]:
    """The child manifests under ``digest`` at the registry, parents first (none if unreadable)."""
    view = _view(dst, repo, digest)
    if view is None or depth > 3:
        return []
    out = []
    for child in view.children():
        if child.is_manifest:
            out += [child.digest] + _children(dst, repo, child.digest, depth + 1)
    return out


def _view(dst: RegistryStore, repo: str, digest: str) -> ManifestView | None:
    try:
        m = dst.client.get_manifest(repo, digest)
        return parse_manifest(m.data, m.media_type, f"{dst.client.host}/{repo}@{digest}")
    except (RegistryError, TransferError):
        return None


def _holds_more_platforms(dst: RegistryStore, repo: str, old: str, plan: ImagePlan) -> bool:
    """True if the registry's index ``old`` holds every child of the plan's (index) root and more."""
    new = plan.raw.get(plan.root.digest)
    new_view = parse_manifest(new, plan.root.media_type) if new is not None else _view(dst, repo, plan.root.digest)
    old_view = _view(dst, repo, old)
    if new_view is None or old_view is None or not (new_view.is_index and old_view.is_index):
        return False
    ours, theirs = {m.digest for m in new_view.manifests}, {m.digest for m in old_view.manifests}
    return ours < theirs


def run_prune(dst: RegistryStore, report: PruneReport) -> PruneReport:
    """Carry out the deletions planned (parents before children); refuses before the first one
    where the registry does not allow deleting."""
    for repo in sorted({d.repository for d in report.deletions}):
        dst.check_delete(repo)
    for d in report.deletions:
        if d.restored:
            _delete_and_restore(dst, d)
        else:
            dst.delete(d.repository, d.digest)
    return report.model_copy(update={"dry_run": False})


def _delete_and_restore(dst: RegistryStore, d: Deletion) -> None:
    """Drop extra tags from a kept manifest: delete it by digest, then put it back at once, by
    digest and under the tags kept on it."""
    m = dst.client.get_manifest(d.repository, d.digest)
    if len(m.data) > MAX_MANIFEST_SIZE:
        raise TransferError(f"{d.repository}@{d.digest}: manifest too large to restore; not deleted")
    dst.delete(d.repository, d.digest)
    try:
        dst.client.put_manifest(d.repository, d.digest, m.data, m.media_type)
        for tag in d.restored_tags:
            dst.client.put_manifest(d.repository, tag, m.data, m.media_type)
    except TransferError as exc:
        raise TransferError(f"{d.repository}@{d.digest} was deleted to drop tag(s) {', '.join(d.tags)}, but putting "
                            f"it back failed ({exc}); run the same command again to restore it") from None
