"""A scripted hostile registry: it answers whatever a test scripts (tags lists with path-like tags,
catalogs that page forever or loop or link to another host, deeply nested JSON, malformed
descriptors) and records every request it receives, so a test can count them and check that
none left ``/v2/<repository>/``.

``HostileRegistry(script)``: ``script(method, path, query)`` returns an ``Answer`` or None (404).
``GET /v2/`` always answers 200. ``serve_image`` scripts one image (manifest by tag and digest,
and its blobs) for the rest of a script to fall back on.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from tests.bed.serve import Served


@dataclass
class Answer:
    status: int = 200
    body: Any = b""  # bytes as they are; anything else is sent as JSON
    headers: dict[str, str] = field(default_factory=dict)


Script = Callable[[str, str, dict[str, list[str]]], "Answer | None"]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def serve_image(repo: str, tag: str, manifest: bytes, blobs: dict[str, bytes],
                media_type: str = "application/vnd.oci.image.manifest.v1+json") -> Script:
    """A script serving ``repo:tag`` (and by digest) with ``manifest`` and ``blobs``."""
    digest = digest_of(manifest)

    def script(method: str, path: str, query: dict[str, list[str]]) -> Answer | None:
        if path in (f"/v2/{repo}/manifests/{tag}", f"/v2/{repo}/manifests/{digest}"):
            return Answer(200, manifest, {"Content-Type": media_type, "Docker-Content-Digest": digest})
        if path == f"/v2/{repo}/tags/list":
            return Answer(200, {"name": repo, "tags": [tag]})
        for d, data in blobs.items():
            if path == f"/v2/{repo}/blobs/{d}":
                return Answer(200, data, {"Content-Type": "application/octet-stream"})
        return None

    return script


class HostileRegistry(Served):
    server_name = "hostile-registry"

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[tuple[str, str]] = []  # (method, raw request target)
        self.lock = threading.Lock()

    def handler(self) -> type:
        return _Handler

    @property
    def paths(self) -> list[str]:
        with self.lock:
            return [p for _, p in self.requests]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _handle(self) -> None:
        reg: HostileRegistry = self.server.owner  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with reg.lock:
            reg.requests.append((self.command, self.path))
        parts = urlsplit(self.path)
        answer = Answer(200, b"{}") if parts.path == "/v2/" else reg.script(self.command, parts.path, parse_qs(parts.query))
        answer = answer or Answer(404, {"errors": [{"code": "NAME_UNKNOWN", "message": "not here"}]})
        body = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        self.send_response_only(answer.status)
        headers = {"Content-Type": "application/json", **answer.headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle
