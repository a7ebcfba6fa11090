"""The test bed itself: registries start in every mode, auth is really enforced, seeded images
carry the generator's digests, restart keeps data, the proxy rules do what they say."""

from __future__ import annotations

import hashlib
import json

import pytest
import requests

from tests.bed.images import DOCKER_LIST, DOCKER_MANIFEST, Layout, sample_set
from tests.bed.registry import Registry, RegistryStartError
from tests.bed.skopeo import SkopeoError

pytestmark = pytest.mark.registry


def raw_get(registry: Registry, path: str, **kwargs) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.get(registry.url + path, verify=registry.verify, timeout=10, **kwargs)


@pytest.mark.parametrize("ref", ["small", "app", "docker", "multi", "dockerlist", "sbom"])
def test_seeded_digest_matches_generator(registry, skopeo, seeded, ref):
    item = seeded[ref]
    raw = skopeo.inspect_raw(registry, item.image)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == item.manifest.digest
    assert raw == item.manifest.raw


def test_signature_is_tagged_beside_its_subject(registry, skopeo, seeded):
    app = seeded["app"].manifest
    sig_tag = app.digest.replace(":", "-") + ".sig"
    assert seeded[sig_tag].repo == "sample/app"
    assert set(skopeo.list_tags(registry, "sample/app")) == {"app", "sbom", sig_tag}


def test_docker_types_survive_seeding(registry, seeded):
    for ref, media_type in (("docker", DOCKER_MANIFEST), ("dockerlist", DOCKER_LIST)):
        item = seeded[ref]
        reply = raw_get(registry, f"/v2/{item.repo}/manifests/{item.tag}",
                        headers={"Accept": f"{DOCKER_MANIFEST}, {DOCKER_LIST}"})
        assert reply.status_code == 200
        assert reply.headers["Content-Type"] == media_type
        assert reply.headers["Docker-Content-Digest"] == item.manifest.digest


def test_multi_arch_children_and_blobs_present(registry, seeded):
    multi = seeded["multi"]
    platforms = [json.dumps(c.platform, sort_keys=True) for c in multi.manifest.children]
    assert len(set(platforms)) == 2
    for digest in multi.manifest.blob_digests():
        reply = requests.head(f"{registry.url}/v2/{multi.repo}/blobs/{digest}", timeout=10)
        assert reply.status_code == 200, digest


def test_generator_is_deterministic(tmp_path):
    _, first = sample_set(tmp_path / "a")
    _, second = sample_set(tmp_path / "b")
    assert {k: m.digest for k, m in first.items()} == {k: m.digest for k, m in second.items()}
    assert len({m.digest for m in first.values()}) == len(first)


def test_shared_base_layer(sample_layout):
    _, refs = sample_layout
    assert refs["app"].layers[0] == refs["small"].layers[0]
    config = json.loads((sample_layout[0].blob_path(refs["app"].config.digest)).read_bytes())
    assert len(config["rootfs"]["diff_ids"]) == len(refs["app"].layers) == 3


def test_plain_registry_starts_fast(fresh_registry):
    registry = fresh_registry()
    assert raw_get(registry, "/v2/").status_code == 200
    assert registry.start_seconds < 5


def test_htpasswd_refuses_without_credentials(tls_registry, skopeo):
    challenge = raw_get(tls_registry, "/v2/")
    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"].startswith("Basic ")
    assert raw_get(tls_registry, "/v2/", auth=(tls_registry.username, "wrong")).status_code == 401
    assert raw_get(tls_registry, "/v2/", auth=tls_registry.auth).status_code == 200
    with pytest.raises(SkopeoError):
        skopeo.run("inspect", "--raw", f"--authfile={skopeo.authfile}", f"--cert-dir={tls_registry.cert_dir}",
                   f"docker://{tls_registry.host}/sample/small:small")


def test_htpasswd_seeded_digest(tls_registry, skopeo):
    item = tls_registry.seeded["multi"]
    assert skopeo.digest(tls_registry, item.image) == item.manifest.digest


def test_token_registry_seeded_and_refuses_anonymous(token_registry, skopeo):
    challenge = raw_get(token_registry, "/v2/sample/small/manifests/small")
    assert challenge.status_code == 401
    assert f'realm="{token_registry.token_server.realm}"' in challenge.headers["WWW-Authenticate"]
    item = token_registry.seeded["docker"]
    assert skopeo.digest(token_registry, item.image) == item.manifest.digest


def test_restart_keeps_data_and_port(fresh_registry, skopeo, tmp_path):
    registry = fresh_registry()
    layout = Layout(tmp_path / "layout")
    image = layout.image("restart", [5000], tag="t")
    layout.save()
    skopeo.seed(registry, layout, image, "r/x", "t")
    port = registry.port
    registry.restart()
    assert registry.port == port
    assert skopeo.digest(registry, "r/x:t") == image.digest


def test_start_failure_raises_with_log_tail(tmp_path):
    broken = Registry(tmp_path, config={"storage": {"filesystem": {"rootdirectory": 5}}, "http": {"tls": {
        "certificate": str(tmp_path / "missing.crt"), "key": str(tmp_path / "missing.key")}}})
    with pytest.raises(RegistryStartError, match="log tail"):
        broken.start()
    assert broken.proc is None
