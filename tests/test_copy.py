"""The copy algorithm between two real registries (the stores export and import are built on)."""

import threading

from transfer.engine import Copier
from transfer.store import ImagePlan, Traits, plan_image
from transfer.digest import digest_bytes
from transfer.selection import Selection, plan_exports, select_repositories, CatalogFilter
from transfer.models import OCI_INDEX, OCI_MANIFEST, Descriptor, Platform
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


def test_images_finished_side_by_side_push_a_shared_manifest_once():
    """Two indexes in one repository share a child manifest; their images are finished in
    parallel. The target here makes both presence checks meet (a barrier) unless one waits for
    the other: the child must be pushed once and counted once as copied, once as present."""
    def desc(raw: bytes, media_type: str) -> Descriptor:
        return Descriptor(mediaType=media_type, digest=digest_bytes(raw), size=len(raw))

    child_raw = b'{"shared": true}'
    child = desc(child_raw, OCI_MANIFEST)
    plans = []
    for i in range(2):
        root_raw = b'{"index": %d}' % i
        root = desc(root_raw, OCI_INDEX)
        plans.append(ImagePlan("src", "app", root, [f"t{i}"], [child, root], label=f"app:t{i}",
                               raw={child.digest: child_raw, root.digest: root_raw}))

    class Target:
        traits = Traits(concurrent_push=True)

        def __init__(self) -> None:
            self.have: set[str] = set()
            self.pushed: list[str] = []
            self.meet = threading.Barrier(2, timeout=1.0)

        def exists(self, repo: str, d: Descriptor) -> bool:
            present = d.digest in self.have
            if d.digest == child.digest:  # answer only once the other image asked too (1 s at most)
                try:
                    self.meet.wait()
                except threading.BrokenBarrierError:
                    pass
            return present

        def push(self, repo: str, d: Descriptor, opener, *, may_stall: bool = False) -> None:
            self.pushed.append(d.digest)
            self.have.add(d.digest)

        def tag(self, repo: str, d: Descriptor, tag: str) -> None:
            pass

    target = Target()
    stats = Copier(None, target, jobs=4).execute(plans)
    assert target.pushed.count(child.digest) == 1
    assert (stats.manifests_copied, stats.manifests_skipped, stats.images) == (3, 1, 2)


def test_a_blob_failing_in_one_repository_fails_only_that_repository_s_image():
    """With keep_going, a blob whose push failed into repository a does not fail the image of
    repository b, which already holds it (failures are per repository, like the copies)."""
    from transfer.errors import UploadError

    def desc(raw: bytes, media_type: str) -> Descriptor:
        return Descriptor(mediaType=media_type, digest=digest_bytes(raw), size=len(raw))

    layer = desc(b"layer bytes", "application/vnd.oci.image.layer.v1.tar")
    plans = []
    for repo in ("a", "b"):
        root_raw = b'{"image": "%s"}' % repo.encode()
        root = desc(root_raw, OCI_MANIFEST)
        plans.append(ImagePlan("src", repo, root, ["1"], [root], [layer], raw={root.digest: root_raw}))

    class Target:
        traits = Traits(concurrent_push=True)
        pushed: list[tuple[str, str]] = []

        def exists(self, repo: str, d: Descriptor) -> bool:
            return repo == "b" and d.digest == layer.digest

        def push(self, repo: str, d: Descriptor, opener, *, may_stall: bool = False) -> None:
            if d.digest == layer.digest:
                raise UploadError(f"{repo}: refused")
            self.pushed.append((repo, d.digest))

        def tag(self, repo: str, d: Descriptor, tag: str) -> None:
            self.pushed.append((repo, tag))

    class Source:
        traits = Traits()

    target = Target()
    stats = Copier(Source(), target, jobs=2, keep_going=True).execute(plans)
    assert [f[0] for f in stats.failures] == ["src:1"] and stats.images == 1
    assert ("b", "1") in target.pushed and ("a", "1") not in target.pushed
