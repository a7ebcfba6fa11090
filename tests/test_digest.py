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
