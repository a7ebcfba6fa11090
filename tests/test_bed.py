"""The test bed itself: registries start in every mode, auth is really enforced, seeded images
carry the generator's digests, restart keeps data, the proxy rules do what they say."""

from __future__ import annotations

import hashlib
import json
import time

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


def test_missing_binary_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.setattr("tests.bed.registry.REGISTRY_BIN", str(tmp_path / "no-such-registry"))
    with pytest.raises(RegistryStartError, match="apt-get install docker-registry"):
        Registry(tmp_path).start()


# -- token server -------------------------------------------------------------------------------

def token_get(registry: Registry, scopes: list[str], auth=None, **params) -> requests.Response:
    server = registry.token_server
    return requests.get(server.realm, params={"service": server.service, "scope": scopes, **params},
                        auth=auth, timeout=10)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_get_scopes_catalog_and_counts(token_registry):
    server = token_registry.token_server
    before = server.request_count
    scopes = ["repository:sample/small:pull", "registry:catalog:*"]
    reply = token_get(token_registry, scopes, auth=token_registry.auth)
    assert reply.status_code == 200
    assert server.request_count == before + 1
    assert server.scopes_asked[-1] == scopes
    catalog = raw_get(token_registry, "/v2/_catalog", headers=bearer(reply.json()["token"]))
    assert catalog.status_code == 200
    assert "sample/small" in catalog.json()["repositories"]
    assert token_get(token_registry, scopes, auth=(token_registry.username, "wrong")).status_code == 401


def test_token_grants_limit_access(fresh_registry):
    registry = fresh_registry("token", users={"alice": "a-pw", "bob": "b-pw"},
                              grants={"alice": {"repository:*": ["*"]}, "bob": {"repository:team/*": ["pull"]}})
    scope = "repository:team/x:pull,push"
    bob = token_get(registry, [scope], auth=("bob", "b-pw")).json()
    assert bob["scope"] == "repository:team/x:pull"
    refused = requests.post(f"{registry.url}/v2/team/x/blobs/uploads/", headers=bearer(bob["token"]), timeout=10)
    assert refused.status_code == 401
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    alice = token_get(registry, [scope], auth=("alice", "a-pw")).json()
    accepted = requests.post(f"{registry.url}/v2/team/x/blobs/uploads/", headers=bearer(alice["token"]), timeout=10)
    assert accepted.status_code == 202


def test_token_anonymous_pull(fresh_registry):
    registry = fresh_registry("token", anonymous_pull=True)
    anon = token_get(registry, ["repository:a/b:pull,push"]).json()
    assert anon["scope"] == "repository:a/b:pull"
    assert "refresh_token" not in token_get(registry, ["repository:a/b:pull"], offline_token="true").json()
    closed = fresh_registry("token")
    assert token_get(closed, ["repository:a/b:pull"]).json()["scope"] == ""


def test_token_oauth2_post_password_and_refresh(token_registry):
    server = token_registry.token_server
    form = {"grant_type": "password", "username": token_registry.username, "password": token_registry.password,
            "service": server.service, "scope": "repository:sample/small:pull registry:catalog:*",
            "access_type": "offline", "client_id": "transfer-tests"}
    first = requests.post(server.realm, data=form, timeout=10).json()
    assert first["scope"] == "repository:sample/small:pull registry:catalog:*"
    assert server.requests[-1].grant_type == "password"
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "service": server.service,
               "scope": "repository:sample/app:pull", "client_id": "transfer-tests"}
    second = requests.post(server.realm, data=refresh, timeout=10).json()
    reply = raw_get(token_registry, "/v2/sample/app/tags/list", headers=bearer(second["access_token"]))
    assert reply.status_code == 200
    bad = requests.post(server.realm, data={**refresh, "refresh_token": "rt-unknown"}, timeout=10)
    assert bad.status_code == 401


def test_token_oauth2_post_can_be_disabled(fresh_registry):
    registry = fresh_registry("token", oauth_post=False)
    form = {"grant_type": "password", "username": registry.username, "password": registry.password}
    assert requests.post(registry.token_server.realm, data=form, timeout=10).status_code == 404


def test_token_expiry_gives_invalid_token(fresh_registry):
    registry = fresh_registry("token", valid_for=2, expires_in=300)
    reply = token_get(registry, ["repository:a/b:pull"], auth=registry.auth).json()
    assert reply["expires_in"] == 300
    assert raw_get(registry, "/v2/a/b/tags/list", headers=bearer(reply["token"])).status_code == 404
    deadline = time.monotonic() + 4
    while (late := raw_get(registry, "/v2/a/b/tags/list", headers=bearer(reply["token"]))).status_code != 401:
        assert time.monotonic() < deadline, "token still accepted 4 s after issue"
        time.sleep(0.2)
    assert 'error="invalid_token"' in late.headers["WWW-Authenticate"]


# -- fault proxy --------------------------------------------------------------------------------

def test_proxy_forwards_and_counts(fresh_registry, fault_proxy, skopeo, sample_layout):
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    layout, refs = sample_layout
    app = refs["app"]
    skopeo.seed(registry.via(proxy.host), layout, app, "via/proxy", "app")
    uploaded = proxy.stats(None, r"/blobs/uploads/")
    assert uploaded.request_bytes == sum(b.size for b in [app.config, *app.layers])
    assert proxy.stats("PUT", r"/manifests/").request_bytes == app.size
    location = requests.post(f"{proxy.url}/v2/via/proxy/blobs/uploads/", timeout=10).headers["Location"]
    assert location.startswith(proxy.url + "/v2/via/proxy/blobs/uploads/")


