"""Real Debian ``docker-registry`` (distribution 2.8.2) processes on free loopback ports.

A ``Registry`` owns a temporary directory: storage, config, log, certificates. Modes:

- ``plain``: HTTP, no auth (``tls=True`` serves HTTPS without auth);
- ``htpasswd``: Basic auth over TLS with a bcrypt htpasswd file made by ``htpasswd -Bbn``
  (``apt-get install apache2-utils``);
- ``token``: Bearer auth against a ``TokenServer`` (``tests.bed.tokens``) started alongside
  (HTTP by default, ``tls=True`` puts both on HTTPS).

The config is written as JSON (YAML accepts it). It always has a fixed ``http.secret`` so
``restart()`` keeps upload ``_state`` URLs valid, ``storage.delete.enabled: true`` (``delete=False``
turns it off: every DELETE answers 405 UNSUPPORTED), and no upload purging. Nothing is skipped: a
missing binary or a registry that does not answer raises
``RegistryStartError`` with the reason and the tail of the log.
"""

from __future__ import annotations

import atexit
import copy
import ctypes
import http.client
import json
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.bed.certs import TlsFiles, signer_cert_pem, write_tls_files
from tests.bed.tokens import TokenServer

REGISTRY_BIN = "/usr/bin/docker-registry"
HTPASSWD_BIN = "htpasswd"
SECRET = "transfer-test-bed-fixed-http-secret-0123456789"
MODES = ("plain", "htpasswd", "token")
DEFAULT_USERS = {"alice": "alice-secret-pw"}
_live: set[subprocess.Popen] = set()


class RegistryStartError(RuntimeError):
    """The registry (or a tool it needs) could not be started; the message says why."""


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Child side of Popen: get SIGTERM when the test process dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        proc.kill()


