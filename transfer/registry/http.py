"""HTTP transport for one registry: a requests session with our TLS trust, bounded retries with
backoff and jitter, auth hooks, and ``check_response`` -- the one place that reads status codes.

URLs in messages and logs never carry a query string (``_state``, signed URLs), and no header is
ever logged.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from transfer import __version__
from transfer.digest import Readable
from transfer.errors import (
    AuthenticationError,
    ErrorDetail,
    NotFoundError,
    RateLimitedError,
    RegistryError,
    RegistryUnreachableError,
    UsageError,
)
from transfer.registry.tls import TLSPolicy

log = logging.getLogger("transfer.registry")
# urllib3's debug lines carry full URLs with query strings (upload _state, signed URLs): keep them
# out even under --debug; our own log lines above say the same without the query.
logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)

MAX_ERROR_BODY = 64 << 10
USER_AGENT = f"transfer/{__version__}"
Body = bytes | Callable[[], Readable] | None


def strip_query(url: str) -> str:
    """``url`` without query string, fragment or userinfo: safe for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds for retrying idempotent requests on connection errors, 5xx and 429."""

    attempts: int = 5  # tries in all, including the first
    backoff: float = 0.5  # first delay in seconds, doubled per retry, with full jitter
    max_delay: float = 30.0  # cap of one delay; a longer Retry-After is not waited for
    total: float = 120.0  # no retry starts after this many seconds since the first try

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return max(0.0, retry_after)
        ceiling = min(self.max_delay, self.backoff * (2 ** retry))
        return random.uniform(ceiling / 2, ceiling)


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class Pace:
    """How slowly an answer may arrive. Fewer than ``min_bytes`` in ``window`` seconds is a stall
    (a read timeout never fires while a byte a second keeps coming); an answer other than a blob
    body (manifest, tags, catalog page, token, error) must be read whole within ``deadline``
    seconds of its headers. Settable for tests and slow links by TRANSFER_STALL_WINDOW,
    TRANSFER_STALL_MIN_BYTES and TRANSFER_ANSWER_DEADLINE."""

    window: float = 30.0
    min_bytes: int = 16 << 10
    deadline: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Pace":
        names = {"window": "TRANSFER_STALL_WINDOW", "min_bytes": "TRANSFER_STALL_MIN_BYTES",
                 "deadline": "TRANSFER_ANSWER_DEADLINE"}
        values: dict[str, Any] = {}
        for field_name, var in names.items():
            if env.get(var):
                try:
                    values[field_name] = (int if field_name == "min_bytes" else float)(env[var])
                except ValueError:
                    raise UsageError(f"{var}={env[var]!r} is not a number") from None
        return cls(**values)


class StalledError(RegistryUnreachableError):
    """An answer stopped moving, or moves too slowly to ever finish."""


class PacedBody:
    """A response's ``raw`` that reads piece by piece as bytes arrive (``read1``), so the pace is
    checked while a read waits, and raises StalledError when the answer falls below the pace or
    misses its deadline. requests and our readers see an ordinary urllib3 response."""

    def __init__(self, raw: Any, pace: Pace, what: str, bulk: bool) -> None:
        self._raw, self._pace, self._what = raw, pace, what
        now = time.monotonic()
        self._deadline = None if bulk else now + pace.deadline
        self._window_start, self._window_bytes = now, 0
        self._failure: Exception | None = None
        self._broken = False  # a read failed or stalled: the connection is not reused
        # the socket's timeout is set to the window at the first read of the body (an answer
        # without one, most of an import's, costs no system call for it)
        self._unarmed = getattr(getattr(raw, "connection", None), "sock", None)
        self._silence: float | None = None

    def _arm(self) -> None:
        sock, self._unarmed = self._unarmed, None
        try:
            self._silence = sock.gettimeout()
            if self._silence is None or self._silence > self._pace.window:
                sock.settimeout(self._pace.window)  # silence for a whole window is a stall too (reset per request)
                self._silence = self._pace.window
        except OSError:
            pass  # the connection is gone: the read says so

    def read(self, amt: int | None = None, decode_content: bool | None = None, **kw: Any) -> bytes:
        """``amt`` bytes (all with None), fewer only at the end, like urllib3's read; the pace is
        checked whenever bytes arrive."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        parts, got = [], 0
        while amt is None or amt < 0 or got < amt:
            try:
                data = self._read1(1 << 16 if amt is None or amt < 0 else amt - got, decode_content)
            except Exception as exc:
                if not parts:
                    raise
                self._failure = exc  # hand over what arrived; the next read raises
                break
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def _read1(self, amt: int, decode_content: bool | None) -> bytes:
        if self._unarmed is not None:
            self._arm()
        try:
            data = self._raw.read1(amt, decode_content=decode_content)
        except urllib3.exceptions.ReadTimeoutError:
            data = None
        except Exception:
            self._broken = True
            raise
        self._account(len(data) if data is not None else -1)
        return data

    def stream(self, amt: int | None = 1 << 16, decode_content: bool | None = None) -> Iterator[bytes]:
        while data := self.read(amt or 1 << 16, decode_content):
            yield data

    def _account(self, n: int) -> None:
        if n == 0:
            return  # the whole answer is in
        now = time.monotonic()
        if self._deadline is not None and now > self._deadline:
            self._stalled(f"not whole {self._pace.deadline:g} s after its headers")
        if n < 0:
            self._stalled(f"no byte in {self._silence or self._pace.window:g} s")
        self._window_bytes += n
        if now - self._window_start < self._pace.window:
            return
        if self._window_bytes < self._pace.min_bytes:
            self._stalled(f"{self._window_bytes} bytes in {now - self._window_start:.0f} s, "
                          f"fewer than {self._pace.min_bytes}")
        self._window_start, self._window_bytes = now, 0

    def _stalled(self, why: str) -> None:
        self._broken = True
        raise StalledError(f"{self._what}: the answer stalled ({why})", url=self._what.split(" ", 1)[-1])

    def close(self) -> None:
        """Done with the answer: one with nothing left to read (a HEAD's, a 201 or 202, a body
        read to its end) gives its connection back to the pool for the next request; any other is
        closed, with its connection (never waiting for a rest that may drip). Closing every answer
        left unread cost a new connection (a TLS handshake over HTTPS) for most requests of a run."""
        raw = self._raw
        if not self._broken and getattr(raw, "length_remaining", None) == 0:
            raw.drain_conn()  # reads nothing: lets http.client see the end, so the connection is idle
            raw.release_conn()
            return
        raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class Auth(Protocol):
    def headers(self, url: str, scopes: tuple[str, ...]) -> dict[str, str]: ...

    def challenged(self, response: requests.Response, scopes: tuple[str, ...]) -> bool: ...


