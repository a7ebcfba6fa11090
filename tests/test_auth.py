"""Auth and TLS against real registries: htpasswd Basic over TLS (--ca-cert, certs.d), token auth
with the bed's token server (scopes, expiry mid-transfer, OAuth2 refresh tokens), wrong
credentials that never leak, and the ls-remote / login / logout commands."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
import requests

from transfer.cli import main
from transfer.errors import AuthenticationError, NotFoundError, RegistryUnreachableError
from transfer.registry import Credentials, RegistryClient, RegistryStore, RetryPolicy, tls_policy

FAST = RetryPolicy(attempts=3, backoff=0.01, max_delay=1.0, total=10.0)
pytestmark = pytest.mark.registry


def creds(reg, password: str | None = None) -> Credentials:
    return Credentials(reg.username, password or reg.password)


def test_basic_over_tls_with_ca_cert(tls_registry, seeded):
    tls = tls_policy(tls_registry.host, ca_cert=str(tls_registry.ca_cert_path))
    with RegistryClient(tls_registry.host, credentials=creds(tls_registry), tls=tls, retry=FAST) as client:
        assert client.catalog() == sorted({s.repo for s in seeded.values()})
        assert client.base_url.startswith("https://")
        assert client.get_manifest("sample/app", "app").data == seeded["app"].manifest.raw


def test_the_trust_store_is_the_policys_and_read_once(tls_registry, seeded, monkeypatch):
    """requests names certifi's bundle for every HTTPS connection, which urllib3 loaded into the
    policy's context again at each new connection (50 ms of CPU each): the connections carry no
    CA file of their own, and verification still uses the policy's trust (--ca-cert here)."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    tls = tls_policy(tls_registry.host, ca_cert=str(tls_registry.ca_cert_path))
    with RegistryClient(tls_registry.host, credentials=creds(tls_registry), tls=tls, retry=FAST) as client:
        assert "app" in client.tags("sample/app")
        manager = client.transport.session.get_adapter("https://x").poolmanager
        pools = [manager.pools[key] for key in manager.pools.keys()]
        assert pools and all(p.ca_certs is None and p.ca_cert_dir is None for p in pools)
        assert all(p.cert_reqs == "CERT_REQUIRED" for p in pools)


def test_basic_over_tls_with_certs_d(tls_registry, tmp_path, monkeypatch):
    hostdir = tmp_path / "certs.d" / tls_registry.host
    hostdir.mkdir(parents=True)
    (hostdir / "ca.crt").write_bytes(tls_registry.ca_cert_path.read_bytes())
    monkeypatch.setenv("TRANSFER_CERTS_DIR", str(tmp_path / "certs.d"))
    with RegistryClient(tls_registry.host, credentials=creds(tls_registry), retry=FAST) as client:
        assert "app" in client.tags("sample/app")


