"""The options of every job of the public API (``transfer.export``, ``transfer.import_bundle``, ...)
and how to reach registries (``RegistryAccess``). Plain pydantic models: build them with keywords,
validate them from a dict or a config file, print them: the password never shows in ``repr``,
``str`` or a dump.

The defaults are the command line's: an option left out here means what leaving out the flag means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from transfer.registry.client import RegistryClient

from transfer.limits import DEFAULT_JOBS, DEFAULT_LOOKUPS  # noqa: E402  (light: the command line's help shows them)


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class RegistryAccess(_Options):
    """How to reach registries: credentials and trust, the same for every registry a job talks to.

    Left empty, it does what ``docker`` does: credentials from ``--auth-file``-style files
    (``$REGISTRY_AUTH_FILE``, podman's ``auth.json``, ``~/.docker/config.json`` with its credential
    helpers), ``TRANSFER_USERNAME``/``TRANSFER_PASSWORD`` from the environment, else anonymous;
    HTTPS with the system CAs plus ``/etc/docker/certs.d``; plain HTTP only for loopback hosts and
    ``insecure-registries`` of ``/etc/docker/daemon.json``.
    """

    username: str | None = None  # explicit credentials win over every file
    password: str | None = Field(default=None, repr=False, exclude=True)
    auth_file: str | None = None  # a docker config.json-format file to read instead of the default
    ca_cert: str | None = None  # also trust this CA certificate (PEM)
    insecure: bool = False  # plain HTTP and unverified TLS allowed (trusted networks only)

    @classmethod
    def from_docker_config(cls, path: str | None = None, **fields: object) -> "RegistryAccess":
        """Credentials from a docker ``config.json`` (default: where docker looks for it)."""
        return cls.model_validate(dict(fields, auth_file=path))

    def client(self, host: str, *, named: bool = True, connections: int = 16) -> "RegistryClient":
        """A configured client for ``host[:port]`` (Docker Hub names allowed). ``named``: the user
        named this host, so explicit and ``TRANSFER_*`` credentials apply to it. ``connections``:
        how many are kept alive for reuse (the threads that may ask at once)."""
        from transfer.errors import UsageError
        from transfer.reference import RegistryPath
        from transfer.registry import Credentials, RegistryClient, resolve_credentials, tls_policy

        target = RegistryPath.parse(host)
        explicit = None
        if (self.username is None) != (self.password is None):
            raise UsageError("RegistryAccess: give both username and password, or neither")
        if self.username and self.password and named:
            explicit = Credentials(username=self.username, password=self.password, source="explicit")
        creds = resolve_credentials(target.registry, explicit=explicit, named=named, auth_file=self.auth_file)
        tls = tls_policy(target.endpoint, ca_cert=self.ca_cert, insecure=self.insecure)
        return RegistryClient(target.endpoint, credentials=creds, tls=tls, connections=connections)


class SelectionOptions(_Options):
    """Which repositories, tags, platforms and referrers to take (export and copy)."""

    include: list[str] = Field(default_factory=list)  # globs on repository names (whole registry)
    exclude: list[str] = Field(default_factory=list)
    tags: str | None = None  # only tags fully matching this regular expression (whole registry, all_tags)
    platforms: list[str] = Field(default_factory=list)  # "os/arch[/variant]" of multi-platform images
    referrers: bool = True  # signatures, attestations, SBOMs travel with their images
    jobs: int = Field(default=DEFAULT_JOBS, ge=1)  # parallel transfers
    keep_going: bool = False  # past a failing image; the failures are listed and raised at the end
    lookups: int = Field(default=DEFAULT_LOOKUPS, ge=1)  # requests in flight while planning, besides jobs


class UploadOptions(_Options):
    """How blobs go up to a registry (import and copy)."""

    chunk_size: int | None = Field(default=None, ge=1)  # None: chunks sized by time (docs/uploads.md)
    registry_config: str | None = None  # per-registry upload settings (samples/registries.json)
    journal: str | None = None  # uploads in flight; default ~/.local/state/transfer/uploads.json


class ExportOptions(SelectionOptions):
    all_tags: bool = False  # every tag of each named repository
    have: str | None = None  # delta: an inventory of the destination (transfer.inventory)
    since: str | None = None  # delta: an earlier bundle whose blobs the destination holds
    split_size: int | None = None  # parts of at most this many bytes (NAME.001, NAME.002, ...)
    level: int = 3  # zstd level for compressible blobs
    threads: int = Field(default=0, ge=0)  # zstd threads (0: in the calling thread)
    repository: str | None = None  # with source=: the repository for images named by a tag only


class ImportOptions(UploadOptions):
    map: list[str] = Field(default_factory=list)  # "FROM=TO" repository prefix renames
    on_existing: Literal["overwrite", "skip", "fail"] = "overwrite"  # a tag that points elsewhere
    allow_incomplete: bool = False  # import what an unfinished bundle holds
    jobs: int = Field(default=DEFAULT_JOBS, ge=1)
    keep_going: bool = False
    lookups: int = Field(default=DEFAULT_LOOKUPS, ge=1)  # questions to the target in flight (tags there, the check after)
    prune: bool = False  # then delete the tags and manifests of the covered repositories the bundle lacks
    have: str | None = None  # an inventory of the target: repositories to cross-mount blobs from
    require_signed: list[str] = Field(default_factory=list)  # public keys (PEM): images need a cosign signature by one


class CopyOptions(SelectionOptions, UploadOptions):
    prune: bool = False  # then delete what the source lacks in the covered repositories (catalog copies)
    have: str | None = None  # an inventory of the destination: repositories to cross-mount blobs from
    require_signed: list[str] = Field(default_factory=list)  # public keys (PEM): images need a cosign signature by one


class UnpackOptions(_Options):
    platforms: list[str] = Field(default_factory=list)  # docker archive: one (default this machine's)
    prefix: str | None = None  # name images PREFIX/REPOSITORY:TAG
    allow_incomplete: bool = False


class InventoryOptions(_Options):
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
