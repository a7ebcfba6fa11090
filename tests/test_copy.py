"""The copy algorithm between two real registries (the stores export and import are built on)."""

from transfer.copy import Copier, plan_image
from transfer.export import Selection, plan_exports, select_repositories, CatalogFilter
from transfer.models import Platform
from transfer.registry import RegistryClient, RegistryStore


def store_for(registry) -> RegistryStore:
    return RegistryStore(RegistryClient(registry.host))


def test_copy_every_sample_keeps_digests(registry, fresh_registry, skopeo):
    dst_reg = fresh_registry()
    src, dst = store_for(registry), store_for(dst_reg)
    repos = sorted({s.repo for s in registry.seeded.values()})
    plans = plan_exports(src, select_repositories(src, repos, CatalogFilter()))
    stats = Copier(src, dst, jobs=3).execute(plans)
    assert stats.failures == []
    for ref, seeded in registry.seeded.items():
        # skopeo, an independent client, reads the same manifest digest at the destination.
        assert skopeo.digest(dst_reg, seeded.image) == seeded.manifest.digest, ref
    # Shared layers went once per repository: a second run copies nothing.
    again = Copier(src, dst, jobs=3).execute(plans)
    assert (again.blobs_copied, again.manifests_copied) == (0, 0)
    assert again.blobs_skipped == stats.blobs_copied + stats.blobs_skipped


def test_signature_tag_travels_with_its_subject(registry, fresh_registry, skopeo):
    dst_reg = fresh_registry()
    src, dst = store_for(registry), store_for(dst_reg)
    app = registry.seeded["app"]
    plans = plan_exports(src, [Selection(app.repo, app.tag)])
    Copier(src, dst).execute(plans)
    sig_tag = "sha256-" + app.manifest.digest.split(":")[1] + ".sig"
    assert sig_tag in skopeo.list_tags(dst_reg, app.repo)
    without = plan_exports(src, [Selection(app.repo, app.tag)], referrers=False)
    assert len(without) == 1 and len(plans) == 2


def test_platform_filter_makes_a_new_index(registry, fresh_registry, skopeo):
    dst_reg = fresh_registry()
    src, dst = store_for(registry), store_for(dst_reg)
    multi = registry.seeded["multi"]
    root = src.resolve(multi.repo, multi.tag)
    plan = plan_image(src, multi.repo, root, tags=["amd"], platforms=[Platform.parse("linux/amd64")])
    assert plan.original_root == multi.manifest.digest and plan.root.digest != multi.manifest.digest
    Copier(src, dst).execute([plan])
    raw = skopeo.inspect_raw(dst_reg, f"{multi.repo}:amd")
    assert [m["platform"]["architecture"] for m in __import__("json").loads(raw)["manifests"]] == ["amd64"]
    assert skopeo.digest(dst_reg, f"{multi.repo}:amd") == plan.root.digest
    # Asking for every platform it has keeps the original bytes and digest.
    same = plan_image(src, multi.repo, root, platforms=[Platform.parse("linux/amd64"), Platform.parse("linux/arm64")])
    assert same.original_root is None and same.root.digest == multi.manifest.digest


def test_copy_command_one_image_and_catalog(registry, fresh_registry, skopeo, capsys):
    from tests.cli_helpers import run_cli

    dst_reg = fresh_registry()
    multi = registry.seeded["multi"]
    res = run_cli(capsys, "copy", f"{registry.host}/{multi.image}", f"{dst_reg.host}/copied/multi:v2")
    assert res.code == 0, res.err
    assert skopeo.digest(dst_reg, "copied/multi:v2") == multi.manifest.digest
    res = run_cli(capsys, "copy", "--catalog", registry.host, f"{dst_reg.host}/mirror", "--json")
    assert res.code == 0, res.err
    for s in registry.seeded.values():
        assert skopeo.digest(dst_reg, f"mirror/{s.image}") == s.manifest.digest
    # The second copy of the same content is a no-op for blobs.
    again = run_cli(capsys, "copy", "--catalog", registry.host, f"{dst_reg.host}/mirror", "--json").json()
    assert again["blobs_copied"] == 0
