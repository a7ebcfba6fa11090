"""The image-signature policy (``import``/``copy --require-signed PUB``) against real registries.

Signatures are made in the test the way ``cosign sign --key`` makes them (tests/bed/cosign_sign.py:
the payload cosign's Go code marshals, DER ECDSA P-256 over SHA-256, base64 in the layer
annotation), pushed with skopeo as ``sha256-<hex>.sig`` tags from an OCI layout, or with raw HTTP
as an OCI 1.1 referrer listed in the ``sha256-<hex>`` fallback tag's index (distribution 2.8 has
no referrers API). What reaches the destination is checked with skopeo and raw HEADs.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import transfer
from tests.bed.cosign_sign import KeyPair, cosign_payload, fallback_index, sig_tag, signature_manifest
from tests.bed.images import ARM64, AMD64, Layout, Manifest
from tests.bed.push import push_tree
from tests.bed.registry import Registry
from tests.bed.skopeo import SkopeoError
from tests.cli_helpers import run_cli
from transfer.keys import load_public_key
from transfer.registry import RegistryClient

SIGNED = ("good", "referrer", "multi")  # pass with key A
REFUSED = {  # refused with key A, and a word of the reason
    "unsigned": "unsigned",
    "wrongdigest": "the signature is for",
    "otherkey": "no trusted key made its signature",
    "tampered": "no trusted key made its signature",
    "malformed": "critical.type",
}


@dataclass
class World:
    src: Registry
    a: KeyPair
    b: KeyPair
    images: dict[str, Manifest] = field(default_factory=dict)  # name -> image (pol/NAME:1)
    signatures: dict[str, Manifest] = field(default_factory=dict)  # name -> its signature manifest
    payloads: dict[str, bytes] = field(default_factory=dict)  # name -> signed payload
    extra: dict[str, Manifest] = field(default_factory=dict)  # other referrers (an SBOM of "unsigned")

    def ref(self, name: str) -> str:
        return f"{self.src.host}/pol/{name}:1"


def _sign(world: World, layout: Layout, skopeo, name: str, key: KeyPair, payload: bytes,
          stored: bytes | None = None) -> None:
    image = world.images[name]
    sig = signature_manifest(layout, stored or payload, key.sign(payload))
    skopeo.seed(world.src, layout, sig, f"pol/{name}", sig_tag(image.digest))
    world.signatures[name], world.payloads[name] = sig, payload


@pytest.fixture(scope="module")
def world(tmp_path_factory, skopeo):
    folder = tmp_path_factory.mktemp("policy")
    src = Registry(folder / "registry", "plain")
    src.start()
    try:
        w = World(src, KeyPair.make(folder, "a"), KeyPair.make(folder, "b"))
        layout = Layout(folder / "layout")
        for name in ("good", "unsigned", "wrongdigest", "otherkey", "tampered", "malformed", "referrer"):
            w.images[name] = layout.image(f"policy-{name}", [30_000])
        amd = layout.image("policy-multi-amd64", [20_000], platform=AMD64)
        arm = layout.image("policy-multi-arm64", [20_000], platform=ARM64)
        w.images["multi"] = layout.index([amd, arm])
        for name, image in w.images.items():
            skopeo.seed(src, layout, image, f"pol/{name}", "1")
        host = src.host
        digest = {n: m.digest for n, m in w.images.items()}
        _sign(w, layout, skopeo, "good", w.a, cosign_payload(f"{host}/pol/good", digest["good"]))
        _sign(w, layout, skopeo, "multi", w.a, cosign_payload(f"{host}/pol/multi", digest["multi"]))
        _sign(w, layout, skopeo, "wrongdigest", w.a, cosign_payload(f"{host}/pol/wrongdigest", digest["good"]))
        _sign(w, layout, skopeo, "otherkey", w.b, cosign_payload(f"{host}/pol/otherkey", digest["otherkey"]))
        signed = cosign_payload(f"{host}/pol/tampered", digest["tampered"])
        _sign(w, layout, skopeo, "tampered", w.a, signed, stored=signed.replace(b"pol/tampered", b"pol/tamperex"))
        _sign(w, layout, skopeo, "malformed", w.a,
              cosign_payload(f"{host}/pol/malformed", digest["malformed"], kind="atomic container signature"))
        # The referrer: cosign's OCI 1.1 mode, through the fallback tag (no referrers API here).
        image = w.images["referrer"]
        payload = cosign_payload(f"{host}/pol/referrer", image.digest)
        ref_sig = signature_manifest(layout, payload, w.a.sign(payload), subject=image)
        push_tree(src, layout, fallback_index(layout, [ref_sig]), "pol/referrer", image.digest.replace(":", "-"))
        w.signatures["referrer"], w.payloads["referrer"] = ref_sig, payload
        # An SBOM of an unsigned image: it must not travel when its image is refused.
        sbom = layout.artifact(w.images["unsigned"])
        push_tree(src, layout, fallback_index(layout, [sbom]), "pol/unsigned",
                  w.images["unsigned"].digest.replace(":", "-"))
        w.extra["unsigned-sbom"] = sbom
        yield w
    finally:
        src.stop()


@pytest.fixture(scope="module")
def bundle(world, tmp_path_factory) -> str:
    """A plain export of every pol/NAME:1 (no --all-tags): the signatures travel with the images."""
    path = str(tmp_path_factory.mktemp("policy-bundle") / "pol.bundle")
    transfer.export([world.ref(n) for n in world.images], path)
    return path


def _head(registry: Registry, repo: str, digest: str) -> bool:
    import requests

    return requests.head(f"{registry.url}/v2/{repo}/blobs/{digest}", timeout=10).status_code == 200


def _nothing_of(world: World, dest: Registry, skopeo, name: str) -> None:
    """No manifest, tag, signature or layer of the refused image ``name`` at ``dest``."""
    image = world.images[name]
    with pytest.raises(SkopeoError):
        skopeo.inspect_raw(dest, f"pol/{name}:1")
    with pytest.raises(SkopeoError):
        skopeo.inspect_raw(dest, f"pol/{name}@{image.digest}")
    assert not _head(dest, f"pol/{name}", image.layers[0].digest)
    assert not _head(dest, f"pol/{name}", image.config.digest)
    assert f"pol/{name}" not in RegistryClient(dest.host).catalog()


def _passed(world: World, dest: Registry, skopeo, name: str) -> None:
    """The image at ``dest`` with its digest (skopeo), and its signature beside it."""
    image = world.images[name]
    assert skopeo.digest(dest, f"pol/{name}:1") == image.digest
    tags = skopeo.list_tags(dest, f"pol/{name}")
    if name == "referrer":
        assert image.digest.replace(":", "-") in tags
        assert skopeo.digest(dest, f"pol/{name}@{world.signatures[name].digest}") == world.signatures[name].digest
    else:
        assert sig_tag(image.digest) in tags
        assert skopeo.digest(dest, f"pol/{name}:{sig_tag(image.digest)}") == world.signatures[name].digest


def _check_verdicts(world: World, verdicts: list[dict], trusted: dict[str, str]) -> None:
    by_image = {v["image"].removeprefix("pol/").removesuffix(":1"): v for v in verdicts}
    assert set(by_image) == set(world.images)
    fingerprint = load_public_key(world.a.public_pem).fingerprint
    for name in SIGNED:
        v = by_image[name]
        assert v["verified"] and v["key"] == fingerprint and v["digest"] == world.images[name].digest, v
        assert v["signature"] == (f"referrer {world.signatures[name].digest}" if name == "referrer"
                                  else f"tag {sig_tag(world.images[name].digest)}")
    for name, word in REFUSED.items():
        v = by_image[name]
        if name in trusted:
            assert v["verified"] and v["key"] == trusted[name], v
        else:
            assert not v["verified"] and v["key"] is None and word in v["reason"], v


def test_plain_export_carries_the_signatures(world, bundle):
    """``export REPO:TAG`` (no --all-tags) carries each image's ``.sig`` tag and fallback referrers index."""
    with transfer.open_bundle(bundle) as b:
        tags = {(i.repository, i.tag) for i in b.listing().images}
    for name in ("good", "multi", "wrongdigest", "otherkey", "tampered", "malformed"):
        assert (f"pol/{name}", sig_tag(world.images[name].digest)) in tags
    assert ("pol/referrer", world.images["referrer"].digest.replace(":", "-")) in tags


