"""A registry that hardly moves (issue 12, item 4): a blob or a manifest served a few bytes a
second, or an answer that stops, ends the export with one clear error naming the request within
a bounded time (the Pace, set small here by environment), and SIGTERM is honoured meanwhile."""

from __future__ import annotations

import signal
import time

import pytest

from tests.bed.images import Layout
from tests.cli_helpers import spawn_cli

WINDOW = 1.5


@pytest.fixture
def slow_pace(monkeypatch):
    monkeypatch.setenv("TRANSFER_STALL_WINDOW", str(WINDOW))
    monkeypatch.setenv("TRANSFER_STALL_MIN_BYTES", "1024")
    monkeypatch.setenv("TRANSFER_ANSWER_DEADLINE", "3")


@pytest.fixture
def source(fresh_registry, fault_proxy, skopeo, tmp_path):
    src = fresh_registry()
    layout = Layout(tmp_path / "layout")
    app = layout.image("app", [300_000], tag="v1")
    layout.save()
    skopeo.seed(src, layout, app, "slow/app", "v1")
    return fault_proxy(src), app


def run(proxy, out, timeout=60):
    started = time.monotonic()
    proc = spawn_cli("export", f"{proxy.host}/slow/app:v1", "-o", out, "--jobs", "1", "-q")
    code = proc.wait(timeout)
    return code, proc.stderr.read().decode(), time.monotonic() - started


def test_a_blob_served_a_few_bytes_a_second_ends_the_export(slow_pace, source, tmp_path):
    proxy, app = source
    layer = app.layers[0].digest
    proxy.drip(200, "GET", f"/blobs/{layer}", after=10_000, times=None)
    code, err, seconds = run(proxy, tmp_path / "a.bundle")
    assert code == 1, err
    assert err.startswith(f"transfer: error: GET http://{proxy.host}/v2/slow/app/blobs/{layer}: the answer stalled (")
    assert "fewer than 1024" in err and len(err.strip().splitlines()) == 1
    assert proxy.stats("GET", f"/blobs/{layer}").requests == 3  # resumed twice, then given up
    assert seconds < 4 * WINDOW + 10  # three windows, not the 25 minutes the drip would take


def test_a_manifest_that_never_finishes_misses_its_deadline(slow_pace, source, tmp_path, monkeypatch):
    proxy, app = source
    monkeypatch.setenv("TRANSFER_STALL_MIN_BYTES", "1")  # the drip keeps the pace: the deadline ends it
    # 10 bytes a second: the rest of the manifest would take about a minute, so closing the answer
    # that missed its deadline must not wait for it (nor read it to keep the connection)
    proxy.drip(10, "GET", "/manifests/", times=None)
    code, err, seconds = run(proxy, tmp_path / "m.bundle")
    assert code == 1, err
    assert f"GET http://{proxy.host}/v2/slow/app/manifests/" in err
    assert "the answer stalled (not whole 3 s after its headers)" in err
    assert seconds < 20


def test_sigterm_while_a_blob_is_stuck_ends_in_bounded_time(slow_pace, source, tmp_path):
    proxy, app = source
    layer = app.layers[0].digest
    rule = proxy.stall(120, "GET", f"/blobs/{layer}", after=50_000, times=None)
    proc = spawn_cli("export", f"{proxy.host}/slow/app:v1", "-o", tmp_path / "t.bundle", "--jobs", "1", "-q")
    deadline = time.monotonic() + 30
    while not rule.fired and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rule.fired
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    code = proc.wait(60)
    assert code in (1, 130) and time.monotonic() - stopped < 4 * WINDOW + 10  # not the 120 s stall
