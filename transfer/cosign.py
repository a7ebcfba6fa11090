"""The image-signature policy (``import``/``copy --require-signed PUB``): every image to be pushed
must carry a valid cosign key-based signature by one of the trusted public keys, checked here with
``cryptography`` (through ``transfer.keys``) before any of its content is pushed.

What is verified follows cosign's own specification and code (specs/SIGNATURE_SPEC.md,
pkg/cosign/verify.go, pkg/oci/internal/signature/layer.go and sigstore's payload package):

- A signature is a manifest found in the image's repository under the tag
  ``sha256-<hex of the root digest>.sig`` (cosign's tag-based discovery), or as an OCI referrer of
  the root (the referrers API, or the ``sha256-<hex>`` fallback tag's index, or an untagged root
  of a bundle whose ``subject`` is the image) with artifactType
  ``application/vnd.dev.cosign.artifact.sig.v1+json`` (cosign's OCI 1.1 mode) or none.
- Each of its layers of media type ``application/vnd.dev.cosign.simplesigning.v1+json`` (at most
  1,000, as cosign) is one signature: the layer's blob is the payload (at most 1 MiB here; its
  bytes must hash to the layer's digest), its annotation ``dev.cosignproject.cosign/signature``
  the base64 signature: DER ECDSA P-256 over SHA-256 of the payload bytes, as ``cosign sign
  --key`` makes it.
- The payload, once its signature verifies, must be a simple-signing document whose
  ``critical.type`` is ``cosign container image signature`` (sigstore's ``payload.Cosign``
  checks it) and whose ``critical.image.docker-manifest-digest`` is the image's root digest
  (cosign's ``SimpleClaimVerifier``). ``critical.identity.docker-reference`` is ignored, as the
  spec says. Keys are matched without regard to case, as Go's ``encoding/json`` does, and a key
  present in two spellings is refused rather than read one way here and another by cosign.
- One verifying signature of any candidate is enough (``cosign verify`` succeeds on any).

Not verified: certificates, Rekor bundles and RFC 3161 timestamps (keyless signing; an air gap
has no transparency log to ask), attestations, and cosign 3's default Sigstore-bundle format.
Only ECDSA P-256 keys: cosign signs images with Ed25519ph for Ed25519 keys by default, which
``cryptography`` does not implement. A multi-platform index is checked on its own digest (the
root, what ``cosign sign`` signs): the index names every child by digest, and every byte moved is
checked against its digest, so the children need no signatures of their own.

Signature artifacts (``.sig``/``.att``/``.sbom`` tags, the fallback referrers index, manifests
with a ``subject``) are not images under the policy: they are carried when their image passes,
dropped with it when it is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from transfer.engine import parallel_map
from transfer.errors import SignatureError, TransferError, TransferInterrupted, UsageError
from transfer.keys import ECDSA_P256, PublicKey, load_public_keys, verify_any
from transfer.models import MAX_MANIFEST_SIZE, Descriptor, parse_manifest, referrers_tag
from transfer.selection import TagLists, is_referrer_tag
from transfer.store import ImagePlan, Partial, Referrers, Source, read_manifest
from transfer.untrusted import load_json

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
SIGNATURE_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"  # cosign's OCI 1.1 referrers
SIGSTORE_BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"  # cosign 3's default: not verified here
MAX_PAYLOAD = 1 << 20  # a simple-signing payload is a few hundred bytes
MAX_SIGNATURE_LAYERS = 1000  # as cosign (pkg/oci/remote/signatures.go)
MAX_SIGNATURE_B64 = 4096  # an ECDSA P-256 signature is at most 72 bytes (96 in base64)


def load_trusted_keys(paths: Sequence[str]) -> list[PublicKey]:
    """The keys of ``--require-signed PUB`` (PEM public keys, as ``cosign generate-key-pair``
    writes ``cosign.pub``); UsageError for one this policy cannot check with."""
    keys = load_public_keys(paths)
    for key in keys:
        if key.algorithm != ECDSA_P256:
            raise UsageError(f"--require-signed {key.source}: an {key.algorithm} key; cosign signs images "
                             "with Ed25519ph for Ed25519 keys, which this version cannot verify: use an "
                             "ECDSA P-256 key (cosign generate-key-pair makes one)")
    return keys


@dataclass
class Verdict:
    """What the policy decided for one image."""

    plan: ImagePlan
    key: str | None = None  # fingerprint of the trusted key whose signature verified
    signature: str | None = None  # where that signature was found
    reason: str | None = None  # why it was refused
    waits_for: str | None = None  # split set: signature content in a part not imported yet

    @property
    def verified(self) -> bool:
        return self.key is not None


@dataclass
class PolicyResult:
    """The plans that may go (images that passed and their signatures, attestations, ...), the
    images refused (label, reason), held back (label, what they wait for), and notes."""

    plans: list[ImagePlan]
    verdicts: list[Verdict]
    notes: list[str] = field(default_factory=list)

    @property
    def refused(self) -> list[tuple[str, str]]:
        return [(v.plan.label, f"refused by --require-signed: {v.reason}") for v in self.verdicts
                if not v.verified and v.waits_for is None]

    @property
    def waiting(self) -> list[tuple[str, str]]:
        return [(v.plan.label, v.waits_for) for v in self.verdicts if v.waits_for is not None]

    def message(self) -> str:
        refused = self.refused
        first = refused[0][1].removeprefix("refused by --require-signed: ")
        return (f"{len(refused)} image(s) refused by --require-signed ({refused[0][0]}: {first}); nothing was "
                "pushed (--keep-going pushes the images that pass)")


class _NotYet(Exception):
    """The signature's content is in a part of a split set not imported yet."""


def enforce(src: Source, plans: list[ImagePlan], keys: list[PublicKey], jobs: int = 4) -> PolicyResult:
    """Check every image of ``plans`` against ``keys`` (signatures read from ``src``); return the
    plans that may be pushed, in their order, and a verdict per image."""
    subjects = {id(p): _subject(src, p) for p in plans}
    images = [p for p in plans if subjects[id(p)] is None]
    finder = _Finder(src, [p for p in plans if subjects[id(p)] is not None], subjects)
    verdicts = parallel_map(lambda p: check_image(src, p, keys, finder), images, jobs)
    passed = {(v.plan.src_repo, m.digest) for v in verdicts if v.verified for m in v.plan.manifests}
    held = {(v.plan.src_repo, m.digest) for v in verdicts if not v.verified for m in v.plan.manifests}
    artifacts = [p for p in plans if subjects[id(p)] is not None]
    kept, notes = _carried(artifacts, subjects, passed, held)
    ok = {id(v.plan) for v in verdicts if v.verified}
    return PolicyResult([p for p in plans if id(p) in ok or id(p) in kept], verdicts, notes)


def _carried(artifacts: list[ImagePlan], subjects: dict[int, str | None], passed: set[tuple[str, str]],
             held: set[tuple[str, str]]) -> tuple[set[int], list[str]]:
    """The artifacts whose subject is a manifest of an image that passed (or of an artifact carried,
    for a signature of an attestation); those of no image of the run are left out and noted."""
    kept: set[int] = set()
    changed = True
    while changed:
        changed = False
        for plan in artifacts:
            if id(plan) not in kept and (plan.src_repo, subjects[id(plan)]) in passed:
                kept.add(id(plan))
                passed |= {(plan.src_repo, m.digest) for m in plan.manifests}
                changed = True
    notes = [f"not pushed: {p.label} refers to {subjects[id(p)]}, which is no image of this run that passed "
             "the signature policy" for p in artifacts
             if id(p) not in kept and (p.src_repo, subjects[id(p)]) not in held]
    return kept, notes


def _subject(src: Source, plan: ImagePlan) -> str | None:
    """The digest an artifact refers to (its referrer tag, or its manifest's ``subject``); None
    for an image."""
    for tag in plan.tags:
        if is_referrer_tag(tag):
            return "sha256:" + tag.removeprefix("sha256-")[:64]
    try:
        raw = plan.raw.get(plan.root.digest) or read_manifest(src, plan.src_repo, plan.root, MAX_MANIFEST_SIZE)
        view = parse_manifest(raw, plan.root.media_type, f"{plan.label} ({plan.root.digest})")
    except TransferInterrupted:
        raise
    except TransferError:
        return None  # unreadable here: treated as an image, and refused if it is not signed
    return view.subject.digest if view.subject is not None else None


class _Finder:
    """Finds the candidate signature manifests of an image (shared across threads): first among the
    plans (the signatures an export or a copy carries with their images, read while planning), then,
    where the plans hold none, in the source itself (``--no-referrers``, or a signature the plans
    left out)."""

    def __init__(self, src: Source, artifacts: list[ImagePlan], subjects: dict[int, str | None]) -> None:
        self.src = src
        self.tags = TagLists(src)
        self._tagged = {(p.src_repo, tag): p.root for p in artifacts for tag in p.tags}
        self._untagged: dict[tuple[str, str], list[Descriptor]] = {}  # a bundle's referrers (no tag)
        for plan in artifacts:
            if not plan.tags:
                self._untagged.setdefault((plan.src_repo, str(subjects[id(plan)])), []).append(plan.root)
        # manifest bytes read (and checked against their digests) while planning
        self.known: dict[str, bytes] = {d: raw for p in artifacts for d, raw in p.raw.items()}

    def candidates(self, repo: str, digest: str) -> tuple[list[tuple[str, Descriptor]], list[str]]:
        """(where, descriptor) of every signature manifest of ``repo@digest``, and the artifact
        types of referrers that are signatures in a format not verified here."""
        base = referrers_tag(digest)
        sig, index = self._tagged.get((repo, base + ".sig")), self._tagged.get((repo, base))
        where = f"tag {base}.sig"
        found, other = self._classify(repo, [(where, sig)] if sig else [], list(self._untagged.get((repo, digest), [])),
                                      index)
        if found:
            return found, other
        tags = self.tags(repo)
        sig = self.src.resolve(repo, base + ".sig") if base + ".sig" in tags else None
        index = self.src.resolve(repo, base) if base in tags else None
        referrers = self.src.referrers(repo, digest) if isinstance(self.src, Referrers) else []
        found, more = self._classify(repo, [(where, sig)] if sig else [], referrers, index)
        return found, other + more

    def _classify(self, repo: str, sigs: list[tuple[str, Descriptor]], referrers: list[Descriptor],
                  index: Descriptor | None) -> tuple[list[tuple[str, Descriptor]], list[str]]:
        found = list(sigs)
        if index is not None:
            referrers = referrers + self._index_entries(repo, index)
        other: list[str] = []
        seen = {d.digest for _, d in found}
        for desc in referrers:
            if desc.digest in seen or not desc.is_manifest:
                continue
            seen.add(desc.digest)
            if desc.artifact_type in (None, SIGNATURE_ARTIFACT):
                found.append((f"referrer {desc.digest}", desc))
            elif desc.artifact_type.startswith(SIGSTORE_BUNDLE_PREFIX):
                other.append(desc.artifact_type)
        return found, other

    def manifest(self, repo: str, desc: Descriptor) -> bytes:
        raw = self.known.get(desc.digest)
        return raw if raw is not None else read_manifest(self.src, repo, desc, MAX_MANIFEST_SIZE)

    def _index_entries(self, repo: str, desc: Descriptor) -> list[Descriptor]:
        """The manifests the OCI referrers fallback tag's index lists."""
        if not desc.is_manifest:
            return []
        view = parse_manifest(self.manifest(repo, desc), desc.media_type, f"{repo}@{desc.digest}", SignatureError)
        return list(view.manifests) if view.is_index else []


def check_image(src: Source, plan: ImagePlan, keys: list[PublicKey], finder: _Finder) -> Verdict:
    """The verdict for one image: the first signature that verifies, else every reason found."""
    digest = plan.root.digest
    try:
        candidates, other = finder.candidates(plan.src_repo, digest)
    except TransferInterrupted:
        raise
    except TransferError as exc:
        return Verdict(plan, reason=f"its signatures could not be looked up: {exc}")
    reasons: list[str] = []
    for where, desc in candidates:
        try:
            key = verify_manifest(src, plan.src_repo, desc, digest, keys, finder.manifest)
        except _NotYet as exc:
            return Verdict(plan, waits_for=str(exc))
        except TransferInterrupted:
            raise
        except TransferError as exc:
            reasons.append(f"{where}: {exc}")
            continue
        return Verdict(plan, key=key.fingerprint, signature=where)
    if not candidates:
        platform = (f"; --platform made a new index {digest}, which no one signed (the signature is on "
                    f"{plan.original_root})") if plan.original_root else ""
        extra = (f"; it has {len(other)} signature(s) in the Sigstore bundle format ({other[0]}), which "
                 "this version does not verify (sign with cosign --new-bundle-format=false)") if other else ""
        return Verdict(plan, reason=f"unsigned: no cosign signature (no tag {referrers_tag(digest)}.sig, no "
                                    f"signature referrer){platform}{extra}")
    shown = "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} more" if len(reasons) > 3 else "")
    return Verdict(plan, reason=shown)