def test_signatures_are_cosigns_and_openssl_checks_them(world, tmp_path):
    """An independent check of the test's signatures: openssl verifies them over the payload."""
    for name in ("good", "referrer"):
        payload, sig = tmp_path / f"{name}.json", tmp_path / f"{name}.sig"
        payload.write_bytes(world.payloads[name])
        doc = json.loads(world.signatures[name].raw)
        import base64
        sig.write_bytes(base64.b64decode(doc["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"]))
        done = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(world.a.public_pem), "-signature",
                               str(sig), str(payload)], capture_output=True, text=True)
        assert done.returncode == 0 and "Verified OK" in done.stdout, done.stderr
        assert json.loads(world.payloads[name])["critical"]["image"]["docker-manifest-digest"] == world.images[name].digest


def test_import_refuses_before_anything_is_pushed(world, bundle, fresh_registry, capsys):
    dest = fresh_registry()
    res = run_cli(capsys, "import", bundle, dest.host, "--require-signed", world.a.public_pem)
    assert res.code == 1
    assert "image(s) refused by --require-signed" in res.err and "nothing was pushed" in res.err
    for name, word in REFUSED.items():
        assert f"FAILED pol/{name}:1: refused by --require-signed:" in res.out and word in res.out
    assert RegistryClient(dest.host).catalog() == []  # not even the images that passed


