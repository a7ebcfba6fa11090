import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest
import zstandard

from tests.bed.images import Layout, layer_tar, sample_set
from tests.test_layout_support import copy_image, sha, skopeo
from transfer.digest import digest_bytes
from transfer.docker_archive import DockerArchive, DockerArchiveWriter
from transfer.errors import IntegrityError, LayoutError, NotFoundError
from transfer.layout import UNNAMED, OciLayout
from transfer.models import OCI_CONFIG, OCI_LAYER, OCI_LAYER_ZSTD, OCI_MANIFEST, Descriptor, parse_manifest
from transfer.store import Catalog, Source, Target, read_manifest


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    _, refs = sample_set(root)
    return root, refs


def write_archive(path, sample, images):
    """Copy (layout ref, repo, tag) triples from the sample layout into a new archive."""
    src = OciLayout(sample[0])
    with DockerArchiveWriter(path) as writer:
        for ref, repo, tag in images:
            copy_image(src, UNNAMED, ref, writer, repo, tag)
    return path


def tar_members(path):
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def decompress(data):
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def check_like_docker_load(path):
    """The checks moby's load.go makes on manifest.json, configs and layers."""
    members = tar_members(path)
    manifest = json.loads(members["manifest.json"])
    assert isinstance(manifest, list) and manifest
    for image in manifest:
        config = json.loads(members[os.path.normpath(image["Config"])])
        diff_ids = config["rootfs"]["diff_ids"]
        assert config["os"] and config["architecture"]
        assert len(image["Layers"]) == len(diff_ids)
        for layer, diff_id in zip(image["Layers"], diff_ids):
            assert "sha256:" + hashlib.sha256(decompress(members[os.path.normpath(layer)])).hexdigest() == diff_id
        for repo_tag in image["RepoTags"]:
            name, _, tag = repo_tag.rpartition(":")
            assert name and tag and "@" not in repo_tag
    return manifest


def test_protocols(tmp_path, sample):
    path = write_archive(tmp_path / "a.tar", sample, [("small", "small", "1")])
    assert isinstance(DockerArchiveWriter(tmp_path / "b.tar"), Target)
    archive = DockerArchive(path)
    assert isinstance(archive, Source) and isinstance(archive, Catalog)


def test_written_archive_is_accepted_by_skopeo_and_docker_load_checks(tmp_path, sample):
    root, refs = sample
    path = write_archive(tmp_path / "a.tar", sample, [
        ("app", "app", "1"), ("docker", "localhost:5000/team/docker", "2"), ("app", "app", "also")])
    manifest = check_like_docker_load(path)
    assert [m["RepoTags"] for m in manifest] == [["app:1", "app:also"], ["localhost:5000/team/docker:2"]]
    assert not list(tmp_path.glob(".*partial"))
    info = json.loads(skopeo("inspect", f"docker-archive:{path}:app:1"))
    assert info["Layers"] == json.loads((root / "blobs/sha256" / refs["app"].config.digest[7:]).read_bytes())["rootfs"]["diff_ids"]
    assert info["Labels"] == {"transfer.test.seed": "app"}
    skopeo("copy", f"docker-archive:{path}:localhost:5000/team/docker:2", f"oci:{tmp_path}/out:t")
    skopeo("copy", f"docker-archive:{path}:app:1", f"oci:{tmp_path}/out:u")
    # One tar, two formats: the OCI side holds the exact manifests, named as skopeo expects.
    raw = skopeo("inspect", "--raw", f"oci-archive:{path}:docker.io/library/app:also").encode()
    assert sha(raw) == refs["app"].digest
    back = DockerArchive(path)
    assert not back.legacy
    assert back.repositories() == ["docker.io/library/app", "localhost:5000/team/docker"]
    assert back.tags("app") == ["1", "also"]
    assert back.resolve("localhost:5000/team/docker", "2").digest == refs["docker"].digest


def test_single_repository_archive_uses_bare_ref_names(tmp_path, sample):
    path = write_archive(tmp_path / "a.tar", sample, [("small", "example.com/small", "v1")])
    index = json.loads(tar_members(path)["index.json"])
    assert index["manifests"][0]["annotations"] == {
        "org.opencontainers.image.ref.name": "v1", "io.containerd.image.name": "example.com/small:v1"}
    assert sha(skopeo("inspect", "--raw", f"oci-archive:{path}:v1").encode()) == sample[1]["small"].digest


