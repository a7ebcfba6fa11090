"""A scripted blob-upload registry that follows the OCI distribution-spec where distribution 2.8
does not: for upload behaviour the real registry in the bed cannot show.

- ``POST /v2/<name>/blobs/uploads/``: 202, ``Location: /v2/<name>/blobs/uploads/<uuid>`` (no
  ``_state``: status works with any Location of the session), ``Range: 0-0``, and
  ``OCI-Chunk-Min-Length`` when ``min_chunk`` is set.
- ``PATCH``: ``Content-Range: a-b`` must start at the bytes held, else **416** (no Range or
  Location on it, like distribution 3); a body over ``max_chunk`` gets GHCR's 416
  REQUESTED_RANGE_NOT_SATISFIABLE; a length that disagrees with the range gets 400 SIZE_INVALID.
  Bytes are kept as they arrive, so a PATCH broken midway leaves a partial chunk (as distribution
  does), which ``GET`` status then reports. Success: ``patch_status`` (202, or 201 like ECR) with
  Location and ``Range: 0-<end>``.
- ``GET``/``HEAD`` on the upload: 204 with Location and Range; 404 BLOB_UPLOAD_UNKNOWN when gone.
- ``PUT ?digest=``: appends the body, checks the digest: 201 (blob stored, session closed) or 400
  DIGEST_INVALID. ``DELETE`` cancels. ``HEAD``/``GET /v2/<name>/blobs/<digest>`` serve blobs.

A request on a session waits for the one before it on that session (a per-session lock), so a
status query after a broken PATCH sees every byte that PATCH delivered. Every request is recorded
in ``requests`` (method, path, status, body bytes received, Content-Range).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.bed.serve import Served

PIECE = 64 * 1024
_UPLOAD_RE = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[0-9a-f-]*)$")
_BLOB_RE = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")


@dataclass
class Request:
    method: str
    path: str
    status: int = 0
    body_bytes: int = 0
    content_range: str | None = None


@dataclass
class Session:
    name: str
    data: bytearray = field(default_factory=bytearray)
    lock: threading.Lock = field(default_factory=threading.Lock)


class SpecRegistry(Served):
    """``SpecRegistry(min_chunk=..., max_chunk=..., patch_status=201).start()``; ``host``/``url``."""

    tls = False

    def __init__(self, *, min_chunk: int | None = None, max_chunk: int | None = None,
                 patch_status: int = 202) -> None:
        self.min_chunk = min_chunk
        self.max_chunk = max_chunk
        self.patch_status = patch_status
        self.sessions: dict[str, Session] = {}
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    server_name = "spec-registry"

    def handler(self) -> type:
        return _Handler

    def requests_of(self, method: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def reg(self) -> SpecRegistry:
        return self.server.owner  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    # -- plumbing -------------------------------------------------------------------------------
    def _record(self) -> Request:
        request = Request(self.command, urlsplit(self.path).path,
                          content_range=self.headers.get("Content-Range"))
        with self.reg.lock:
            self.reg.requests.append(request)
        return request

    def _reply(self, request: Request, status: int, headers: dict[str, str] | None = None,
               body: bytes = b"") -> None:
        request.status = status
        self.send_response_only(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, request: Request, status: int, code: str, message: str = "") -> None:
        body = json.dumps({"errors": [{"code": code, "message": message or code.lower()}]}).encode()
        self._reply(request, status, {"Content-Type": "application/json"}, body)

    def _body(self, request: Request, sink: bytearray | None) -> bool:
        """Read the request body into ``sink`` (or discard it); False if the client went away."""
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            piece = self.rfile.read(min(PIECE, remaining))
            if not piece:
                self.close_connection = True
                return False
            if sink is not None:
                sink.extend(piece)
            request.body_bytes += len(piece)
            remaining -= len(piece)
        return True

    def _session_headers(self, name: str, sid: str, session: Session) -> dict[str, str]:
        end = max(len(session.data) - 1, 0)
        return {"Location": f"/v2/{name}/blobs/uploads/{sid}", "Range": f"0-{end}", "Docker-Upload-UUID": sid}

    # -- routes ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._route()

    do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def _route(self) -> None:
        request = self._record()
        path = request.path
        if path == "/v2/" and self.command in ("GET", "HEAD"):
            return self._reply(request, 200, {"Content-Type": "application/json"}, b"{}")
        if m := _BLOB_RE.match(path):
            return self._blob(request, m["name"], m["digest"])
        if (m := _UPLOAD_RE.match(path)) and self.command == "POST" and not m["id"]:
            return self._start(request, m["name"])
        if m and m["id"]:
            return self._on_session(request, m["name"], m["id"])
        self._body(request, None)
        self._error(request, 404, "NAME_UNKNOWN")

    def _blob(self, request: Request, name: str, digest: str) -> None:
        data = self.reg.blobs.get((name, digest))
        if data is None or self.command not in ("GET", "HEAD"):
            return self._error(request, 404, "BLOB_UNKNOWN")
        request.status = 200
        self.send_response_only(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Docker-Content-Digest", digest)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data)

    def _start(self, request: Request, name: str) -> None:
        self._body(request, None)
        sid = str(uuid.uuid4())
        session = Session(name)
        with self.reg.lock:
            self.reg.sessions[sid] = session
        headers = self._session_headers(name, sid, session)
        if self.reg.min_chunk:
            headers["OCI-Chunk-Min-Length"] = str(self.reg.min_chunk)
        self._reply(request, 202, headers)

    def _on_session(self, request: Request, name: str, sid: str) -> None:
        session = self.reg.sessions.get(sid)
        if session is None or session.name != name:
            self._body(request, None)
            return self._error(request, 404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry")
        with session.lock:
            if self.command in ("GET", "HEAD"):
                return self._reply(request, 204, self._session_headers(name, sid, session))
            if self.command == "DELETE":
                self.reg.sessions.pop(sid, None)
                return self._reply(request, 204)
            if self.command == "PATCH":
                return self._patch(request, name, sid, session)
            if self.command == "PUT":
                return self._put(request, name, sid, session)
            self._body(request, None)
            self._error(request, 405, "UNSUPPORTED")

    def _range_error(self, request: Request, session: Session) -> tuple[int, str, str] | None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.reg.max_chunk and length > self.reg.max_chunk:
            return (416, "REQUESTED_RANGE_NOT_SATISFIABLE", "the request body is too large")
        m = re.fullmatch(r"(\d+)-(\d+)", request.content_range or "")
        if request.content_range is not None and not m:
            return (400, "RANGE_INVALID", "invalid content range")
        if m and int(m[1]) != len(session.data):
            return (416, "RANGE_INVALID", "invalid content range")
        if m and length and int(m[2]) - int(m[1]) + 1 != length:
            return (400, "SIZE_INVALID", "content range and length disagree")
        return None

    def _patch(self, request: Request, name: str, sid: str, session: Session) -> None:
        problem = self._range_error(request, session)
        if problem:
            self._body(request, None)
            return self._error(request, *problem)
        if not self._body(request, session.data):
            return  # broken midway: the bytes that came stay, no answer
        self._reply(request, self.reg.patch_status, self._session_headers(name, sid, session))

    def _put(self, request: Request, name: str, sid: str, session: Session) -> None:
        has_body = int(self.headers.get("Content-Length") or 0) > 0
        problem = self._range_error(request, session) if has_body and request.content_range else None
        if problem:
            self._body(request, None)
            return self._error(request, *problem)
        if not self._body(request, session.data):
            return
        digest = parse_qs(urlsplit(self.path).query).get("digest", [""])[0]
        actual = "sha256:" + hashlib.sha256(session.data).hexdigest()
        if digest != actual:
            return self._error(request, 400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        with self.reg.lock:
            self.reg.blobs[(name, digest)] = bytes(session.data)
            self.reg.sessions.pop(sid, None)
        self._reply(request, 201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})
