"""Restore and mirror against real registries: import --prune, copy --prune, diff, rm, and blobs
the destination holds in other repositories mounted (or left out of a delta) instead of carried."""

from __future__ import annotations

import pytest

from tests.bed.skopeo import SkopeoError
from tests.cli_helpers import run_cli
from transfer.bundle import BundleReader
from transfer.registry import RegistryClient


@pytest.fixture(scope="module")
def archive(registry, tmp_path_factory):
    """Registry A (the seeded sample registry) archived whole."""
    from transfer.cli import main

    path = tmp_path_factory.mktemp("archive") / "a.bundle"
    assert main(["export", "--catalog", registry.host, "-o", str(path), "-q"]) == 0
    return path


def covered(registry) -> list[str]:
    return sorted({s.repo for s in registry.seeded.values()})


def tag_state(skopeo, reg, repos) -> dict[str, dict[str, str]]:
    """repository -> tag -> digest, read with skopeo (an independent client); a repository the
    registry does not have is left out."""
    state = {}
    for repo in repos:
        try:
            tags = skopeo.list_tags(reg, repo)
        except SkopeoError:
            continue
        state[repo] = {t: skopeo.digest(reg, f"{repo}:{t}") for t in tags}
    return state


def drifted(fresh_registry, skopeo, sample_layout, **opts):
    """Registry B: some of A's images, plus an extra tag on a manifest A does not hold (an index,
    whose children must go too), a tag changed to another image, an extra tag on a manifest A
    keeps under another tag, and a repository A does not have."""
    layout, refs = sample_layout
    b = fresh_registry(**opts)
    skopeo.seed(b, layout, refs["small"], "sample/small", "small")
    skopeo.seed(b, layout, refs["docker"], "sample/app", "app")  # changed: A has the OCI app here
    skopeo.seed(b, layout, refs["multi"], "sample/small", "old")  # extra, not in A's sample/small
    skopeo.seed(b, layout, refs["multi"], "sample/multi", "multi")
    skopeo.seed(b, layout, refs["multi"], "sample/multi", "alias")  # extra tag on a kept manifest
    skopeo.seed(b, layout, refs["multi"].children[0], "sample/multi", "amd")  # ... on a kept index's child
    skopeo.seed(b, layout, refs["small"], "untouched/repo", "keep")
    return b


def manifest_there(reg, repo: str, digest: str) -> bool:
    with RegistryClient(reg.host) as client:
        try:
            client.head_manifest(repo, digest)
        except Exception:
            return False
        return True


def test_restore_with_prune_makes_covered_repositories_equal(registry, archive, fresh_registry, skopeo,
                                                             sample_layout, capsys):
    _, refs = sample_layout
    b = drifted(fresh_registry, skopeo, sample_layout)
    before = run_cli(capsys, "diff", archive, b.host, "--json").json()
    assert before["extra"] == 3 and before["changed"] == 1 and before["missing"] > 0
    assert {(t["repository"], t["tag"], t["status"]) for t in before["tags"]} >= {
        ("sample/app", "app", "changed"), ("sample/small", "old", "extra"), ("sample/multi", "alias", "extra")}

    res = run_cli(capsys, "import", archive, b.host, "--prune", "--json")
    assert res.code == 0, res.err
    prune = res.json()["prune"]
    gone = {(d["repository"], d["digest"]) for d in prune["deletions"] if not d["restored"]}
    amd, arm = (m.digest for m in refs["multi"].children)
    assert gone == {("sample/app", refs["docker"].digest), ("sample/small", refs["multi"].digest),
                    ("sample/small", amd), ("sample/small", arm)}
    # Tag for tag and digest for digest equal to A; the repository A lacks is untouched.
    assert tag_state(skopeo, b, covered(registry)) == tag_state(skopeo, registry, covered(registry))
    assert tag_state(skopeo, b, ["untouched/repo"]) == {"untouched/repo": {"keep": refs["small"].digest}}
    assert not manifest_there(b, "sample/app", refs["docker"].digest)
    assert not manifest_there(b, "sample/small", amd)
    assert manifest_there(b, "sample/multi", amd)  # a child of a kept index stays
    kept = {(d["digest"], tuple(d["tags"])) for d in prune["deletions"] if d["restored"]}
    assert kept == {(refs["multi"].digest, ("alias",)), (amd, ("amd",))}
    skopeo.copy_from_registry(b, "sample/multi:multi", b.workdir / "pulled", "multi")  # whole again
    assert run_cli(capsys, "diff", archive, b.host, "--exit-code").code == 0
    # Again: nothing to push, nothing to delete.
    again = run_cli(capsys, "import", archive, b.host, "--prune", "--json").json()
    assert again["prune"]["deletions"] == [] and again["tags_written"] == again["manifests_copied"] == 0


