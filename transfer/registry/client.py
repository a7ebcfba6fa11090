"""A client for one registry (Registry HTTP API v2 / OCI distribution-spec): ping and scheme
choice, catalog and tags with pagination, manifests, blobs, and the upload primitives
(POST / PATCH / PUT / status / cancel) that upload engines are built from."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import unquote, urljoin, urlsplit

import requests

from transfer.digest import Digester, VerifyingReader, is_digest, validate_digest
from transfer.errors import (
    IntegrityError,
    InvalidReferenceError,
    NotFoundError,
    RegistryError,
    RegistryUnreachableError,
    UnsupportedManifestError,
)
from transfer.models import MANIFEST_ACCEPT, MAX_MANIFEST_SIZE, OCI_INDEX, Descriptor
from transfer.reference import validate_repository, validate_tag, validate_tag_or_digest
from transfer.registry.auth import CATALOG_SCOPE, Authenticator, repository_scope
from transfer.registry.blobs import ResumingBody
from transfer.registry.credentials import Credentials
from transfer.registry.http import DEFAULT_CONNECTIONS, Body, RetryPolicy, Transport, header_int, read_capped, strip_query
from transfer.registry.tls import TLSPolicy, tls_policy
from transfer.untrusted import load_json, validate

log = logging.getLogger("transfer.registry")

_LINK_RE = re.compile(r'<([^>]*)>\s*;[^,]*?rel="?next"?', re.IGNORECASE)
# What a path we build may hold: /v2/, then segments of repository, tag and digest characters
# (never '.' or '..' alone), then a query of the few parameters we send.
_API_PATH = re.compile(r"\A/v2/(?:[A-Za-z0-9_:-][A-Za-z0-9._:-]*/)*[A-Za-z0-9._:-]*(?:\?[A-Za-z0-9._:=&/-]*)?\Z")
MAX_PAGES = 10_000  # of a catalog, tags list or referrers list
MAX_LIST_ENTRIES = 1_000_000  # names or descriptors in all the pages of one list
MAX_LIST_BODY = 16 << 20


@dataclass(frozen=True)
class Manifest:
    """A manifest's exact bytes as served, with its media type and verified digest."""

    data: bytes
    media_type: str
    digest: str

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(media_type=self.media_type, digest=self.digest, size=len(self.data))


@dataclass(frozen=True)
class UploadStatus:
    """Where an upload session stands: the Location to use next (absolute, resolved against the
    request URL, query kept byte-exact) and the Range end the registry reported (the offset of
    the last byte it holds; None when no Range came; "0-0" is ambiguous: 0 or 1 byte)."""

    location: str
    range_end: int | None = None
    mounted: bool = False  # a cross-repository mount succeeded: nothing to upload
    digest: str | None = None  # Docker-Content-Digest of a finished upload or mount
    min_chunk: int | None = None  # OCI-Chunk-Min-Length, when the registry asks for one


def parse_range_end(value: str | None) -> int | None:
    """``0-N`` or ``bytes=0-N`` -> N."""
    if not value:
        return None
    return header_int(value.strip().rsplit("-", 1)[-1])


def next_link(response: requests.Response) -> str | None:
    """The ``Link: <url>; rel="next"`` target resolved against the request URL, verbatim."""
    m = _LINK_RE.search(response.headers.get("Link", ""))
    return urljoin(response.url, m.group(1)) if m else None


def api_path(path: str) -> str:
    """The last line of defence: a path this client builds must stay inside the Registry API
    (``/v2/...``, no ``..`` segment, no character a name cannot hold); anything else is refused."""
    if not _API_PATH.match(path) or any(seg in (".", "..") for seg in path.partition("?")[0].split("/")):
        raise InvalidReferenceError(f"refusing to send a request for {path[:120]!r}: not a Registry API path")
    return path


def server_url(url: str) -> str:
    """An absolute URL the registry gave (Location, Link) must stay under ``/v2/``."""
    parts = urlsplit(url)
    segments = unquote(parts.path).split("/")
    if parts.scheme not in ("http", "https") or not parts.path.startswith("/v2/") or {".", ".."} & set(segments):
        raise RegistryError(f"refusing to follow {strip_query(url)[:200]!r} given by the registry: "
                            "not a path under /v2/", url=strip_query(url))
    return url


