"""An HTTP fault proxy in front of a plain-HTTP registry, with scriptable rules.

It forwards each request on a new upstream connection, keeping the client's ``Host`` header so the
registry builds its ``Location`` URLs through the proxy. Request bodies (``Content-Length`` or
chunked) and response bodies are streamed in 64 KiB pieces. Every exchange is recorded
(method, path, status, request/response body bytes, rule applied) and ``stats()`` sums them per
method and path pattern, e.g. to prove a resumed upload sent only the missing bytes.

Rules (first matching active rule wins; ``skip`` ignores the first matches, ``times`` bounds how
often it fires, None meaning always):

- ``respond(status, retry_after=...)``: answer without forwarding (429 TOOMANYREQUESTS with a
  ``Retry-After`` of seconds or an HTTP-date, 503 UNAVAILABLE, ...);
- ``corrupt_response(offset)``: flip one byte of the response body (length unchanged);
- ``cut_response(after)``: send the headers and ``after`` body bytes, then close the connection;
- ``cut_request(after)``: forward only ``after`` request-body bytes upstream, then close both
  connections without an answer (a broken upload, as the registry sees it); with ``after=0``
  also a request without a body (a connection reset, as a restarting registry gives);
- ``stall(seconds, after=None)``: wait before forwarding, or after ``after`` response bytes;
- ``drip(rate, after=0)``: send the response body after its first ``after`` bytes at ``rate``
  bytes per second (a registry or middlebox that never stops but hardly moves);
- ``body_timeout(seconds)``: close both connections, without an answer, when no request-body byte
  arrives for ``seconds`` (nginx's ``client_body_timeout`` in front of a registry).

All sockets have timeouts (``timeout``, 30 s by default). ``delay`` (seconds, default 0) is added
in each direction of every exchange, before the request goes upstream and before the answer comes
back: a registry in another building (``delay=0.01`` is 20 ms of round-trip time) for benchmarks.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Iterator

from tests.bed.serve import Served

PIECE = 64 * 1024
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-connection", "proxy-authenticate", "proxy-authorization"}
ERROR_CODES = {429: "TOOMANYREQUESTS", 503: "UNAVAILABLE", 500: "UNKNOWN", 502: "UNAVAILABLE",
               504: "UNAVAILABLE", 401: "UNAUTHORIZED", 404: "NAME_UNKNOWN"}


@dataclass
class Rule:
    action: str  # respond | corrupt_response | cut_response | cut_request | stall | drip | body_timeout
    method: str | None = None
    path: str = ""  # regex searched in the path (without the query string)
    times: int | None = 1
    skip: int = 0
    status: int = 503
    retry_after: str | None = None
    offset: int = 0  # corrupt_response: where; drip: bytes per second
    after: int | None = None
    seconds: float = 0.0
    body: bytes | None = None  # respond: this body instead of a registry error
    content_type: str = "application/json"
    seen: int = 0  # matching requests so far
    fired: int = 0  # times applied

    def matches(self, method: str, path: str) -> bool:
        return (self.method in (None, method)) and re.search(self.path, path) is not None

    def take(self) -> bool:
        """Count one matching request; True if the rule applies to it."""
        self.seen += 1
        if self.seen <= self.skip or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


@dataclass
class Exchange:
    method: str
    path: str
    status: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    rule: str | None = None


@dataclass
class Stats:
    requests: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    statuses: list[int] = field(default_factory=list)


class FaultProxy(Served):
    """``FaultProxy("127.0.0.1:5000").start()``; then use ``proxy.host``/``proxy.url``."""

    def __init__(self, upstream: str, timeout: float = 30.0, delay: float = 0.0) -> None:
        self.upstream = upstream
        self.timeout = timeout
        self.delay = delay  # seconds added each way
        self.rules: list[Rule] = []
        self.exchanges: list[Exchange] = []
        self.connections = 0  # TCP connections accepted from clients
        self.lock = threading.Lock()

    server_name = "fault-proxy"

    def handler(self) -> type:
        return _ProxyHandler

    # -- rules --------------------------------------------------------------------------------
    def add(self, rule: Rule) -> Rule:
        with self.lock:
            self.rules.append(rule)
        return rule

    def respond(self, status: int = 503, method: str | None = None, path: str = "", *,
                times: int | None = 1, skip: int = 0, retry_after: str | int | None = None,
                body: bytes | None = None, content_type: str = "application/json") -> Rule:
        """Answer instead of the registry: a registry error body for ``status``, or ``body``
        (to play an API distribution 2.8 lacks, such as referrers)."""
        ra = None if retry_after is None else str(retry_after)
        return self.add(Rule("respond", method, path, times, skip, status=status, retry_after=ra,
                             body=body, content_type=content_type))

    def corrupt_response(self, method: str | None = None, path: str = "", *, offset: int = 0,
                         times: int | None = 1, skip: int = 0) -> Rule:
        return self.add(Rule("corrupt_response", method, path, times, skip, offset=offset))

    def cut_response(self, method: str | None = None, path: str = "", *, after: int = 0,
                     times: int | None = 1, skip: int = 0) -> Rule:
        return self.add(Rule("cut_response", method, path, times, skip, after=after))

    def cut_request(self, method: str | None = None, path: str = "", *, after: int = 0,
                    times: int | None = 1, skip: int = 0) -> Rule:
        return self.add(Rule("cut_request", method, path, times, skip, after=after))

    def stall(self, seconds: float, method: str | None = None, path: str = "", *,
              after: int | None = None, times: int | None = 1, skip: int = 0) -> Rule:
        return self.add(Rule("stall", method, path, times, skip, seconds=seconds, after=after))

    def drip(self, rate: int, method: str | None = None, path: str = "", *, after: int = 0,
             times: int | None = 1, skip: int = 0) -> Rule:
        return self.add(Rule("drip", method, path, times, skip, offset=rate, after=after))

    def body_timeout(self, seconds: float, method: str | None = None, path: str = "", *,
                     times: int | None = None, skip: int = 0) -> Rule:
        return self.add(Rule("body_timeout", method, path, times, skip, seconds=seconds))

    def clear(self) -> None:
        """Drop all rules and records."""
        with self.lock:
            self.rules.clear()
            self.exchanges.clear()

    def rule_for(self, method: str, path: str) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.matches(method, path) and rule.take():
                    return rule
        return None

    # -- observations -------------------------------------------------------------------------
    def record(self, exchange: Exchange) -> None:
        with self.lock:
            self.exchanges.append(exchange)

    def stats(self, method: str | None = None, path: str = "") -> Stats:
        """Totals over the exchanges matching ``method`` (None: any) and the path regex."""
        out = Stats()
        with self.lock:
            for ex in self.exchanges:
                if method in (None, ex.method) and re.search(path, ex.path):
                    out.requests += 1
                    out.request_bytes += ex.request_bytes
                    out.response_bytes += ex.response_bytes
                    out.statuses.append(ex.status)
        return out


class _Cut(Exception):
    """Close the client connection now, without (the rest of) an answer."""


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def proxy(self) -> FaultProxy:
        return self.server.owner  # type: ignore[attr-defined]

    def setup(self) -> None:
        self.timeout = self.server.owner.timeout  # type: ignore[attr-defined]
        with self.proxy.lock:
            self.proxy.connections += 1
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (_Cut, ConnectionError, socket.timeout):
            self.close_connection = True
            _hard_close(self.connection)

    def __getattr__(self, name: str):
        if name.startswith("do_"):
            return self._proxy_request
        raise AttributeError(name)

    def _proxy_request(self) -> None:
        path = self.path.split("?", 1)[0]
        exchange = Exchange(self.command, path)
        rule = self.proxy.rule_for(self.command, path)
        exchange.rule = rule.action if rule else None
        self.proxy.record(exchange)
        if rule and rule.action == "respond":
            for piece in self._body_pieces():
                exchange.request_bytes += len(piece)
            return self._answer(rule, exchange)
        if rule and rule.action == "stall" and rule.after is None:
            time.sleep(rule.seconds)
        upstream = http.client.HTTPConnection(self.proxy.upstream, timeout=self.proxy.timeout)
        try:
            if self.proxy.delay:
                time.sleep(self.proxy.delay)  # client -> registry
            self._forward_request(upstream, rule, exchange)
            response = upstream.getresponse()
            if self.proxy.delay:
                time.sleep(self.proxy.delay)  # registry -> client
            self._relay_response(response, rule, exchange)
        finally:
            upstream.close()

    def _forward_request(self, upstream: http.client.HTTPConnection, rule: Rule | None,
                         exchange: Exchange) -> None:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for key, value in self.headers.items():
            if key.lower() not in HOP_BY_HOP:
                upstream.putheader(key, value)
        if chunked:
            upstream.putheader("Transfer-Encoding", "chunked")
        upstream.endheaders()
        limit = rule.after if rule and rule.action == "cut_request" else None
        if rule and rule.action == "body_timeout":
            self.connection.settimeout(rule.seconds)
        try:
            self._forward_body(upstream, limit, chunked, exchange)
        except (TimeoutError, socket.timeout):
            exchange.status = 408  # recorded; the client gets no answer, as from a closed proxy
            upstream.close()
            raise _Cut() from None
        finally:
            self.connection.settimeout(self.proxy.timeout)

    def _forward_body(self, upstream: http.client.HTTPConnection, limit: int | None, chunked: bool,
                      exchange: Exchange) -> None:
        if limit == 0:
            upstream.close()
            raise _Cut()
        for piece in self._body_pieces():
            if limit is not None and exchange.request_bytes + len(piece) >= limit:
                piece = piece[: limit - exchange.request_bytes]
                _send(upstream, piece, chunked)
                exchange.request_bytes += len(piece)
                upstream.close()
                raise _Cut()
            _send(upstream, piece, chunked)
            exchange.request_bytes += len(piece)
        if chunked:
            upstream.send(b"0\r\n\r\n")

    def _body_pieces(self) -> Iterator[bytes]:
        """The request body as it arrives (Content-Length or chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            yield from _read_chunked(self.rfile)
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            piece = self.rfile.read(min(PIECE, remaining))
            if not piece:
                raise ConnectionError("client closed mid-body")
            remaining -= len(piece)
            yield piece

    def _relay_response(self, response: http.client.HTTPResponse, rule: Rule | None,
                        exchange: Exchange) -> None:
        exchange.status = response.status
        length = response.getheader("Content-Length")
        pieces = _response_pieces(response)
        if length is None and self.command != "HEAD":  # chunked upstream: buffer (small JSON)
            body = response.read()
            pieces, length = iter([body]), str(len(body))
        self.send_response_only(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self._write_body(pieces, rule, exchange)

    def _write_body(self, pieces: Iterator[bytes], rule: Rule | None, exchange: Exchange) -> None:
        action = rule.action if rule else None
        for piece in pieces:
            start, end = exchange.response_bytes, exchange.response_bytes + len(piece)
            if action == "corrupt_response" and start <= rule.offset < end:
                i = rule.offset - start
                piece = piece[:i] + bytes([piece[i] ^ 0xFF]) + piece[i + 1:]
            if action == "drip" and end > rule.after:
                self._drip(piece, max(0, rule.after - start), rule.offset, exchange)
                continue
            if action in ("cut_response", "stall") and rule.after is not None and end >= rule.after:
                self.wfile.write(piece[: rule.after - start])
                exchange.response_bytes = rule.after
                if action == "cut_response":
                    raise _Cut()
                time.sleep(rule.seconds)
                piece, action = piece[rule.after - start:], None
                start = exchange.response_bytes
            self.wfile.write(piece)
            exchange.response_bytes = start + len(piece)

    def _drip(self, piece: bytes, fast: int, rate: int, exchange: Exchange) -> None:
        """Write ``piece``: its first ``fast`` bytes at once, the rest at ``rate`` bytes/s."""
        step = max(1, rate // 10)
        self.wfile.write(piece[:fast])
        exchange.response_bytes += fast
        for i in range(fast, len(piece), step):
            time.sleep(step / rate)
            self.wfile.write(piece[i:i + step])
            self.wfile.flush()
            exchange.response_bytes += len(piece[i:i + step])

    def _answer(self, rule: Rule, exchange: Exchange) -> None:
        code = ERROR_CODES.get(rule.status, "UNKNOWN")
        body = rule.body if rule.body is not None else json.dumps(
            {"errors": [{"code": code, "message": f"fault proxy: {rule.status}", "detail": None}]}).encode()
        exchange.status, exchange.response_bytes = rule.status, len(body)
        self.send_response_only(rule.status)
        self.send_header("Content-Type", rule.content_type)
        self.send_header("Content-Length", str(len(body)))
        if rule.retry_after is not None:
            self.send_header("Retry-After", rule.retry_after)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _send(upstream: http.client.HTTPConnection, piece: bytes, chunked: bool) -> None:
    if chunked and piece:
        upstream.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
    elif piece:
        upstream.send(piece)


def _read_chunked(rfile) -> Iterator[bytes]:
    while True:
        size_line = rfile.readline(1024)
        if not size_line:
            raise ConnectionError("client closed mid-chunk")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return
        remaining = size
        while remaining > 0:
            piece = rfile.read(min(PIECE, remaining))
            if not piece:
                raise ConnectionError("client closed mid-chunk")
            remaining -= len(piece)
            yield piece
        rfile.readline(1024)


def _response_pieces(response: http.client.HTTPResponse) -> Iterator[bytes]:
    while piece := response.read(PIECE):
        yield piece


def _hard_close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