def test_import_keep_going_pushes_the_signed_images(world, bundle, fresh_registry, skopeo, capsys):
    dest = fresh_registry()
    res = run_cli(capsys, "import", bundle, dest.host, "--require-signed", world.a.public_pem, "--keep-going", "--json")
    assert res.code == 1, res.err
    report = res.json()
    assert report["images"] == len(SIGNED) + 3  # the signatures of good and multi, the referrers index
    assert {f["image"] for f in report["failures"]} == {f"pol/{n}:1" for n in REFUSED}
    _check_verdicts(world, report["image_signatures"], {})
    for name in SIGNED:
        _passed(world, dest, skopeo, name)
    for name in REFUSED:
        _nothing_of(world, dest, skopeo, name)
    assert not _head(dest, "pol/unsigned", world.extra["unsigned-sbom"].layers[0].digest)  # its SBOM stayed out
    assert "refused by --require-signed" in res.err


def test_import_trusts_any_of_several_keys(world, bundle, fresh_registry, skopeo):
    dest = fresh_registry()
    options = transfer.ImportOptions(require_signed=[str(world.a.public_pem), str(world.b.public_pem)],
                                     keep_going=True)
    with pytest.raises(transfer.ImagePolicyError) as caught:
        transfer.import_bundle(bundle, dest.host, options=options)
    assert isinstance(caught.value, transfer.SignatureError) and isinstance(caught.value, transfer.IncompleteError)
    report: transfer.ImportReport = caught.value.report
    verdicts = [v.model_dump() for v in report.image_signatures]
    _check_verdicts(world, verdicts, {"otherkey": load_public_key(world.b.public_pem).fingerprint})
    _passed(world, dest, skopeo, "otherkey")
    _nothing_of(world, dest, skopeo, "tampered")


def test_import_of_signed_images_only_passes(world, bundle, fresh_registry, skopeo, capsys):
    """A bundle of signed images alone imports with exit 0 and says which key signed each."""
    only = str(Path(bundle).with_name("signed.bundle"))
    transfer.export([world.ref(n) for n in SIGNED], only)
    dest = fresh_registry()
    res = run_cli(capsys, "import", only, dest.host, "--require-signed", world.a.public_pem)
    assert res.code == 0, res.err
    fingerprint = load_public_key(world.a.public_pem).fingerprint
    assert f"signed: pol/good:1 by key {fingerprint} (tag {sig_tag(world.images['good'].digest)})" in res.out
    for name in SIGNED:
        _passed(world, dest, skopeo, name)


