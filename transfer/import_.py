"""Import: a bundle's images as plans for the copy engine into a target store, with the checks that
must pass before anything is pushed (expected blobs present, tag conflicts decided) and the check
after (every written tag points at the bundle's digest).

A split set whose parts arrive one by one is imported with the plan every part records
(docs/bundle-format.md, "Plan"): the engine holds back images whose content has not arrived, and
``push_spanning`` continues the upload of a blob that spans parts with the bytes present.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from transfer.bundle import BundleReader
from transfer.digest import Readable
from transfer.engine import parallel_map
from transfer.errors import (BundleError, InvalidReferenceError, NotFoundError, PartOrderError, TransferError,
                             UsageError)
from transfer.models import INDEX_TYPES, Descriptor
from transfer.reference import validate_repository
from transfer.registry import RegistryStore
from transfer.selection import MOUNT_FROM
from transfer.store import ImagePlan, Source, Target, plan_image

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
    """One plan per (repository, root digest), carrying every tag the bundle records for it.

    Every plan is held until the import ends, so the manifests' bytes are not kept in them (the
    engine reads each one back from the bundle when it pushes it, a local read), except an index
    root's: ``--prune`` compares its platforms before anything is pushed."""
    plans: dict[tuple[str, str], ImagePlan] = {}
    for e in entries:
        key = (e.repository, e.digest)
        if key not in plans:
            root = bundle.resolve(e.repository, e.digest)
            label = f"{e.repository}@{e.digest}"
            plan = plan_image(bundle, e.repository, root, dst_repo=mapping.target(e.repository), label=label)
            plan.raw = {root.digest: plan.raw[root.digest]} if root.media_type in INDEX_TYPES else {}
            plans[key] = plan
        if e.tag:
            plans[key].tags.append(e.tag)
            plans[key].label = f"{e.repository}:{plans[key].tags[0]}"
    return list(plans.values())


def recorded_plans(reader: BundleReader, mapping: RepositoryMapping) -> list[ImagePlan]:
    """The plans a split set records in its parts, mapped to their target repositories."""
    if reader.plan is None:
        raise BundleError(f"{reader.path}: this split bundle records no export plan (written by an older "
                          "transfer), so its parts cannot be imported one by one: bring all parts together")
    return [ImagePlan(i.src_repo, mapping.target(i.dst_repo), i.root, list(i.tags), list(i.manifests), list(i.blobs))
            for i in reader.plan.images]


def mount_homes(plans: list[ImagePlan], expected: list[Descriptor],
                have: dict[str, set[str]] | None = None) -> dict[str, list[str]]:
    """digest -> repositories of the target that may hold the blob, to cross-mount it from: those
    the bundle's expected entry names (``mountFrom``), an inventory's (``have``), and the
    repositories the bundle's images came from (a target restored under another prefix)."""
    homes: dict[str, list[str]] = {}

    def add(digest: str, repos: list[str]) -> None:
        known = homes.setdefault(digest, [])
        known += [r for r in repos if r not in known]

    for desc in expected:
        add(desc.digest, expected_homes(desc))
    for digest, repos in (have or {}).items():
        add(digest, sorted(repos))
    users: dict[str, set[str]] = {}  # the run asks these about the blob anyway (and knows the answer)
    for plan in plans:
        for blob in plan.blobs:
            add(blob.digest, [plan.src_repo])
            users.setdefault(blob.digest, set()).add(plan.dst_repo)
    return {d: [r for r in repos if r not in users.get(d, ())] for d, repos in homes.items()}


def expected_homes(desc: Descriptor) -> list[str]:
    """The repositories an expected entry names (``mountFrom``; untrusted: bad names are left out)."""
    names = (desc.model_extra or {}).get(MOUNT_FROM)
    out = []
    for name in names if isinstance(names, list) else []:
        try:
            out.append(validate_repository(name))
        except (InvalidReferenceError, TypeError):
            continue
    return out


def mount_expected(dst: RegistryStore, mounts: list[tuple[str, Descriptor, str]]) -> None:
    """Delta: every blob the bundle left out that a repository lacks is cross-mounted there from
    one that holds it (``mounts``, from ``check_expected``)."""
    for repo, blob, home in mounts:
        _mount(dst, blob, repo, home, "the bundle leaves it out (delta): make the registry honour "
               "cross-repository mounts, or export without --have/--since")


