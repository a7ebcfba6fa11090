"""Credential lookup and storage: docker config.json, containers auth.json, credential helpers
(a real ``docker-credential-test`` script on PATH), environment, login/logout storage."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
import textwrap

import pytest

from transfer.errors import AuthenticationError, UsageError
from transfer.registry.credentials import (
    Credentials,
    erase_credentials,
    resolve_credentials,
    store_credentials,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def home(tmp_path):
    """An environment with an empty home, no XDG runtime dir and no auth-file variables."""
    env = {"HOME": str(tmp_path / "home"), "PATH": os.environ.get("PATH", "")}
    (tmp_path / "home" / ".docker").mkdir(parents=True)
    return env


def write_config(env, data) -> str:
    path = os.path.join(env["HOME"], ".docker", "config.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path


HELPER = textwrap.dedent("""\
    #!{python}
    import json, os, sys
    store = os.environ["HELPER_STORE"]
    data = json.load(open(store)) if os.path.exists(store) else {{}}
    action, given = sys.argv[1], sys.stdin.read()
    if action == "get":
        url = given.strip()
        if url not in data:
            print("credentials not found in native keychain"); sys.exit(1)
        print(json.dumps({{"ServerURL": url, "Username": data[url][0], "Secret": data[url][1]}}))
    elif action == "store":
        d = json.loads(given); data[d["ServerURL"]] = [d["Username"], d["Secret"]]
        json.dump(data, open(store, "w"))
    elif action == "erase":
        if data.pop(given.strip(), None) is None:
            print("credentials not found in native keychain"); sys.exit(1)
        json.dump(data, open(store, "w"))
    """)


@pytest.fixture
def helper(tmp_path, home, monkeypatch):
    """``docker-credential-test`` on PATH, keeping its secrets in a JSON file."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "docker-credential-test"
    script.write_text(HELPER.format(python=sys.executable))
    script.chmod(0o755)
    store = tmp_path / "helper-store.json"
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("HELPER_STORE", str(store))
    home["PATH"] = os.environ["PATH"]
    return store


def test_auth_entry_split_at_first_colon(home):
    write_config(home, {"auths": {"reg.test:5000": {"auth": b64("alice:pa:ss")}}})
    creds = resolve_credentials("reg.test:5000", env=home)
    assert (creds.username, creds.password) == ("alice", "pa:ss")
    assert resolve_credentials("other.test", env=home).anonymous


def test_username_password_identitytoken_and_legacy_keys(home):
    write_config(home, {"auths": {
        "https://legacy.test/v1/": {"username": "bob", "password": "pw"},
        "https://index.docker.io/v1/": {"auth": b64("hub:hubpw")},
        "idp.test": {"auth": b64("<token>:"), "identitytoken": "refresh-123"},
    }})
    assert resolve_credentials("legacy.test", env=home).username == "bob"
    for hub in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert resolve_credentials(hub, env=home).password == "hubpw"
    idp = resolve_credentials("idp.test", env=home)
    assert idp.identity_token == "refresh-123" and not idp.has_password


def test_env_only_for_named_registries_and_explicit_wins(home):
    write_config(home, {"auths": {"reg.test": {"auth": b64("file:filepw")}}})
    env = dict(home, TRANSFER_USERNAME="envuser", TRANSFER_PASSWORD="envpw")
    assert resolve_credentials("reg.test", env=env).username == "envuser"
    assert resolve_credentials("reg.test", env=env, named=False).username == "file"
    explicit = Credentials("cli", "clipw")
    assert resolve_credentials("reg.test", env=env, explicit=explicit) is explicit


