import io
import json
import os
import threading

import pytest

from tests.bed.images import Layout
from tests.test_layout_support import all_blobs, copy_image, sha, skopeo
from transfer.digest import digest_bytes
from transfer.errors import IntegrityError, InvalidDigestError, InvalidReferenceError, LayoutError, NotFoundError
from transfer.layout import IMAGE_NAME, REF_NAME, UNNAMED, OciLayout
from transfer.models import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Descriptor
from transfer.store import Catalog, Source, Target

NGINX = "docker.io/library/nginx"


@pytest.fixture
def gen(tmp_path):
    return Layout(tmp_path / "gen").save()


def write_index(root, entries):
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))


def index_entries(path):
    return json.loads((path / "index.json").read_bytes())["manifests"]


def test_is_a_store(tmp_path):
    layout = OciLayout(tmp_path / "l", create=True)
    assert isinstance(layout, Source) and isinstance(layout, Catalog) and isinstance(layout, Target)
    assert json.loads((tmp_path / "l/oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert layout.repositories() == []


def test_written_layout_is_read_by_skopeo(tmp_path, gen):
    root = gen.image("one", tag="v1")
    gen.save()
    dst = OciLayout(tmp_path / "out", create=True)
    copied = copy_image(OciLayout(gen.root), UNNAMED, "v1", dst, NGINX, "1.25")
    assert copied.digest == root.digest
    raw = skopeo("inspect", "--raw", f"oci:{tmp_path}/out:1.25").encode()
    assert raw == root.raw
    [entry] = index_entries(tmp_path / "out")
    assert entry["annotations"] == {REF_NAME: "1.25", IMAGE_NAME: f"{NGINX}:1.25"}
    skopeo("copy", f"oci:{tmp_path}/out:1.25", f"oci:{tmp_path}/other:1.25")
    assert sha(skopeo("inspect", "--raw", f"oci:{tmp_path}/other:1.25").encode()) == root.digest
    assert dst.repositories() == [NGINX] and dst.tags("nginx") == ["1.25"]


def test_multi_arch_index_round_trips_through_skopeo(tmp_path, gen):
    root = gen.index([gen.image("amd"), gen.image("arm", platform={"os": "linux", "architecture": "arm64"})], tag="m")
    gen.save()
    dst = OciLayout(tmp_path / "out", create=True)
    copy_image(OciLayout(gen.root), UNNAMED, "m", dst, "localhost:5000/team/app", "m")
    assert sha(skopeo("inspect", "--raw", f"oci:{tmp_path}/out:m").encode()) == root.digest
    skopeo("copy", "--all", f"oci:{tmp_path}/out:m", f"oci:{tmp_path}/other:m")
    assert all_blobs(tmp_path / "other") == all_blobs(tmp_path / "out")


def test_several_repositories_get_full_ref_names_that_skopeo_addresses(tmp_path, gen):
    a, b = gen.image("a", tag="a"), gen.image("b", tag="b")
    src, dst = OciLayout(gen.save().root), OciLayout(tmp_path / "out", create=True)
    copy_image(src, UNNAMED, "a", dst, "registry.example:5000/x/a", "1")
    assert index_entries(tmp_path / "out")[0]["annotations"][REF_NAME] == "1"
    copy_image(src, UNNAMED, "b", dst, "docker.io/y/b", "1")
    names = [e["annotations"][REF_NAME] for e in index_entries(tmp_path / "out")]
    assert names == ["registry.example:5000/x/a:1", "docker.io/y/b:1"]
    for name, root in (("registry.example:5000/x/a:1", a), ("docker.io/y/b:1", b)):
        assert sha(skopeo("inspect", "--raw", f"oci:{tmp_path}/out:{name}").encode()) == root.digest
    assert dst.repositories() == ["docker.io/y/b", "registry.example:5000/x/a"]
    assert dst.resolve("y/b", "1").digest == b.digest
    assert dst.resolve("registry.example:5000/x/a", "1").digest == a.digest
    assert dst.resolve_name("docker.io/y/b:1") == ("docker.io/y/b", dst.resolve("y/b", "1"))


def test_skopeo_written_layout_is_read_with_every_digest_kept(tmp_path, gen):
    gen.image("oci", tag="o")
    gen.save()
    sk = tmp_path / "sk"
    skopeo("copy", f"oci:{gen.root}:o", f"oci:{sk}:t1")
    skopeo("copy", f"oci:{gen.root}:o", f"oci:{sk}:t2")
    raw = skopeo("inspect", "--raw", f"oci:{sk}:t1").encode()
    layout = OciLayout(sk)
    assert layout.repositories() == [UNNAMED] and layout.tags(UNNAMED) == ["t1", "t2"]
    root = layout.resolve(UNNAMED, "t1")
    assert root.digest == sha(raw) and root.media_type == OCI_MANIFEST and root.annotations is None
    assert layout.resolve_name("t2") == (UNNAMED, root)
    out = OciLayout(tmp_path / "out", create=True)
    copy_image(layout, UNNAMED, "t1", out, "example.com/x", "t1")
    assert all_blobs(tmp_path / "out") == all_blobs(sk)


def test_docker_schema2_manifest_is_kept_byte_exact(tmp_path, gen):
    root = gen.image("dock", docker=True, tag="d")
    out = OciLayout(tmp_path / "out", create=True)
    desc = copy_image(OciLayout(gen.save().root), UNNAMED, "d", out, NGINX, "d")
    assert desc.media_type == DOCKER_MANIFEST
    assert out.resolve(NGINX, "d").digest == root.digest
    assert (tmp_path / "out" / "blobs/sha256" / root.digest[7:]).read_bytes() == root.raw


def test_retag_replaces_and_keeps_other_entries(tmp_path, gen):
    a, b = gen.image("a", tag="a"), gen.image("b", tag="b")
    src, out = OciLayout(gen.save().root), OciLayout(tmp_path / "out", create=True)
    copy_image(src, UNNAMED, "a", out, NGINX, "x")
    copy_image(src, UNNAMED, "a", out, NGINX, "keep")
    copy_image(src, UNNAMED, "b", out, NGINX, "x")
    assert out.tags(NGINX) == ["keep", "x"]
    assert out.resolve(NGINX, "x").digest == b.digest
    assert out.resolve(NGINX, "keep").digest == a.digest
    assert len(index_entries(tmp_path / "out")) == 2


def test_untagged_and_child_manifests_resolve_by_digest(tmp_path, gen):
    plain = gen.image("plain")
    idx = gen.index([gen.image("amd"), gen.image("arm")])
    write_index(gen.root, [plain.descriptor(), idx.descriptor(annotations={REF_NAME: "m"})])  # plain: no name
    layout = OciLayout(gen.root)
    assert layout.resolve(UNNAMED, plain.digest).digest == plain.digest
    assert layout.tags(UNNAMED) == ["m"]
    child = idx.children[1]
    found = layout.resolve("anything/at-all", child.digest)
    assert (found.media_type, found.size) == (OCI_MANIFEST, child.size)
    with pytest.raises(NotFoundError):
        layout.resolve(UNNAMED, plain.config.digest)
    with pytest.raises(NotFoundError):
        layout.resolve(UNNAMED, "nope")
    assert layout.resolve(UNNAMED, idx.digest).media_type == OCI_INDEX


def test_push_verifies_and_is_idempotent(tmp_path):
    layout = OciLayout(tmp_path / "l", create=True)
    data = b"some blob"
    desc = Descriptor(mediaType="application/octet-stream", digest=digest_bytes(data), size=len(data))
    with pytest.raises(IntegrityError):
        layout.push("", desc, lambda: io.BytesIO(b"some blub"))
    assert not layout.exists("", desc)
    assert os.listdir(tmp_path / "l/blobs/sha256") == []  # no temporary left behind
    layout.push("", desc, lambda: io.BytesIO(data))
    assert layout.exists("", desc)
    layout.push("", desc, lambda: pytest.fail("pushed twice"))
    assert layout.fetch("", desc).read_all(100) == data
    with pytest.raises(NotFoundError):
        layout.tag("x/y", Descriptor(mediaType=OCI_MANIFEST, digest=digest_bytes(b"{}"), size=2), "t")


def test_blob_with_wrong_content_fails_on_fetch(tmp_path, gen):
    root = gen.image("a", tag="a")
    gen.blob_path(root.digest).write_bytes(b"{}" + b" " * (root.size - 2))
    layout = OciLayout(gen.save().root)
    with pytest.raises(IntegrityError):
        layout.fetch(UNNAMED, layout.resolve(UNNAMED, "a")).drain()


def test_concurrent_tags_lose_nothing(tmp_path, gen):
    gen.image("a", tag="a")
    out = OciLayout(tmp_path / "out", create=True)
    root = copy_image(OciLayout(gen.save().root), UNNAMED, "a", out, NGINX)

    def tag_many(prefix):
        for i in range(15):
            OciLayout(tmp_path / "out").tag(NGINX, root, f"{prefix}{i}")

    threads = [threading.Thread(target=tag_many, args=(p,)) for p in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(out.tags(NGINX)) == 45


def test_hostile_index_digest_is_refused(tmp_path, gen):
    write_index(gen.root, [{"mediaType": OCI_MANIFEST, "digest": "sha256:../../../etc/passwd", "size": 3}])
    with pytest.raises(LayoutError, match="entry 0"):
        OciLayout(gen.root).resolve(UNNAMED, "latest")


def test_blob_symlink_outside_is_refused(tmp_path, gen):
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret")
    (gen.root / "blobs/sha256" / digest_bytes(b"secret")[7:]).symlink_to(secret)
    desc = Descriptor(mediaType="application/octet-stream", digest=digest_bytes(b"secret"), size=6)
    layout = OciLayout(gen.root)
    assert not layout.exists(UNNAMED, desc)
    with pytest.raises(LayoutError):
        layout.fetch(UNNAMED, desc)


def test_blobs_directory_leading_outside_is_refused(tmp_path, gen):
    (tmp_path / "elsewhere").mkdir()
    os.rmdir(gen.root / "blobs/sha256")
    (gen.root / "blobs/sha256").symlink_to(tmp_path / "elsewhere")
    desc = Descriptor(mediaType="application/octet-stream", digest=digest_bytes(b"x"), size=1)
    with pytest.raises(LayoutError, match="outside"):
        OciLayout(gen.root).fetch(UNNAMED, desc)


def test_not_a_layout(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain/file").write_text("x")
    with pytest.raises(LayoutError, match="not an OCI image layout"):
        OciLayout(tmp_path / "plain")
    with pytest.raises(LayoutError, match="not empty"):
        OciLayout(tmp_path / "plain", create=True)
    (tmp_path / "plain/oci-layout").write_text('{"imageLayoutVersion":"2.0.0"}')
    with pytest.raises(LayoutError, match="unsupported"):
        OciLayout(tmp_path / "plain")


def test_bad_names_are_refused(tmp_path):
    layout = OciLayout(tmp_path / "l", create=True)
    with pytest.raises(InvalidDigestError):
        layout.resolve(UNNAMED, "sha256:abc")
    with pytest.raises(InvalidReferenceError, match="repository name"):
        layout.resolve("Bad Repo", "x")
    with pytest.raises(InvalidReferenceError, match="invalid tag"):
        layout.resolve(NGINX, "-x")
