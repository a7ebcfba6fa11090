import io

import pytest

from transfer.digest import EMPTY_SHA256, VerifyingReader, digest_bytes, validate_digest
from transfer.errors import IntegrityError, InvalidDigestError


def test_digest_bytes():
    assert digest_bytes(b"") == EMPTY_SHA256


@pytest.mark.parametrize("bad", ["sha256:abc", "sha256:" + "A" * 64, "sha256:../../etc/passwd", "md5:" + "a" * 32, "", "sha512:" + "a" * 64])
def test_bad_digests(bad):
    with pytest.raises(InvalidDigestError):
        validate_digest(bad)


def test_verifying_reader_ok():
    data = b"x" * 3_000_000
    r = VerifyingReader(io.BytesIO(data), digest_bytes(data), len(data))
    assert r.read_all(10_000_000) == data


def test_verifying_reader_wrong_bytes_names_digest():
    data = b"hello"
    dg = digest_bytes(data)
    r = VerifyingReader(io.BytesIO(b"hellO"), dg, 5)
    with pytest.raises(IntegrityError) as exc:
        r.drain()
    assert dg in str(exc.value)


def test_verifying_reader_short_and_long():
    data = b"hello"
    with pytest.raises(IntegrityError, match="4 bytes"):
        VerifyingReader(io.BytesIO(b"hell"), digest_bytes(data), 5).drain()
    with pytest.raises(IntegrityError, match="more than 5"):
        VerifyingReader(io.BytesIO(b"hello world"), digest_bytes(data), 5).drain()


def test_read_all_limit():
    data = b"y" * 100
    with pytest.raises(IntegrityError, match="at most 10"):
        VerifyingReader(io.BytesIO(data), digest_bytes(data), None).read_all(10)


def test_a_verified_stream_is_not_hashed_twice_but_still_fails():
    data = b"z" * 100_000
    dg = digest_bytes(data)
    outer = VerifyingReader(VerifyingReader(io.BytesIO(data), dg, len(data)), dg, len(data))
    assert outer._digester is None and outer.read_all(1 << 20) == data
    bad = VerifyingReader(VerifyingReader(io.BytesIO(b"y" + data[1:]), dg, len(data)), dg, len(data))
    with pytest.raises(IntegrityError):
        bad.drain()
    # A different expectation outside is checked on its own.
    other = VerifyingReader(VerifyingReader(io.BytesIO(data), dg, len(data)), digest_bytes(b"x"), len(data))
    with pytest.raises(IntegrityError):
        other.drain()


class Counting(io.BytesIO):
    """A source that adds every byte read to ``counter[0]``."""

    def __init__(self, data: bytes, counter: list[int]) -> None:
        super().__init__(data)
        self.counter = counter

    def read(self, n: int = -1) -> bytes:
        data = super().read(n)
        self.counter[0] += len(data)
        return data


def _rewindable(data: bytes, counter: list[int], source: bytes | None = None) -> VerifyingReader:
    reopened = source if source is not None else data
    return VerifyingReader(Counting(data, counter), digest_bytes(data), len(data),
                           reopen=lambda offset: Counting(reopened[offset:], counter), snapshot_every=1 << 20)


def test_rewind_reads_from_the_last_hash_state_not_from_the_start():
    data = bytes(range(256)) * (5 * 4096 + 100)  # a little over 5 MiB
    counter = [0]
    reader = _rewindable(data, counter)
    assert b"".join(reader.read(1 << 20) for _ in range(3)) == data[: 3 << 20]
    assert reader.rewind(2_300_000)
    assert reader.position == 2_300_000
    rest = b"".join(iter(lambda: reader.read(1 << 20), b""))  # EOF checks size and digest
    assert rest == data[2_300_000:]
    # read twice: only the bytes from the hash state saved at 2 MiB up to the first 3 MiB read
    assert counter[0] - len(data) == (3 << 20) - (2 << 20)


def test_rewind_still_catches_different_bytes():
    data = bytes(range(256)) * 8192  # 2 MiB
    other = data[:-1] + b"\x00"
    reader = _rewindable(data, [0], source=other)
    reader.read(1_500_000)
    assert reader.rewind(1_200_000)
    with pytest.raises(IntegrityError):
        while reader.read(1 << 20):
            pass


def test_rewind_without_reopen_says_no():
    data = b"x" * 1000
    reader = VerifyingReader(io.BytesIO(data), digest_bytes(data), len(data))
    reader.read(600)
    assert not reader.rewind(100)
    trusting = VerifyingReader(reader, digest_bytes(data), len(data))
    assert not trusting.rewind(100)


def test_skip_unverified_checks_only_the_size_until_a_rewind_to_the_start():
    data = bytes(range(256)) * 8192  # 2 MiB
    other = data[:-1] + b"\x00"
    counter = [0]
    reader = _rewindable(data, counter, source=other)
    assert reader.skip_unverified(1_000_000) and reader.unverified
    rest = b"".join(iter(lambda: reader.read(1 << 20), b""))  # the digest is not checked: no error
    assert rest == other[1_000_000:] and counter[0] == len(data) - 1_000_000
    assert reader.rewind(0) and not reader.unverified  # from byte 0: checked again
    with pytest.raises(IntegrityError):
        while reader.read(1 << 20):
            pass
