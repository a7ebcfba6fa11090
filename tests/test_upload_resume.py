"""Uploads that survive: a killed or interrupted process continues from its journal, a chunk broken
midway is recovered (restart on distribution 2.8, continue on a spec registry), a registry restart
and an expiring token do not lose the upload. Bytes are counted by the proxy, not the uploader."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.bed.proxy import FaultProxy
from tests.test_upload import FAST, REPO, MiB, assert_blob, bodies, make_blob, push, spec_registry, uploader  # noqa: F401
from transfer import interrupt
from tests.test_digest import Counting
from transfer.digest import VerifyingReader
from transfer.errors import IntegrityError, TransferError, TransferInterrupted
from transfer.models import Descriptor
from transfer.registry.client import RegistryClient
from transfer.registry.credentials import Credentials
from transfer.registry.journal import JournalEntry, UploadJournal
from transfer.registry.store import RegistryStore
from transfer.registry.upload import ChunkedUploader

ROOT = Path(__file__).resolve().parent.parent
WORKER = "import sys; from tests.test_upload_resume import worker_main; sys.exit(worker_main(sys.argv[1:]))"


def worker_main(argv: list[str]) -> int:
    """Subprocess body: push the blob in FILE to HOST with a journal; SIGINT/SIGTERM set STOP as
    the CLI does; exit with the error's exit code (130 when interrupted)."""
    host, path, digest, journal, chunk = argv
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: interrupt.STOP.set())
    desc = Descriptor(media_type="application/octet-stream", digest=digest, size=os.path.getsize(path))
    up = ChunkedUploader(int(chunk), journal=UploadJournal(journal), source=path, backoff=0.01)
    try:
        with RegistryClient(host, retry=FAST) as client:
            RegistryStore(client, uploader=up).push(REPO, desc, lambda: open(path, "rb"))
    except TransferError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    return 0


def start_worker(host: str, blob: Path, desc: Descriptor, journal: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WORKER, host, str(blob), desc.digest, str(journal), str(MiB)],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)


