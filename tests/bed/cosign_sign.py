"""Cosign key-based image signatures made the way ``cosign sign --key`` (1.x/2.x, and 3.x with
``--new-bundle-format=false``) makes them, for the image-signature policy tests:

- the payload is sigstore's ``payload.Cosign`` marshalled by Go's ``encoding/json`` (compact,
  struct field order): ``{"critical":{"identity":{"docker-reference":REPO},"image":
  {"docker-manifest-digest":DIGEST},"type":"cosign container image signature"},"optional":null}``;
- the signature is DER ECDSA P-256 over SHA-256 of the payload bytes, base64 in the layer
  annotation ``dev.cosignproject.cosign/signature``;
- the signature manifest is an OCI image manifest whose layer (media type
  ``application/vnd.dev.cosign.simplesigning.v1+json``) is the payload blob, and whose config is
  the image config cosign writes for it; it goes up under the tag ``sha256-<hex>.sig``, or (cosign's
  OCI 1.1 mode) as a referrer: ``subject`` set, artifactType
  ``application/vnd.dev.cosign.artifact.sig.v1+json``, listed in the ``sha256-<hex>`` fallback
  tag's index (a registry without the referrers API, as distribution 2.8).

Signing uses ``cryptography`` directly (not the code under test); tests check a signature with
``openssl`` too.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from tests.bed.images import OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, Blob, Layout, Manifest

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"


def cosign_payload(docker_reference: str, digest: str, *, kind: str = "cosign container image signature") -> bytes:
    """The simple-signing payload, byte for byte as cosign's Go code marshals it."""
    doc = {"critical": {"identity": {"docker-reference": docker_reference},
                        "image": {"docker-manifest-digest": digest}, "type": kind}, "optional": None}
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class KeyPair:
    private: object
    public_pem: Path

    @classmethod
    def make(cls, folder: Path, name: str) -> "KeyPair":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        pub = folder / f"{name}.pub"
        pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
        return cls(key, pub)

    def sign(self, payload: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        return self.private.sign(payload, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]


def signature_manifest(layout: Layout, payload: bytes, signature: bytes, *, subject: Manifest | None = None,
                       tag: str | None = None) -> Manifest:
    """A cosign signature manifest over ``payload`` (stored as given: a test may pass a payload
    other than the one signed), as a ``.sig`` image or, with ``subject``, an OCI 1.1 referrer."""
    layer = Blob(SIMPLE_SIGNING, layout.put(payload), len(payload))
    layer_desc = layer.descriptor(annotations={SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()})
    if subject is None:
        config_doc = {"architecture": "", "created": "0001-01-01T00:00:00Z",
                      "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
                      "rootfs": {"type": "layers", "diff_ids": [layer.digest]}, "config": {}}
        data = json.dumps(config_doc, separators=(",", ":")).encode()
        config = Blob(OCI_CONFIG, layout.put(data), len(data))
        body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(), "layers": [layer_desc]}
        fields = {}
    else:
        config = Blob(OCI_EMPTY, layout.put(b"{}"), 2)
        body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SIGNATURE_ARTIFACT,
                "config": config.descriptor(), "layers": [layer_desc], "subject": subject.descriptor()}
        fields = {"artifact_type": SIGNATURE_ARTIFACT, "subject": subject}
    raw = json.dumps(body, separators=(",", ":")).encode()
    layout.put(raw)
    manifest = Manifest(OCI_MANIFEST, raw, config=config, layers=[layer], **fields)
    if tag:
        layout.tag(manifest, tag)
    return manifest


def sig_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


def fallback_index(layout: Layout, referrers: list[Manifest]) -> Manifest:
    """The OCI referrers fallback-tag index listing ``referrers`` (with their artifactType)."""
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [r.descriptor(artifactType=r.artifact_type) for r in referrers]}
    raw = json.dumps(body, separators=(",", ":")).encode()
    layout.put(raw)
    return Manifest(OCI_INDEX, raw, children=list(referrers))
