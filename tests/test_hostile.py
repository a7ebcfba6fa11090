"""Hostile and careless input (issue 12, items 2, 3 and 5): names checked where they enter, one
bounded parse of untrusted JSON, no traceback, bounded paging. See docs/threat-model.md.

Bundles, OCI layouts and docker archives are crafted here; registry answers come from a scripted
hostile registry (tests/bed/hostile_registry.py) that records every request it receives.
"""

from __future__ import annotations

import io
import json
import logging
import random
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
from cli_helpers import run_cli, spawn_cli
from test_bundle import CREATED, image, push

from tests.bed.hostile_registry import Answer, HostileRegistry, digest_of, serve_image
from transfer.bundle import BundleReader, BundleWriter
from transfer.bundle import format as fmt
from transfer.bundle.format import RecordHeader
from transfer.bundle.reader import load_part
from transfer.digest import digest_bytes, validate_digest
from transfer.docker_archive import DockerArchive
from transfer.errors import (CorruptBundleError, InvalidReferenceError, LayoutError, RegistryError,
                             UsageError)
from transfer.inventories import read_inventory
from transfer.layout import OciLayout
from transfer.models import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST
from transfer.reference import validate_repository, validate_tag
from transfer.registry import RegistryClient
from transfer.registry import client as client_module
from transfer.registry.client import parse_range_end

ESCAPES = ["\x1b]0;pwned\x07", "\x1b[2J"]
BAD_TAGS = ["../../../../admin/x", "a/b", "v1\n", *ESCAPES]
DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE = "1" * 5000


def cli(*args: str) -> tuple[int, str, str]:
    """``transfer ARGS`` in a subprocess: what a user sees, traceback included."""
    proc = spawn_cli(*args)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 1 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("transfer: error:")]
    assert len(lines) == 1 and all(w in lines[0] for w in words), err
    assert "\x1b" not in err


# ---- names: validators ------------------------------------------------------------------------


def test_validators_refuse_a_trailing_newline():
    for check, good in ((validate_tag, "v1"), (validate_repository, "team/app"),
                        (validate_digest, digest_of(b"x"))):
        assert check(good) == good
        with pytest.raises(InvalidReferenceError):
            check(good + "\n")


# ---- a minimal image the scripted registry serves -----------------------------------------------

CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()


def manifest_body(**changes) -> bytes:
    body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest_of(CONFIG), "size": len(CONFIG)}, "layers": []}
    return json.dumps({**body, **changes}).encode()


GOOD = manifest_body()


def serve(*scripts):
    """A HostileRegistry trying ``scripts`` in order, then the good image app:good."""
    fallback = serve_image("app", "good", GOOD, {digest_of(CONFIG): CONFIG})

    def script(method, path, query):
        for s in scripts:
            if (answer := s(method, path, query)) is not None:
                return answer
        return fallback(method, path, query)

    return HostileRegistry(script)


def at(want: str, answer):
    """A script answering ``answer`` (an Answer, or a function of the query) at path ``want``."""
    return lambda method, path, query: ((answer(query) if callable(answer) else answer) if path == want else None)


def manifest_at(tag: str, body: bytes):
    """A script serving ``body`` as the manifest ``app:tag`` (and by its digest)."""
    answer = Answer(body=body, headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest_of(body)})
    paths = (f"/v2/app/manifests/{tag}", f"/v2/app/manifests/{digest_of(body)}")
    return lambda method, path, query: answer if path in paths else None


def outside(reg: HostileRegistry, repo: str) -> list[str]:
    return [p for p in reg.paths if p != "/v2/" and not p.startswith(f"/v2/{repo}/")]


# ---- names from a registry ----------------------------------------------------------------------


def test_tags_list_hostile_tags_are_skipped_with_a_warning(caplog):
    with serve(at("/v2/app/tags/list", Answer(body={"name": "app", "tags": [*BAD_TAGS, "good", 5]}))) as reg:
        with caplog.at_level(logging.WARNING), RegistryClient(reg.host) as client:
            assert client.tags("app") == ["good"]
    assert "skipping 6 invalid tag(s)" in caplog.text and "\x1b" not in caplog.text


