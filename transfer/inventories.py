"""Inventories: what a registry (or an earlier bundle) already holds, by repository, so an export
can leave out the blobs the destination has (a delta bundle).

The inventory lists every repository holding each blob. A blob held in any repository counts as
present: the bundle leaves it out and records those repositories (``mountFrom`` of its expected
entry), and the import cross-mounts it from one of them into the repositories that lack it.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone

from transfer import __version__
from transfer.digest import validate_digest
from transfer.errors import InvalidReferenceError, NotFoundError, UsageError
from transfer.reference import RegistryPath, validate_repository
from transfer.selection import CatalogFilter
from transfer.store import Source, check_output_file, plan_image
from transfer.untrusted import load_json_file

FORMAT = "transfer-inventory/1"


def build_inventory(store: Source, target: RegistryPath, *, include: list[str] | None = None,
                    exclude: list[str] | None = None) -> dict:
    """Walk every tag of every (selected) repository: tags, manifest digests and blob digests."""
    repos = [target.path] if target.path else store.repositories()
    inventory: dict = {"format": FORMAT, "registry": target.registry, "tool_version": __version__,
                       "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "repositories": {}, "blobs": {}}
    wanted = CatalogFilter(include or [], exclude or [])
    for repo in repos:
        if wanted.repository_ok(repo):
            _add_repository(store, repo, inventory)
    inventory["blobs"] = {d: sorted(r) for d, r in sorted(inventory["blobs"].items())}
    return inventory


def _add_repository(store: Source, repo: str, inventory: dict) -> None:
    try:
        tags = store.tags(repo)
    except NotFoundError:
        return
    entry = inventory["repositories"].setdefault(repo, {"tags": {}, "manifests": []})
    manifests: set[str] = set()
    for tag in tags:
        root = store.resolve(repo, tag)
        entry["tags"][tag] = root.digest
        plan = plan_image(store, repo, root, label=f"{repo}:{tag}")
        manifests.update(m.digest for m in plan.manifests)
        for blob in plan.blobs:
            inventory["blobs"].setdefault(blob.digest, set()).add(repo)
    entry["manifests"] = sorted(manifests)


def write_inventory(inventory: dict, path: str) -> None:
    """Write atomically, so a cut run never leaves a half inventory that looks whole."""
    folder = os.path.dirname(os.path.abspath(check_output_file(path, "inventory")))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".inventory-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(inventory, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_inventory(path: str) -> dict[str, set[str]]:
    """digest -> repositories holding it, from an inventory file (untrusted: every digest and
    repository name is checked, so none reaches a URL unchecked)."""
    try:
        data = load_json_file(path, f"inventory {path}", UsageError)
    except OSError as exc:
        raise UsageError(f"cannot read inventory {path}: {exc.strerror or exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("blobs"), dict):
        raise UsageError(f"{path} is not a transfer inventory (expected format {FORMAT})")
    try:
        return {validate_digest(d): {validate_repository(r) for r in _names(repos)}
                for d, repos in data["blobs"].items()}
    except InvalidReferenceError as exc:
        raise UsageError(f"inventory {path}: {exc}") from None


def _names(repos: object) -> list:
    if not isinstance(repos, list):
        raise InvalidReferenceError(f"a blob's repositories are {type(repos).__name__}, not a list")
    return repos


def bundle_holdings(path: str) -> dict[str, set[str]]:
    """digest -> repositories, for the blobs an earlier bundle carried or expected (``--since``)."""
    from transfer.bundle import BundleReader

    held: dict[str, set[str]] = {}
    with BundleReader(path) as reader:
        for entry in reader.entries:
            plan = plan_image(reader, entry.repository, reader.resolve(entry.repository, entry.digest))
            for blob in plan.blobs:
                held.setdefault(blob.digest, set()).add(entry.repository)
    return held


def load_have(have: str | None, since: str | None) -> dict[str, set[str]]:
    held: dict[str, set[str]] = {}
    for source in ([read_inventory(have)] if have else []) + ([bundle_holdings(since)] if since else []):
        for digest, repos in source.items():
            held.setdefault(digest, set()).update(repos)
    return held
