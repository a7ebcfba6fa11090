import json

import pytest

from transfer.digest import digest_bytes
from transfer.errors import UnsupportedManifestError
from transfer.models import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Platform, parse_manifest, referrers_tag

CFG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_bytes(b"{}"), "size": 2}
LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest_bytes(b"l"), "size": 1}


def test_image_manifest_children():
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": CFG, "layers": [LAYER]}).encode()
    view = parse_manifest(raw, OCI_MANIFEST)
    assert [d.digest for d in view.children()] == [CFG["digest"], LAYER["digest"]]
    assert not view.is_index


def test_index_children_and_platforms():
    child = {"mediaType": OCI_MANIFEST, "digest": digest_bytes(b"m"), "size": 1,
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}
    view = parse_manifest(json.dumps({"schemaVersion": 2, "manifests": [child]}).encode(), OCI_INDEX)
    assert view.is_index
    assert str(view.children()[0].platform) == "linux/arm64/v8"
    assert view.children()[0].platform.matches(Platform.parse("linux/arm64"))
    assert not view.children()[0].platform.matches(Platform.parse("linux/arm64/v7"))


def test_schema1_refused():
    with pytest.raises(UnsupportedManifestError, match="schema1"):
        parse_manifest(b'{"schemaVersion": 1, "name": "x"}', None)


def test_type_mismatch_refused():
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": CFG, "layers": []}).encode()
    with pytest.raises(UnsupportedManifestError, match="does not match"):
        parse_manifest(raw, DOCKER_MANIFEST)


def test_referrers_tag():
    assert referrers_tag("sha256:" + "a" * 64) == "sha256-" + "a" * 64