def verify_manifest(src: Source, repo: str, desc: Descriptor, digest: str, keys: list[PublicKey],
                    read: Callable[[str, Descriptor], bytes] | None = None) -> PublicKey:
    """The trusted key of the first simple-signing layer of the signature manifest ``desc`` that
    verifies and names ``digest``; SignatureError saying why none does. ``read(repo, desc)``: the
    manifest's bytes, checked against its digest (default: read from ``src``)."""
    if isinstance(src, Partial) and not src.has(desc.digest):
        raise _NotYet(f"manifest {desc.digest}")
    raw = read(repo, desc) if read else read_manifest(src, repo, desc, MAX_MANIFEST_SIZE)
    view = parse_manifest(raw, desc.media_type, f"signature manifest {desc.digest}", SignatureError)
    layers = [layer for layer in view.layers if layer.media_type == SIMPLE_SIGNING]
    if not layers:
        raise SignatureError(f"no layer of media type {SIMPLE_SIGNING} (not a cosign simple-signing signature)")
    if len(view.layers) > MAX_SIGNATURE_LAYERS:
        raise SignatureError(f"{len(view.layers)} layers, more than the {MAX_SIGNATURE_LAYERS} allowed")
    reasons: list[str] = []
    for layer in layers:
        try:
            return verify_layer(src, repo, layer, digest, keys)
        except SignatureError as exc:
            reasons.append(str(exc))
    return _raise_first(reasons)


def _raise_first(reasons: list[str]) -> PublicKey:
    more = f" (and {len(reasons) - 1} more signature(s) failing)" if len(reasons) > 1 else ""
    raise SignatureError(reasons[0] + more)


def verify_layer(src: Source, repo: str, layer: Descriptor, digest: str, keys: list[PublicKey]) -> PublicKey:
    """One simple-signing layer: its signature over its payload by a trusted key, then the payload's
    claims (type, and the digest it names)."""
    signature = _signature_of(layer)
    payload = _payload(src, repo, layer)
    try:
        key = verify_any(keys, signature, payload)
    except SignatureError:
        raise SignatureError(f"payload {layer.digest}: no trusted key made its signature (signed by another "
                             "key, or the payload or signature was altered)") from None
    claims = _claims(payload, layer.digest)
    if claims["type"] != SIGNATURE_TYPE:
        raise SignatureError(f"payload {layer.digest}: critical.type is {str(claims['type'])[:80]!r}, not "
                             f"{SIGNATURE_TYPE!r}")
    if claims["digest"] != digest:
        raise SignatureError(f"the signature is for {str(claims['digest'])[:80]}, not this image ({digest})")
    return key


def _signature_of(layer: Descriptor) -> bytes:
    text = (layer.annotations or {}).get(SIGNATURE_ANNOTATION)
    if not text:
        raise SignatureError(f"layer {layer.digest} has no {SIGNATURE_ANNOTATION} annotation")
    if len(text) > MAX_SIGNATURE_B64:
        raise SignatureError(f"layer {layer.digest}: the signature annotation is {len(text)} characters long")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"layer {layer.digest}: the signature annotation is not base64") from None


def _payload(src: Source, repo: str, layer: Descriptor) -> bytes:
    """The payload blob, bounded and checked against the layer's digest and size."""
    if layer.size > MAX_PAYLOAD:
        raise SignatureError(f"payload {layer.digest} is {layer.size} bytes, more than the {MAX_PAYLOAD} allowed")
    if isinstance(src, Partial) and not src.has(layer.digest):
        raise _NotYet(f"blob {layer.digest}")
    try:
        with src.fetch(repo, layer) as reader:
            data = reader.read_all(MAX_PAYLOAD)
    except TransferInterrupted:
        raise
    except TransferError as exc:
        raise SignatureError(f"payload {layer.digest}: {exc}") from None
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != layer.digest or len(data) != layer.size:
        raise SignatureError(f"payload {layer.digest}: its bytes hash to {actual} ({len(data)} bytes)")
    return data


def _claims(payload: bytes, where: str) -> dict[str, Any]:
    """``critical.type`` and ``critical.image.docker-manifest-digest`` of a simple-signing payload."""
    what = f"payload {where}"
    doc = load_json(payload, what, SignatureError, MAX_PAYLOAD)
    critical = _field(doc, "critical", what)
    image = _field(critical, "image", what + " critical")
    return {"type": _field(critical, "type", what + " critical"),
            "digest": _field(image, "docker-manifest-digest", what + " critical.image")}


def _field(obj: Any, name: str, what: str) -> Any:
    """``obj[name]``, the key matched without regard to case (as Go's encoding/json does); a key
    present in two spellings is refused."""
    if not isinstance(obj, dict):
        raise SignatureError(f"{what} is not a JSON object")
    matches = [k for k in obj if k.casefold() == name.casefold()]
    if not matches:
        raise SignatureError(f"{what} has no {name!r}")
    if len(matches) > 1:
        raise SignatureError(f"{what} has {name!r} {len(matches)} times ({', '.join(map(repr, matches))})")
    return obj[matches[0]]