def test_unknown_ca_is_a_clear_error_and_no_http_fallback(tls_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_CERTS_DIR", str(tmp_path / "none"))
    with RegistryClient(tls_registry.host, credentials=creds(tls_registry), retry=FAST) as client:
        with pytest.raises(RegistryUnreachableError, match="certificate verify failed.*--ca-cert"):
            client.ping()
    insecure = tls_policy(tls_registry.host, insecure=True)
    with RegistryClient(tls_registry.host, credentials=creds(tls_registry), tls=insecure, retry=FAST) as client:
        assert "app" in client.tags("sample/app")


@pytest.mark.parametrize("mode", ["tls_registry", "token_registry"])
def test_wrong_or_missing_credentials_never_leak(request, mode, caplog):
    reg = request.getfixturevalue(mode)
    tls = tls_policy(reg.host, ca_cert=str(reg.ca_cert_path) if reg.tls else None)
    secret = "wrong-pw-Zq9x7"
    caplog.set_level(logging.DEBUG)
    with RegistryClient(reg.host, credentials=Credentials(reg.username, secret), tls=tls, retry=FAST) as client:
        with pytest.raises(AuthenticationError) as info:
            client.tags("sample/app")
    message = str(info.value)
    assert "401" in message and reg.host in message
    assert secret not in message and secret not in caplog.text
    import base64
    assert base64.b64encode(f"{reg.username}:{secret}".encode()).decode() not in caplog.text
    with RegistryClient(reg.host, tls=tls, retry=FAST) as client:  # anonymous
        with pytest.raises(AuthenticationError):
            client.tags("sample/app")


def test_token_auth_scopes_and_cache(token_registry, seeded):
    server = token_registry.token_server
    server.reset_counts()
    store = RegistryStore(RegistryClient(token_registry.host, credentials=creds(token_registry), retry=FAST))
    assert store.repositories() == sorted({s.repo for s in seeded.values()})
    desc = store.resolve("sample/app", "app")
    with store.fetch("sample/app", desc) as reader:
        assert reader.read_all(1 << 20) == seeded["app"].manifest.raw
    assert store.tags("sample/app")
    asked = server.scopes_asked
    assert ["registry:catalog:*"] in asked and ["repository:sample/app:pull"] in asked
    assert asked.count(["repository:sample/app:pull"]) == 1  # cached for the next requests


def test_token_expiry_mid_transfer_reauthenticates_same_location(fresh_registry):
    reg = fresh_registry("token", valid_for=2)
    client = RegistryClient(reg.host, credentials=creds(reg), retry=FAST)  # clamps expires_in to 60 s
    data = b"x" * 1000
    import hashlib
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    session = client.start_upload("exp/repo")
    before = reg.token_server.request_count
    time.sleep(3)  # the token is now refused by the registry: 401 invalid_token
    done = client.finish_upload(session.location, "exp/repo", digest, body=lambda: io.BytesIO(data), length=len(data))
    assert done.digest == digest
    assert reg.token_server.request_count == before + 1
    assert client.blob_size("exp/repo", digest) == len(data)


def test_short_token_lifetime_refreshes_before_expiry(fresh_registry):
    reg = fresh_registry("token", valid_for=2)
    client = RegistryClient(reg.host, credentials=creds(reg), retry=FAST, min_token_lifetime=0)
    client.ping()
    reg.token_server.reset_counts()
    for _ in range(3):
        with pytest.raises(NotFoundError):
            client.tags("absent/repo")  # 404 NAME_UNKNOWN: needs a valid token to get that far
        time.sleep(1.2)
    assert reg.token_server.request_count >= 2


def test_mount_asks_for_pull_on_the_source(fresh_registry):
    reg = fresh_registry("token")
    client = RegistryClient(reg.host, credentials=creds(reg), retry=FAST)
    data = b"mount me"
    import hashlib
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    s = client.start_upload("src/a")
    client.finish_upload(s.location, "src/a", digest, body=data, length=len(data))
    mounted = client.start_upload("dst/b", mount=digest, from_repo="src/a")
    assert mounted.mounted and mounted.digest == digest
    assert ["repository:dst/b:pull,push", "repository:src/a:pull"] in [sorted(s) for s in reg.token_server.scopes_asked]


@pytest.mark.parametrize("oauth_post", [True, False])
def test_identity_token_uses_oauth_post_or_falls_back(fresh_registry, oauth_post):
    reg = fresh_registry("token", oauth_post=True, anonymous_pull=True)
    reply = requests.post(reg.token_server.realm, data={
        "grant_type": "password", "username": reg.username, "password": reg.password,
        "access_type": "offline", "service": reg.token_server.service, "client_id": "test"}, timeout=10)
    refresh = reply.json()["refresh_token"]
    reg.token_server.oauth_post = oauth_post
    reg.token_server.reset_counts()
    client = RegistryClient(reg.host, credentials=Credentials(identity_token=refresh), retry=FAST)
    if oauth_post:
        assert client.start_upload("idt/repo").location  # needs push: only the token's user has it
        assert {(r.method, r.grant_type) for r in reg.token_server.requests} == {("POST", "refresh_token")}
    else:
        with pytest.raises(NotFoundError):  # anonymous pull token from the GET fallback
            client.tags("idt/repo")
        assert [r.method for r in reg.token_server.requests][:2] == ["POST", "GET"]


@pytest.fixture
def cli():
    return main


def test_ls_remote_cli(registry, seeded, capsys, cli):
    assert cli(["ls-remote", registry.host]) == 0
    assert capsys.readouterr().out.split() == sorted({s.repo for s in seeded.values()})
    assert cli(["ls-remote", f"{registry.host}/sample/app", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["repository"] == "sample/app" and "app" in out["tags"] and out["tags"] == sorted(out["tags"])
    assert cli(["ls-remote", registry.host, "--tags"]) == 0
    assert "sample/small:small" in capsys.readouterr().out.split()


def test_login_ls_remote_logout_cli(tls_registry, tmp_path, monkeypatch, capsys, cli):
    authfile = tmp_path / "auth.json"
    ca = str(tls_registry.ca_cert_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("wrong-pw-Lk3\n"))
    assert cli(["login", tls_registry.host, "-u", tls_registry.username, "--password-stdin",
                 "--ca-cert", ca, "--auth-file", str(authfile)]) == 1
    err = capsys.readouterr().err
    assert "401" in err and "wrong-pw-Lk3" not in err and not authfile.exists()
    monkeypatch.setattr("sys.stdin", io.StringIO(tls_registry.password + "\n"))
    assert cli(["login", tls_registry.host, "-u", tls_registry.username, "--password-stdin",
                 "--ca-cert", ca, "--auth-file", str(authfile)]) == 0
    assert "Login succeeded" in capsys.readouterr().out
    assert tls_registry.host in json.loads(authfile.read_text())["auths"]
    assert cli(["ls-remote", f"{tls_registry.host}/sample/app", "--ca-cert", ca, "--auth-file", str(authfile)]) == 0
    assert "app" in capsys.readouterr().out.split()
    assert cli(["logout", tls_registry.host, "--auth-file", str(authfile)]) == 0
    assert cli(["ls-remote", f"{tls_registry.host}/sample/app", "--ca-cert", ca, "--auth-file", str(authfile)]) == 1
    assert "401" in capsys.readouterr().err


def test_env_credentials_for_named_registry(tls_registry, monkeypatch, capsys, cli):
    monkeypatch.setenv("TRANSFER_USERNAME", tls_registry.username)
    monkeypatch.setenv("TRANSFER_PASSWORD", tls_registry.password)
    monkeypatch.setenv("HOME", "/nonexistent")
    assert cli(["ls-remote", f"{tls_registry.host}/sample/small", "--ca-cert", str(tls_registry.ca_cert_path)]) == 0
    assert capsys.readouterr().out.split() == ["small"]
