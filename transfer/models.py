"""The data model (no I/O): media types, descriptors, platforms and read-only manifest views.

Manifests are always kept as the exact bytes the source served. The views here are parsed from
those bytes to find children and platforms; they are never serialised back for a push.
"""

from __future__ import annotations

import sys

from pydantic import BaseModel, ConfigDict, Field, field_validator

from transfer.digest import validate_digest
from transfer.errors import TransferError, UnsupportedManifestError
from transfer.untrusted import load_json, validate

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_MANIFEST_TYPES
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
# Sent on every manifest GET/HEAD: everything we can carry faithfully, nothing else (so a registry
# never converts to schema1 behind our back).
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])
MAX_MANIFEST_SIZE = 8 << 20  # refuse to read more (registries cap pushes at 4 MiB)
MAX_SIZE = (1 << 63) - 1  # a descriptor's size is an int64 (image-spec descriptor.md)


def is_manifest_type(media_type: str | None) -> bool:
    return media_type in MANIFEST_TYPES


class Platform(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow", defer_build=True)

    architecture: str
    os: str
    variant: str | None = None
    os_version: str | None = Field(default=None, alias="os.version")
    os_features: list[str] | None = Field(default=None, alias="os.features")

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """Parse ``os/arch[/variant]`` as given to ``--platform``."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/arm64/v8")
        return cls(os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) == 3 else None)

    def matches(self, wanted: "Platform") -> bool:
        """True if this platform satisfies ``wanted`` (a variant in ``wanted`` must match)."""
        if (self.os, self.architecture) != (wanted.os, wanted.architecture):
            return False
        return wanted.variant is None or wanted.variant == self.variant


class Descriptor(BaseModel):
    """An OCI content descriptor. Unknown fields are kept (``extra="allow"``)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", frozen=True, defer_build=True)

    media_type: str = Field(alias="mediaType")
    digest: str
    size: int = Field(ge=0, le=MAX_SIZE)
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    artifact_type: str | None = Field(default=None, alias="artifactType")
    urls: list[str] | None = None

    # One copy of each string: a run holds every plan's descriptors to its end, and the same digest
    # (a base layer, a record of the bundle's index) and the few media types come back in many.
    @field_validator("digest")
    @classmethod
    def _digest_ok(cls, v: str) -> str:
        return sys.intern(validate_digest(v))

    @field_validator("media_type")
    @classmethod
    def _one_copy(cls, v: str) -> str:
        return sys.intern(v)

    @property
    def is_manifest(self) -> bool:
        return is_manifest_type(self.media_type)

    def short(self) -> str:
        return self.digest.split(":", 1)[1][:12]

    def __hash__(self) -> int:  # frozen model with dict fields: hash by identity of content
        return hash((self.digest, self.media_type, self.size))


class ManifestView(BaseModel):
    """Read-only view of an image manifest or an index (OCI or Docker)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", defer_build=True)

    schema_version: int = Field(alias="schemaVersion")
    media_type: str | None = Field(default=None, alias="mediaType")
    artifact_type: str | None = Field(default=None, alias="artifactType")
    config: Descriptor | None = None
    layers: list[Descriptor] = Field(default_factory=list)
    manifests: list[Descriptor] = Field(default_factory=list)
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES or (self.media_type is None and bool(self.manifests))

    def children(self) -> list[Descriptor]:
        """Everything this manifest references and a copy must carry (not the subject)."""
        if self.is_index:
            return list(self.manifests)
        return ([self.config] if self.config else []) + list(self.layers)

    def blobs(self) -> list[Descriptor]:
        return [] if self.is_index else self.children()


def parse_manifest(raw: bytes, media_type: str | None, what: str = "manifest",
                   error: type[TransferError] = UnsupportedManifestError) -> ManifestView:
    """Parse manifest bytes into a view; refuse schema1 and anything that is not a manifest.
    Malformed content raises ``error`` (a bundle's reader passes CorruptBundleError)."""
    if media_type in SCHEMA1_TYPES:
        raise UnsupportedManifestError(
            f"{what} is a Docker schema1 manifest ({media_type}), which cannot be carried without "
            "changing its digest; convert it at the source first"
        )
    data = load_json(raw, what, error, MAX_MANIFEST_SIZE)
    if not isinstance(data, dict):
        raise error(f"{what} is not a JSON object")
    if data.get("schemaVersion") == 1:
        raise UnsupportedManifestError(f"{what} is a Docker schema1 manifest, which cannot be carried faithfully")
    view = validate(ManifestView, data, what, error)
    body_type = view.media_type
    if body_type and media_type and body_type != media_type:
        raise UnsupportedManifestError(
            f"{what}: Content-Type {media_type} does not match the body's mediaType {body_type}"
        )
    if view.media_type is None:
        view.media_type = media_type or (OCI_INDEX if view.manifests else OCI_MANIFEST)
    if view.media_type not in MANIFEST_TYPES:
        raise UnsupportedManifestError(f"{what} has unsupported media type {view.media_type}")
    return view


def referrers_tag(digest: str) -> str:
    """The OCI fallback tag for referrers of ``digest`` (``sha256-<hex>``)."""
    alg, _, hexpart = digest.partition(":")
    return f"{alg[:32]}-{hexpart[:64]}"