def missing_expected(dst: Target, plans: list[ImagePlan], expected: set[str]) -> list[tuple[str, Descriptor]]:
    """Blobs the bundle left out (delta) that the target does not have: nothing may be pushed then."""
    missing = []
    for plan in plans:
        for blob in plan.blobs:
            if blob.digest in expected and not dst.exists(plan.dst_repo, blob):
                missing.append((plan.dst_repo, blob))
    return missing


def check_expected(dst: RegistryStore, plans: list[ImagePlan], expected: set[str]) -> list[tuple[str, Descriptor, str]]:
    """Refuse (before anything is pushed) when the target lacks blobs a delta bundle left out in
    every repository it knows of (hinted with ``dst.add_homes``); returns (repository, blob,
    repository holding it) for each blob to cross-mount first."""
    missing = missing_expected(dst, plans, expected)
    homes = [dst.find_home(repo, blob.digest) for repo, blob in missing]
    lost = [(repo, blob) for (repo, blob), home in zip(missing, homes) if home is None]
    if lost:
        listed = "; ".join(f"{repo}@{d.digest}" for repo, d in lost[:5])
        raise TransferError(f"the destination lacks {len(lost)} blob(s) this delta bundle expects there "
                            f"({listed}{' ...' if len(lost) > 5 else ''}), in every repository known to hold "
                            "them; nothing was pushed")
    return [(repo, blob, home) for (repo, blob), home in zip(missing, homes) if home is not None]


def current_digest(dst: Source, repo: str, tag: str) -> str | None:
    """The digest ``repo:tag`` points at in ``dst``, None if there is no such tag."""
    try:
        return dst.resolve(repo, tag).digest
    except NotFoundError:
        return None


def current_tags(dst: Source, plans: list[ImagePlan], jobs: int = 1,
                 empty: Collection[str] = ()) -> list[tuple[ImagePlan, str, str | None]]:
    """(plan, tag, digest the tag points at in ``dst`` or None) for every tag of the plans; tags
    of the repositories in ``empty`` (known to hold nothing) are not asked."""
    tags = [(plan, tag) for plan in plans for tag in plan.tags if plan.dst_repo not in empty]
    digests = iter(parallel_map(lambda item: current_digest(dst, item[0].dst_repo, item[1]), tags, jobs))
    return [(plan, tag, None if plan.dst_repo in empty else next(digests)) for plan in plans for tag in plan.tags]


@dataclass
class TagDecisions:
    """What the target's tags are before an import: those already right (not written again), and
    one line per conflict decided by ``--on-existing``."""

    tagged: set[tuple[str, str]] = field(default_factory=set)  # (repository, tag) at the right digest
    notes: list[str] = field(default_factory=list)


def decide_tags(dst: Source, plans: list[ImagePlan], policy: str, jobs: int = 1) -> TagDecisions:
    """Ask where every tag points now; decide conflicts by ``policy`` (``skip`` drops the tag from
    its plan, ``fail`` raises before anything is pushed).

    A registry is first asked (its catalog, RegistryStore.learn_empty) which target repositories
    do not exist: nothing in them is asked about again (their tags, blobs and manifests). The
    tags are trusted to that answer only under ``overwrite``, where a tag the catalog missed is
    written again (the same PUT); ``skip`` and ``fail`` ask about every tag."""
    if policy not in ON_EXISTING:
        raise UsageError(f"invalid --on-existing {policy!r}: choose one of {', '.join(ON_EXISTING)}")
    empty = dst.learn_empty({p.dst_repo for p in plans}) if isinstance(dst, RegistryStore) and plans else frozenset()
    decisions = TagDecisions()
    for plan, tag, current in current_tags(dst, plans, jobs, empty if policy == "overwrite" else ()):
        where = f"{plan.dst_repo}:{tag}"
        if current is None:
            continue
        if current == plan.root.digest:
            decisions.tagged.add((plan.dst_repo, tag))
        elif policy == "fail":
            raise TransferError(f"tag {where} already points at {current}, not {plan.root.digest} "
                                "(use --on-existing overwrite or skip)")
        elif policy == "skip":
            plan.tags.remove(tag)
            decisions.notes.append(f"kept {where} at {current} (--on-existing skip)")
        else:
            decisions.notes.append(f"overwriting {where}: was {current}, now {plan.root.digest}")
    return decisions