def wait_for_patches(proxy: FaultProxy, count: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(bodies(proxy, "PATCH")) < count:
        assert proc.poll() is None, f"worker exited early: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the worker did not reach the stalled chunk"
        time.sleep(0.02)


def rerun_sends(proxy: FaultProxy, registry, path: Path, desc: Descriptor, journal: Path) -> int:
    """Run the worker again with the same journal until it completes; the upload body bytes the
    proxy forwarded for it (it continues the session: no new POST)."""
    since = len(proxy.exchanges)
    rerun = start_worker(proxy.host, path, desc, journal)
    assert rerun.wait(timeout=60) == 0, rerun.stderr.read()
    assert_blob(registry.url, desc)
    assert bodies(proxy, "POST", since) == []
    assert UploadJournal(journal).entries() == []
    return sum(bodies(proxy, "PATCH", since)) + sum(bodies(proxy, "PUT", since))


@pytest.fixture
def blob_file(tmp_path: Path) -> tuple[Path, bytes, Descriptor]:
    data, desc = make_blob(24 * MiB + 4321)
    path = tmp_path / "blob"
    path.write_bytes(data)
    return path, data, desc


@pytest.fixture(autouse=True)
def clear_stop():
    interrupt.STOP.clear()
    yield
    interrupt.STOP.clear()


def kill_between_chunks(proxy: FaultProxy, path: Path, desc: Descriptor, journal: Path, k: int) -> None:
    """Start the worker and SIGKILL it while chunk k+1 is held back: k chunks are acknowledged."""
    proxy.stall(20, "PATCH", skip=k)  # chunk k+1 never reaches the registry while we look
    proc = start_worker(proxy.host, path, desc, journal)
    try:
        wait_for_patches(proxy, k + 1, proc)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    with proxy.lock:
        proxy.rules.clear()


def test_killed_between_chunks_resumes_from_the_journal(fresh_registry, fault_proxy, blob_file, tmp_path):
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    path, data, desc = blob_file
    journal = tmp_path / "journal.json"
    k = 7
    kill_between_chunks(proxy, path, desc, journal, k)
    [entry] = UploadJournal(journal).entries()
    assert (entry.offset, entry.size, entry.source) == (k * MiB, desc.size, str(path))
    assert rerun_sends(proxy, registry, path, desc, journal) == desc.size - k * MiB


def resume_in_process(host: str, desc: Descriptor, journal: Path, source: bytes, counter: list[int]) -> None:
    """Continue the journal's upload here, from a source that can reopen at an offset (as a bundle
    can) and counts the bytes read from it."""
    def opener() -> VerifyingReader:
        return VerifyingReader(Counting(source, counter), desc.digest, desc.size,
                               reopen=lambda offset: Counting(source[offset:], counter))

    up = ChunkedUploader(MiB, journal=UploadJournal(journal), backoff=0.01)
    with RegistryClient(host, retry=FAST) as client:
        RegistryStore(client, uploader=up).push(REPO, desc, opener)


def test_resumed_upload_does_not_read_what_the_registry_holds(fresh_registry, fault_proxy, blob_file, tmp_path):
    """A new process continuing the journal's session opens the source at the offset: the 7 MiB
    the registry holds are neither sent nor read again (the registry checks the whole digest)."""
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    path, data, desc = blob_file
    journal = tmp_path / "journal.json"
    kill_between_chunks(proxy, path, desc, journal, 7)
    counter, since = [0], len(proxy.exchanges)
    resume_in_process(proxy.host, desc, journal, data, counter)
    assert_blob(registry.url, desc)
    assert bodies(proxy, "POST", since) == []  # the same session
    assert counter[0] == desc.size - 7 * MiB


def test_resumed_upload_with_other_bytes_is_refused_and_sent_again_verified(fresh_registry, fault_proxy,
                                                                             blob_file, tmp_path):
    """The bytes after the offset differ from what the digest says: the registry refuses the
    completed upload, the blob starts over from byte 0 with the digest checked here, and that
    check names the blob. Nothing lands in the registry."""
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    path, data, desc = blob_file
    journal = tmp_path / "journal.json"
    kill_between_chunks(proxy, path, desc, journal, 7)
    damaged = data[:-10] + bytes(10)
    since = len(proxy.exchanges)
    with pytest.raises(IntegrityError, match=desc.digest):
        resume_in_process(proxy.host, desc, journal, damaged, [0])
    assert [e.status for e in proxy.exchanges[since:] if e.method == "PUT"] == [400]  # DIGEST_INVALID
    assert len(bodies(proxy, "POST", since)) == 1  # the blob started over, and failed here when verified
    assert requests.head(f"{registry.url}/v2/{REPO}/blobs/{desc.digest}", timeout=10).status_code == 404


def test_sigint_finishes_the_chunk_in_flight_and_exits_130(fresh_registry, fault_proxy, blob_file, tmp_path):
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    path, data, desc = blob_file
    journal = tmp_path / "journal.json"
    k = 5
    proxy.stall(1.0, "PATCH", skip=k)
    proc = start_worker(proxy.host, path, desc, journal)
    wait_for_patches(proxy, k + 1, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert "interrupted" in proc.stderr.read()
    [entry] = UploadJournal(journal).entries()
    assert entry.offset == (k + 1) * MiB  # the chunk in flight was finished and saved
    assert rerun_sends(proxy, registry, path, desc, journal) == desc.size - (k + 1) * MiB


class StopAfter(io.BytesIO):
    """A source that sets STOP once ``limit`` bytes were read (an interrupt mid-blob)."""

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__(data)
        self.limit = limit

    def read(self, n: int = -1) -> bytes:
        out = super().read(n)
        if self.tell() >= self.limit:
            interrupt.STOP.set()
        return out


def interrupted_push(host: str, journal: UploadJournal, data: bytes, desc: Descriptor, stop_at: int) -> None:
    """Push with a source that sets STOP after ``stop_at`` bytes (1 MiB chunks)."""
    with RegistryClient(host, retry=FAST) as client:
        RegistryStore(client, uploader=uploader(MiB, journal=journal)).push(
            REPO, desc, lambda: StopAfter(data, stop_at))


def test_interrupt_in_process_then_resume_counts_what_was_not_resent(fresh_registry, fault_proxy, tmp_path):
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    data, desc = make_blob(10 * MiB)
    journal = UploadJournal(tmp_path / "journal.json")
    with pytest.raises(TransferInterrupted):
        interrupted_push(proxy.host, journal, data, desc, 3 * MiB + 1)
    # The source is read one chunk ahead of what is sent, so STOP (set when byte 3 MiB + 1 is
    # read) lands while chunk 3 or chunk 4 is in flight; that chunk finishes and is saved.
    saved = UploadJournal(journal.path).get(proxy.host, REPO, desc.digest).offset
    assert saved in (3 * MiB, 4 * MiB)
    interrupt.STOP.clear()
    since = len(proxy.exchanges)
    up = uploader(MiB, journal=UploadJournal(journal.path))
    push(proxy.host, up, data, desc)
    assert_blob(registry.url, desc)
    assert sum(bodies(proxy, "PATCH", since)) == desc.size - saved
    assert (up.stats.blobs_resumed, up.stats.bytes_resumed, up.stats.bytes_sent) == (1, saved, desc.size - saved)


def test_journal_session_gone_restarts_the_blob(fresh_registry, fault_proxy, tmp_path):
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    data, desc = make_blob(6 * MiB)
    journal = UploadJournal(tmp_path / "journal.json")
    with pytest.raises(TransferInterrupted):
        interrupted_push(proxy.host, journal, data, desc, 2 * MiB)
    entry = journal.get(proxy.host, REPO, desc.digest)
    assert requests.delete(entry.location, timeout=10).status_code == 204  # the session is gone
    interrupt.STOP.clear()
    up = uploader(MiB, journal=UploadJournal(journal.path))
    push(proxy.host, up, data, desc)
    assert_blob(registry.url, desc)
    assert (up.stats.blobs_resumed, up.stats.bytes_sent) == (0, desc.size)
    assert UploadJournal(journal.path).entries() == []


def push_with_a_cut_chunk(registry, fault_proxy) -> tuple[FaultProxy, ChunkedUploader, bytes, Descriptor]:
    """Upload 10 MiB in 1 MiB chunks; the fifth PATCH is cut after 300 000 bytes."""
    proxy = fault_proxy(registry)
    proxy.cut_request("PATCH", after=300_000, skip=4)
    data, desc = make_blob(10 * MiB)
    up = uploader(MiB)
    push(proxy.host, up, data, desc)
    return proxy, up, data, desc


def test_chunk_broken_midway_restarts_the_blob_on_distribution_28(fresh_registry, fault_proxy):
    registry = fresh_registry()
    proxy, up, data, desc = push_with_a_cut_chunk(registry, fault_proxy)
    assert_blob(registry.url, desc)
    assert up.stats.blobs_restarted == 1
    assert len(bodies(proxy, "POST")) == 2  # the wedged session was replaced
    assert sum(bodies(proxy, "PATCH")) == desc.size + 4 * MiB + 300_000


def test_chunk_broken_midway_continues_on_a_spec_registry(spec_registry, fault_proxy):
    registry = spec_registry()
    proxy, up, data, desc = push_with_a_cut_chunk(registry, fault_proxy)
    assert registry.blobs[(REPO, desc.digest)] == data
    assert up.stats.blobs_restarted == 0 and up.stats.status_queries == 1
    assert sum(bodies(proxy, "PATCH")) == desc.size  # the partial chunk's bytes were not sent again
    # the next chunk starts where the registry stands and is a whole chunk again
    assert bodies(proxy, "PATCH")[4:6] == [300_000, MiB]
    assert len(registry.requests_of("POST")) == 1


def test_resend_after_a_cut_reads_the_source_from_a_saved_hash_state(spec_registry, fault_proxy):
    """The bytes to send again after a cut chunk come from the source reopened near them (with
    the hash state saved there), not from a second read of the blob from byte 0."""
    registry = spec_registry()
    proxy = fault_proxy(registry)
    proxy.cut_request("PATCH", after=300_000, skip=4)  # the registry holds 4 MiB + 300 000 bytes
    data, desc = make_blob(10 * MiB)
    counter = [0]

    def opener() -> VerifyingReader:
        return VerifyingReader(Counting(data, counter), desc.digest, desc.size, snapshot_every=MiB,
                               reopen=lambda offset: Counting(data[offset:], counter))

    with RegistryClient(proxy.host, retry=FAST) as client:
        RegistryStore(client, uploader=uploader(MiB)).push(REPO, desc, opener)
    assert registry.blobs[(REPO, desc.digest)] == data
    assert sum(bodies(proxy, "PATCH")) == desc.size
    assert counter[0] - desc.size <= MiB  # from the 4 MiB state; from byte 0 it would be 4.3 MiB or more


class Hook(io.BytesIO):
    """A source that calls ``action`` once when ``at`` bytes were read."""

    def __init__(self, data: bytes, at: int, action) -> None:
        super().__init__(data)
        self.at, self.action = at, action

    def read(self, n: int = -1) -> bytes:
        out = super().read(n)
        if self.action and self.tell() >= self.at:
            action, self.action = self.action, None
            action()
        return out


def test_registry_restart_mid_upload_keeps_the_session(fresh_registry, fault_proxy):
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    data, desc = make_blob(8 * MiB)
    up = uploader(MiB)
    held = proxy.stall(2, "PATCH", "/blobs/uploads/", skip=4)  # the proxy holds chunk 5 back...
    done = threading.Event()

    def restart_while_held() -> None:
        deadline = time.monotonic() + 20
        while not held.fired and time.monotonic() < deadline:
            time.sleep(0.01)
        registry.restart()  # ...while the registry restarts between chunks 4 and 5
        # The registry dies with the thread that started it (PR_SET_PDEATHSIG follows the
        # thread), so this one waits for the end of the upload.
        done.wait(60)

    restarter = threading.Thread(target=restart_while_held)
    restarter.start()
    try:
        with RegistryClient(proxy.host, retry=FAST) as client:
            RegistryStore(client, uploader=up).push(REPO, desc, lambda: io.BytesIO(data))
        assert_blob(registry.url, desc)
    finally:
        done.set()
        restarter.join()
    assert held.fired
    assert registry.log_text().count("--- starting") == 2
    assert up.stats.blobs_restarted == 0 and len(bodies(proxy, "POST")) == 1
    assert sum(bodies(proxy, "PATCH")) == desc.size


def test_upload_outlives_a_short_lived_token(fresh_registry):
    registry = fresh_registry("token", valid_for=2)
    data, desc = make_blob(6 * MiB)
    up = uploader(MiB)
    with RegistryClient(registry.host, credentials=Credentials(registry.username, registry.password),
                        retry=FAST) as client:
        store = RegistryStore(client, uploader=up)
        store.push(REPO, desc, lambda: Hook(data, 3 * MiB + 1, lambda: time.sleep(3)))
        assert client.auth.token_requests >= 2  # the token expired mid-upload and was renewed
        assert client.blob_size(REPO, desc.digest) == desc.size
    assert up.stats.blobs_restarted == 0


@pytest.mark.parametrize("fault", ["reset", "503"])
def test_post_that_opens_the_session_is_retried(fresh_registry, fault_proxy, fault):
    """A registry restarting while the POST is in flight (the connection reset, or a 503 from a
    proxy before it) costs one more POST, not the upload: an unused session costs nothing."""
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    if fault == "reset":
        proxy.cut_request("POST", "/blobs/uploads/$", after=0)
    else:
        proxy.respond(503, "POST", "/blobs/uploads/$")
    data, desc = make_blob(3 * MiB)
    up = uploader(MiB)
    push(proxy.host, up, data, desc)
    assert_blob(registry.url, desc)
    assert len(bodies(proxy, "POST")) == 2 and proxy.rules[0].fired == 1
    assert up.stats.blobs_restarted == 0


def test_journal_session_gone_counts_a_restart(fresh_registry, fault_proxy, tmp_path):
    """A blob whose saved session cannot be continued (killed, then the session purged) starts
    over from a new POST: that is a restart, and the summary says so."""
    registry = fresh_registry()
    proxy = fault_proxy(registry)
    data, desc = make_blob(6 * MiB)
    journal = UploadJournal(tmp_path / "journal.json")
    with pytest.raises(TransferInterrupted):
        interrupted_push(proxy.host, journal, data, desc, 2 * MiB)
    entry = journal.get(proxy.host, REPO, desc.digest)
    assert requests.delete(entry.location, timeout=10).status_code == 204
    interrupt.STOP.clear()
    up = uploader(MiB, journal=UploadJournal(journal.path))
    push(proxy.host, up, data, desc)
    assert (up.stats.blobs_resumed, up.stats.blobs_restarted, up.stats.bytes_resumed) == (0, 1, 0)


def test_stale_journal_entry_of_a_blob_already_there_is_removed(fresh_registry, tmp_path):
    """A run killed after the final PUT landed, before the journal entry was removed, leaves an
    entry at offset == size; the next run finds the blob there and drops the entry."""
    registry = fresh_registry()
    data, desc = make_blob(2 * MiB)
    push(registry.host, uploader(MiB), data, desc)
    journal = UploadJournal(tmp_path / "journal.json")
    location = f"{registry.url}/v2/{REPO}/blobs/uploads/gone"
    journal.save(JournalEntry(registry.host, REPO, desc.digest, location=location, offset=desc.size, size=desc.size))
    push(registry.host, uploader(MiB, journal=UploadJournal(journal.path)), data, desc)
    assert UploadJournal(journal.path).entries() == []