def test_copy_refuses_unsigned_and_passes_signed(world, fresh_registry, skopeo, capsys):
    dest = fresh_registry()
    res = run_cli(capsys, "copy", world.ref("unsigned"), f"{dest.host}/pol/unsigned:1",
                  "--require-signed", world.a.public_pem)
    assert res.code == 1 and "unsigned: no cosign signature" in res.out
    assert RegistryClient(dest.host).catalog() == []
    res = run_cli(capsys, "copy", world.ref("good"), f"{dest.host}/pol/good:1", "--require-signed", world.a.public_pem)
    assert res.code == 0, res.err
    _passed(world, dest, skopeo, "good")


def test_copy_catalog_keep_going(world, fresh_registry, skopeo, capsys):
    dest = fresh_registry()
    res = run_cli(capsys, "copy", "--catalog", world.src.host, dest.host, "--require-signed", world.a.public_pem,
                  "--keep-going", "--json")
    assert res.code == 1, res.err
    report = res.json()
    _check_verdicts(world, report["image_signatures"], {})
    assert {f["image"] for f in report["failures"]} == {f"pol/{n}:1" for n in REFUSED}
    for name in SIGNED:
        _passed(world, dest, skopeo, name)
    for name in REFUSED:
        _nothing_of(world, dest, skopeo, name)


def test_copy_catalog_without_keep_going_pushes_nothing(world, fresh_registry, capsys):
    dest = fresh_registry()
    res = run_cli(capsys, "copy", "--catalog", world.src.host, dest.host, "--require-signed", world.a.public_pem)
    assert res.code == 1 and "nothing was pushed" in res.err
    assert RegistryClient(dest.host).catalog() == []


