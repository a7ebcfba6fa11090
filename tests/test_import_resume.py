"""An interrupted import continues where the registry stands: bytes sent are counted by a proxy in
front of the real registry, not by the importer."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.bed.images import Layout
from tests.cli_helpers import run_cli, spawn_cli
from transfer.registry.journal import JournalEntry, UploadJournal
from transfer.sizes import parse_size

CHUNK = 1 << 20
LAYER = 6 * CHUNK + 12_345  # seven chunks, the last one short


def seed_big_image(fresh_registry, skopeo, tmp_path, seed: str):
    """A fresh registry holding big/app:v1, one image whose large layer needs seven chunks."""
    src = fresh_registry()
    layout = Layout(tmp_path / "layout")
    image = layout.image(seed, [LAYER], tag="v1")
    layout.save()
    skopeo.seed(src, layout, image, "big/app", "v1")
    return src, image, max(image.layers, key=lambda b: b.size)


@pytest.fixture
def big_bundle(fresh_registry, skopeo, tmp_path, capsys):
    """A bundle of that image."""
    src, image, layer = seed_big_image(fresh_registry, skopeo, tmp_path, "resume")
    bundle = tmp_path / "big.bundle"
    assert run_cli(capsys, "export", f"{src.host}/big/app:v1", "-o", bundle, "-q").code == 0
    return bundle, image, layer


def _wait_fired(proxy, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not any(r.fired for r in proxy.rules):
        time.sleep(0.02)
    assert any(r.fired for r in proxy.rules), "the import never reached the stalled chunk"


def _upload_bytes(proxy) -> int:
    """Request body bytes of PATCH and PUT to upload sessions (blob bytes sent)."""
    return sum(proxy.stats(m, "/blobs/uploads/").request_bytes for m in ("PATCH", "PUT"))


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_interrupted_import_sends_only_unacknowledged_chunks(how, big_bundle, fresh_registry, fault_proxy,
                                                             skopeo, tmp_path):
    bundle, image, layer = big_bundle
    dest = fresh_registry()
    proxy = fault_proxy(dest)
    journal = tmp_path / "journal.json"
    args = ["import", bundle, proxy.host, "--chunk-size", "1MiB", "--jobs", "1", "--journal", journal]
    proxy.stall(3, "PATCH", "/blobs/uploads/", skip=3)  # the 4th chunk waits: three are acknowledged
    proc = spawn_cli(*args)
    _wait_fired(proxy)
    proc.send_signal(getattr(signal, how))
    code = proc.wait(30)
    err = proc.stderr.read().decode()
    if how == "SIGINT":
        # The chunk in flight finishes, the state is saved, and the user is told how to resume.
        assert code == 130, err
        assert "run the same command again" in err
        acknowledged = 4 * CHUNK
    else:
        assert code == -signal.SIGKILL
        acknowledged = 3 * CHUNK
    assert journal.exists()
    proxy.clear()
    proc = spawn_cli(*args)
    assert proc.wait(60) == 0, proc.stderr.read().decode()
    sent = _upload_bytes(proxy)
    # Only the layer's unacknowledged bytes (plus the small config, if it was not done) went again.
    assert layer.size - acknowledged <= sent <= layer.size - acknowledged + image.config.size
    assert skopeo.digest(dest, "big/app:v1") == image.digest


def test_chunk_cut_midway_restarts_the_blob_on_distribution_2_8(big_bundle, fresh_registry, fault_proxy,
                                                               skopeo, tmp_path, capsys):
    bundle, image, layer = big_bundle
    dest = fresh_registry()
    proxy = fault_proxy(dest)
    proxy.cut_request("PATCH", "/blobs/uploads/", after=CHUNK // 2, skip=2)
    res = run_cli(capsys, "import", bundle, proxy.host, "--chunk-size", "1MiB", "--jobs", "1",
                  "--journal", tmp_path / "j.json", "--json")
    assert res.code == 0, res.err
    assert res.json()["upload"]["blobs_restarted"] == 1  # 2.8 wedges the session: that one blob restarts
    assert skopeo.digest(dest, "big/app:v1") == image.digest


def test_registry_restart_mid_import_keeps_the_upload(big_bundle, fresh_registry, fault_proxy, skopeo, tmp_path):
    bundle, image, layer = big_bundle
    dest = fresh_registry()
    proxy = fault_proxy(dest)
    journal = tmp_path / "journal.json"
    args = ["import", bundle, proxy.host, "--chunk-size", "1MiB", "--jobs", "1", "--journal", journal]
    proxy.stall(3, "PATCH", "/blobs/uploads/", skip=3)
    proc = spawn_cli(*args)
    _wait_fired(proxy)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    dest.restart()  # same http.secret: the saved Location stays valid
    proxy.clear()
    proc = spawn_cli(*args)
    assert proc.wait(60) == 0, proc.stderr.read().decode()
    assert _upload_bytes(proxy) <= layer.size - 3 * CHUNK + image.config.size
    assert skopeo.digest(dest, "big/app:v1") == image.digest


def test_chunk_size_option_is_validated(big_bundle, fresh_registry, capsys):
    bundle, _, _ = big_bundle
    res = run_cli(capsys, "import", bundle, fresh_registry().host, "--chunk-size", "lots")
    assert res.code == 2 and "lots" in res.err
    assert parse_size("8MiB") == 8 << 20


def test_killed_copy_resumes_like_import(fresh_registry, fault_proxy, skopeo, tmp_path):
    src, image, layer = seed_big_image(fresh_registry, skopeo, tmp_path, "copy-resume")
    dest = fresh_registry()
    proxy = fault_proxy(dest)
    args = ["copy", f"{src.host}/big/app:v1", f"{proxy.host}/big/app:v1", "--chunk-size", "1MiB",
            "--jobs", "1", "--journal", tmp_path / "journal.json"]
    proxy.stall(3, "PATCH", "/blobs/uploads/", skip=3)
    proc = spawn_cli(*args)
    _wait_fired(proxy)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proxy.clear()
    proc = spawn_cli(*args)
    assert proc.wait(60) == 0, proc.stderr.read().decode()
    assert layer.size - 3 * CHUNK <= _upload_bytes(proxy) <= layer.size - 3 * CHUNK + image.config.size
    assert skopeo.digest(dest, "big/app:v1") == image.digest


def test_copy_from_a_stalling_source_spools_chunks_so_the_target_request_is_never_idle(
        fresh_registry, fault_proxy, skopeo, tmp_path, capsys):
    """The source registry stalls 1.5 s in the middle of the layer; a proxy before the target cuts
    a request whose body pauses 0.5 s (nginx's client_body_timeout, scaled down). Chunks of a
    network source are read whole before they are sent, so no upload request waits on the source
    and the layer goes up without a restart."""
    src, image, layer = seed_big_image(fresh_registry, skopeo, tmp_path, "copy-stall")
    src_proxy, dest = fault_proxy(src), fresh_registry()
    dst_proxy = fault_proxy(dest)
    src_proxy.stall(1.5, "GET", f"/blobs/{layer.digest}", after=3 * CHUNK)
    dst_proxy.body_timeout(0.5, None, "/blobs/uploads/")
    res = run_cli(capsys, "copy", f"{src_proxy.host}/big/app:v1", f"{dst_proxy.host}/big/app:v1",
                  "--chunk-size", "4MiB", "--journal", tmp_path / "journal.json", "--json")
    assert res.code == 0, res.err
    assert src_proxy.stats("GET", f"/blobs/{layer.digest}").requests == 1  # the stall happened
    assert 408 not in dst_proxy.stats().statuses  # no upload request was cut for idling
    assert res.json()["upload"]["blobs_restarted"] == 0
    assert skopeo.digest(dest, "big/app:v1") == image.digest


def test_connection_reset_on_the_post_that_opens_an_upload_does_not_end_the_import(
        big_bundle, fresh_registry, fault_proxy, skopeo, tmp_path, capsys):
    """A registry restarting while an upload's POST is in flight resets the connection: the POST
    is sent again (an unused session costs nothing) and the import completes."""
    bundle, image, layer = big_bundle
    dest = fresh_registry()
    proxy = fault_proxy(dest)
    proxy.cut_request("POST", "/blobs/uploads/$", after=0)
    res = run_cli(capsys, "import", bundle, proxy.host, "--journal", tmp_path / "journal.json")
    assert res.code == 0, res.err
    assert proxy.rules[0].fired == 1
    assert skopeo.digest(dest, "big/app:v1") == image.digest


def test_import_that_finds_a_blob_there_drops_its_stale_journal_entry(big_bundle, fresh_registry, tmp_path, capsys):
    """An entry left at offset == size (a run killed after its final PUT landed) is removed by the
    next run, which finds the blob present."""
    bundle, image, layer = big_bundle
    dest = fresh_registry()
    journal_path = tmp_path / "journal.json"
    assert run_cli(capsys, "import", bundle, dest.host, "--journal", journal_path, "-q").code == 0
    location = f"{dest.url}/v2/big/app/blobs/uploads/gone"
    UploadJournal(journal_path).save(JournalEntry(dest.host, "big/app", layer.digest, location=location,
                                                  offset=layer.size, size=layer.size))
    assert run_cli(capsys, "import", bundle, dest.host, "--journal", journal_path, "-q").code == 0
    assert UploadJournal(journal_path).entries() == []


@pytest.mark.parametrize("value", ["1", "0", "65535"])
def test_chunk_size_under_64_kib_is_a_usage_error(tmp_path, capsys, value):
    res = run_cli(capsys, "import", tmp_path / "none.bundle", "127.0.0.1:9", "--chunk-size", value)
    assert res.code == 2
    assert res.err.strip().splitlines()[-1].endswith("is too small (at least 64 KiB)")


def test_chunk_size_under_a_registry_minimum_is_raised_with_a_note(big_bundle, fresh_registry, fault_proxy,
                                                                  tmp_path, capsys):
    bundle, image, layer = big_bundle
    dest = fresh_registry()
    proxy = fault_proxy(dest)
    config = tmp_path / "registries.json"
    config.write_text(json.dumps({"registries": {proxy.host: {"min_chunk": "2MiB"}}}))
    res = run_cli(capsys, "import", bundle, proxy.host, "--chunk-size", "1MiB", "--registry-config", config,
                  "--journal", tmp_path / "journal.json", "--json")
    assert res.code == 0, res.err
    assert res.json()["upload"]["notes"] == [f"chunk size 1 MiB raised to 2 MiB for {proxy.host}, "
                                             "the smallest chunk it takes"]
    patches = [e.request_bytes for e in proxy.exchanges if e.method == "PATCH"]
    assert patches == [2 * CHUNK] * 3 + [layer.size - 6 * CHUNK]