def with_digest(location: str, digest: str) -> str:
    """Add ``digest=`` to an upload URL without touching its existing (opaque) query."""
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def media_type_of(response: requests.Response) -> str:
    return response.headers.get("Content-Type", "").split(";", 1)[0].strip()


class RegistryClient:
    """Registry API calls for one host. Thread-safe enough for parallel blob transfers only
    after the first call (which chooses the scheme)."""

    def __init__(
        self,
        host: str,
        *,
        credentials: Credentials | None = None,
        tls: TLSPolicy | None = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (15.0, 120.0),
        min_token_lifetime: float = 60.0,
        resume_attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        self.host = host
        self.tls = tls or tls_policy(host)
        # ``connections``: kept alive for reuse; size it to the threads that ask at once
        self.transport = Transport(self.tls, retry=retry, timeout=timeout, sleep=sleep, connections=connections)
        self.auth = Authenticator(host, credentials, self.transport, min_token_lifetime=min_token_lifetime)
        self.resume_attempts = resume_attempts
        self._base: str | None = None
        self._ping_lock = threading.Lock()

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``scheme://host``; the first use pings the registry to choose the scheme."""
        if self._base is None:
            with self._ping_lock:  # threads starting together ping once, and learn the challenge once
                if self._base is None:
                    self.ping()
        assert self._base is not None
        return self._base

    def ping(self) -> None:
        """``GET /v2/`` with auth: proves the registry answers and the credentials work.
        Tries HTTPS first; plain HTTP only where the TLS policy allows it (remembered)."""
        schemes = [self._base.split("://")[0]] if self._base else self.tls.schemes
        first_error: RegistryUnreachableError | None = None
        for scheme in schemes:
            base = f"{scheme}://{self.host}"
            try:
                # its small body ("{}") read, so the connection stays open for the next request
                read_capped(self.transport.request("GET", f"{base}/v2/", idempotent=True, auth=self.auth), 4096)
            except RegistryUnreachableError as exc:
                first_error = first_error or exc
                if "certificate verify failed" in str(exc):
                    raise
                continue
            except RegistryError:
                self._base = base  # it answered: the scheme is right, the request was not
                raise
            self._base = base
            return
        assert first_error is not None
        raise first_error

    def url(self, path: str) -> str:
        """An absolute URL as given (checked: under /v2/), or a path of ours on the base URL."""
        return server_url(path) if "://" in path else self.base_url + api_path(path)

    def request(self, method: str, path: str, *, scopes: tuple[str, ...] = (), idempotent: bool | None = None,
                **kw: Any) -> requests.Response:
        """One API request (path relative to the registry, or an absolute URL from a Location or
        Link), with auth and retries; raises RegistryError subclasses for error statuses."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD")
        return self.transport.request(method, self.url(path), idempotent=idempotent, auth=self.auth,
                                      scopes=scopes, **kw)

    def _pages(self, path: str, scopes: tuple[str, ...], key: str, **kw: Any) -> Iterator[list[Any]]:
        """The ``key`` list of every page of a paged answer, following ``Link: rel="next"``:
        same host and path only, never a page twice, at most MAX_PAGES pages and
        MAX_LIST_ENTRIES entries in all (a registry that pages forever ends in an error)."""
        first = self.url(path)
        url: str | None = first
        seen: set[bytes] = set()
        total = 0
        while url is not None:
            if len(seen) >= MAX_PAGES:
                raise RegistryError(f"GET {strip_query(first)}: more than {MAX_PAGES} pages; giving up")
            seen.add(hashlib.sha256(url.encode()).digest())
            response = self.request("GET", url, scopes=scopes, **kw)
            link = next_link(response)
            data = _json_body(response, MAX_LIST_BODY)
            items = data.get(key) if isinstance(data, dict) else None
            items = items if isinstance(items, list) else []
            total += len(items)
            if total > MAX_LIST_ENTRIES:
                raise RegistryError(f"GET {strip_query(first)}: more than {MAX_LIST_ENTRIES} entries; giving up")
            yield items
            url = self._next_page(link, first, seen)

    def _next_page(self, link: str | None, first: str, seen: set[bytes]) -> str | None:
        """The next page to fetch, refused when it leaves the list or goes back to a fetched one."""
        if link is None:
            return None
        there, here = urlsplit(link), urlsplit(first)
        if (there.scheme, there.netloc, there.path) != (here.scheme, here.netloc, here.path):
            raise RegistryError(f"GET {strip_query(first)}: refusing to follow a Link to another place "
                                f"(host {there.netloc[:100]!r}, path {there.path[:100]!r})", url=strip_query(first))
        if hashlib.sha256(link.encode()).digest() in seen:
            raise RegistryError(f"GET {strip_query(first)}: the Link header leads back to a page already "
                                f"fetched ({strip_query(link)[:200]}); giving up", url=strip_query(first))
        return link

    # -- listing --------------------------------------------------------------------------------

    def catalog(self, page_size: int = 1000) -> list[str]:
        """Every repository (``/v2/_catalog``, following Link pages), sorted. A name that is not
        a valid repository name is skipped with a warning (it must not reach a URL or a terminal)."""
        names: set[str] = set()
        for page in self._pages(f"/v2/_catalog?n={page_size}", (CATALOG_SCOPE,), "repositories"):
            names.update(_valid_names(page, validate_repository, f"repository name(s) in the catalog of {self.host}"))
        return sorted(names)

    def catalog_within(self, pages: int, page_size: int = 1000) -> list[str] | None:
        """``catalog()`` if it takes at most ``pages`` pages, else None (what was read is dropped)."""
        names: set[str] = set()
        for n, page in enumerate(self._pages(f"/v2/_catalog?n={page_size}", (CATALOG_SCOPE,), "repositories"), 1):
            if n > pages:
                return None
            names.update(_valid_names(page, validate_repository, f"repository name(s) in the catalog of {self.host}"))
        return sorted(names)

    def tags(self, repo: str) -> list[str]:
        """Every tag of ``repo`` (following Link pages), sorted; NotFoundError if unknown. A tag
        that is not a valid tag (``../x``, ``a/b``, ``v1\\n``) is skipped with a warning."""
        validate_repository(repo)
        tags: set[str] = set()
        for page in self._pages(f"/v2/{repo}/tags/list", (repository_scope(repo, "pull"),), "tags"):
            tags.update(_valid_names(page, validate_tag, f"tag(s) of {self.host}/{repo}"))
        return sorted(tags)

    def referrers(self, repo: str, digest: str) -> list[Descriptor] | None:
        """The OCI referrers API: descriptors of the manifests whose ``subject`` is ``digest``
        (following Link pages). None where the registry has no such API (404, as distribution
        2.8 answers), so the caller falls back to the ``sha256-<hex>`` tag schema."""
        validate_repository(repo)
        what = f"referrers of {self.host}/{repo}@{validate_digest(digest)}"
        pages = self._pages(f"/v2/{repo}/referrers/{digest}", (repository_scope(repo, "pull"),), "manifests",
                            headers={"Accept": OCI_INDEX})
        try:
            first = next(pages)
        except NotFoundError:
            return None
        return [validate(Descriptor, m, f"{what}: entry", RegistryError)
                for page in (first, *pages) for m in page if isinstance(m, dict)]

    # -- manifests ------------------------------------------------------------------------------

    def head_manifest(self, repo: str, ref: str) -> Descriptor:
        """Resolve a tag or digest to a descriptor with a HEAD (GET when the registry does not
        say the digest)."""
        validate_repository(repo)
        validate_tag_or_digest(ref)
        response = self.request("HEAD", f"/v2/{repo}/manifests/{ref}", scopes=(repository_scope(repo, "pull"),),
                                headers={"Accept": MANIFEST_ACCEPT})
        response.close()
        digest = response.headers.get("Docker-Content-Digest", "")
        size = header_int(response.headers.get("Content-Length"))
        if is_digest(ref):
            digest = ref
        if not (is_digest(digest) and size is not None and media_type_of(response)):
            return self.get_manifest(repo, ref).descriptor
        return Descriptor(media_type=media_type_of(response), digest=digest, size=size)

    def get_manifest(self, repo: str, ref: str) -> Manifest:
        """GET a manifest's exact bytes, verified against the digest asked for (or the
        ``Docker-Content-Digest`` of a tag); refuses more than MAX_MANIFEST_SIZE bytes."""
        validate_repository(repo)
        validate_tag_or_digest(ref)
        what = f"manifest {self.host}/{repo}{'@' if is_digest(ref) else ':'}{ref}"
        response = self.request("GET", f"/v2/{repo}/manifests/{ref}", scopes=(repository_scope(repo, "pull"),),
                                headers={"Accept": MANIFEST_ACCEPT})
        data = _read_limited(response, MAX_MANIFEST_SIZE, what)
        expected = ref if is_digest(ref) else response.headers.get("Docker-Content-Digest", "")
        expected = expected if is_digest(expected) else ""
        digester = Digester.for_digest(expected) if expected else Digester()
        digester.update(data)
        if expected and digester.digest() != expected:
            raise IntegrityError(what, expected, digester.digest())
        return Manifest(data, media_type_of(response), expected or digester.digest())

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        """PUT the exact bytes by digest or tag; returns the registry's digest for them."""
        validate_repository(repo)
        validate_tag_or_digest(ref)
        if len(data) > MAX_MANIFEST_SIZE:
            raise UnsupportedManifestError(f"manifest for {repo} is {len(data)} bytes; the limit is {MAX_MANIFEST_SIZE}")
        response = self.request("PUT", f"/v2/{repo}/manifests/{ref}", scopes=(repository_scope(repo, "pull", "push"),),
                                idempotent=is_digest(ref), headers={"Content-Type": media_type}, body=data)
        response.close()
        digester = Digester()
        digester.update(data)
        return response.headers.get("Docker-Content-Digest") or digester.digest()

    def delete_manifest(self, repo: str, ref: str) -> None:
        """DELETE a manifest by digest (which drops every tag pointing at it), or a tag where
        the registry allows that (OCI 1.1; distribution 2.8 answers 400). Raises RegistryError:
        NotFoundError when absent, status 405 / code UNSUPPORTED where deleting is disabled."""
        validate_repository(repo)
        validate_tag_or_digest(ref)
        self.request("DELETE", f"/v2/{repo}/manifests/{ref}", scopes=(repository_scope(repo, "pull", "delete"),),
                     idempotent=False).close()

    # -- blobs ----------------------------------------------------------------------------------

    def blob_size(self, repo: str, digest: str) -> int | None:
        """HEAD a blob: its size if present (-1 when not said), None if absent."""
        validate_repository(repo)
        try:
            response = self.request("HEAD", f"/v2/{repo}/blobs/{validate_digest(digest)}",
                                    scopes=(repository_scope(repo, "pull"),))
        except NotFoundError:
            return None
        response.close()
        size = header_int(response.headers.get("Content-Length"))
        return -1 if size is None else size

    def get_blob(self, repo: str, digest: str, size: int | None = None) -> VerifyingReader:
        """Stream a blob in bounded memory, resuming a dropped download with Range; size and
        digest are checked at EOF (IntegrityError names the digest)."""
        validate_repository(repo)
        validate_digest(digest)
        path = f"/v2/{repo}/blobs/{digest}"
        scopes = (repository_scope(repo, "pull"),)

        def reopen(offset: int) -> requests.Response:
            headers = {"Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            return self.request("GET", path, scopes=scopes, headers=headers, bulk=True)

        def body(start: int) -> ResumingBody:
            return ResumingBody(reopen, size, f"blob {digest}", attempts=self.resume_attempts, start=start)

        # reopen: an upload that resends or resumes fetches from the offset (Range), not from 0
        return VerifyingReader(body(0), digest, size, what=f"blob {digest}", reopen=body)

    # -- uploads (primitives: each takes the exact URL and returns the newest Location) ---------

    def start_upload(self, repo: str, *, mount: str | None = None, from_repo: str | None = None) -> UploadStatus:
        """POST a new upload session; with ``mount`` + ``from_repo`` try a cross-repository
        mount first (best effort: any failure falls back to a plain POST). The plain POST is
        retried like a GET (a connection reset, 5xx, 429): a session left unused costs nothing."""
        validate_repository(repo)
        path = f"/v2/{repo}/blobs/uploads/"
        push = (repository_scope(repo, "pull", "push"),)
        if mount and from_repo and from_repo != repo:
            try:
                return self._post_upload(f"{path}?mount={validate_digest(mount)}&from={validate_repository(from_repo)}",
                                         push + (repository_scope(from_repo, "pull"),), retry=False)
            except RegistryError:
                pass
        return self._post_upload(path, push, retry=True)

    def _post_upload(self, path: str, scopes: tuple[str, ...], *, retry: bool) -> UploadStatus:
        response = self.request("POST", path, scopes=scopes, idempotent=retry)
        response.close()
        return _upload_status(response, mounted=response.status_code == 201)

    def patch_upload(self, location: str, repo: str, body: Body, start: int, length: int) -> UploadStatus:
        """PATCH one chunk (``Content-Range: start-end``) to ``location``."""
        headers = {"Content-Type": "application/octet-stream", "Content-Range": f"{start}-{start + length - 1}"}
        response = self.request("PATCH", location, scopes=(repository_scope(repo, "pull", "push"),),
                                idempotent=False, headers=headers, body=body, length=length)
        response.close()
        return _upload_status(response)

    def finish_upload(self, location: str, repo: str, digest: str, body: Body = None, length: int = 0) -> UploadStatus:
        """PUT ``<location>&digest=`` with the final bytes (or none): completes the blob."""
        headers = {"Content-Type": "application/octet-stream"}
        if body is None:
            body, headers["Content-Length"] = b"", "0"
        response = self.request("PUT", with_digest(location, validate_digest(digest)),
                                scopes=(repository_scope(repo, "pull", "push"),), idempotent=False,
                                headers=headers, body=body, length=length)
        response.close()
        return _upload_status(response)

    def upload_status(self, location: str, repo: str) -> UploadStatus:
        """GET the upload session: its Range and newest Location (NotFoundError when gone)."""
        response = self.request("GET", location, scopes=(repository_scope(repo, "pull", "push"),))
        response.close()
        return _upload_status(response)

    def cancel_upload(self, location: str, repo: str) -> None:
        """DELETE the session, ignoring every failure (distribution wants a delete scope)."""
        try:
            self.request("DELETE", location, scopes=(repository_scope(repo, "pull", "push"),),
                         idempotent=False).close()
        except RegistryError:
            pass


def _valid_names(items: list[Any], check: Callable[[str], str], what: str) -> list[str]:
    """The items that pass ``check``; the others are left out with one warning naming the first."""
    good, bad = [], []
    for item in items:
        try:
            good.append(check(item))
        except InvalidReferenceError:
            bad.append(item)
    if bad:
        log.warning("skipping %d invalid %s, e.g. %s", len(bad), what, repr(bad[0])[:100])
    return good


def _upload_status(response: requests.Response, mounted: bool = False) -> UploadStatus:
    location = response.headers.get("Location")
    return UploadStatus(
        location=urljoin(response.url, location) if location else response.url,
        range_end=parse_range_end(response.headers.get("Range")),
        mounted=mounted,
        digest=response.headers.get("Docker-Content-Digest"),
        min_chunk=header_int(response.headers.get("OCI-Chunk-Min-Length")),
    )


def _read_limited(response: requests.Response, limit: int, what: str,
                  too_large: type[Exception] = UnsupportedManifestError) -> bytes:
    """Read a whole (small) body, refusing more than ``limit`` bytes with a clear error."""
    declared = header_int(response.headers.get("Content-Length"))
    if declared is not None and declared > limit:
        response.close()
        raise too_large(f"{what} is {declared} bytes; refusing more than {limit}")
    parts, total = [], 0
    try:
        for chunk in response.iter_content(1 << 16):
            total += len(chunk)
            if total > limit:
                raise too_large(f"{what} is larger than {limit} bytes; refusing it")
            parts.append(chunk)
    except (requests.RequestException, OSError) as exc:
        raise RegistryUnreachableError(f"reading {what} failed: {type(exc).__name__}") from None
    finally:
        response.close()
    return b"".join(parts)


def _json_body(response: requests.Response, limit: int) -> Any:
    """A registry's JSON answer (a list page, a referrers index), read and parsed within bounds."""
    what = f"GET {strip_query(response.url)}: answer"
    return load_json(_read_limited(response, limit, what, RegistryError), what, RegistryError, limit)
