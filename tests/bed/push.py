"""A minimal raw HTTP push (requests: blobs by monolithic POST+PUT, then manifests), for what
skopeo 1.9.3 cannot seed from an OCI layout: a Docker manifest list (its OCI layout reader only
finds OCI-typed index.json entries, and presenting the list as an OCI index makes
``--preserve-digests`` refuse the conversion). Manifest bytes go up unchanged."""

from __future__ import annotations

from tests.bed.images import Layout, Manifest
from tests.bed.registry import Registry, admin_session

TIMEOUT = 30


def push_blob(session, base: str, repo: str, digest: str, data: bytes) -> None:
    if session.head(f"{base}/v2/{repo}/blobs/{digest}", timeout=TIMEOUT).status_code == 200:
        return
    started = session.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=TIMEOUT)
    started.raise_for_status()
    location = started.headers["Location"]
    sep = "&" if "?" in location else "?"
    done = session.put(f"{location}{sep}digest={digest}", data=data, timeout=TIMEOUT,
                       headers={"Content-Type": "application/octet-stream"})
    done.raise_for_status()


def push_manifest(session, base: str, repo: str, manifest: Manifest, reference: str) -> None:
    reply = session.put(f"{base}/v2/{repo}/manifests/{reference}", data=manifest.raw, timeout=TIMEOUT,
                        headers={"Content-Type": manifest.media_type})
    reply.raise_for_status()
    if reply.headers.get("Docker-Content-Digest") != manifest.digest:
        raise AssertionError(f"registry stored {repo}:{reference} as "
                             f"{reply.headers.get('Docker-Content-Digest')}, expected {manifest.digest}")


def push_tree(registry: Registry, layout: Layout, manifest: Manifest, repo: str, tag: str | None) -> None:
    """Push ``manifest`` with its children and blobs; tag it if ``tag`` is given."""
    session = admin_session(registry, repo)
    with session:
        _push(session, registry.url, layout, manifest, repo)
        if tag:
            push_manifest(session, registry.url, repo, manifest, tag)


def _push(session, base: str, layout: Layout, manifest: Manifest, repo: str) -> None:
    for child in manifest.children:
        _push(session, base, layout, child, repo)
    for blob in ([manifest.config] if manifest.config else []) + manifest.layers:
        push_blob(session, base, repo, blob.digest, layout.blob_path(blob.digest).read_bytes())
    push_manifest(session, base, repo, manifest, manifest.digest)