def test_writer_refuses_index_and_artifacts(tmp_path, sample):
    src = OciLayout(sample[0])
    with pytest.raises(LayoutError, match="choose a platform"):
        write_archive(tmp_path / "a.tar", sample, [("multi", "multi", "1")])
    assert not (tmp_path / "a.tar").exists() and not os.listdir(tmp_path)
    with DockerArchiveWriter(tmp_path / "b.tar") as writer:
        with pytest.raises(LayoutError, match="not a layer"):
            copy_image(src, UNNAMED, "sbom", writer, "sbom", "1")
        copy_image(src, UNNAMED, "small", writer, "small", "1")  # the archive is still usable
    check_like_docker_load(tmp_path / "b.tar")


def test_failed_blob_is_cut_off_and_archive_stays_valid(tmp_path, sample):
    root, refs = sample
    layer = refs["small"].layers[0]
    desc = Descriptor(mediaType=layer.media_type, digest=layer.digest, size=layer.size)
    good = (root / "blobs/sha256" / layer.digest[7:]).read_bytes()
    with DockerArchiveWriter(tmp_path / "a.tar") as writer:
        with pytest.raises(IntegrityError):
            writer.push("small", desc, lambda: io.BytesIO(good[:-1] + b"x"))
        assert not writer.exists("small", desc)
        copy_image(OciLayout(root), UNNAMED, "small", writer, "small", "1")
    check_like_docker_load(tmp_path / "a.tar")
    assert sorted(tar_members(tmp_path / "a.tar")).count(f"blobs/sha256/{layer.digest[7:]}") == 1


def test_wrong_diff_ids_are_refused_at_tag(tmp_path):
    gen = Layout(tmp_path / "gen")
    raw = layer_tar("x", 1000)
    zlayer = zstandard.ZstdCompressor().compress(raw)
    layer = {"mediaType": OCI_LAYER_ZSTD, "digest": gen.put(zlayer), "size": len(zlayer)}
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [digest_bytes(b"other")]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [layer],
                           "config": {"mediaType": OCI_CONFIG, "digest": gen.put(config), "size": len(config)}}).encode()
    gen.refs["bad"] = type("M", (), {"descriptor": lambda self, **kw: {"mediaType": OCI_MANIFEST, "digest": gen.put(manifest), "size": len(manifest), **kw}})()
    gen.save()
    with DockerArchiveWriter(tmp_path / "a.tar") as writer:
        with pytest.raises(LayoutError, match="docker load would refuse"):
            copy_image(OciLayout(gen.root), UNNAMED, "bad", writer, "bad", "1")
        writer.abort()
    assert not (tmp_path / "a.tar").exists()


def test_skopeo_docker_archive_is_read_and_every_blob_verifies(tmp_path, sample):
    root, refs = sample
    path = tmp_path / "sk.tar"
    skopeo("copy", "--additional-tag", "other/name:9", f"oci:{root}:app", f"docker-archive:{path}:foo/bar:t")
    archive = DockerArchive(path)
    assert archive.legacy
    assert archive.repositories() == ["docker.io/foo/bar", "docker.io/other/name"]
    assert archive.tags("foo/bar") == ["t"] and archive.tags("docker.io/other/name") == ["9"]
    desc = archive.resolve("foo/bar", "t")
    assert archive.resolve("other/name", "9") == desc
    view = parse_manifest(read_manifest(archive, "foo/bar", desc, 1 << 20), desc.media_type)
    assert view.config.digest == refs["app"].config.digest  # config bytes unchanged
    assert [layer.digest for layer in view.layers] == [layer.diff_id for layer in refs["app"].layers]
    assert {layer.media_type for layer in view.layers} == {OCI_LAYER}
    for child in view.children():
        archive.fetch("foo/bar", child).drain()
    assert DockerArchive(path).resolve("foo/bar", "t") == desc  # the synthesized digest is stable
    # ... and it is a faithful image: skopeo reads it back from a layout we write.
    out = OciLayout(tmp_path / "out", create=True)
    copy_image(archive, "foo/bar", "t", out, "foo/bar", "t")
    assert sha(skopeo("inspect", "--raw", f"oci:{tmp_path}/out:t").encode()) == desc.digest
    skopeo("copy", f"oci:{tmp_path}/out:t", f"docker-archive:{tmp_path}/again.tar:foo/bar:t")


