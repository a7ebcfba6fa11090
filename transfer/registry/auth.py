"""Registry authentication: WWW-Authenticate parsing, Basic, and the Bearer token flow
(distribution ``docs/spec/auth/token.md`` and ``oauth.md``) with a token cache.

Credentials go only to the registry host they belong to (and to the token realm named by its
challenge); nothing here logs or formats a secret.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

import requests

from transfer.errors import AuthenticationError, NotFoundError, RegistryError
from transfer.registry.credentials import Credentials
from transfer.registry.http import read_capped, strip_query
from transfer.untrusted import load_json

if TYPE_CHECKING:
    from transfer.registry.http import Transport

_PARAM_RE = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')
_SCHEME_RE = re.compile(r"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\s+|$)")
MAX_TOKEN_RESPONSE = 1 << 20
CLIENT_ID = "transfer"


@dataclass(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header (scheme lower-cased, params by lower-case key)."""

    scheme: str
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.params.get("scope", "").split())

    @property
    def error(self) -> str:
        return self.params.get("error", "")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` (RFC 7235): several challenges, quoted values with commas."""
    out: list[Challenge] = []
    pos = 0
    while pos < len(header):
        m = _SCHEME_RE.match(header, pos)
        if not m:
            break
        scheme, pos = m.group(1).lower(), m.end()
        params: dict[str, str] = {}
        while (p := _PARAM_RE.match(header, pos)) and p.group(0).strip():
            value = p.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[p.group(1).lower()] = value
            pos = p.end()
        out.append(Challenge(scheme, params))
        while pos < len(header) and header[pos] in ", ":
            pos += 1
    return out


def merge_scopes(*groups: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Union of scopes; actions of the same resource are merged (``pull`` + ``push``)."""
    actions: dict[str, list[str]] = {}
    for group in groups:
        for scope in group:
            resource, sep, acts = scope.rpartition(":")
            if not sep:
                resource, acts = scope, ""
            have = actions.setdefault(resource, [])
            have.extend(a for a in acts.split(",") if a and a not in have)
    return tuple(sorted(f"{r}:{','.join(sorted(a))}" if a else r for r, a in actions.items()))


def repository_scope(repo: str, *actions: str) -> str:
    return f"repository:{repo}:{','.join(actions)}"


CATALOG_SCOPE = "registry:catalog:*"


@dataclass
class Token:
    value: str
    scopes: tuple[str, ...]
    expires: float  # time.monotonic() deadline
    lifetime: float

    def fresh(self, margin: float) -> bool:
        """Still usable for a while: ``margin`` seconds, or a quarter of a short lifetime."""
        return time.monotonic() + min(margin, self.lifetime / 4) < self.expires


class Authenticator:
    """Authorization for one registry host; created per client, used by Transport.request."""

    def __init__(
        self,
        netloc: str,
        credentials: Credentials | None,
        transport: "Transport",
        *,
        min_token_lifetime: float = 60.0,
        refresh_margin: float = 5.0,
    ) -> None:
        self.netloc = netloc
        self.credentials = credentials or Credentials()
        self.transport = transport
        self.min_token_lifetime = min_token_lifetime
        self.refresh_margin = refresh_margin
        self.challenge: Challenge | None = None
        self._tokens: dict[tuple[str, str, tuple[str, ...]], Token] = {}
        self._wanted: dict[tuple[str, str, tuple[str, ...]], tuple[str, ...]] = {}  # scopes a challenge asked for
        self.token_requests = 0  # how many tokens were fetched (for tests and --debug)

    def headers(self, url: str, scopes: tuple[str, ...]) -> dict[str, str]:
        """The Authorization header for a request to ``url`` needing ``scopes`` (or none)."""
        if urlsplit(url).netloc != self.netloc or self.challenge is None:
            return {}
        if self.challenge.scheme == "basic":
            return {"Authorization": self.credentials.basic_header()} if self.credentials.has_password else {}
        if self.challenge.scheme != "bearer":
            return {}
        if self.credentials.registry_token:
            return {"Authorization": f"Bearer {self.credentials.registry_token}"}
        key = self._key(scopes)
        token = self._tokens.get(key)
        if token is None or not token.fresh(self.refresh_margin):
            token = self.fetch_token(self._wanted.get(key, scopes), key)
        return {"Authorization": f"Bearer {token.value}"}

    def challenged(self, response: requests.Response, scopes: tuple[str, ...]) -> bool:
        """A 401 came back: learn the challenge; True if the request should be sent again."""
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        known = [c for c in challenges if c.scheme in ("bearer", "basic")]
        if not known:
            return False
        challenge = next((c for c in known if c.scheme == "bearer"), known[0])
        previous, self.challenge = self.challenge, challenge
        if challenge.scheme == "basic":
            # Retry only if we have a password we did not send yet.
            return self.credentials.has_password and (previous is None or previous.scheme != "basic")
        if self.credentials.registry_token:
            return False
        key = self._key(scopes)
        current = self._tokens.get(key)
        request = getattr(response, "request", None)
        sent = request.headers.get("Authorization", "") if request is not None else ""
        wanted = merge_scopes(scopes, challenge.scopes, self._wanted.get(key, ()))
        if (current is not None and sent != f"Bearer {current.value}" and challenge.error != "invalid_token"
                and set(wanted) <= set(current.scopes)):
            return True  # another thread renewed the token after this request left, and it covers this
        old = self._tokens.pop(key, None)
        wanted = merge_scopes(wanted, old.scopes if old else ())
        if old and challenge.error != "invalid_token" and set(wanted) <= set(old.scopes):
            return False  # the token already asked for all of it: access is denied
        # Fetched by headers() once the retry is ready to leave; kept for every later token of
        # these scopes (whichever thread fetches it), since the registry wants them all.
        self._wanted[key] = wanted
        return True

    def _key(self, scopes: tuple[str, ...]) -> tuple[str, str, tuple[str, ...]]:
        assert self.challenge is not None
        return (self.challenge.realm, self.challenge.service, tuple(sorted(scopes)))

    def forget_tokens(self) -> None:
        self._tokens.clear()

    def fetch_token(self, scopes: tuple[str, ...], key: tuple[str, str, tuple[str, ...]] | None = None) -> Token:
        """Ask the challenge's realm for a token covering ``scopes`` and cache it (under ``key``:
        the scopes a request needs, which a challenge may have widened)."""
        assert self.challenge is not None
        realm = self.challenge.realm
        if not realm.startswith(("https://", "http://")):
            raise AuthenticationError(f"{self.netloc}: Bearer challenge has no usable realm {realm!r}")
        if self.credentials.identity_token:
            try:
                data = self._oauth_post(realm, scopes)
            except NotFoundError:
                data = self._token_get(realm, scopes)
        else:
            data = self._token_get(realm, scopes)
        token = self._token_from(data, scopes, realm)
        self._tokens[key or self._key(scopes)] = token
        self.token_requests += 1
        return token

    def _token_get(self, realm: str, scopes: tuple[str, ...]) -> dict:
        params = [("service", self.challenge.service)] if self.challenge and self.challenge.service else []
        params += [("scope", s) for s in scopes]
        headers = {"Authorization": self.credentials.basic_header()} if self.credentials.has_password else {}
        return self._call(realm, "GET", headers=headers, params=params)

    def _oauth_post(self, realm: str, scopes: tuple[str, ...]) -> dict:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self.credentials.identity_token,
            "service": self.challenge.service if self.challenge else "",
            "client_id": CLIENT_ID,
            "scope": " ".join(scopes),
        }
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return self._call(realm, "POST", headers=headers, body=urlencode(form).encode())

    def _call(self, realm: str, method: str, **kw) -> dict:
        try:
            response = self.transport.request(method, realm, idempotent=True, **kw)
        except AuthenticationError as exc:
            who = f" as {self.credentials.username!r}" if self.credentials.username else " anonymously"
            raise AuthenticationError(
                f"{self.netloc}: the token server {strip_query(realm)} refused to log in{who} "
                f"({exc.status}); check the credentials (transfer login {self.netloc})",
                status=exc.status, method=method, url=strip_query(realm), errors=exc.errors,
            ) from None
        raw = read_capped(response, MAX_TOKEN_RESPONSE)
        data = load_json(raw, f"{method} {strip_query(realm)}: token response", RegistryError, MAX_TOKEN_RESPONSE)
        if not isinstance(data, dict):
            raise RegistryError(f"{method} {strip_query(realm)}: token response is not a JSON object",
                                method=method, url=strip_query(realm))
        return data

    def _token_from(self, data: dict, scopes: tuple[str, ...], realm: str) -> Token:
        value = data.get("token") or data.get("access_token")
        if not isinstance(value, str) or not value:
            raise AuthenticationError(f"token server {strip_query(realm)} answered without a token")
        try:
            lifetime = float(data.get("expires_in") or 60)
        except (TypeError, ValueError):
            lifetime = 60.0
        lifetime = max(lifetime, self.min_token_lifetime)
        return Token(value, tuple(scopes), time.monotonic() + lifetime, lifetime)
