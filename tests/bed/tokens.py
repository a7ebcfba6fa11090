"""A test token server for distribution's ``auth.token`` mode (docs/spec/auth/token.md, oauth.md).

Issues RS256 JWTs whose ``x5c`` header carries a self-signed signer certificate that is also the
registry's ``rootcertbundle``. Serves, on ``/token``:

- ``GET ?service=&scope=&scope=…[&offline_token=true]`` with optional Basic credentials
  (anonymous gets the anonymous grants; wrong credentials get 401);
- OAuth2 ``POST`` (form) with ``grant_type=password`` (``access_type=offline`` adds a
  ``refresh_token``) or ``grant_type=refresh_token``; ``scope`` space-separated in one field.
  ``oauth_post=False`` makes POST answer 404, as servers without OAuth2 do.

Access granted is the intersection of the scopes asked and ``grants``: per user (``None`` is
anonymous) a map of ``"type:name-glob"`` to actions, ``"*"`` meaning every action.

Expiry: distribution checks ``exp`` and ``nbf`` with 60 s leeway, so a token's ``exp`` claim is
set to ``floor(issue time + valid_for) - 60``: the registry accepts it for ``valid_for`` seconds
(at least ``valid_for - 1``: claims are whole seconds) and then answers ``401 error="invalid_token"``. ``expires_in``,
what clients are told, is separate (default: ``valid_for`` rounded up). Clients clamp it to at
least 60 s, so with ``valid_for=3`` a client keeps using the token and really meets a 401
``invalid_token`` mid-transfer. Both attributes may be changed while the server runs;
``valid_for <= 0`` issues tokens the registry refuses at once.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import math
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tests.bed.certs import TlsFiles, rsa_key, signer_cert_der
from tests.bed.serve import Served

LEEWAY = 60  # distribution 2.8 registry/auth/token/token.go Leeway
SERVICE = "transfer-test-registry"
ISSUER = "transfer-test-issuer"
ALL_ACCESS = {"repository:*": ["pull", "push", "delete"], "registry:catalog": ["*"]}


@dataclass
class TokenRequest:
    """One request the token server saw (never the password or token)."""

    method: str
    grant_type: str | None
    username: str | None
    scopes: list[str]
    offline: bool
    status: int = 0


@dataclass
class Scope:
    type: str
    name: str
    actions: list[str]

    @classmethod
    def parse(cls, text: str) -> "Scope":
        """``type[(class)]:name:actions`` (the name may hold ``host:port``: split at the last ``:``)."""
        head, _, actions = text.rpartition(":")
        kind, _, name = head.partition(":")
        return cls(kind.split("(")[0], name, [a for a in actions.split(",") if a])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(claims: dict[str, Any]) -> str:
    """An RS256 JWT with the signer certificate in ``x5c``."""
    header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(signer_cert_der()).decode()]}
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    signature = rsa_key().sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64(signature)


@dataclass
class TokenServer(Served):
    users: dict[str, str]
    tls_files: TlsFiles | None = None
    grants: dict[str | None, dict[str, list[str]]] | None = None
    anonymous_pull: bool = False
    valid_for: float = 300.0
    expires_in: int | None = None
    oauth_post: bool = True
    service: str = SERVICE
    issuer: str = ISSUER
    requests: list[TokenRequest] = field(default_factory=list)
    refresh_tokens: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.grants is None:
            self.grants = {user: dict(ALL_ACCESS) for user in self.users}
            self.grants[None] = {"repository:*": ["pull"]} if self.anonymous_pull else {}
        self._lock = threading.Lock()

    # -- life cycle ---------------------------------------------------------------------------
    server_name = "token-server"

    def handler(self) -> type:
        return _Handler

    @property
    def realm(self) -> str:
        scheme = "https" if self.tls_files else "http"
        return f"{scheme}://127.0.0.1:{self._server.port}/token"

    def registry_config(self, rootcertbundle: Path) -> dict[str, str]:
        return {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                "rootcertbundle": str(rootcertbundle)}

    # -- observations -------------------------------------------------------------------------
    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    @property
    def scopes_asked(self) -> list[list[str]]:
        """The scopes of every request, in order."""
        with self._lock:
            return [list(r.scopes) for r in self.requests]

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    def _record(self, entry: TokenRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    # -- issuing ------------------------------------------------------------------------------
    def check_password(self, username: str | None, password: str | None) -> bool:
        return username in self.users and secrets.compare_digest(self.users[username], password or "")

    def granted(self, username: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        """The access claim: for each scope asked, the actions this user holds on it."""
        rules = self.grants.get(username, {})
        access = []
        for text in scopes:
            scope = Scope.parse(text)
            held: set[str] = set()
            for pattern, actions in rules.items():
                if fnmatch.fnmatchcase(f"{scope.type}:{scope.name}", pattern):
                    held.update(scope.actions if "*" in actions else actions)
            actions = [a for a in scope.actions if a in held]
            if actions:
                access.append({"type": scope.type, "name": scope.name, "actions": actions})
        return access

    def issue(self, username: str | None, scopes: list[str]) -> dict[str, Any]:
        """The JSON body of a token answer (``token`` and ``access_token``)."""
        now = time.time()
        access = self.granted(username, scopes)
        claims = {"iss": self.issuer, "sub": username or "", "aud": self.service,
                  "exp": math.floor(now + self.valid_for) - LEEWAY, "nbf": int(now) - 1,
                  "iat": int(now), "jti": secrets.token_hex(8), "access": access}
        token = sign_jwt(claims)
        expires_in = self.expires_in if self.expires_in is not None else max(1, math.ceil(self.valid_for))
        issued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        granted_scope = " ".join(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access)
        return {"token": token, "access_token": token, "expires_in": expires_in,
                "issued_at": issued_at, "scope": granted_scope}

    def new_refresh_token(self, username: str) -> str:
        token = "rt-" + secrets.token_urlsafe(16)
        with self._lock:
            self.refresh_tokens[token] = username
        return token


class _Handler(BaseHTTPRequestHandler):
    server_version = "transfer-test-token/1"
    protocol_version = "HTTP/1.1"
    timeout = 10

    @property
    def tokens(self) -> TokenServer:
        return self.server.owner  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        offline = query.get("offline_token", [""])[0] == "true"
        entry = TokenRequest("GET", None, None, query.get("scope", []), offline)
        if url.path != "/token":
            return self._reply(entry, 404, {"error": "not found"})
        username, password = self._basic()
        if username is not None and not self.tokens.check_password(username, password):
            return self._reply(entry, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
        entry.username = username
        body = self.tokens.issue(username, entry.scopes)
        if offline and username is not None:
            body["refresh_token"] = self.tokens.new_refresh_token(username)
        self._reply(entry, 200, body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        get = lambda key: form.get(key, [None])[0]  # noqa: E731
        scopes = (get("scope") or "").split()
        entry = TokenRequest("POST", get("grant_type"), None, scopes, get("access_type") == "offline")
        if urllib.parse.urlsplit(self.path).path != "/token" or not self.tokens.oauth_post:
            return self._reply(entry, 404, {"error": "not found"})
        username, refresh = self._oauth_subject(entry.grant_type, get)
        if username is None:
            return self._reply(entry, 401, {"error": "invalid_grant"})
        entry.username = username
        body = self.tokens.issue(username, scopes)
        del body["token"]
        if refresh or entry.offline:
            body["refresh_token"] = refresh or self.tokens.new_refresh_token(username)
        self._reply(entry, 200, body)

    def _oauth_subject(self, grant_type: str | None, get) -> tuple[str | None, str | None]:
        """The authenticated user, and the refresh token used (if that was the grant)."""
        if grant_type == "password":
            ok = self.tokens.check_password(get("username"), get("password"))
            return (get("username") if ok else None), None
        if grant_type == "refresh_token":
            return self.tokens.refresh_tokens.get(get("refresh_token") or ""), get("refresh_token")
        return None, None

    def _basic(self) -> tuple[str | None, str | None]:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None, None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user, password

    def _reply(self, entry: TokenRequest, status: int, body: dict[str, Any]) -> None:
        entry.status = status
        self.tokens._record(entry)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="transfer-test-token"')
        self.end_headers()
        self.wfile.write(data)
