"""Network-free tests of the registry package: header parsing, error mapping, TLS decisions."""

from __future__ import annotations

import email.utils
import io
import json
import time
import types

import pytest
import requests

from transfer.errors import AuthenticationError, NotFoundError, RateLimitedError, RegistryError
from transfer.registry.auth import Authenticator, merge_scopes, parse_challenges
from transfer.registry.credentials import Credentials
from transfer.registry.blobs import range_start
from transfer.registry.client import next_link, parse_range_end, with_digest
from transfer.registry.http import RetryPolicy, check_response, parse_retry_after, strip_query
from transfer.registry.tls import is_loopback, tls_policy


def response(status: int, body: bytes = b"", headers: dict | None = None,
             url: str = "http://r.test/v2/x/blobs/uploads/abc?_state=SECRET", method: str = "PUT") -> requests.Response:
    """A real requests.Response over an in-memory body, as the adapter would build it."""
    r = requests.Response()
    r.status_code, r.reason, r.url = status, "Reason", url
    r.headers.update(headers or {})
    r.raw = io.BytesIO(body)
    r.request = requests.Request(method, url).prepare()
    return r


def test_challenge_with_quoted_commas_and_several_scopes():
    header = ('Bearer realm="https://auth.test/token?a=1,b=2",service="reg, test",'
              'scope="repository:a/b:pull,push repository:c/d:pull",error="insufficient_scope"')
    [c] = parse_challenges(header)
    assert c.scheme == "bearer"
    assert c.realm == "https://auth.test/token?a=1,b=2"
    assert c.service == "reg, test"
    assert c.scopes == ("repository:a/b:pull,push", "repository:c/d:pull")
    assert c.error == "insufficient_scope"


def test_several_challenges_and_basic():
    cs = parse_challenges('Basic realm="x y", Bearer realm="https://a/t", service=s')
    assert [c.scheme for c in cs] == ["basic", "bearer"]
    assert cs[0].realm == "x y" and cs[1].service == "s"
    assert parse_challenges('Basic realm="with \\"quote\\""')[0].realm == 'with "quote"'


def test_merge_scopes_unions_actions_and_keeps_host_port_names():
    merged = merge_scopes(["repository:a:pull"], ["repository:a:push", "repository:h:5000/b:pull"])
    assert merged == ("repository:a:pull,push", "repository:h:5000/b:pull")


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after(when) <= 31
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_backoff_is_bounded_and_jittered():
    policy = RetryPolicy(backoff=1.0, max_delay=4.0)
    delays = [policy.delay(n) for n in range(6)]
    assert all(0 < d <= 4.0 for d in delays)
    assert policy.delay(0, retry_after=7) == 7


def test_strip_query_drops_secrets():
    assert strip_query("https://u:p@h:5000/v2/x?_state=abc&digest=d#f") == "https://h:5000/v2/x"


def test_link_resolved_against_request_url_verbatim():
    r = response(200, headers={"Link": '</v2/_catalog?last=t%2Fa&n=2>; rel="next"'},
                 url="https://h:5000/v2/_catalog?n=2")
    assert next_link(r) == "https://h:5000/v2/_catalog?last=t%2Fa&n=2"
    assert next_link(response(200)) is None


def test_digest_appended_without_reencoding_state():
    loc = "http://h/v2/r/blobs/uploads/u?_state=ab%3D%3D"
    assert with_digest(loc, "sha256:" + "0" * 64) == loc + "&digest=sha256:" + "0" * 64
    assert with_digest("http://h/u", "sha256:1").endswith("/u?digest=sha256:1")


def test_range_headers():
    assert parse_range_end("0-999") == 999 and parse_range_end("bytes=0-41") == 41
    assert parse_range_end(None) is None
    assert range_start(response(206, headers={"Content-Range": "bytes 100-199/3000"})) == 100
    assert range_start(response(200)) == 0
    with pytest.raises(RegistryError):
        range_start(response(206, headers={"Content-Range": "garbage"}))


def test_check_response_maps_registry_errors_without_query():
    body = json.dumps({"errors": [{"code": "BLOB_UPLOAD_INVALID", "message": "blob upload invalid",
                                   "detail": "stale"}]}).encode()
    with pytest.raises(NotFoundError) as info:
        check_response(response(404, body))
    err = info.value
    assert err.codes == ["BLOB_UPLOAD_INVALID"] and err.status == 404 and not err.retryable
    assert "SECRET" not in str(err) and "_state" not in err.url
    assert str(err).startswith("PUT http://r.test/v2/x/blobs/uploads/abc: 404")
    assert "BLOB_UPLOAD_INVALID: blob upload invalid (stale)" in str(err)


def test_check_response_tolerates_non_json_and_caps_reading():
    with pytest.raises(RegistryError) as info:
        check_response(response(502, b"<html>" + b"x" * (1 << 20)))
    assert info.value.retryable and info.value.errors == []
    with pytest.raises(NotFoundError):
        check_response(response(404, b"404 page not found"))