def test_export_all_tags_sends_nothing_outside_the_repository(tmp_path, capsys):
    with serve(at("/v2/app/tags/list", Answer(body={"name": "app", "tags": [*BAD_TAGS, "good"]}))) as reg:
        res = run_cli(capsys, "export", f"{reg.host}/app", "--all-tags", "-o", tmp_path / "b")
    assert res.code == 0, res.err
    assert not outside(reg, "app"), outside(reg, "app")
    assert BundleReader(tmp_path / "b").tags("app") == ["good"]


def test_client_builds_no_url_outside_the_repository():
    with serve() as reg, RegistryClient(reg.host) as client:
        client.ping()
        for bad in BAD_TAGS:
            with pytest.raises(InvalidReferenceError):
                client.get_manifest("app", bad)
            with pytest.raises(InvalidReferenceError):
                client.head_manifest("app", bad)
            with pytest.raises(InvalidReferenceError):
                client.put_manifest("app", bad, GOOD, OCI_MANIFEST)
        for path in ("/v2/../admin", "/admin", "/v2/app/manifests/../../x", "/v2/app/manifests/a\nb"):
            with pytest.raises(InvalidReferenceError, match="not a Registry API path"):
                client.request("GET", path)
    assert reg.paths == ["/v2/"]


def test_ls_remote_prints_no_terminal_escape(capsys):
    catalog = {"repositories": ["good/app", *ESCAPES, "../x"]}
    with serve(at("/v2/_catalog", Answer(body=catalog))) as reg:
        res = run_cli(capsys, "ls-remote", reg.host)
    assert res.code == 0 and res.out.split() == ["good/app"]
    assert "\x1b" not in res.out + res.err


# ---- paging -------------------------------------------------------------------------------------


def test_catalog_that_pages_forever_ends_in_an_error(monkeypatch, capsys):
    monkeypatch.setattr(client_module, "MAX_LIST_ENTRIES", 20_000)

    def page(query):
        n = int(query.get("last", ["0"])[0])
        names = [f"repo{n}x{i}" for i in range(5000)]
        return Answer(body={"repositories": names}, headers={"Link": f'</v2/_catalog?last={n + 1}&n=5000>; rel="next"'})

    with serve(at("/v2/_catalog", page)) as reg:
        res = run_cli(capsys, "ls-remote", reg.host)
    assert res.code == 1 and "more than 20000 entries" in res.err
    assert len(reg.paths) <= 1 + 5


@pytest.mark.parametrize("cycle", [1, 2])
def test_catalog_link_loop_is_detected(cycle, capsys):
    """A Link from the first page to itself, or a cycle of two pages."""
    def page(query):
        nxt = "/v2/_catalog?last=a" if cycle == 2 and "last" not in query else "/v2/_catalog?n=1000"
        return Answer(body={"repositories": ["x"]}, headers={"Link": f'<{nxt}>; rel="next"'})

    with serve(at("/v2/_catalog", page)) as reg:
        res = run_cli(capsys, "ls-remote", reg.host)
    assert res.code == 1 and "already fetched" in res.err
    assert len([p for p in reg.paths if p.startswith("/v2/_catalog")]) == cycle


def test_link_to_another_host_or_path_is_refused(capsys):
    with serve() as other:
        targets = [(f"http://{other.host}/v2/_catalog?last=x", other.host), ("/admin/x?last=y", "/admin/x"),
                   ("/v2/other/tags/list", "/v2/other/tags/list")]
        for link, named in targets:
            answer = Answer(body={"repositories": ["x"]}, headers={"Link": f'<{link}>; rel="next"'})
            with serve(at("/v2/_catalog", answer)) as reg:
                res = run_cli(capsys, "ls-remote", reg.host)
            assert res.code == 1 and "refusing to follow a Link" in res.err and named in res.err, res.err
            assert reg.paths == ["/v2/", "/v2/_catalog?n=1000"]
    assert other.paths == []