def test_dry_run_lists_the_deletions_and_changes_nothing(registry, archive, fresh_registry, skopeo,
                                                         sample_layout, capsys):
    b = drifted(fresh_registry, skopeo, sample_layout)
    repos = covered(registry) + ["untouched/repo"]
    before = tag_state(skopeo, b, repos)
    res = run_cli(capsys, "import", archive, b.host, "--prune", "--dry-run")
    assert res.code == 0, res.err
    assert "would delete sample/small@" in res.out and "(tags old)" in res.out
    assert "would delete sample/multi@" in res.out and "put back" in res.out
    assert tag_state(skopeo, b, repos) == before


def test_registry_without_delete_refuses_before_writing(registry, archive, fresh_registry, skopeo, sample_layout,
                                                        capsys):
    b = drifted(fresh_registry, skopeo, sample_layout, delete=False)
    repos = covered(registry) + ["untouched/repo"]
    before = tag_state(skopeo, b, repos)
    res = run_cli(capsys, "import", archive, b.host, "--prune")
    assert res.code == 1
    assert "does not allow deleting" in res.err and "nothing was deleted" in res.err
    assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1
    assert tag_state(skopeo, b, repos) == before  # not even the import ran
    # An import without --prune still works there.
    assert run_cli(capsys, "import", archive, b.host, "-q").code == 0
    rm = run_cli(capsys, "rm", f"{b.host}/untouched/repo:keep", "--yes")
    assert rm.code == 1 and "does not allow deleting" in rm.err


def test_prune_refuses_an_unfinished_bundle(registry, archive, tmp_path, fresh_registry, skopeo, sample_layout,
                                            capsys):
    b = fresh_registry()
    res = run_cli(capsys, "import", archive, b.host, "--prune", "--on-existing", "skip")
    assert res.code == 2 and "--on-existing skip" in res.err
    # A bundle whose export did not finish may lack images: pruning would delete them.
    layout, refs = sample_layout
    skopeo.seed(b, layout, refs["small"], "sample/small", "other")
    cut = tmp_path / "cut.bundle"
    assert run_cli(capsys, "export", f"{registry.host}/sample/nope:1", f"{registry.host}/sample/small:small",
                   "--keep-going", "-o", cut).code == 1
    res = run_cli(capsys, "import", cut, b.host, "--prune", "--allow-incomplete")
    assert res.code == 2 and "--prune needs a complete bundle" in res.err
    assert skopeo.list_tags(b, "sample/small") == ["other"]


def test_platform_filtered_restore_keeps_the_platforms_it_did_not_carry(registry, fresh_registry, skopeo,
                                                                       sample_layout, tmp_path, capsys):
    layout, refs = sample_layout
    multi = registry.seeded["multi"]
    b = fresh_registry()
    skopeo.seed(b, layout, refs["multi"], multi.repo, multi.tag)
    bundle = tmp_path / "amd.bundle"
    assert run_cli(capsys, "export", f"{registry.host}/{multi.image}", "--platform", "linux/amd64",
                   "-o", bundle, "-q").code == 0
    res = run_cli(capsys, "import", bundle, b.host, "--prune", "--json")
    assert res.code == 0, res.err
    prune = res.json()["prune"]
    assert prune["deletions"] == [] and "only some of its platforms" in prune["notes"][0]
    assert manifest_there(b, multi.repo, refs["multi"].digest)


def test_copy_prune_mirrors_a_registry(registry, fresh_registry, skopeo, sample_layout, capsys):
    b = drifted(fresh_registry, skopeo, sample_layout)
    res = run_cli(capsys, "copy", "--catalog", registry.host, b.host, "--prune", "--json")
    assert res.code == 0, res.err
    assert tag_state(skopeo, b, covered(registry)) == tag_state(skopeo, registry, covered(registry))
    assert skopeo.list_tags(b, "untouched/repo") == ["keep"]
    one = run_cli(capsys, "copy", f"{registry.host}/sample/small:small", f"{b.host}/x:1", "--prune")
    assert one.code == 2 and "--catalog" in one.err


