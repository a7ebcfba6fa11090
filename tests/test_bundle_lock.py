"""One writer per bundle (issue 12, item 1): a second export to the same file, or a recover of it,
while the first is writing fails at once naming the writer, and touches nothing."""

from __future__ import annotations

import os

import pytest

from tests.bed.images import Layout
from tests.cli_helpers import run_cli, spawn_cli
from transfer.bundle import BundleReader, BundleWriter, rewrite_index
from transfer.bundle.lock import BundleLock
from transfer.errors import BundleBusyError


def test_two_exports_to_one_bundle_at_once(fresh_registry, fault_proxy, skopeo, tmp_path, capsys):
    src = fresh_registry()
    layout = Layout(tmp_path / "layout")
    app = layout.image("app", [200_000, 300_000], tag="v1")
    layout.save()
    skopeo.seed(src, layout, app, "lock/app", "v1")
    proxy = fault_proxy(src)
    for layer in app.layers:  # each export takes some seconds over its layers: the runs overlap
        proxy.drip(200_000, "GET", f"/blobs/{layer.digest}", times=None)
    out = tmp_path / "one.bundle"
    procs = [spawn_cli("export", f"{proxy.host}/lock/app:v1", "-o", out, "--jobs", "1", "-q") for _ in range(2)]
    codes = [p.wait(60) for p in procs]
    errors = [p.stderr.read().decode() for p in procs]
    assert sorted(codes) == [0, 1], errors
    winner, loser = (procs[0], procs[1]) if codes[0] == 0 else (procs[1], procs[0])
    message = errors[procs.index(loser)].strip()
    assert message == (f"transfer: error: {out} is being written by another transfer (pid {winner.pid}); "
                       "wait for it to finish")
    res = run_cli(capsys, "verify", out)
    assert res.code == 0, res.out
    with BundleReader(out) as r:
        assert r.complete and app.blob_digests() <= set(r.digests())
    assert sorted(os.listdir(tmp_path)) == ["layout", "one.bundle"]  # the lock file is gone


@pytest.mark.parametrize("split", [None, 64 << 10])
def test_writer_recover_and_a_second_writer_exclude_each_other(tmp_path, split):
    path = tmp_path / "b.bundle"
    with BundleWriter(path, split_size=split):
        pass
    parts = sorted(os.listdir(tmp_path))
    first = BundleWriter(path, split_size=split)
    with pytest.raises(BundleBusyError, match=f"{path} is being written by another transfer \\(pid {os.getpid()}\\)"):
        BundleWriter(path, split_size=split)
    with pytest.raises(BundleBusyError):
        BundleWriter(path, split_size=split, overwrite=True)  # would delete the parts: refused too
    with pytest.raises(BundleBusyError):
        rewrite_index(path if split is None else f"{path}.001", mark_complete=True)
    first.abort()
    assert rewrite_index(path, mark_complete=True)["parts"] == [1]  # free again
    assert sorted(os.listdir(tmp_path)) == parts  # no lock file left


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    path = tmp_path / "b.bundle"
    (tmp_path / "b.bundle.lock").write_text("999999\n")  # file of a dead holder: no flock on it
    with BundleWriter(path):
        assert (tmp_path / "b.bundle.lock").read_text() == f"{os.getpid()}\n"
    assert not (tmp_path / "b.bundle.lock").exists()
    with BundleLock(path):
        pass
