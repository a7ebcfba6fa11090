"""Image references: ``[host[:port]/]repo[:tag][@digest]`` by the Docker reference grammar
(distribution ``reference/regexp.go``). Docker Hub defaults live only in this module."""

from __future__ import annotations

import re
from dataclasses import dataclass

from transfer.digest import validate_digest
from transfer.errors import InvalidDigestError, InvalidReferenceError

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
# Anchored with \A and \Z (``$`` also matches before a trailing newline): ``v1\n`` is no tag.
REPOSITORY_RE = re.compile(rf"\A{_COMPONENT}(?:/{_COMPONENT})*\Z")
TAG_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
HOST_RE = re.compile(rf"\A(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?\Z")
MAX_NAME_LENGTH = 255


def validate_repository(name: str, whole: str | None = None) -> str:
    """Return ``name`` if it is a valid repository path, else raise naming the bad part."""
    if isinstance(name, str) and len(name) <= MAX_NAME_LENGTH and REPOSITORY_RE.match(name):
        return name
    context = f" in {whole!r}" if whole and whole != name else ""
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH:
        shown = repr(name)[:80]
        raise InvalidReferenceError(f"invalid repository name {shown}{context}: not a string of at most {MAX_NAME_LENGTH} characters")
    if name != name.lower() and REPOSITORY_RE.match(name.lower()):
        raise InvalidReferenceError(f"repository name {name!r}{context} must be lower case")
    raise InvalidReferenceError(
        f"invalid repository name {name!r}{context}: components are lower-case letters and digits "
        "separated by '.', '_', '__' or '-', joined by '/'"
    )


def validate_tag(tag: str, whole: str | None = None) -> str:
    if isinstance(tag, str) and TAG_RE.match(tag):
        return tag
    context = f" in {whole!r}" if whole and whole != tag else ""
    shown = repr(tag) if len(repr(tag)) <= 80 else repr(tag)[:77] + "..."
    raise InvalidReferenceError(
        f"invalid tag {shown}{context}: up to 128 of letters, digits, '_', '.', '-', "
        "not starting with '.' or '-'"
    )


def validate_tag_or_digest(ref: str) -> str:
    """A manifest reference as it goes into a URL: a digest (it has a colon) or a tag."""
    return validate_digest(ref) if isinstance(ref, str) and ":" in ref else validate_tag(ref)


def _is_host(first: str) -> bool:
    """Docker's rule: the first component is a registry if it has '.' or ':', is 'localhost', or
    has upper case (which a repository cannot)."""
    return "." in first or ":" in first or first == "localhost" or first != first.lower()


def check_host(host: str, text: str) -> str:
    """Return ``host`` (``name[:port]``) if it is a valid registry host with a port in 1..65535."""
    if not HOST_RE.match(host):
        raise InvalidReferenceError(f"invalid registry host {host!r} in {text!r}")
    port = host.rpartition("]")[2].partition(":")[2]  # after an IPv6 literal's brackets
    if port and not 0 < int(port) < 65536:
        raise InvalidReferenceError(f"invalid port {port} of registry host {host!r} in {text!r} (1 to 65535)")
    return host


def split_host(text: str) -> tuple[str | None, str]:
    """Split ``host/rest`` when the first component is a host by Docker's rule."""
    first, sep, rest = text.partition("/")
    if sep and _is_host(first):
        return check_host(first, text), rest
    return None, text


def normalize_host(host: str) -> str:
    return DOCKER_HUB if host.lower() in _HUB_ALIASES else host


def familiar_name(name: str) -> str:
    """Docker's short form of a full name: ``docker.io/library/nginx`` -> ``nginx``,
    ``docker.io/foo/bar`` -> ``foo/bar``; other registries unchanged (as ``docker save`` writes)."""
    host, path = split_host(name)
    if host is None or normalize_host(host) != DOCKER_HUB:
        return name
    return path[len("library/"):] if path.startswith("library/") and path.count("/") == 1 else path


def endpoint_host(host: str) -> str:
    """The host[:port] that serves the Registry API for ``host``."""
    return DOCKER_HUB_ENDPOINT if normalize_host(host) == DOCKER_HUB else host


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str, *, default_tag: str | None = "latest") -> "Reference":
        """Parse a reference. Without tag or digest, the tag is ``default_tag`` (Docker: latest)."""
        if not text or text != text.strip():
            raise InvalidReferenceError(f"invalid image reference {text!r}: empty or surrounded by spaces")
        rest, digest = text, None
        if "@" in text:
            rest, _, digest = text.partition("@")
            try:
                validate_digest(digest)
            except InvalidDigestError as exc:
                raise InvalidReferenceError(f"{exc} in reference {text!r}") from None
        host, path = split_host(rest)
        tag = None
        name, colon, maybe_tag = path.rpartition(":")
        if colon and "/" not in maybe_tag:
            path, tag = name, validate_tag(maybe_tag, text)
        if not path:
            raise InvalidReferenceError(f"invalid image reference {text!r}: no repository name")
        registry = normalize_host(host) if host else DOCKER_HUB
        if registry == DOCKER_HUB and "/" not in path:
            path = "library/" + path
        validate_repository(path, text)
        if len(f"{registry}/{path}") > MAX_NAME_LENGTH:
            raise InvalidReferenceError(f"image name in {text!r} is longer than {MAX_NAME_LENGTH} characters")
        if tag is None and digest is None:
            tag = default_tag
        return cls(registry, path, tag, digest)

    @property
    def endpoint(self) -> str:
        return endpoint_host(self.registry)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: str) -> "Reference":
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


@dataclass(frozen=True)
class RegistryPath:
    """``host[:port][/repo-or-prefix]`` as given to ls-remote, --catalog and import targets."""

    registry: str
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> "RegistryPath":
        if not text:
            raise InvalidReferenceError("empty registry address")
        host, _, path = text.strip("/").partition("/")
        check_host(host, text)
        if path:
            validate_repository(path, text)
        return cls(normalize_host(host), path)

    @property
    def endpoint(self) -> str:
        return endpoint_host(self.registry)

    def __str__(self) -> str:
        return f"{self.registry}/{self.path}" if self.path else self.registry