def legacy_archive(path, members, manifest):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):  # (link type, target)
                info.type, info.linkname = data
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if isinstance(data, bytes) else None)
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def legacy_image():
    a, b = layer_tar("a", 3000), layer_tar("b", 2000)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha(a), sha(b), sha(a)]}}).encode()
    members = {"aaa/layer.tar": a, "bbb/layer.tar": gzip.compress(b, mtime=0),
               "ccc/layer.tar": (tarfile.SYMTYPE, "../aaa/layer.tar"), f"{sha(config)[7:]}.json": config}
    entry = {"Config": f"{sha(config)[7:]}.json", "RepoTags": ["nginx:1"],
             "Layers": ["aaa/layer.tar", "./bbb/layer.tar", "ccc/layer.tar"]}
    return members, entry


def test_legacy_docker_save_layout(tmp_path):
    members, entry = legacy_image()
    path = legacy_archive(tmp_path / "old.tar", members, [entry, dict(entry, RepoTags=None)])
    archive = DockerArchive(path)
    assert archive.repositories() == ["docker.io/library/nginx"] and archive.tags("nginx") == ["1"]
    desc = archive.resolve("docker.io/library/nginx", "1")
    view = parse_manifest(read_manifest(archive, "nginx", desc, 1 << 20), desc.media_type)
    assert [layer.media_type.rsplit(".", 1)[-1] for layer in view.layers] == ["tar", "tar+gzip", "tar"]
    for child in view.children():
        archive.fetch("nginx", child).drain()
    assert archive.resolve(UNNAMED, desc.digest) == desc


def test_legacy_layer_that_does_not_match_its_diff_id_fails_on_fetch(tmp_path):
    members, entry = legacy_image()
    members["aaa/layer.tar"] = layer_tar("tampered", 3000)
    archive = DockerArchive(legacy_archive(tmp_path / "old.tar", members, [entry]))
    desc = archive.resolve("nginx", "1")
    layer = parse_manifest(read_manifest(archive, "nginx", desc, 1 << 20), desc.media_type).layers[0]
    with pytest.raises(IntegrityError):
        archive.fetch("nginx", layer).drain()


@pytest.mark.parametrize("change", [
    {"Config": "../../etc/passwd"},
    {"Config": "/etc/passwd"},
    {"Layers": ["aaa/layer.tar", "bbb/layer.tar", "evil/layer.tar"]},
])
def test_manifest_json_pointing_outside(tmp_path, change):
    members, entry = legacy_image()
    members["evil/layer.tar"] = (tarfile.SYMTYPE, "../../../etc/passwd")
    with pytest.raises(LayoutError, match="outside the archive"):
        DockerArchive(legacy_archive(tmp_path / "x.tar", members, [dict(entry, **change)]))


def test_member_path_with_dotdot_is_refused(tmp_path):
    members, entry = legacy_image()
    members["../escape"] = b"x"
    with pytest.raises(LayoutError, match="'../escape' leads outside"):
        DockerArchive(legacy_archive(tmp_path / "x.tar", members, [entry]))


def test_bad_archives(tmp_path):
    (tmp_path / "gz.tar.gz").write_bytes(gzip.compress(b"x" * 1000))
    with pytest.raises(LayoutError, match="gzip-compressed"):
        DockerArchive(tmp_path / "gz.tar.gz")
    (tmp_path / "junk.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(LayoutError, match="not a readable tar|not a docker archive"):
        DockerArchive(tmp_path / "junk.tar")
    members, entry = legacy_image()
    with pytest.raises(LayoutError, match="not name:tag"):
        DockerArchive(legacy_archive(tmp_path / "d.tar", members, [dict(entry, RepoTags=["nginx@" + sha(b"")])]))
    with pytest.raises(LayoutError, match="diff_ids"):
        DockerArchive(legacy_archive(tmp_path / "n.tar", members, [dict(entry, Layers=["aaa/layer.tar"])]))


def test_oci_archive_with_bad_index_digest(tmp_path):
    index = {"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": "sha256:../x", "size": 1}]}
    members = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": json.dumps(index).encode()}
    with pytest.raises(LayoutError, match="entry 0"):
        DockerArchive(legacy_archive(tmp_path / "x.tar", members, []))


def test_missing_blob_is_not_found(tmp_path, sample):
    archive = DockerArchive(write_archive(tmp_path / "a.tar", sample, [("small", "small", "1")]))
    with pytest.raises(NotFoundError):
        archive.fetch("small", Descriptor(mediaType=OCI_LAYER, digest=digest_bytes(b"nope"), size=4))