def htpasswd_line(username: str, password: str) -> str:
    """A bcrypt htpasswd line (the only hash distribution accepts), from apache2-utils' htpasswd."""
    if shutil.which(HTPASSWD_BIN) is None:
        raise RegistryStartError("htpasswd not found: install it with `apt-get install apache2-utils`")
    out = subprocess.run(
        [HTPASSWD_BIN, "-Bbn", "-C", "4", username, password],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return out.stdout.strip() + "\n"


class Registry:
    """One ``docker-registry serve CONFIG`` process. Use as a context manager or call
    ``start()``/``stop()``. ``restart()`` keeps port, storage and secret."""

    def __init__(self, workdir: Path, mode: str = "plain", *, tls: bool | None = None,
                 users: dict[str, str] | None = None, relative_urls: bool = False,
                 config: dict[str, Any] | None = None, start_timeout: float = 15.0, delete: bool = True,
                 **token_options: Any) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown registry mode {mode!r}; expected one of {MODES}")
        self.mode = mode
        self.workdir = Path(workdir)
        self.tls = (mode == "htpasswd") if tls is None else tls
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.relative_urls = relative_urls
        self.extra_config = config or {}
        self.delete = delete
        self.start_timeout = start_timeout
        self.token_options = token_options
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "registry.log"
        self.config_path = self.workdir / "config.yml"
        self.port = 0
        self.tls_files: TlsFiles | None = None
        self.token_server: TokenServer | None = None
        self.proc: subprocess.Popen | None = None
        self.start_seconds = 0.0
        self.host_override: str | None = None  # set on views made by via()
        self.seeded: dict = {}  # {ref: skopeo.Seeded}, filled by the session fixtures

    # -- addresses and credentials ------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.host_override or f"127.0.0.1:{self.port}"

    def via(self, host: str) -> "Registry":
        """A view of this registry reached at ``host`` (e.g. a ``FaultProxy``): same mode,
        credentials and certificates; ``stop()``/``restart()`` on the view do nothing."""
        view = copy.copy(self)
        view.host_override = host
        return view

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def ca_cert_path(self) -> Path | None:
        return self.tls_files.ca_cert if self.tls_files else None

    @property
    def cert_dir(self) -> Path | None:
        """Directory with only ``ca.crt``: skopeo ``--src-cert-dir``/``--dest-cert-dir``."""
        return self.tls_files.cert_dir if self.tls_files else None

    @property
    def verify(self) -> str | bool:
        """The ``verify=`` value for requests: the CA file for TLS registries."""
        return str(self.ca_cert_path) if self.tls_files else True

    @property
    def username(self) -> str | None:
        return next(iter(self.users), None) if self.mode != "plain" else None

    @property
    def password(self) -> str | None:
        return self.users[self.username] if self.username else None

    @property
    def auth(self) -> tuple[str, str] | None:
        """``(username, password)`` or None for a plain registry."""
        return (self.username, self.password) if self.username else None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- life cycle ---------------------------------------------------------------------------
    def __enter__(self) -> "Registry":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "Registry":
        """Prepare files, pick a free port, start the process and wait for ``/v2/``."""
        if not Path(REGISTRY_BIN).exists():
            raise RegistryStartError(
                f"{REGISTRY_BIN} not found: install Debian's registry with `apt-get install docker-registry`")
        began = time.monotonic()
        self._prepare()
        try:
            self._start_on_free_port()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        if self.tls:
            self.tls_files = write_tls_files(self.workdir / "tls")
        if self.mode == "htpasswd":
            lines = [htpasswd_line(u, p) for u, p in self.users.items()]
            (self.workdir / "htpasswd").write_text("".join(lines))
        if self.mode == "token":
            (self.workdir / "token-signer.pem").write_bytes(signer_cert_pem())
            self.token_server = TokenServer(
                users=self.users, tls_files=self.tls_files, **self.token_options).start()

    def _start_on_free_port(self, attempts: int = 3) -> None:
        for attempt in range(attempts):
            self.port = free_port()
            try:
                self._launch()
                return
            except RegistryStartError as exc:
                if "address already in use" not in str(exc) or attempt == attempts - 1:
                    raise

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 5 s) and the token server. Idempotent."""
        if self.host_override:
            return
        self._stop_process()
        if self.token_server is not None:
            self.token_server.stop()
            self.token_server = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same storage, secret and token server.
        The new process dies with the thread that calls this (PR_SET_PDEATHSIG follows threads):
        call it from a thread that lives as long as the registry is needed."""
        if self.host_override:
            return
        self._stop_process()
        self._launch()

    def _stop_process(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        _live.discard(proc)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def _launch(self) -> None:
        self.config_path.write_text(json.dumps(self.config(), indent=1))
        with open(self.log_path, "ab") as log:
            log.write(f"--- starting on 127.0.0.1:{self.port}\n".encode())
            self.proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(self.config_path)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        _live.add(self.proc)
        try:
            self._wait_ready()
        except RegistryStartError:
            self._stop_process()
            raise

    # -- config and readiness -----------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The registry configuration (distribution 2.8 keys) for the current port."""
        http_cfg: dict[str, Any] = {"addr": f"127.0.0.1:{self.port}", "secret": SECRET,
                                    "relativeurls": self.relative_urls}
        if self.tls_files:
            http_cfg["tls"] = {"certificate": str(self.tls_files.server_cert),
                               "key": str(self.tls_files.server_key)}
        cfg: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.data_dir)},
                        "delete": {"enabled": self.delete},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": http_cfg,
        }
        if self.mode == "htpasswd":
            cfg["auth"] = {"htpasswd": {"realm": "transfer-test", "path": str(self.workdir / "htpasswd")}}
        if self.mode == "token":
            cfg["auth"] = {"token": self.token_server.registry_config(self.workdir / "token-signer.pem")}
        return _merge(cfg, self.extra_config)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RegistryStartError(
                    f"docker-registry exited with {self.proc.returncode} on {self.host}; log tail:\n"
                    f"{self.log_tail()}")
            try:
                status = self._probe()
                if status in (200, 401):
                    return
                last_error = f"GET /v2/ answered {status}"
            except OSError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.02)
        raise RegistryStartError(
            f"docker-registry on {self.host} not ready after {self.start_timeout} s ({last_error});"
            f" log tail:\n{self.log_tail()}")

    def _probe(self) -> int:
        if self.tls_files:
            ctx = ssl.create_default_context(cafile=str(self.tls_files.ca_cert))
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=2, context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/v2/")
            return conn.getresponse().status
        finally:
            conn.close()


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively with ``extra`` (for per-test config tweaks)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def admin_session(registry: Registry, repo: str):
    """A ``requests.Session`` allowed to push and delete in ``repo`` (for the bed's own raw HTTP
    seeding; token mode mints the token in-process, so the token server's counts stay clean)."""
    import requests

    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides verify (and proxies apply)
    session.verify = registry.verify
    if registry.mode == "htpasswd":
        session.auth = registry.auth
    elif registry.mode == "token":
        scopes = [f"repository:{repo}:pull,push,delete"]
        token = registry.token_server.issue(registry.username, scopes)["token"]
        session.headers["Authorization"] = f"Bearer {token}"
    return session
