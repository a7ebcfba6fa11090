"""A threaded loopback HTTP server in a background thread (token server, fault proxy, scripted
registry), and ``Served``: the start/stop life cycle those three share."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.bed.certs import TlsFiles


class BackgroundServer:
    """Serves ``handler`` on a free 127.0.0.1 port; ``handler`` finds ``owner`` as
    ``self.server.owner``. HTTPS when ``tls_files`` is given."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], owner: object, name: str,
                 tls_files: TlsFiles | None = None) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.owner = owner  # type: ignore[attr-defined]
        if tls_files:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls_files.server_cert, tls_files.server_key)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name=name, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class Served:
    """Start/stop/``with`` and the address of an object whose requests a BackgroundServer
    handles. Subclasses set ``server_name`` and return their handler class from ``handler()``."""

    server_name = "server"
    tls_files: TlsFiles | None = None
    _server: BackgroundServer | None = None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self):
        self._server = BackgroundServer(self.handler(), self, self.server_name, self.tls_files)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_files else 'http'}://{self.host}"