def forget_finished(dst: RegistryStore, plans: list[ImagePlan], tagged: set[tuple[str, str]]) -> None:
    """Images whose tags all point at their root already are not checked blob by blob (their
    graph is there): drop any upload left in the journal for their blobs (a run killed after a
    final PUT landed), as finding the blob present would."""
    for plan in plans:
        if plan.tags and all((plan.dst_repo, tag) in tagged for tag in plan.tags):
            for blob in plan.blobs:
                dst.uploader.forget(dst.client, plan.dst_repo, blob.digest)


def verify_tags(dst: Source, plans: list[ImagePlan], jobs: int = 1,
                known: Collection[tuple[str, str]] = ()) -> list[str]:
    """After the import: every written tag must point at the bundle's digest. ``known``:
    (repository, tag) pairs this run already saw at the right digest (found so just before, or
    a PUT answered with it), which are not asked again."""
    unknown = [ImagePlan(p.src_repo, p.dst_repo, p.root, tags) for p in plans
               if (tags := [t for t in p.tags if (p.dst_repo, t) not in known])]
    return [f"{plan.dst_repo}:{tag} points at {got or 'nothing'}, expected {plan.root.digest}"
            for plan, tag, got in current_tags(dst, unknown, jobs) if got != plan.root.digest]


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


# -- split sets imported part by part -------------------------------------------------------------

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


def _blob_users(plans: list[ImagePlan]) -> dict[str, tuple[Descriptor, list[str]]]:
    """Every blob of the plans with the repositories that need it, in plan order."""
    users: dict[str, tuple[Descriptor, list[str]]] = {}
    for plan in plans:
        for blob in plan.blobs:
            repos = users.setdefault(blob.digest, (blob, []))[1]
            if plan.dst_repo not in repos:
                repos.append(plan.dst_repo)
    return users


def push_spanning(reader: BundleReader, dst: RegistryStore, plans: list[ImagePlan]) -> list[SpanningBlob]:
    """Continue the upload of every blob that begins or ends in the parts present (its session is
    in the upload journal) with their bytes; a blob this completes goes to the other repositories
    that need it by a cross-repository mount. Refuses, before pushing anything, a part whose
    predecessor was not imported (PartOrderError)."""
    users = _blob_users(plans)
    spanning = [d for d in users if not reader.has(d) and reader.covered(d)]
    done = []
    for digest in sorted(spanning, key=lambda d: -reader.covered(d)[0][0]):  # continuations first
        blob, repos = users[digest]
        done.append(_push_range(reader, dst, blob, repos))
    return done


def _push_range(reader: BundleReader, dst: RegistryStore, blob: Descriptor, repos: list[str]) -> SpanningBlob:
    start, end = reader.covered(blob.digest)[0]
    primary = repos[0]
    part = reader.part_at(blob.digest, start) or 1
    result = dst.push_range(primary, blob, lambda at: reader.open_range(blob.digest, at), start, end)
    if result.held < start and not result.restarted:
        raise PartOrderError(
            f"part {part} continues blob {blob.digest} at byte {start}, but {dst.client.host}/{primary} holds "
            f"{result.held} bytes of it: part {part - 1} must be imported first (nothing was pushed)",
            needed=part - 1)
    if result.held == blob.size:
        for repo in repos[1:]:
            _mount(dst, blob, repo, primary)
    return SpanningBlob(blob.digest, primary, blob.size, (start, end), result.held, part, result.restarted)


def _mount(dst: RegistryStore, desc: Descriptor, repo: str, source: str,
           why: str = "its bytes span parts: import the parts holding it together") -> None:
    """A blob whose bytes are not at hand (completed from parts, or left out of a delta bundle)
    goes to further repositories by a cross-repository mount."""
    def no_bytes() -> Readable:
        raise BundleError(f"{desc.digest}: {dst.client.host} did not mount it from {source} into {repo}, and {why}")

    dst.push(repo, desc, no_bytes, mount_from=source)