def test_deeply_nested_tags_list_is_one_line_error():
    with serve(at("/v2/app/tags/list", Answer(body=b'{"tags":' + DEEP + b"}"))) as reg:
        code, _, err = cli("ls-remote", f"{reg.host}/app")
    assert_one_line_error(code, err, "nested")


# ---- hostile registry answers: no traceback -----------------------------------------------------


@pytest.mark.parametrize("body, words", [
    (manifest_body(layers="abc"), ["layers"]),
    (manifest_body(layers=[{"mediaType": OCI_LAYER, "digest": "SHA256:" + "A" * 64, "size": 1}]), ["layers.0.digest"]),
    (manifest_body(layers=[{"mediaType": OCI_LAYER, "digest": "sha256:../../../etc/passwd", "size": 1}]), ["invalid digest"]),
    (manifest_body(layers=[{"mediaType": OCI_LAYER, "digest": digest_of(b"x"), "size": -1}]), ["layers.0.size"]),
    (manifest_body(layers=[{"mediaType": OCI_LAYER, "digest": digest_of(b"x"), "size": 0}]).replace(b'"size": 0', b'"size": ' + HUGE.encode()), ["digits"]),
    (b'{"schemaVersion":2,"x":' + DEEP + b"}", ["nested"]),
])
def test_malformed_manifest_from_a_registry(tmp_path, capsys, body, words):
    with serve(manifest_at("1", body)) as reg:
        res = run_cli(capsys, "export", f"{reg.host}/app:1", "-o", tmp_path / "b")
    assert res.code == 1 and "app:1" in res.err and all(w in res.err for w in words), res.err


def test_malformed_manifest_no_traceback_in_a_subprocess(tmp_path):
    body = manifest_body(layers="abc")
    with serve(manifest_at("1", body)) as reg:
        code, _, err = cli("export", f"{reg.host}/app:1", "-o", str(tmp_path / "b"))
    assert_one_line_error(code, err, "app:1", "layers")


def test_malformed_referrers_are_a_registry_error():
    index = {"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": "sha256:abc", "size": 1}]}
    with serve(at(f"/v2/app/referrers/{digest_of(GOOD)}", Answer(body=index))) as reg, RegistryClient(reg.host) as client:
        with pytest.raises(RegistryError, match="referrers of .*digest"):
            client.referrers("app", digest_of(GOOD))


def test_header_numbers_are_bounded():
    assert parse_range_end("0-\u00b2") is None and parse_range_end("0-" + "9" * 5000) is None
    assert parse_range_end("0-41") == 41


# ---- crafted bundles ----------------------------------------------------------------------------


def good_bundle(path, tags=("1",)):
    with BundleWriter(path, created=CREATED) as w:
        m = image(w, random.Random(3), "app", tags[0], layer_sizes=(2_000,))
        for t in tags[1:]:
            w.tag("app", m, t)
    return path


def replace_index(path, change) -> None:
    """Write a new index (valid checksums) from the old one as JSON, changed by ``change`` (which
    edits the dict, or returns the new index bytes)."""
    part = load_part(str(path), False)
    doc = json.loads(fmt.encode_index(part.doc))
    data = change(doc)
    data = data if isinstance(data, bytes) else fmt.dumps(doc)
    with open(path, "r+b") as fh:
        fh.seek(part.records_end)
        digest = digest_bytes(data)
        h = RecordHeader(fmt.INDEX, fmt.NONE, digest, fmt.INDEX_TYPE, len(data), 0, len(data), len(data), zlib.crc32(data))
        fh.write(fmt.encode_record_header(h) + data)
        trailer = fmt.Trailer(part.records_end, len(data), bytes.fromhex(digest[7:]), fmt.TRAILER_COMPLETE | fmt.TRAILER_FINAL)
        fh.write(fmt.encode_trailer(trailer))
        fh.truncate()


def set_tag(tag):
    def change(doc):
        doc["catalog"][0]["tag"] = tag
    return change


@pytest.mark.parametrize("tag", BAD_TAGS)
def test_bundle_with_a_bad_tag_is_refused(tmp_path, tag):
    path = good_bundle(tmp_path / "b")
    replace_index(path, set_tag(tag))
    with pytest.raises(CorruptBundleError, match="invalid tag"):
        BundleReader(path)