def parse_error_body(response: requests.Response) -> list[ErrorDetail]:
    """The registry's ``{"errors": [...]}``, tolerating any other body; reads at most 64 KiB."""
    raw = read_capped(response, MAX_ERROR_BODY)
    try:
        data: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return []
    items = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    out = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("code"), str):
            out.append(ErrorDetail(item["code"], str(item.get("message") or ""), item.get("detail")))
    return out


def read_capped(response: requests.Response, limit: int) -> bytes:
    """Read at most ``limit`` bytes of a (streamed) body, then close it."""
    parts, total = [], 0
    try:
        for chunk in response.iter_content(min(limit, 1 << 16)):
            parts.append(chunk[: limit - total])
            total += len(chunk)
            if total >= limit:
                break
    except (requests.RequestException, urllib3.exceptions.HTTPError):
        pass
    finally:
        response.close()
    return b"".join(parts)


_HEADER_INT = re.compile(r"\A[0-9]{1,19}\Z")


def header_int(value: str | None) -> int | None:
    """A header's non-negative integer (Content-Length, a Range end), None when it is anything
    else: str.isdigit admits '²' and 5,000-digit numbers, which int() refuses or should not take."""
    value = (value or "").strip()
    return int(value) if _HEADER_INT.match(value) else None


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delay-seconds or HTTP-date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if header_int(value) is not None:
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(errors: list[ErrorDetail]) -> str:
    parts = []
    for e in errors[:5]:
        text = e.code + (f": {e.message}" if e.message else "")
        if isinstance(e.detail, str) and e.detail and len(e.detail) < 200:
            text += f" ({e.detail})"
        parts.append(text)
    return "; ".join(parts)


def check_response(response: requests.Response, method: str | None = None) -> requests.Response:
    """Return ``response`` if its status is a success; else read the error body and raise the
    matching RegistryError subclass."""
    status = response.status_code
    if status < 400:
        return response
    method = method or response.request.method or ""
    url = strip_query(response.url or response.request.url or "")
    errors = parse_error_body(response)
    message = f"{method} {url}: {status} {response.reason or ''}".rstrip()
    if errors:
        message += f": {_describe(errors)}"
    kw: dict[str, Any] = dict(status=status, method=method, url=url, errors=errors)
    if status in (401, 403):
        raise AuthenticationError(message, **kw)
    if status == 404:
        raise NotFoundError(message, **kw)
    if status == 429:
        raise RateLimitedError(message, retry_after=parse_retry_after(response.headers.get("Retry-After")), **kw)
    raise RegistryError(message, retryable=status >= 500, **kw)