def test_status_classes():
    with pytest.raises(AuthenticationError):
        check_response(response(401))
    with pytest.raises(AuthenticationError):
        check_response(response(403))
    with pytest.raises(RateLimitedError) as info:
        check_response(response(429, headers={"Retry-After": "2"}))
    assert info.value.retry_after == 2 and info.value.retryable
    with pytest.raises(RegistryError) as info:
        check_response(response(400, b'{"errors": "not a list"}'))
    assert not info.value.retryable
    assert check_response(response(202)).status_code == 202


def test_loopback_hosts():
    assert is_loopback("localhost:5000") and is_loopback("127.1.2.3:80") and is_loopback("[::1]:5000")
    assert not is_loopback("registry.example.test:5000") and not is_loopback("10.0.0.1")


def test_tls_policy_decisions(tmp_path):
    daemon = tmp_path / "daemon.json"
    daemon.write_text(json.dumps({"insecure-registries": ["reg.lan:5000", "10.1.0.0/16"]}))
    certs = tmp_path / "certs.d"
    (certs / "reg.example:443").mkdir(parents=True)
    (certs / "reg.example:443" / "ca.crt").write_text("x")
    remote = tls_policy("reg.example:5000", certs_root=str(certs), daemon_json=str(daemon))
    assert remote.schemes == ["https"] and remote.verify and remote.ca_files == ()
    listed = tls_policy("reg.lan:5000", certs_root=str(certs), daemon_json=str(daemon))
    assert listed.schemes == ["https", "http"] and not listed.verify
    assert not tls_policy("10.1.2.3:5000", certs_root=str(certs), daemon_json=str(daemon)).verify
    local = tls_policy("127.0.0.1:5000", certs_root=str(certs), daemon_json=str(daemon))
    assert local.schemes == ["https", "http"] and local.verify
    withca = tls_policy("reg.example:443", certs_root=str(certs), daemon_json=str(daemon))
    assert withca.ca_files == (str(certs / "reg.example:443" / "ca.crt"),)
    assert tls_policy("h:1", insecure=True, certs_root=str(certs), daemon_json=str(daemon)).schemes == ["https", "http"]


class _Answer:
    """Just enough of a requests.Response for Authenticator.challenged()."""

    def __init__(self, challenge: str, sent: str = "") -> None:
        self.headers = {"WWW-Authenticate": challenge}
        self.request = types.SimpleNamespace(headers={"Authorization": sent} if sent else {})


def _authenticator() -> tuple[Authenticator, list[tuple[str, ...]]]:
    """An Authenticator whose token server hands out a new token per request, recording scopes."""
    asked: list[tuple[str, ...]] = []
    auth = Authenticator("reg.example", Credentials(), transport=None)

    def call(realm, method, **kw):
        asked.append(tuple(v for k, v in kw["params"] if k == "scope"))
        return {"token": f"t{len(asked)}", "expires_in": 300}

    auth._call = call
    return auth, asked


WIDE = 'Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull,push repository:b:pull"'
NEED = ("repository:a:pull,push",)


def test_scopes_a_challenge_widened_stay_with_every_later_token():
    """Whichever thread fetches the next token for these scopes asks for what the registry wanted."""
    auth, asked = _authenticator()
    assert auth.challenged(_Answer(WIDE), NEED)
    assert auth.headers("https://reg.example/v2/a/blobs/uploads/", NEED) == {"Authorization": "Bearer t1"}
    auth._tokens.clear()  # expired, say: a later fetch for the same request scopes
    auth.headers("https://reg.example/v2/a/blobs/uploads/", NEED)
    assert asked == [("repository:a:pull,push", "repository:b:pull")] * 2


def test_a_401_for_a_token_another_thread_renewed_is_retried_with_the_new_one():
    auth, asked = _authenticator()
    auth.challenged(_Answer(WIDE), NEED)
    auth.headers("https://reg.example/v2/a/", NEED)  # t1
    invalid = WIDE + ',error="invalid_token"'
    assert auth.challenged(_Answer(invalid, sent="Bearer t1"), NEED)  # thread 1: renew
    assert auth.headers("https://reg.example/v2/a/", NEED) == {"Authorization": "Bearer t2"}
    # thread 2's request left with t1 too; its plain 401 comes after the renewal, and t2 covers
    # the scopes asked for: retry with t2, no new token
    assert auth.challenged(_Answer(WIDE, sent="Bearer t1"), NEED)
    assert auth.headers("https://reg.example/v2/a/", NEED) == {"Authorization": "Bearer t2"}
    assert len(asked) == 2
    # the same 401 asking for a scope t2 lacks, or saying the token is invalid: a new token
    wider = WIDE.replace('pull"', 'pull repository:c:pull"')
    assert auth.challenged(_Answer(wider, sent="Bearer t1"), NEED)
    assert auth.headers("https://reg.example/v2/a/", NEED) == {"Authorization": "Bearer t3"}
    assert "repository:c:pull" in asked[-1]
    assert auth.challenged(_Answer(invalid, sent="Bearer t2"), NEED)
    assert auth.headers("https://reg.example/v2/a/", NEED) == {"Authorization": "Bearer t4"}
