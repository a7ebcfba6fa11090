"""Where registry credentials come from, and where ``transfer login`` keeps them.

Lookup for a host, first match wins:
1. explicit ``--username`` + ``--password-stdin``;
2. ``TRANSFER_USERNAME`` / ``TRANSFER_PASSWORD`` (only for registries named on the command line);
3. the auth files: ``--auth-file``, else ``$REGISTRY_AUTH_FILE``, else
   ``${XDG_RUNTIME_DIR}/containers/auth.json`` then ``$DOCKER_CONFIG/config.json``
   (default ``~/.docker/config.json``). In each: ``credHelpers[host]``, then ``credsStore``
   (``docker-credential-<name> get``), then the ``auths`` entry (docker/cli semantics).
Nothing found means anonymous access.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from transfer.errors import AuthenticationError, UsageError
from transfer.reference import DOCKER_HUB, DOCKER_HUB_AUTH_KEY, normalize_host

if TYPE_CHECKING:
    import subprocess

HELPER_TIMEOUT = 30.0
TOKEN_USERNAME = "<token>"  # a helper's Username meaning "Secret is an identity token"


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)  # OAuth2 refresh token
    registry_token: str = field(default="", repr=False)  # bearer token sent as is
    source: str = ""  # where they came from, for messages

    @property
    def has_password(self) -> bool:
        return bool(self.username and self.password)

    @property
    def anonymous(self) -> bool:
        return not (self.has_password or self.identity_token or self.registry_token)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def server_key(host: str) -> str:
    """The key docker uses for ``host`` in ``auths`` and with credential helpers."""
    return DOCKER_HUB_AUTH_KEY if normalize_host(host) == DOCKER_HUB else host


def key_hostname(key: str) -> str:
    """docker/cli ``ConvertToHostname``: ``https://host/v1/`` -> ``host``."""
    for prefix in ("http://", "https://"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return normalize_host(key.split("/", 1)[0])


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("DOCKER_CONFIG") or str(Path(env.get("HOME") or Path.home()) / ".docker")
    return Path(base) / "config.json"


def auth_files(auth_file: str | None = None, env: Mapping[str, str] | None = None) -> list[Path]:
    """The files to read, in order (skopeo's order, then docker's)."""
    env = os.environ if env is None else env
    if auth_file:
        return [Path(auth_file)]
    if env.get("REGISTRY_AUTH_FILE"):
        return [Path(env["REGISTRY_AUTH_FILE"])]
    files = []
    if env.get("XDG_RUNTIME_DIR"):
        files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    files.append(docker_config_path(env))
    return files


def write_target(auth_file: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The file ``transfer login`` writes: ``--auth-file``, ``$REGISTRY_AUTH_FILE``, or docker's."""
    env = os.environ if env is None else env
    if auth_file:
        return Path(auth_file)
    if env.get("REGISTRY_AUTH_FILE"):
        return Path(env["REGISTRY_AUTH_FILE"])
    return docker_config_path(env)


def load_config(path: Path) -> dict[str, Any]:
    """A config/auth file as a dict ({} when absent); a broken file is a clear error."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read credentials file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"credentials file {path} is not a JSON object")
    return data


def helper_for(config: Mapping[str, Any], host: str) -> str | None:
    """The credential helper suffix that applies to ``host``: credHelpers, then credsStore."""
    helpers = config.get("credHelpers") or {}
    for key in (server_key(host), host):
        if isinstance(helpers, dict) and isinstance(helpers.get(key), str) and helpers[key]:
            return helpers[key]
    store = config.get("credsStore")
    return store if isinstance(store, str) and store else None


def run_helper(name: str, action: str, stdin: str, timeout: float = HELPER_TIMEOUT) -> subprocess.CompletedProcess:
    import subprocess  # only where a credential helper is configured

    program = f"docker-credential-{name}"
    try:
        return subprocess.run([program, action], input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except FileNotFoundError:
        raise AuthenticationError(f"credential helper {program} is configured but not on PATH") from None
    except subprocess.TimeoutExpired:
        raise AuthenticationError(f"credential helper {program} {action} did not answer in {timeout:g}s") from None


def helper_get(name: str, host: str, timeout: float = HELPER_TIMEOUT) -> Credentials | None:
    """Ask ``docker-credential-<name>`` for ``host``; None when it has nothing for it."""
    done = run_helper(name, "get", server_key(host), timeout)
    if done.returncode != 0:
        if "credentials not found" in (done.stdout + done.stderr).lower():
            return None
        raise AuthenticationError(f"credential helper docker-credential-{name} get failed for {host} "
                                  f"(exit {done.returncode}): {_first_line(done.stderr or done.stdout)}")
    try:
        data = json.loads(done.stdout)
        user, secret = data.get("Username", ""), data.get("Secret", "")
    except (ValueError, AttributeError):
        raise AuthenticationError(f"credential helper docker-credential-{name} gave unreadable output") from None
    source = f"credential helper docker-credential-{name}"
    if not secret:
        return None
    if user == TOKEN_USERNAME:
        return Credentials(identity_token=secret, source=source)
    return Credentials(username=user, password=secret, source=source)


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:200]


def auths_entry(config: Mapping[str, Any], host: str) -> tuple[str, dict] | None:
    """The ``auths`` entry for ``host``: the exact key first, then legacy keys by hostname."""
    auths = config.get("auths") or {}
    if not isinstance(auths, dict):
        return None
    wanted = server_key(host)
    if isinstance(auths.get(wanted), dict):
        return wanted, auths[wanted]
    target = normalize_host(host)
    for key, entry in auths.items():
        if isinstance(entry, dict) and key_hostname(key) == target:
            return key, entry
    return None


def decode_entry(entry: Mapping[str, Any], source: str) -> Credentials | None:
    """An ``auths`` entry -> Credentials (``auth`` is base64 user:pass, split at the first ':')."""
    user, password = entry.get("username") or "", entry.get("password") or ""
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"], validate=False).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise UsageError(f"{source}: the 'auth' value is not base64 of user:password") from None
    creds = Credentials(
        username=user, password=password, identity_token=entry.get("identitytoken") or "",
        registry_token=entry.get("registrytoken") or "", source=source,
    )
    return None if creds.anonymous else creds


def from_files(host: str, auth_file: str | None = None, env: Mapping[str, str] | None = None,
               timeout: float = HELPER_TIMEOUT) -> Credentials | None:
    for path in auth_files(auth_file, env):
        config = load_config(path)
        helper = helper_for(config, host)
        if helper:
            return helper_get(helper, host, timeout)  # when a helper applies, the file's are ignored
        found = auths_entry(config, host)
        if found:
            return decode_entry(found[1], str(path))
    return None


def from_env(env: Mapping[str, str] | None = None) -> Credentials | None:
    env = os.environ if env is None else env
    user, password = env.get("TRANSFER_USERNAME", ""), env.get("TRANSFER_PASSWORD", "")
    if user and password:
        return Credentials(username=user, password=password, source="TRANSFER_USERNAME/TRANSFER_PASSWORD")
    return None


def resolve_credentials(
    host: str,
    *,
    explicit: Credentials | None = None,
    named: bool = True,
    auth_file: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials:
    """Credentials for ``host`` by the lookup order above (anonymous Credentials() if none).
    ``named``: the host was named on the command line, so TRANSFER_* variables apply."""
    if explicit and not explicit.anonymous:
        return explicit
    found = (from_env(env) if named else None) or from_files(host, auth_file, env)
    return found or Credentials()


def _atomic_write(path: Path, config: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(config, f, indent="\t")
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def store_credentials(host: str, creds: Credentials, *, auth_file: str | None = None,
                      env: Mapping[str, str] | None = None, timeout: float = HELPER_TIMEOUT) -> str:
    """Save credentials like ``docker login``; returns where they went (for the user)."""
    path = write_target(auth_file, env)
    config = load_config(path)
    helper = helper_for(config, host)
    if helper:
        secret = json.dumps({"ServerURL": server_key(host), "Username": creds.username, "Secret": creds.password})
        done = run_helper(helper, "store", secret, timeout)
        if done.returncode != 0:
            raise AuthenticationError(f"credential helper docker-credential-{helper} store failed: "
                                      f"{_first_line(done.stderr or done.stdout)}")
        return f"credential helper docker-credential-{helper}"
    auths = config.setdefault("auths", {})
    key = (auths_entry(config, host) or (server_key(host), None))[0]
    auths[key] = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    _atomic_write(path, config)
    return str(path)


def erase_credentials(host: str, *, auth_file: str | None = None, env: Mapping[str, str] | None = None,
                      timeout: float = HELPER_TIMEOUT) -> bool:
    """Remove saved credentials for ``host``; False if there were none."""
    path = write_target(auth_file, env)
    config = load_config(path)
    helper = helper_for(config, host)
    if helper:
        done = run_helper(helper, "erase", server_key(host), timeout)
        return done.returncode == 0
    found = auths_entry(config, host)
    removed = False
    while found:
        del config["auths"][found[0]]
        removed, found = True, auths_entry(config, host)
    if removed:
        _atomic_write(path, config)
    return removed