def test_keys_and_streams_the_policy_cannot_use(world, bundle, fresh_registry, tmp_path, capsys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    dest = fresh_registry()
    ed = tmp_path / "ed.pub"
    ed.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    res = run_cli(capsys, "import", bundle, dest.host, "--require-signed", ed)
    assert res.code == 2 and "Ed25519ph" in res.err
    res = run_cli(capsys, "copy", world.ref("good"), f"{dest.host}/x:1", "--require-signed", tmp_path / "missing.pub")
    assert res.code == 2 and "missing.pub" in res.err
    with open(bundle, "rb") as stream:
        with pytest.raises(transfer.UsageError, match="needs the bundle as a file"):
            transfer.import_bundle(stream, dest.host,
                                   options=transfer.ImportOptions(require_signed=[str(world.a.public_pem)]))
    assert RegistryClient(dest.host).catalog() == []


def test_dry_run_lists_what_the_policy_would_refuse(world, bundle, fresh_registry, capsys):
    dest = fresh_registry()
    res = run_cli(capsys, "import", bundle, dest.host, "--require-signed", world.a.public_pem, "--dry-run", "--json")
    assert res.code == 0, res.err
    plan = res.json()
    refused = [n for n in plan["notes"] if n.startswith("would refuse")]
    assert sorted(n.split(":")[0] for n in refused) == sorted(f"would refuse pol/{n}" for n in REFUSED)
    tagged = {t.split(" -> ")[0] for t in plan["tags"]}
    assert {f"pol/{n}:1" for n in SIGNED} <= tagged and not {f"pol/{n}:1" for n in REFUSED} & tagged
    assert RegistryClient(dest.host).catalog() == []


def test_split_parts_one_by_one_are_refused(world, fresh_registry, skopeo, tmp_path, capsys):
    """Parts imported alone cannot be checked: a signature may come in a later part than its image."""
    out, arrival = tmp_path / "out", tmp_path / "arrival"
    out.mkdir(), arrival.mkdir()
    res = run_cli(capsys, "export", *[world.ref(n) for n in SIGNED], "--split-size", "64KiB", "-o", out / "s.bundle",
                  "-q")
    assert res.code == 0, res.err
    parts = sorted(out.iterdir())
    assert len(parts) > 1
    first = arrival / parts[0].name
    first.write_bytes(parts[0].read_bytes())
    dest = fresh_registry()
    res = run_cli(capsys, "import", first, dest.host, "--require-signed", world.a.public_pem)
    assert res.code == 2 and "needs every part" in res.err
    assert RegistryClient(dest.host).catalog() == []
    res = run_cli(capsys, "import", out / "s.bundle", dest.host, "--require-signed", world.a.public_pem)
    assert res.code == 0, res.err  # all parts together: checked and imported
    for name in SIGNED:
        _passed(world, dest, skopeo, name)


def test_hostile_signatures_are_refused_in_one_line(fresh_registry, skopeo, tmp_path, capsys):
    """Signatures that are not what they claim, each refused with its reason, none a traceback."""
    src, dest = fresh_registry(), fresh_registry()
    key = KeyPair.make(tmp_path, "k")
    layout = Layout(tmp_path / "layout")
    cases = {  # name -> (stored payload, signed bytes, annotation override, word of the reason)
        "notjson": (b"{not json", None, None, "not valid JSON"),
        "twocase": (None, None, None, "2 times"),
        "nobase64": (None, None, "!!!not-base64!!!", "not base64"),
        "deep": (b"[" * 100 + b"]" * 100, None, None, "nested more than"),
        "nocritical": (b'{"optional": null}', None, None, "has no 'critical'"),
    }
    for name, (stored, _, annotation, _) in cases.items():
        image = layout.image(f"hostile-{name}", [10_000])
        skopeo.seed(src, layout, image, f"h/{name}", "1")
        payload = stored or cosign_payload(f"{src.host}/h/{name}", image.digest)
        if name == "twocase":  # the digest twice, in two spellings: cosign's decoder and ours could differ
            payload = payload.replace(b'"docker-manifest-digest":', b'"Docker-Manifest-Digest":"sha256:' + b"0" * 64
                                      + b'","docker-manifest-digest":')
        sig = signature_manifest(layout, payload, key.sign(payload))
        if annotation:
            doc = json.loads(sig.raw)
            doc["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"] = annotation
            raw = json.dumps(doc).encode()
            layout.put(raw)
            sig = Manifest(sig.media_type, raw, config=sig.config, layers=sig.layers)
        skopeo.seed(src, layout, sig, f"h/{name}", sig_tag(image.digest))
    res = run_cli(capsys, "copy", "--catalog", src.host, dest.host, "--require-signed", key.public_pem,
                  "--keep-going", "--json")
    assert res.code == 1 and "Traceback" not in res.err
    reasons = {v["image"]: v["reason"] for v in res.json()["image_signatures"]}
    for name, (*_, word) in cases.items():
        assert word in reasons[f"h/{name}:1"], reasons[f"h/{name}:1"]
    assert RegistryClient(dest.host).catalog() == []


def test_copy_without_referrers_still_checks_and_platform_subsets_are_unsigned(world, fresh_registry, skopeo, capsys):
    dest = fresh_registry()
    # --no-referrers: the signature is looked up at the source, checked, and (as asked) not copied.
    res = run_cli(capsys, "copy", world.ref("good"), f"{dest.host}/pol/good:1", "--no-referrers",
                  "--require-signed", world.a.public_pem)
    assert res.code == 0, res.err
    assert skopeo.list_tags(dest, "pol/good") == ["1"]
    # --platform makes a new index that no one signed: refused, and said why.
    res = run_cli(capsys, "copy", world.ref("multi"), f"{dest.host}/pol/multi:1", "--platform", "linux/amd64",
                  "--require-signed", world.a.public_pem)
    assert res.code == 1 and "--platform made a new index" in res.out
    assert "pol/multi" not in RegistryClient(dest.host).catalog()