def test_bundle_with_a_bad_repository_or_plan_is_refused(tmp_path):
    path = good_bundle(tmp_path / "b")
    replace_index(path, lambda doc: doc["catalog"][0].update(repository="../../admin"))
    with pytest.raises(CorruptBundleError, match="invalid repository name"):
        BundleReader(path)
    plan = {"media_types": [OCI_MANIFEST], "contents": [[digest_of(b"m"), 1, 0]],
            "images": [{"repository": "app", "tags": ["../x"], "manifests": [0], "blobs": []}]}
    replace_index(good_bundle(tmp_path / "p"), lambda doc: doc.update(plan=plan))
    with pytest.raises(CorruptBundleError, match="invalid tag"):
        BundleReader(tmp_path / "p")


def test_import_of_a_path_like_tag_sends_nothing(tmp_path):
    path = good_bundle(tmp_path / "b")
    replace_index(path, set_tag("../../../../admin/x"))
    with serve() as reg:
        code, _, err = cli("import", str(path), reg.host)
    assert_one_line_error(code, err, "invalid tag", "../../../../admin/x")
    assert reg.paths in ([], ["/v2/"])


def test_ls_escapes_what_the_bundle_says(tmp_path):
    path = good_bundle(tmp_path / "b")
    replace_index(path, lambda doc: doc.update(created=ESCAPES[0], tool_version=ESCAPES[1]))
    code, out, err = cli("ls", str(path))
    assert code == 0 and "\x1b" not in out + err and "\\x1b]0;pwned\\x07" in out


@pytest.mark.parametrize("change, words", [
    (lambda doc: json.dumps(doc).replace('"part": 1', '"part": ' + HUGE).encode(), "digits"),
    (lambda doc: json.dumps(doc).replace('"catalog": ', '"x": ' + DEEP.decode() + ', "catalog": ').encode(), "nested"),
    (lambda doc: doc["expected"].append({"digest": digest_of(b"e"), "size": 1, "mediaType": OCI_LAYER,
                                         "annotations": 5}), "annotations"),
])
def test_hostile_index_json_is_corrupt(tmp_path, change, words):
    path = good_bundle(tmp_path / "b")
    replace_index(path, change)
    with pytest.raises(CorruptBundleError, match=words):
        BundleReader(path)
    code, out, err = cli("verify", str(path))
    assert code == 1 and "Traceback" not in err and words in out + err


def test_malformed_manifest_in_a_bundle(tmp_path):
    path = tmp_path / "b"
    bad = manifest_body(layers="abc")
    with BundleWriter(path, created=CREATED) as w:
        image(w, random.Random(3), "app", "1", layer_sizes=(2_000,))
        push(w, bad, OCI_MANIFEST)
    replace_index(path, lambda doc: doc["catalog"][0].update(digest=digest_of(bad), size=len(bad)))
    code, out, err = cli("verify", str(path))
    assert code == 1 and "Traceback" not in err and f"PROBLEM {digest_of(bad)}" in out and "layers" in out
    code, out, err = cli("ls", str(path))
    assert_one_line_error(code, err, digest_of(bad), "layers")
    with serve() as reg:
        code, _, err = cli("import", str(path), reg.host)
    assert_one_line_error(code, err, "layers")
    assert not outside(reg, "app")


# ---- crafted OCI layouts and docker archives ----------------------------------------------------


def layout(tmp_path, index: bytes):
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (tmp_path / "index.json").write_bytes(index)
    return OciLayout(tmp_path)


def index_entry(**annotations):
    entry = {"mediaType": OCI_MANIFEST, "digest": digest_of(GOOD), "size": len(GOOD), "annotations": annotations}
    return {"schemaVersion": 2, "manifests": [entry]}