def test_containers_auth_json_order(home, tmp_path):
    runtime = tmp_path / "run"
    (runtime / "containers").mkdir(parents=True)
    (runtime / "containers" / "auth.json").write_text(json.dumps({"auths": {"reg.test": {"auth": b64("podman:p")}}}))
    write_config(home, {"auths": {"reg.test": {"auth": b64("docker:d")}, "only.docker": {"auth": b64("d2:x")}}})
    env = dict(home, XDG_RUNTIME_DIR=str(runtime))
    assert resolve_credentials("reg.test", env=env).username == "podman"
    assert resolve_credentials("only.docker", env=env).username == "d2"
    authfile = tmp_path / "explicit.json"
    authfile.write_text(json.dumps({"auths": {"reg.test": {"auth": b64("explicit:e")}}}))
    assert resolve_credentials("reg.test", env=dict(env, REGISTRY_AUTH_FILE=str(authfile))).username == "explicit"
    assert resolve_credentials("only.docker", env=env, auth_file=str(authfile)).anonymous


def test_broken_config_is_a_clear_error(home):
    path = write_config(home, {})
    with open(path, "w") as f:
        f.write("{not json")
    with pytest.raises(UsageError, match="config.json"):
        resolve_credentials("reg.test", env=home)


def test_store_and_erase_keep_other_keys_atomically_0600(home):
    path = write_config(home, {"auths": {"other.test": {"auth": b64("o:p")}}, "psFormat": "table"})
    where = store_credentials("reg.test:5000", Credentials("alice", "s3cret"), env=home)
    assert where == path
    data = json.load(open(path))
    assert data["psFormat"] == "table" and "other.test" in data["auths"]
    assert base64.b64decode(data["auths"]["reg.test:5000"]["auth"]) == b"alice:s3cret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert resolve_credentials("reg.test:5000", env=home).password == "s3cret"
    assert erase_credentials("reg.test:5000", env=home)
    assert not erase_credentials("reg.test:5000", env=home)
    assert "reg.test:5000" not in json.load(open(path))["auths"]
    assert not [p for p in os.listdir(os.path.dirname(path)) if p.endswith(".tmp")]


def test_docker_hub_stored_under_index_key(home):
    store_credentials("docker.io", Credentials("hub", "pw"), env=home)
    data = json.load(open(os.path.join(home["HOME"], ".docker", "config.json")))
    assert list(data["auths"]) == ["https://index.docker.io/v1/"]


def test_cred_helper_get_store_erase(helper, home):
    write_config(home, {"credHelpers": {"reg.test": "test"}, "auths": {"reg.test": {"auth": b64("ignored:x")}}})
    assert resolve_credentials("reg.test", env=home).anonymous  # helper says not found: anonymous
    assert store_credentials("reg.test", Credentials("alice", "hpw"), env=home) == \
        "credential helper docker-credential-test"
    creds = resolve_credentials("reg.test", env=home)
    assert (creds.username, creds.password) == ("alice", "hpw") and "helper" in creds.source
    assert erase_credentials("reg.test", env=home)
    assert resolve_credentials("reg.test", env=home).anonymous


def test_creds_store_and_token_username(helper, home):
    write_config(home, {"credsStore": "test"})
    helper.write_text(json.dumps({"https://index.docker.io/v1/": ["<token>", "idtoken-1"]}))
    creds = resolve_credentials("docker.io", env=home)
    assert creds.identity_token == "idtoken-1" and not creds.has_password


def test_missing_or_failing_helper_is_a_clear_error(helper, home, tmp_path):
    write_config(home, {"credsStore": "absent"})
    with pytest.raises(AuthenticationError, match="docker-credential-absent"):
        resolve_credentials("reg.test", env=home)
    bad = tmp_path / "bin" / "docker-credential-broken"
    bad.write_text("#!/bin/sh\necho 'keychain locked' >&2\nexit 3\n")
    bad.chmod(0o755)
    write_config(home, {"credsStore": "broken"})
    with pytest.raises(AuthenticationError, match="keychain locked"):
        resolve_credentials("reg.test", env=home)


def test_secrets_not_in_repr():
    text = repr(Credentials("alice", "pw-XYZ", identity_token="tok-XYZ"))
    assert "XYZ" not in text and "alice" in text
