"""Docker archives through pipes (issue 13): `unpack --docker-archive -` writes the tar to standard
output (| docker load) and `export --from docker-archive:-` reads one from standard input
(docker save | ...); a whole catalog bundle, referrers and all, unpacks to a docker archive."""

from __future__ import annotations

import json
import subprocess
import tarfile

from tests.cli_helpers import ROOT
from tests.test_pipes import CLI, ENV
from transfer.bundle import BundleReader
from transfer.models import parse_manifest


def _configs(path) -> dict[str, str]:
    """repository:tag -> config digest of every single-platform image of a bundle."""
    out = {}
    with BundleReader(path) as reader:
        for entry in reader.entries:
            view = parse_manifest(reader.read(entry.digest), entry.media_type, entry.digest)
            if entry.tag and view.config is not None:
                out[f"{entry.repository}:{entry.tag}"] = view.config.digest
    return out


def test_a_catalog_bundle_unpacked_to_a_docker_archive_on_stdout_packs_back_from_stdin(registry, tmp_path):
    bundle, back = tmp_path / "catalog.bundle", tmp_path / "back.bundle"
    res = subprocess.run(CLI + ["export", "--catalog", registry.host, "-o", str(bundle), "-q"], env=ENV, cwd=ROOT)
    assert res.returncode == 0
    unpack = subprocess.Popen(CLI + ["unpack", str(bundle), "--docker-archive", "-", "--platform", "linux/amd64"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=ROOT)
    export = subprocess.run(CLI + ["export", "--from", "docker-archive:-", "-o", str(back), "--json"],
                            stdin=unpack.stdout, capture_output=True, env=ENV, cwd=ROOT, timeout=300)
    unpack.stdout.close()
    err = unpack.stderr.read().decode()
    assert unpack.wait(timeout=60) == 0, err
    assert export.returncode == 0, export.stderr.decode()
    # The referrers (signature tag, artifact) and the fallback tags are skipped with a note, not fatal.
    assert "skipped: a signature, attestation or other referrer" in err and "Traceback" not in err
    assert json.loads(export.stdout)["complete"] is True
    original, packed = _configs(bundle), _configs(back)
    images = {f"sample/{ref}:{ref}" for ref in ("small", "app", "docker")}
    assert images <= set(packed) and all(packed[i] == original[i] for i in images)
    # The multi-platform index became its linux/amd64 image: that image's config.
    with BundleReader(bundle) as reader:
        root = reader.resolve("sample/multi", "multi")
        index = parse_manifest(reader.read(root.digest), root.media_type)
        amd64 = next(m for m in index.manifests if m.platform and m.platform.architecture == "amd64")
        config = parse_manifest(reader.read(amd64.digest), amd64.media_type).config
    assert packed["sample/multi:multi"] == config.digest


def test_unpack_to_stdout_writes_a_tar_and_nothing_else(registry, tmp_path):
    bundle = tmp_path / "small.bundle"
    assert subprocess.run(CLI + ["export", f"{registry.host}/sample/small:small", "-o", str(bundle), "-q"],
                          env=ENV, cwd=ROOT).returncode == 0
    res = subprocess.run(CLI + ["unpack", str(bundle), "--docker-archive", "-"], capture_output=True, env=ENV,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    (tmp_path / "out.tar").write_bytes(res.stdout)
    with tarfile.open(tmp_path / "out.tar") as tar:
        names = tar.getnames()
    assert "manifest.json" in names and "index.json" in names
    assert b"unpacked 1 image(s)" in res.stderr  # the summary went to stderr, the tar alone to stdout