@pytest.mark.parametrize("index, words", [
    (json.dumps(index_entry(**{"org.opencontainers.image.ref.name": "v1\n"})).encode(), "ref.name"),
    (json.dumps(index_entry(**{"io.containerd.image.name": "x/app:" + ESCAPES[0]})).encode(), "image.name"),
    (b'{"schemaVersion":2,"manifests":[],"x":' + DEEP + b"}", "nested"),
    (json.dumps(index_entry()).replace(f'"size": {len(GOOD)}', '"size": ' + HUGE).encode(), "digits"),
])
def test_hostile_oci_index_json(tmp_path, index, words):
    with pytest.raises(LayoutError, match=words):
        layout(tmp_path, index).repositories()


def docker_archive(path, manifest_json: bytes):
    with tarfile.open(path, "w") as tar:
        for name, data in (("manifest.json", manifest_json), ("c.json", CONFIG)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("manifest_json, words", [
    (b'[{"Config":"c.json","Layers":[],"RepoTags":' + DEEP + b"}]", "nested"),
    (json.dumps([{"Config": "c.json", "Layers": [], "RepoTags": [5]}]).encode(), "RepoTags"),
])
def test_hostile_docker_archive_manifest_json(tmp_path, manifest_json, words):
    with pytest.raises(LayoutError, match=words):
        DockerArchive(docker_archive(tmp_path / "a.tar", manifest_json))


def test_unpack_of_hostile_archive_via_export_from_is_one_line(tmp_path):
    archive = docker_archive(tmp_path / "a.tar", b'[{"Config":"c.json","Layers":[],"RepoTags":' + DEEP + b"}]")
    code, _, err = cli("export", "--from", f"docker-archive:{archive}", "-o", str(tmp_path / "b"))
    assert "Traceback" not in err and code in (1, 2) and "nested" in err, err


# ---- --have and --since files -------------------------------------------------------------------


def test_have_a_binary_file_is_a_clear_error(registry, tmp_path, capsys):
    small = registry.seeded["small"]
    binary = good_bundle(tmp_path / "old.bundle")
    res = run_cli(capsys, "export", f"{registry.host}/{small.image}", "--have", binary, "-o", tmp_path / "b")
    assert res.code == 2 and "inventory" in res.err and "not valid JSON" in res.err, res.err


@pytest.mark.parametrize("blobs, words", [
    ({"sha256:../../x": ["app"]}, "invalid digest"),
    ({digest_of(b"x"): ["../../admin"]}, "invalid repository name"),
    ({digest_of(b"x"): "app"}, "not a list"),
    ({digest_of(b"x"): [[1]]}, "invalid repository name"),
])
def test_have_inventory_names_are_checked(tmp_path, blobs, words):
    path = tmp_path / "inv.json"
    path.write_text(json.dumps({"format": "transfer-inventory/1", "blobs": blobs}))
    with pytest.raises(UsageError, match=words):
        read_inventory(str(path))


# ---- the last resort ----------------------------------------------------------------------------


def test_an_unexpected_exception_is_one_line(monkeypatch, capsys, tmp_path):
    import transfer.cli.bundle as bundle_cli

    def boom(args):
        raise RuntimeError("something \x1b[2J broke")

    monkeypatch.setattr(bundle_cli, "cmd_ls", boom)
    res = run_cli(capsys, "ls", tmp_path / "x")
    assert res.code == 1 and "internal error: RuntimeError: something \\x1b[2J broke" in res.err
    assert "--debug" in res.err and "Traceback" not in res.err


@pytest.mark.parametrize("tail", [b'\\"', b'"\\'])
def test_unclosed_strings_cost_linear_time(tail):
    """Quotes that never close (a manifest or a bundle index of 4 MiB of them) made the shape check
    scan to the end again from every quote: hours of CPU before json.loads refused the document.
    An unclosed string now runs to the end; the document is still refused in one clean error. (A
    child process, so a regression fails on its timeout instead of hanging the suite.)"""
    probe = ("import sys\n"
             "from transfer.errors import CorruptBundleError\n"
             "from transfer.untrusted import load_json\n"
             f"raw = b'[' + {tail!r} * (2 << 20)\n"
             "try:\n"
             "    load_json(raw, 'index', CorruptBundleError, 64 << 20)\n"
             "except CorruptBundleError as exc:\n"
             "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0 and done.stdout.startswith("index is not valid JSON"), done.stdout + done.stderr
