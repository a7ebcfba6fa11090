"""Sizes, per-registry upload settings and the upload journal (no network)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from transfer.errors import UsageError
from transfer.errors import JournalError
from transfer.registry.journal import JournalEntry, UploadJournal
from transfer.registry.settings import (
    MAX_CHUNK_MIN,
    RegistrySettings,
    effective_chunk_size,
    load_registry_settings,
    settings_for,
)
from transfer.registry.upload import ChunkedUploader
from transfer.sizes import format_size, parse_size

MiB = 1 << 20


@pytest.mark.parametrize("text, value", [
    ("8MiB", 8 * MiB), ("64M", 64 * MiB), ("1G", 1 << 30), ("512k", 512 << 10), ("512K", 512 << 10),
    ("1.5GiB", 3 << 29), ("4000000", 4_000_000), ("10B", 10), ("5MB", 5_000_000), (" 2 m ", 2 * MiB),
    ("1T", 1 << 40), (7, 7),
])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "M", "-1M", "1.2.3M", "8 MiBs", "1X", "1e6", "0x10"])
def test_parse_size_refuses_with_the_name(text):
    with pytest.raises(UsageError, match=r"--chunk-size: cannot read"):
        parse_size(text, "--chunk-size")


@pytest.mark.parametrize("value, text", [(8 * MiB, "8 MiB"), (1536, "1.5 KiB"), (100, "100 B"), (3 << 29, "1.5 GiB")])
def test_format_size(value, text):
    assert format_size(value) == text
    assert parse_size(text.replace(" ", "")) == value


def test_builtin_settings_by_host_glob():
    assert settings_for("123456789012.dkr.ecr.eu-west-1.amazonaws.com").min_chunk == 5 * MiB
    assert settings_for("123456789012.dkr.ecr.eu-west-1.amazonaws.com").last_chunk_in_put
    assert settings_for("ghcr.io").max_chunk == 4 * MiB
    assert settings_for("europe-west1-docker.pkg.dev").monolithic_only
    assert settings_for("eu.gcr.io").monolithic_only and settings_for("gcr.io:443").monolithic_only
    assert settings_for("registry.example.com:5000") == RegistrySettings()


def test_settings_file_json_overrides_builtins(tmp_path):
    path = tmp_path / "registries.json"
    path.write_text(json.dumps({"registries": {
        "ghcr.io": {"max_chunk": "2MiB"},
        "*.example.com:*": {"min_chunk": 1048576, "last_chunk_in_put": True},
    }}))
    table = load_registry_settings(path)
    assert settings_for("ghcr.io", table).max_chunk == 2 * MiB
    assert settings_for("r.example.com:5000", table) == RegistrySettings(min_chunk=MiB, last_chunk_in_put=True)
    assert settings_for("eu.gcr.io", table).monolithic_only


def test_settings_file_toml(tmp_path):
    path = tmp_path / "registries.toml"
    path.write_text('[registries."r.local"]\nmonolithic_only = true\nmax_chunk = "8M"\n')
    assert load_registry_settings(path)["r.local"] == RegistrySettings(max_chunk=8 * MiB, monolithic_only=True)


def test_sample_settings_file_loads():
    sample = os.path.join(os.path.dirname(__file__), "..", "samples", "registries.json")
    table = load_registry_settings(sample)
    assert table and all(isinstance(s, RegistrySettings) for s in table.values())


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ('{"hosts": {}}', "registries"),
    ('{"registries": {"a": {"chunk": 1}}}', "unknown setting 'chunk'"),
    ('{"registries": {"a": {"max_chunk": "lots"}}}', "max_chunk: cannot read"),
    ('{"registries": {"a": {"monolithic_only": "yes"}}}', "expected true or false"),
])
def test_settings_file_errors_are_one_clear_line(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        load_registry_settings(path)
    with pytest.raises(UsageError, match="cannot read it"):
        load_registry_settings(tmp_path / "missing.json")


def test_effective_chunk_size():
    plain = RegistrySettings()
    assert effective_chunk_size(MiB, plain) == MiB
    assert effective_chunk_size(MiB, plain, min_chunk=3 * MiB) == 3 * MiB
    assert effective_chunk_size(MiB, plain, min_chunk=5 << 30) == MAX_CHUNK_MIN
    assert effective_chunk_size(MiB, RegistrySettings(min_chunk=5 * MiB)) == 5 * MiB
    assert effective_chunk_size(64 * MiB, RegistrySettings(max_chunk=4 * MiB), min_chunk=8 * MiB) == 4 * MiB


def entry(offset=3, digest="sha256:" + "a" * 64):
    return JournalEntry("r.example:5000", "team/app", digest, "https://r.example:5000/u?_state=x%3D%3D",
                        offset, 10, source="bundle.tar")


def test_journal_round_trip_private_and_atomic(tmp_path):
    path = tmp_path / "state" / "uploads.json"
    journal = UploadJournal(path)
    saved = journal.save(entry())
    assert saved.updated > 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["uploads.json"]  # no temp file left
    again = UploadJournal(path)
    assert again.get("r.example:5000", "team/app", entry().digest) == saved
    again.save(entry(offset=7))
    assert UploadJournal(path).get(*entry().key).offset == 7
    again.remove(*entry().key)
    assert UploadJournal(path).entries() == []


def test_journal_unreadable_is_a_clear_error(tmp_path):
    path = tmp_path / "uploads.json"
    path.write_text("{not json")
    with pytest.raises(JournalError, match="unreadable .*delete it"):
        UploadJournal(path)
    path.write_text('{"version": 99, "uploads": []}')
    with pytest.raises(JournalError, match="version 99"):
        UploadJournal(path)


def test_journal_prune_drops_only_old_entries(tmp_path):
    import time as _time

    from transfer.registry.journal import JournalEntry, UploadJournal

    journal = UploadJournal(tmp_path / "j.json")
    for digest in ("sha256:" + "a" * 64, "sha256:" + "b" * 64):
        journal.save(JournalEntry("h:1", "r", digest, location="http://h:1/x", offset=1, size=2))
    old = journal.get("h:1", "r", "sha256:" + "a" * 64)
    journal._entries[old.key] = JournalEntry(**{**old.__dict__, "updated": _time.time() - 10 * 86400})
    assert journal.prune(7 * 86400) == 1
    assert [e.digest for e in UploadJournal(tmp_path / "j.json").entries()] == ["sha256:" + "b" * 64]


@pytest.mark.parametrize("size", [0, 1, (64 << 10) - 1])
def test_chunk_size_under_64_kib_is_refused(size):
    with pytest.raises(UsageError, match=r"chunk size .* is too small \(at least 64 KiB\)"):
        ChunkedUploader(size)
    assert ChunkedUploader(64 << 10).chunk_size == 64 << 10


class _CountingSource:
    """A blob source that counts reads and can fail from an offset on."""

    def __init__(self, data: bytes, fail_at: int | None = None) -> None:
        self.data, self.pos, self.reads, self.fail_at = data, 0, 0, fail_at

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        if self.fail_at is not None and self.pos >= self.fail_at:
            raise OSError("the source broke")
        n = len(self.data) - self.pos if n is None or n < 0 else n
        if self.fail_at is not None:
            n = min(n, max(1, self.fail_at - self.pos))
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def close(self) -> None:
        pass


def _cursor(data: bytes, source: _CountingSource):
    from transfer.digest import digest_bytes
    from transfer.models import Descriptor
    from transfer.registry.cursor import BlobCursor

    desc = Descriptor(mediaType="application/octet-stream", digest=digest_bytes(data), size=len(data))
    opened = []

    def open_blob():
        opened.append(1)
        return source

    return BlobCursor(open_blob, desc, may_stall=True), opened


def test_a_spooled_source_reads_the_next_chunk_while_this_one_is_sent():
    """The chunk after the one being sent is read by a thread (reading and sending overlap); the
    next body is that spool, not a second read of the source."""
    data = bytes(range(256)) * 40 * 1024  # 10 MiB
    source = _CountingSource(data)
    cursor, opened = _cursor(data, source)
    mib = 1 << 20
    first = cursor.body(0, 4 * mib, then=8 * mib)()
    assert cursor.ahead_end(4 * mib) == 8 * mib
    assert first.read() == data[:4 * mib]
    cursor._ahead._thread.join(10)
    assert source.pos == 8 * mib  # read ahead while the first chunk was being "sent"
    reads = source.reads
    second = cursor.body(4 * mib, 8 * mib, then=len(data))()
    assert second.read() == data[4 * mib:8 * mib] and source.reads >= reads
    assert cursor.body(4 * mib, 8 * mib)().read() == data[4 * mib:8 * mib]  # a resend: the same spool
    last = cursor.body(8 * mib, len(data))()
    assert last.read() == data[8 * mib:]
    assert opened == [1]
    cursor.close()


def test_a_read_ahead_that_is_not_the_next_chunk_is_dropped_and_a_failure_surfaces_at_the_next_body():
    from transfer.registry.cursor import SourceFailed

    data = bytes(range(256)) * 16 * 1024  # 4 MiB
    mib = 1 << 20
    source = _CountingSource(data)
    cursor, _ = _cursor(data, source)
    assert cursor.body(0, mib, then=3 * mib)().read() == data[:mib]
    # a smaller chunk is asked for (a 413 halved the bodies): the bytes still come out right
    # (this source cannot rewind: the cursor reopens it from the start and reads forward)
    source2 = _CountingSource(data)
    cursor._open = lambda: source2
    assert cursor.body(mib, 2 * mib)().read() == data[mib:2 * mib]
    cursor.close()

    broken = _CountingSource(data, fail_at=2 * mib)
    cursor, _ = _cursor(data, broken)
    assert cursor.body(0, mib, then=3 * mib)().read() == data[:mib]
    with pytest.raises(SourceFailed, match="the source broke"):
        cursor.body(mib, 3 * mib)()
    cursor.close()
