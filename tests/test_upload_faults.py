"""Uploads under a few random faults at once (seeded, so each case is the same every run): cut
requests, lost answers, 503s, on the real docker-registry 2.8 and on the scripted spec registry.
Whatever happens in between, the blob must end up whole and exact, with the journal empty."""

from __future__ import annotations

import random

import pytest

from tests.test_upload import MiB, REPO, assert_blob, bodies, make_blob, push, spec_registry, uploader  # noqa: F401
from transfer.registry.journal import UploadJournal

SEEDS = range(6)


def add_faults(proxy, rng: random.Random) -> list[str]:
    """Two or three faults among the first requests of the upload; returns what was planned."""
    planned = []
    for _ in range(rng.randint(2, 3)):
        kind = rng.choice(["cut_request", "lost_answer", "503_patch", "503_put"])
        skip = rng.randrange(0, 5)
        if kind == "cut_request":
            proxy.cut_request("PATCH", "/blobs/uploads/", after=rng.randrange(1, MiB), skip=skip)
        elif kind == "lost_answer":  # the registry took the chunk, the client never hears it
            proxy.cut_response("PATCH", "/blobs/uploads/", after=0, skip=skip)
        elif kind == "503_patch":
            proxy.respond(503, "PATCH", "/blobs/uploads/", skip=skip)
        else:
            proxy.respond(503, "PUT", "/blobs/uploads/")
        planned.append(f"{kind}@{skip}")
    return planned


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["distribution-2.8", "spec"])
def test_random_faults_leave_the_blob_whole(kind, seed, fresh_registry, spec_registry, fault_proxy, tmp_path):
    rng = random.Random(seed)
    registry = fresh_registry() if kind == "distribution-2.8" else spec_registry()
    proxy = fault_proxy(registry)
    planned = add_faults(proxy, rng)
    data, desc = make_blob(6 * MiB + rng.randrange(MiB), seed=seed + 100)
    journal = UploadJournal(tmp_path / "journal.json")
    up = uploader(MiB, journal=journal, max_restarts=4)
    push(proxy.host, up, data, desc)
    if kind == "spec":
        assert registry.blobs[(REPO, desc.digest)] == data, planned
    else:
        assert_blob(registry.url, desc)
    assert journal.entries() == [], planned
    with proxy.lock:
        assert [rule.fired for rule in proxy.rules] == [1] * len(planned), planned  # every fault happened
    sent = sum(bodies(proxy, "PATCH")) + sum(bodies(proxy, "PUT"))
    assert sent >= desc.size, planned  # every byte went up at least once
    assert up.stats.blobs_restarted <= len(planned), planned
