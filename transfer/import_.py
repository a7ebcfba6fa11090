"""Import: a bundle's catalog as image plans for transfer.copy into a target store, with the checks
that must pass before anything is pushed (expected blobs present, tag conflicts decided) and the
check after (every written tag points at the bundle's digest)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transfer.copy import ImagePlan, parallel_map, plan_image
from transfer.errors import NotFoundError, TransferError, UsageError
from transfer.models import Descriptor
from transfer.reference import validate_repository
from transfer.store import Source, Target

ON_EXISTING = ("overwrite", "skip", "fail")


@dataclass
class RepositoryMapping:
    """Where a bundle repository lands: ``--map FROM=TO`` prefix renames, then a target prefix."""

    prefix: str = ""
    maps: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, prefix: str, maps: list[str]) -> "RepositoryMapping":
        pairs = []
        for m in maps:
            src, sep, dst = m.partition("=")
            if not sep or not src:
                raise UsageError(f"invalid --map {m!r}: expected FROM=TO, e.g. library=mirror/library")
            if dst:
                validate_repository(dst, m)
            pairs.append((src.strip("/"), dst.strip("/")))
        return cls(prefix.strip("/"), pairs)

    def target(self, repo: str) -> str:
        for src, dst in self.maps:
            if repo == src or repo.startswith(src + "/"):
                repo = (dst + repo[len(src):]).strip("/")
                break
        name = f"{self.prefix}/{repo}" if self.prefix else repo
        return validate_repository(name)


def plan_imports(bundle: Source, entries, mapping: RepositoryMapping) -> list[ImagePlan]:
    """One plan per (repository, root digest), carrying every tag the bundle records for it."""
    plans: dict[tuple[str, str], ImagePlan] = {}
    for e in entries:
        key = (e.repository, e.digest)
        if key not in plans:
            root = bundle.resolve(e.repository, e.digest)
            label = f"{e.repository}@{e.digest}"
            plans[key] = plan_image(bundle, e.repository, root, dst_repo=mapping.target(e.repository), label=label)
        if e.tag:
            plans[key].tags.append(e.tag)
            plans[key].label = f"{e.repository}:{plans[key].tags[0]}"
    return list(plans.values())


def missing_expected(dst: Target, plans: list[ImagePlan], expected: set[str]) -> list[tuple[str, Descriptor]]:
    """Blobs the bundle left out (delta) that the target does not have: nothing may be pushed then."""
    missing = []
    for plan in plans:
        for blob in plan.blobs:
            if blob.digest in expected and not dst.exists(plan.dst_repo, blob):
                missing.append((plan.dst_repo, blob))
    return missing


def check_expected(dst: Target, plans: list[ImagePlan], expected: set[str]) -> None:
    """Refuse (before anything is pushed) when the target lacks blobs a delta bundle left out."""
    missing = missing_expected(dst, plans, expected)
    if missing:
        listed = "; ".join(f"{repo}@{d.digest}" for repo, d in missing[:5])
        raise TransferError(f"the destination lacks {len(missing)} blob(s) this delta bundle expects "
                            f"there ({listed}{' ...' if len(missing) > 5 else ''}); nothing was pushed")


def current_digest(dst: Source, repo: str, tag: str) -> str | None:
    """The digest ``repo:tag`` points at in ``dst``, None if there is no such tag."""
    try:
        return dst.resolve(repo, tag).digest
    except NotFoundError:
        return None


def _current_tags(dst: Source, plans: list[ImagePlan], jobs: int) -> list[tuple[ImagePlan, str, str | None]]:
    """(plan, tag, digest the tag points at in ``dst`` or None) for every tag of the plans."""
    tags = [(plan, tag) for plan in plans for tag in plan.tags]
    digests = parallel_map(lambda item: current_digest(dst, item[0].dst_repo, item[1]), tags, jobs)
    return [(plan, tag, digest) for (plan, tag), digest in zip(tags, digests)]


def tag_conflicts(dst: Source, plans: list[ImagePlan], jobs: int = 1) -> list[tuple[ImagePlan, str, str]]:
    """(plan, tag, digest now at the target) for tags that already point elsewhere."""
    return [(plan, tag, current) for plan, tag, current in _current_tags(dst, plans, jobs)
            if current is not None and current != plan.root.digest]


def apply_on_existing(plans: list[ImagePlan], conflicts, policy: str) -> list[str]:
    """Decide tag conflicts by policy; return one line per decision for the user."""
    if policy not in ON_EXISTING:
        raise UsageError(f"invalid --on-existing {policy!r}: choose one of {', '.join(ON_EXISTING)}")
    lines = []
    for plan, tag, current in conflicts:
        where = f"{plan.dst_repo}:{tag}"
        if policy == "fail":
            raise TransferError(f"tag {where} already points at {current}, not {plan.root.digest} "
                                "(use --on-existing overwrite or skip)")
        if policy == "skip":
            plan.tags.remove(tag)
            lines.append(f"kept {where} at {current} (--on-existing skip)")
        else:
            lines.append(f"overwriting {where}: was {current}, now {plan.root.digest}")
    return lines


def verify_tags(dst: Source, plans: list[ImagePlan], jobs: int = 1) -> list[str]:
    """After the import: every written tag must point at the bundle's digest."""
    return [f"{plan.dst_repo}:{tag} points at {got or 'nothing'}, expected {plan.root.digest}"
            for plan, tag, got in _current_tags(dst, plans, jobs) if got != plan.root.digest]


def push_plan(dst: Target, plans: list[ImagePlan]) -> dict:
    """What an import would do (``--dry-run``): blobs to push and their bytes, blobs present, tags."""
    todo: list[Descriptor] = []
    present = 0
    seen: set[tuple[str, str]] = set()
    for plan in plans:
        for blob in plan.blobs:
            if (plan.dst_repo, blob.digest) in seen:
                continue
            seen.add((plan.dst_repo, blob.digest))
            if dst.exists(plan.dst_repo, blob):
                present += 1
            else:
                todo.append(blob)
    return {"blobs_to_push": len(todo), "bytes_to_push": sum(b.size for b in todo), "blobs_present": present,
            "tags": [f"{p.dst_repo}:{t} -> {p.root.digest}" for p in plans for t in p.tags], "dry_run": True}
