"""What every job of the public API returns: pydantic models whose JSON (``report.to_json()``) is
exactly what the command line prints with ``--json``."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field


class Report(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    def to_json(self) -> str:
        """The report as the command line prints it with ``--json`` (sorted keys, indented)."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)


class Failure(BaseModel):
    model_config = ConfigDict(defer_build=True)
    image: str  # the image as the job named it (repository:tag, or repository@digest)
    error: str


class Waiting(BaseModel):
    model_config = ConfigDict(defer_build=True)
    image: str
    waits_for: str  # "blob sha256:..." or "manifest sha256:..."


class CopyCounts(Report):
    """What the copy engine did (every job that moves images reports these)."""

    images: int = 0  # images finished at the target
    blobs_copied: int = 0
    blobs_skipped: int = 0  # present at the target already
    manifests_copied: int = 0
    manifests_skipped: int = 0
    bytes_copied: int = 0
    bytes_skipped: int = 0
    tags_written: int = 0  # tags already at the right digest are not written again
    failures: list[Failure] = Field(default_factory=list)
    seconds: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not self.failures


class UploadReport(BaseModel):
    """What the registry uploader did."""

    model_config = ConfigDict(defer_build=True)
    blobs: int = 0  # blobs completed (chunked or in one PUT; mounts are not counted)
    monolithic: int = 0  # of which in one PUT
    chunks_sent: int = 0
    bytes_sent: int = 0
    bytes_resumed: int = 0  # bytes a journal resume did not send again
    blobs_resumed: int = 0
    blobs_restarted: int = 0
    status_queries: int = 0
    mounted: int = 0  # blobs cross-mounted from another repository instead of uploaded
    notes: list[str] = Field(default_factory=list)  # e.g. a chunk size raised to a registry's minimum


class SignatureStatus(BaseModel):
    """A bundle's signature as a job found it (``signature`` of the export, import, verify and
    sign reports). ``checked``: verified with a trusted key (``keys=`` / ``--key``), every part
    read, its recomputed statement equal to the signed one; an import or verify with keys refuses
    a bundle that fails, so a report with keys always says ``checked``."""

    model_config = ConfigDict(defer_build=True)
    signed: bool  # every part read carries a signature
    checked: bool = False
    keys: list[str] = Field(default_factory=list)  # sha256 fingerprints of the keys that signed it
    algorithm: str | None = None  # "ecdsa-p256-sha256" or "ed25519"
    parts: list[int] = Field(default_factory=list)  # the parts read
    notes: list[str] = Field(default_factory=list)  # e.g. "not checked: no key given"


class ExportReport(CopyCounts):
    bundle: str  # the bundle's path (a split set's name)
    complete: bool  # False: images failed, the bundle is left unfinished (run again to finish it)
    expected_at_destination: int = 0  # delta: blobs left out, expected at the destination
    bytes_written: int = 0
    platform_notes: list[str] = Field(default_factory=list)
    signature: SignatureStatus | None = None  # with sign=: every part signed by that key


class SignReport(Report):
    """What ``transfer.sign`` did: every part of the bundle signed by ``key``."""

    bundle: str
    parts: list[int]
    key: str  # sha256 fingerprint of the public key
    algorithm: str
    replaced: int = 0  # parts whose earlier signature was replaced


class KeygenReport(Report):
    """A key pair made by ``transfer.keygen``."""

    private_key: str  # path (mode 0600)
    public_key: str
    algorithm: str
    fingerprint: str
    encrypted: bool  # the private key is protected by a passphrase


class Deletion(BaseModel):
    """One manifest deleted (or to be deleted) by ``--prune`` or ``transfer rm``."""
    model_config = ConfigDict(defer_build=True)

    repository: str
    digest: str
    tags: list[str] = Field(default_factory=list)  # the tags it drops
    reason: str = ""  # "extra tag", "replaced under TAG", "child of DIGEST", "asked"
    restored: bool = False  # a kept manifest: deleted to drop extra tags, then put back at once
    restored_tags: list[str] = Field(default_factory=list)  # the kept tags put back on it


class PruneReport(BaseModel):
    """What ``--prune`` deleted (``dry_run``: would delete) so the covered repositories equal the
    bundle (or the source); repositories the bundle does not cover are never touched."""
    model_config = ConfigDict(defer_build=True)

    deletions: list[Deletion] = Field(default_factory=list)  # in the order they are (would be) made
    notes: list[str] = Field(default_factory=list)  # what was kept on purpose, and why
    dry_run: bool = False


class TagDiff(BaseModel):
    model_config = ConfigDict(defer_build=True)
    repository: str
    tag: str
    status: str  # "missing" at the registry, "extra" there, "changed" (another digest), "same"
    bundle_digest: str | None = None
    registry_digest: str | None = None


class DiffReport(Report):
    """How the registry's repositories that a bundle covers differ from it (``transfer diff``)."""

    bundle: str
    target: str
    missing: int = 0
    extra: int = 0
    changed: int = 0
    same: int = 0
    tags: list[TagDiff] = Field(default_factory=list)  # every tag but those the same
    untagged_missing: list[str] = Field(default_factory=list)  # "repository@digest" untagged roots absent

    @computed_field  # type: ignore[prop-decorator]
    @property
    def equal(self) -> bool:
        return not (self.missing or self.extra or self.changed or self.untagged_missing)