def test_proxy_rate_limit_then_passes(registry, fault_proxy):
    proxy = fault_proxy(registry)
    proxy.respond(429, "GET", r"^/v2/$", times=2, retry_after=3)
    proxy.respond(503, "GET", r"/tags/list$", times=1, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    first, second, third = (requests.get(f"{proxy.url}/v2/", timeout=10) for _ in range(3))
    assert [first.status_code, second.status_code, third.status_code] == [429, 429, 200]
    assert first.headers["Retry-After"] == "3"
    assert first.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    unavailable = requests.get(f"{proxy.url}/v2/sample/small/tags/list", timeout=10)
    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert proxy.stats("GET", r"^/v2/$").statuses == [429, 429, 200]


def test_proxy_skip_counts_matches_before_firing(registry, fault_proxy):
    proxy = fault_proxy(registry)
    proxy.respond(503, "GET", r"^/v2/$", skip=1, times=1)
    statuses = [requests.get(f"{proxy.url}/v2/", timeout=10).status_code for _ in range(3)]
    assert statuses == [200, 503, 200]


def test_proxy_corrupts_one_byte(registry, fault_proxy, seeded):
    proxy = fault_proxy(registry)
    layer = seeded["small"].manifest.layers[0]
    path = f"/v2/sample/small/blobs/{layer.digest}"
    good = requests.get(registry.url + path, timeout=10).content
    proxy.corrupt_response("GET", r"/blobs/sha256:", offset=1000)
    bad = requests.get(proxy.url + path, timeout=10).content
    assert len(bad) == len(good) == layer.size
    assert [i for i in range(len(good)) if good[i] != bad[i]] == [1000]
    assert requests.get(proxy.url + path, timeout=10).content == good  # times=1


def test_proxy_cuts_response(registry, fault_proxy, seeded):
    proxy = fault_proxy(registry)
    layer = seeded["app"].manifest.layers[1]
    proxy.cut_response("GET", r"/blobs/", after=70_000)
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(f"{proxy.url}/v2/sample/app/blobs/{layer.digest}", timeout=10).content
    assert proxy.stats("GET", r"/blobs/").response_bytes == 70_000


def test_proxy_cuts_request_mid_upload(fresh_registry, fault_proxy):
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    location = requests.post(f"{proxy.url}/v2/cut/x/blobs/uploads/", timeout=10).headers["Location"]
    proxy.cut_request("PATCH", r"/blobs/uploads/", after=50_000)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.patch(location, data=b"x" * 200_000, timeout=10,
                       headers={"Content-Type": "application/octet-stream"})
    assert proxy.stats("PATCH").request_bytes == 50_000
    deadline = time.monotonic() + 3  # the registry kept the partial body: the session is wedged
    while (status := requests.get(location, timeout=10)).status_code != 404:
        assert time.monotonic() < deadline, f"upload status still {status.status_code}"
        time.sleep(0.1)
    assert status.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"


def test_proxy_stalls(registry, fault_proxy, seeded):
    proxy = fault_proxy(registry)
    proxy.stall(1.0, "GET", r"^/v2/$")
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{proxy.url}/v2/", timeout=0.3)
    assert requests.get(f"{proxy.url}/v2/", timeout=5).status_code == 200
    layer = seeded["small"].manifest.layers[0]
    proxy.stall(0.5, "GET", r"/blobs/", after=10_000)
    began = time.monotonic()
    body = requests.get(f"{proxy.url}/v2/sample/small/blobs/{layer.digest}", timeout=5).content
    assert time.monotonic() - began >= 0.5
    assert "sha256:" + hashlib.sha256(body).hexdigest() == layer.digest


def test_restart_keeps_inflight_upload(fresh_registry):
    registry = fresh_registry()
    data = bytes(range(256)) * 400
    headers = {"Content-Type": "application/octet-stream"}
    location = requests.post(f"{registry.url}/v2/up/x/blobs/uploads/", timeout=10).headers["Location"]
    location = requests.patch(location, data=data[:60_000], headers=headers, timeout=10).headers["Location"]
    registry.restart()
    location = requests.patch(location, data=data[60_000:], headers=headers, timeout=10).headers["Location"]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    done = requests.put(f"{location}&digest={digest}", headers=headers, timeout=10)
    assert done.status_code == 201
    assert requests.get(f"{registry.url}/v2/up/x/blobs/{digest}", timeout=10).content == data


def test_token_mode_over_tls(fresh_registry, skopeo, tmp_path):
    registry = fresh_registry("token", tls=True)
    assert registry.token_server.realm.startswith("https://127.0.0.1:")
    layout = Layout(tmp_path / "layout")
    image = layout.image("tls-token", [3000], docker=True, tag="t")
    layout.save()
    assert skopeo.seed(registry, layout, image, "secure/x", "t") == image.digest
    assert registry.token_server.request_count >= 1


def test_proxy_forwards_chunked_request_bodies(fresh_registry, fault_proxy):
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    data = b"y" * 150_000
    location = requests.post(f"{proxy.url}/v2/ch/x/blobs/uploads/", timeout=10).headers["Location"]
    patched = requests.patch(location, data=iter([data[:70_000], data[70_000:]]), timeout=10,
                             headers={"Content-Type": "application/octet-stream"})
    assert patched.status_code == 202
    assert patched.headers["Range"] == f"0-{len(data) - 1}"
    assert proxy.stats("PATCH").request_bytes == len(data)