DEFAULT_CONNECTIONS = 16  # kept-alive connections to one registry
SEND_BLOCK = 1 << 20  # request bodies go out in blocks of this size (urllib3's default is 16 KiB)


class _Adapter(HTTPAdapter):
    """Connections that send request bodies in large blocks: a 16 KiB loop in Python capped a
    blob upload at about 175 MB/s on loopback."""

    def init_poolmanager(self, *args: Any, **kw: Any) -> None:
        kw["blocksize"] = SEND_BLOCK
        self._pool_keys: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any]]] = {}
        super().init_poolmanager(*args, **kw)

    def build_connection_pool_key_attributes(self, request: Any, verify: Any,
                                             cert: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """requests works the pool's key out again for every request (a file system call where
        ``verify`` is a CA path, such as REQUESTS_CA_BUNDLE's); it depends only on the scheme,
        host and port and on verify and cert: worked out once for each."""
        parts = urlsplit(request.url)
        key = (parts.scheme, parts.netloc, verify, cert if not isinstance(cert, list) else tuple(cert))
        found = self._pool_keys.get(key)
        if found is None:
            found = self._pool_keys[key] = super().build_connection_pool_key_attributes(request, verify, cert)
        return dict(found[0]), dict(found[1])


class _TLSAdapter(_Adapter):
    def __init__(self, policy: TLSPolicy, **kw: Any) -> None:
        self._context = policy.ssl_context()
        super().__init__(**kw)

    def init_poolmanager(self, *args: Any, **kw: Any) -> None:
        kw["ssl_context"] = self._context
        super().init_poolmanager(*args, **kw)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """The policy's context holds the trust (the system store, --ca-cert, certs.d). requests
        names certifi's bundle for every connection, and urllib3 loaded it into that shared context
        again at each new connection: about 50 ms of CPU per connection (the first request of every
        run over HTTPS, loopback's first try included) for CAs the policy does not name. A bundle
        named by REQUESTS_CA_BUNDLE (``verify`` a path) is still added."""
        super().cert_verify(conn, url, verify, cert)
        if verify is True:
            conn.ca_certs = conn.ca_cert_dir = None


class SizedBody:
    """A stream with a known length, so requests sends Content-Length instead of chunking."""

    def __init__(self, raw: Readable, length: int) -> None:
        self._raw, self._length = raw, length

    def __len__(self) -> int:
        return self._length

    def read(self, n: int = -1) -> bytes:
        return self._raw.read(n if n and n > 0 else 1 << 20)

    def __iter__(self) -> Iterable[bytes]:
        while chunk := self.read(1 << 20):
            yield chunk


def open_body(body: Body | SizedBody | Readable, length: int | None) -> Any:
    """What requests sends for ``body``: bytes as they are, an opener's stream (with its length,
    so Content-Length is sent rather than chunked encoding)."""
    if callable(body):
        return SizedBody(body(), length) if length is not None else body()
    return body


def _no_netrc(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


class _Session(requests.Session):
    """requests' Session without its per-request work on the environment, and never ~/.netrc:
    requests looks it up for every request that has no auth of its own (a file system call each
    time), and after every redirect; an entry for the host would replace the registry's token."""

    def __init__(self) -> None:
        super().__init__()
        self.auth = _no_netrc  # a request "with auth" of its own: no netrc lookup
        self._environment: dict[tuple[Any, ...], dict[str, Any]] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict[str, Any]:
        """The environment (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE) read once for each scheme and
        host, not again at every request (requests walks os.environ and the proxy bypass list)."""
        if proxies or cert:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, stream, verify)
        found = self._environment.get(key)
        if found is None:
            found = self._environment[key] = super().merge_environment_settings(url, proxies, stream, verify, cert)
        return dict(found, proxies=dict(found["proxies"]))

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        """On a redirect: the Authorization header is dropped when the host changes (as requests
        does), and never replaced by ~/.netrc credentials (requests would add them)."""
        if "Authorization" in prepared_request.headers and self.should_strip_auth(response.request.url,
                                                                                   prepared_request.url):
            del prepared_request.headers["Authorization"]


class Transport:
    """Sends requests for one registry: TLS policy, timeouts, retries, auth, debug log."""

    def __init__(
        self,
        policy: TLSPolicy,
        *,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (15.0, 120.0),
        sleep: Callable[[float], None] = time.sleep,
        pace: Pace | None = None,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        self.policy = policy
        self.pace = pace or Pace.from_env()
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.sleep = sleep
        self.session = _Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.verify = policy.verify
        # kept-alive connections: as many as threads may ask at once (more would be closed after use)
        self.session.mount("https://", _TLSAdapter(policy, pool_maxsize=connections))
        self.session.mount("http://", _Adapter(pool_maxsize=connections))
        if not policy.verify:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def close(self) -> None:
        self.session.close()

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: Body = None,
        length: int | None = None,
        params: Any = None,
        allow_redirects: bool = True,
        bulk: bool = False,
    ) -> requests.Response:
        """One HTTP exchange, no retry and no status check; connection failures become
        RegistryUnreachableError. The body is read at the Pace (``bulk``: a blob, no deadline)."""
        data = open_body(body, length)
        try:
            response = self.session.request(
                method, url, headers=headers, data=data, params=params, stream=True,
                timeout=self.timeout, allow_redirects=allow_redirects,
                verify=self.policy.verify,  # explicit: REQUESTS_CA_BUNDLE must not undo --insecure
            )
        except requests.exceptions.SSLError as exc:
            raise RegistryUnreachableError(f"{method} {strip_query(url)}: TLS error: {_reason(exc)}",
                                           method=method, url=strip_query(url), retryable=False) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RegistryUnreachableError(f"{method} {strip_query(url)}: {_reason(exc)}",
                                           method=method, url=strip_query(url)) from None
        for hop in response.history:
            log.debug("%s %s -> %s (redirect)", method, strip_query(hop.url), hop.status_code)
        log.debug("%s %s -> %s", method, strip_query(response.url), response.status_code)
        response.raw = PacedBody(response.raw, self.pace, f"{method} {strip_query(response.url)}", bulk)
        return response

    def request(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        auth: Auth | None = None,
        scopes: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
        body: Body = None,
        length: int | None = None,
        params: Any = None,
        retry: RetryPolicy | None = None,
        bulk: bool = False,
    ) -> requests.Response:
        """Send with auth, answer one auth challenge, retry what may be retried; return a
        successful response (streamed: the caller reads or closes it) or raise."""
        policy = retry or (self.retry if idempotent else NO_RETRY)
        started, tries, reauthed = time.monotonic(), 0, False
        while True:
            tries += 1
            # The body first: opening it again for a retry may take a while (an upload reads up to
            # where its chunk starts), and the credentials must be fresh when the request leaves.
            data = open_body(body, length)
            sent = dict(headers or {})
            if auth:
                sent.update(auth.headers(url, scopes))
            response = None
            try:
                response = self.send(method, url, headers=sent, body=data, length=length, params=params, bulk=bulk)
                return check_response(response, method)
            except AuthenticationError as exc:
                # (response is None: the error came from reading the body, not from this registry)
                if (auth and response is not None and exc.status == 401 and not reauthed
                        and auth.challenged(response, scopes)):
                    reauthed, tries = True, tries - 1
                    continue
                raise
            except RegistryError as exc:
                if not self._may_retry(exc, policy, tries, started):
                    raise
                wait = policy.delay(tries - 1, getattr(exc, "retry_after", None))
                log.debug("retrying %s %s in %.2fs (%s)", method, strip_query(url), wait, exc)
                self.sleep(wait)

    @staticmethod
    def _may_retry(exc: RegistryError, policy: RetryPolicy, tries: int, started: float) -> bool:
        if not exc.retryable or tries >= policy.attempts:
            return False
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None and retry_after > policy.max_delay:
            return False
        wait = policy.delay(tries - 1, retry_after)
        return time.monotonic() - started + wait <= policy.total


def _reason(exc: BaseException) -> str:
    """A short reason for a connection failure, with no URL (it may carry a query)."""
    inner = exc
    for _ in range(6):
        nxt = getattr(inner, "reason", None)
        if not isinstance(nxt, BaseException) and inner.args and isinstance(inner.args[0], BaseException):
            nxt = inner.args[0]
        if not isinstance(nxt, BaseException):
            break
        inner = nxt
    text = str(inner) or type(inner).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return ("certificate verify failed (trust the registry's CA with --ca-cert FILE or "
                "/etc/docker/certs.d/<host>/ca.crt, or use --insecure)")
    text = re.sub(r"url: \S+", "url", text.split(" (Caused by", 1)[0])
    return re.sub(r"\?\S*", "", text) if "://" in text else text