class RmReport(Report):
    """What ``transfer rm`` deleted (``dry_run``: would delete)."""

    target: str  # HOST/REPOSITORY
    deletion: Deletion
    deleted: bool  # False for a dry run
    dry_run: bool = False


class ImageSignature(BaseModel):
    """What the image-signature policy (``--require-signed``) decided for one image."""

    model_config = ConfigDict(defer_build=True)
    image: str  # as the job names it (repository:tag, or repository@digest)
    digest: str  # the root digest the signature must name
    verified: bool
    key: str | None = None  # fingerprint (sha256:<hex> of the DER public key) of the trusted key that signed it
    signature: str | None = None  # where: "tag sha256-<hex>.sig" or "referrer sha256:..."
    reason: str | None = None  # why it was refused, or what it waits for (a split set)


class ImportReport(CopyCounts):
    target: str
    upload: UploadReport = Field(default_factory=UploadReport)
    tag_problems: list[str] = Field(default_factory=list)  # tags not at the bundle's digest afterwards
    notes: list[str] = Field(default_factory=list)  # tag decisions (--on-existing), lost sessions
    prune: PruneReport | None = None  # with --prune: what was deleted
    signature: SignatureStatus | None = None  # None: the bundle is not signed and no key was given
    image_signatures: list[ImageSignature] = Field(default_factory=list)  # with --require-signed: per image


class SpanningReport(BaseModel):
    model_config = ConfigDict(defer_build=True)
    digest: str
    repository: str
    size: int
    part: int  # the part holding the first of the bytes present
    present: list[int]  # [start, end) of the bytes the parts present hold
    held: int  # bytes at the destination after this run
    restarted: bool


class PartImportReport(ImportReport):
    """An import of the parts of a split set present (the others are still to come)."""

    parts_present: list[int]
    final: bool  # the bundle's last part was among them
    next_part: int | None  # the part to insert next, None when nothing waits
    next_command: str | None
    spanning: list[SpanningReport] = Field(default_factory=list)
    images_complete: list[str] = Field(default_factory=list)
    images_waiting: list[Waiting] = Field(default_factory=list)


class ImportPlanReport(Report):
    """What an import would do (``transfer.import_plan``, ``import --dry-run``)."""

    blobs_to_push: int
    bytes_to_push: int
    blobs_present: int
    tags: list[str]  # "repository:tag -> digest"
    notes: list[str] = Field(default_factory=list)
    dry_run: bool = True
    prune: PruneReport | None = None  # with --prune: what would be deleted


class CopyReport(CopyCounts):
    upload: UploadReport = Field(default_factory=UploadReport)
    tag_problems: list[str] = Field(default_factory=list)
    platform_notes: list[str] = Field(default_factory=list)
    prune: PruneReport | None = None  # with --prune: what was deleted
    image_signatures: list[ImageSignature] = Field(default_factory=list)  # with --require-signed: per image


class UnpackReport(CopyCounts):
    output: str
    format: str  # "oci" or "docker-archive"
    names: list[str]  # what to give skopeo/docker: ref.names of the layout, repo:tag of the archive
    notes: list[str] = Field(default_factory=list)


class InventoryReport(Report):
    output: str
    repositories: int
    blobs: int


def as_failures(pairs: list[tuple[str, str]]) -> list[Failure]:
    return [Failure(image=image, error=error) for image, error in pairs]


def counts(stats: Any, seconds: float) -> dict[str, Any]:
    """The engine's CopyStats as report fields."""
    return dict(images=stats.images, blobs_copied=stats.blobs_copied, blobs_skipped=stats.blobs_skipped,
                manifests_copied=stats.manifests_copied, manifests_skipped=stats.manifests_skipped,
                bytes_copied=stats.bytes_copied, bytes_skipped=stats.bytes_skipped,
                tags_written=stats.tags_written, failures=as_failures(stats.failures), seconds=round(seconds, 3))


class BundleImage(BaseModel):
    """One root a bundle records: a tag, or an untagged root (``tag`` None)."""

    model_config = ConfigDict(defer_build=True)
    repository: str
    tag: str | None
    digest: str
    media_type: str
    platforms: list[str]
    size: int  # of the root manifest
    total_size: int  # the root and everything it references that the bundle stores, each once


class BundleListing(Report):
    """What ``transfer ls --json`` prints: the bundle's state and its images."""

    bundle: str
    complete: bool
    info: dict[str, Any]  # version, created, tool_version, source_registry, split, parts, why_incomplete
    images: list[BundleImage]
    signature: SignatureStatus | None = None  # as found: ls never checks it (verify --key does); None: unsigned


class RemoteRepository(BaseModel):
    model_config = ConfigDict(defer_build=True)
    name: str
    tags: list[str] | None = None  # with tags=True


class RemoteListing(Report):
    """What ``transfer ls-remote --json`` prints: a registry's repositories, or one repository's tags."""

    registry: str
    repository: str | None = None  # set when one repository was listed
    tags: list[str] | None = None  # that repository's tags
    repositories: list[RemoteRepository] | None = None  # set when the whole registry was listed

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2, sort_keys=True)


class RecoverReport(Report):
    """What ``transfer recover`` did: the parts whose index it rebuilt (none: every index was valid)."""

    parts: list[int]
    records: int  # complete records kept
    dropped_bytes: int  # of torn tail
    problems: list[str]  # what was wrong with each rebuilt index