def test_rm_deletes_by_digest_and_asks_first(fresh_registry, skopeo, sample_layout, capsys):
    layout, refs = sample_layout
    b = fresh_registry()
    skopeo.seed(b, layout, refs["small"], "r", "one")
    skopeo.seed(b, layout, refs["small"], "r", "two")
    skopeo.seed(b, layout, refs["app"], "r", "three")
    res = run_cli(capsys, "rm", f"{b.host}/r:one")  # no terminal, no --yes
    assert res.code == 2 and "--yes" in res.err
    dry = run_cli(capsys, "rm", f"{b.host}/r:one", "--yes", "--dry-run", "--json").json()
    assert dry["deletion"]["tags"] == ["one", "two"] and not dry["deleted"]
    assert skopeo.list_tags(b, "r") == ["one", "three", "two"]
    res = run_cli(capsys, "rm", f"{b.host}/r:one", "--yes")
    assert res.code == 0, res.err
    assert "(tags one, two)" in res.out
    assert skopeo.list_tags(b, "r") == ["three"]
    res = run_cli(capsys, "rm", f"{b.host}/r@{refs['small'].digest}", "--yes")
    assert res.code == 1 and "no such manifest" in res.err


def upload_bytes(proxy) -> int:
    """Bytes sent to blob upload sessions (PATCH and PUT to /blobs/uploads/...)."""
    return sum(proxy.stats(m, r"/blobs/uploads/.").request_bytes for m in ("PATCH", "PUT"))


def test_import_under_a_new_prefix_mounts_every_layer(archive, fresh_registry, fault_proxy, capsys):
    b = fresh_registry()
    assert run_cli(capsys, "import", archive, b.host, "-q").code == 0
    proxy = fault_proxy(b)
    res = run_cli(capsys, "import", archive, f"{proxy.host}/restored", "--json")
    assert res.code == 0, res.err
    report = res.json()
    assert report["blobs_copied"] > 0 and report["upload"]["mounted"] == report["blobs_copied"]
    assert upload_bytes(proxy) == 0 and report["upload"]["bytes_sent"] == 0


def test_delta_against_blobs_held_in_other_repositories(registry, archive, fresh_registry, fault_proxy, skopeo,
                                                        tmp_path, capsys):
    b = fresh_registry()
    assert run_cli(capsys, "import", archive, f"{b.host}/elsewhere", "-q").code == 0
    inventory = tmp_path / "b.json"
    assert run_cli(capsys, "inventory", b.host, "-o", inventory).code == 0
    delta = tmp_path / "delta.bundle"
    res = run_cli(capsys, "export", "--catalog", registry.host, "--have", inventory, "-o", delta, "--json")
    assert res.code == 0, res.err
    with BundleReader(delta) as reader:
        stored = {d for d in reader.digests() if not reader.descriptor(d).is_manifest}
        assert stored == set() and len(reader.expected) == res.json()["expected_at_destination"] > 0
        assert all(d.model_extra["mountFrom"][0].startswith("elsewhere/") for d in reader.expected)
    proxy = fault_proxy(b)
    res = run_cli(capsys, "import", delta, proxy.host, "--json")
    assert res.code == 0, res.err
    assert upload_bytes(proxy) == 0
    for s in registry.seeded.values():
        assert skopeo.digest(b, s.image) == s.manifest.digest


def test_no_op_import_sends_no_put(archive, fresh_registry, fault_proxy, capsys):
    b = fresh_registry()
    assert run_cli(capsys, "import", archive, b.host, "-q").code == 0
    proxy = fault_proxy(b)
    res = run_cli(capsys, "import", archive, proxy.host, "--prune", "--json")
    assert res.code == 0, res.err
    assert proxy.stats("PUT").requests == proxy.stats("PATCH").requests == 0
    assert proxy.stats("POST").requests == 0 and proxy.stats("DELETE").requests == 0


def test_copy_prune_leaves_alone_what_tags_outside_the_selection_point_at(fresh_registry, skopeo, sample_layout,
                                                                          capsys):
    """`copy --catalog --prune --tags RE` prunes only selected tags: a manifest an unselected tag
    points at stays, even when a selected tag moves away from it."""
    layout, refs = sample_layout
    a, b = fresh_registry(), fresh_registry()
    skopeo.seed(a, layout, refs["app"], "r", "latest")
    skopeo.seed(b, layout, refs["small"], "r", "latest")  # latest moves from small to app
    skopeo.seed(b, layout, refs["small"], "r", "1.0")  # not selected: must survive
    skopeo.seed(b, layout, refs["docker"], "r", "old")  # selected by neither: must survive
    res = run_cli(capsys, "copy", "--catalog", a.host, b.host, "--prune", "--tags", "latest", "--json")
    assert res.code == 0, res.err
    assert skopeo.list_tags(b, "r") == ["1.0", "latest", "old"]
    assert skopeo.digest(b, "r:1.0") == refs["small"].digest and skopeo.digest(b, "r:latest") == refs["app"].digest
