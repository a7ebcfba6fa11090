"""unpack --oci of a bundle with thousands of tags (issue 12, item 6): index.json is written a
bounded number of times, not once per tag, the layout stays valid for skopeo, and a stop between
tags leaves a valid layout that the same command finishes."""

from __future__ import annotations

import json
import random

import pytest

import transfer.layout
from transfer.digest import digest_bytes
from tests.cli_helpers import run_cli
from tests.test_bundle import image
from tests.test_layout_support import skopeo
from transfer.bundle import BundleWriter
from transfer.errors import TransferInterrupted
from transfer.interrupt import STOP
from transfer.layout import OciLayout

TAGS = 3000


@pytest.fixture(scope="module")
def many_tags(tmp_path_factory):
    path = tmp_path_factory.mktemp("many") / "tags.bundle"
    with BundleWriter(path, created="2026-01-01T00:00:00Z") as w:
        root = image(w, random.Random(5), "app", None, layer_sizes=(2_000,))
        for i in range(TAGS):
            w.tag("app", root, f"t{i}")
    return path, root


@pytest.fixture
def index_writes(monkeypatch):
    """Counts the writes of index.json (the atomic write of the layout module)."""
    writes = []
    real = transfer.layout._atomic_write

    def counting(path, data):
        if path.name == "index.json":
            writes.append(len(json.loads(data)["manifests"]))
        real(path, data)

    monkeypatch.setattr(transfer.layout, "_atomic_write", counting)
    return writes


def test_unpack_writes_the_index_a_bounded_number_of_times(many_tags, tmp_path, capsys, index_writes):
    bundle, root = many_tags
    res = run_cli(capsys, "unpack", bundle, "--oci", tmp_path / "out", "-q")
    assert res.code == 0, res.err
    assert 0 < len(index_writes) <= 8, index_writes  # was one write (and fsync) per tag: 3000
    manifests = json.loads((tmp_path / "out/index.json").read_bytes())["manifests"]
    assert len(manifests) == TAGS and {m["digest"] for m in manifests} == {root.digest}
    for tag in ("t0", f"t{TAGS - 1}"):
        raw = skopeo("inspect", "--raw", f"oci:{tmp_path}/out:{tag}").encode()
        assert digest_bytes(raw) == root.digest


def test_a_stop_between_tags_leaves_a_valid_layout_that_a_rerun_finishes(many_tags, tmp_path, capsys):
    bundle, root = many_tags
    calls = 0
    real_tag = OciLayout.tag

    def stop_midway(self, repo, desc, tag):
        nonlocal calls
        calls += 1
        if calls == 1000:
            STOP.set()  # as the first SIGTERM does
        return real_tag(self, repo, desc, tag)

    try:
        OciLayout.tag = stop_midway
        res = run_cli(capsys, "unpack", bundle, "--oci", tmp_path / "out", "-q")
    finally:
        OciLayout.tag = real_tag
        STOP.clear()
    assert res.code == 130 and calls == 1000, res.err
    kept = json.loads((tmp_path / "out/index.json").read_bytes())["manifests"]
    assert len(kept) == 999  # every tag recorded before the stop was written on the way out
    assert run_cli(capsys, "unpack", bundle, "--oci", tmp_path / "out", "-q").code == 0
    assert len(OciLayout(tmp_path / "out").tags("app")) == TAGS
    with pytest.raises(TransferInterrupted):
        STOP.set()
        try:
            OciLayout(tmp_path / "out").tag("app", root, "late")
        finally:
            STOP.clear()
