"""Trust and scheme decisions for one registry host, as Docker makes them.

- HTTPS with the system trust store, plus ``--ca-cert FILE`` and Docker's
  ``/etc/docker/certs.d/<host[:port]>/`` (``*.crt`` CAs, ``client.cert`` + ``client.key``).
  ``TRANSFER_CERTS_DIR`` overrides the certs.d root (tests, rootless setups).
- ``--insecure``, or the host in ``insecure-registries`` of ``/etc/docker/daemon.json``
  (``TRANSFER_DAEMON_JSON`` overrides the path): TLS verification off and plain HTTP allowed.
- localhost, 127.0.0.0/8 and ::1: HTTPS first (verified), plain HTTP allowed as a fallback.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from transfer.errors import UsageError

CERTS_DIR = "/etc/docker/certs.d"
DAEMON_JSON = "/etc/docker/daemon.json"


@dataclass(frozen=True)
class TLSPolicy:
    """What a client may do for one host: which schemes, and how to verify HTTPS."""

    host: str
    verify: bool = True
    ca_files: tuple[str, ...] = ()
    client_cert: tuple[str, str] | None = None
    allow_http: bool = False
    reasons: list[str] = field(default_factory=list, compare=False)

    @property
    def schemes(self) -> list[str]:
        return ["https", "http"] if self.allow_http else ["https"]

    def ssl_context(self) -> ssl.SSLContext:
        """A context trusting the system store plus our CA files, with the client cert if any.
        Without verification (--insecure) no trust store is read (about 50 ms)."""
        if not self.verify:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context()
            if not ctx.get_ca_certs() and not ctx.cert_store_stats().get("x509_ca"):
                _load_certifi(ctx)
        for ca in self.ca_files:
            try:
                ctx.load_verify_locations(cafile=ca)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"cannot load CA certificate {ca}: {exc}") from None
        if self.client_cert:
            try:
                ctx.load_cert_chain(*self.client_cert)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"cannot load client certificate {self.client_cert[0]}: {exc}") from None
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def _load_certifi(ctx: ssl.SSLContext) -> None:
    try:
        import certifi
    except ImportError:
        return
    ctx.load_verify_locations(cafile=certifi.where())


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (``host`` may carry a port or IPv6 brackets)."""
    name = host_without_port(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_without_port(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def certs_dir_files(host: str, root: str | None = None) -> tuple[list[str], tuple[str, str] | None]:
    """CA files and the client cert pair from ``<certs.d>/<host[:port]>/``."""
    base = Path(root or os.environ.get("TRANSFER_CERTS_DIR") or CERTS_DIR) / host
    try:
        names = sorted(p.name for p in base.iterdir())
    except OSError:
        return [], None
    cas = [str(base / n) for n in names if n.endswith(".crt")]
    pair = None
    if "client.cert" in names:
        if "client.key" not in names:
            raise UsageError(f"{base}/client.cert has no matching client.key")
        pair = (str(base / "client.cert"), str(base / "client.key"))
    return cas, pair


def insecure_registries(path: str | None = None) -> list[str]:
    """The ``insecure-registries`` list of Docker's daemon.json ([] when absent)."""
    path = path or os.environ.get("TRANSFER_DAEMON_JSON") or DAEMON_JSON
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    entries = data.get("insecure-registries", []) if isinstance(data, dict) else []
    return [e for e in entries if isinstance(e, str)]


def _listed_insecure(host: str, entries: list[str]) -> bool:
    name = host_without_port(host)
    for entry in entries:
        if "/" in entry:  # a CIDR, as Docker allows
            try:
                if ipaddress.ip_address(name) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        elif entry in (host, name):
            return True
    return False


def tls_policy(
    host: str,
    *,
    ca_cert: str | None = None,
    insecure: bool = False,
    certs_root: str | None = None,
    daemon_json: str | None = None,
) -> TLSPolicy:
    """Decide how to talk to ``host`` (``host[:port]``)."""
    cas, pair = certs_dir_files(host, certs_root)
    if ca_cert:
        if not Path(ca_cert).is_file():
            raise UsageError(f"--ca-cert {ca_cert}: no such file")
        cas.insert(0, ca_cert)
    listed = _listed_insecure(host, insecure_registries(daemon_json))
    reasons = (["--insecure"] if insecure else []) + (["insecure-registries in daemon.json"] if listed else [])
    loop = is_loopback(host)
    if loop:
        reasons.append("loopback host")
    return TLSPolicy(
        host=host,
        verify=not (insecure or listed),
        ca_files=tuple(cas),
        client_cert=pair,
        allow_http=bool(insecure or listed or loop),
        reasons=reasons,
    )
