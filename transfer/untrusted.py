"""The one way untrusted JSON is read: bundle indexes, records and manifests, registry answers
(manifests, ``_catalog``, tags lists, referrers, tokens), OCI ``index.json``, docker-archive
``manifest.json`` and ``--have`` inventories.

Before parsing, the bytes are bounded in size, nesting depth and the length of any number (Python
refuses integers over 4,300 digits with a ValueError; deep nesting is a RecursionError). Any
failure, and a pydantic ValidationError of a model built from the result, becomes the caller's
TransferError subclass with one line naming the thing at fault. See docs/threat-model.md.
"""

from __future__ import annotations

import json
import os
import re
from array import array
from itertools import accumulate
from typing import Any, Callable, TypeVar

from pydantic import BaseModel, ValidationError

from transfer.errors import TransferError

MAX_DEPTH = 64  # OCI manifests nest 4 deep; nothing we read needs more
MAX_NUMBER_DIGITS = 19  # an int64 has 19 digits: sizes and offsets fit
MAX_JSON_FILE = 256 << 20  # a JSON file named on the command line (an inventory)

# a string; one never closed runs to the end (the document is not JSON, and json.loads says so):
# without that, each quote after it started a scan to the end again (quadratic on a hostile input)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_LONG_NUMBER = re.compile(rb"[0-9]{%d}" % (MAX_NUMBER_DIGITS + 1))
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 opening, -1 (signed) closing

M = TypeVar("M", bound=BaseModel)


def check_shape(raw: bytes, what: str, error: type[TransferError]) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH or with a number of more than 19 digits, in linear
    time and without recursion (strings are blanked first, so their contents do not count)."""
    bare = blank_strings(raw)
    if _LONG_NUMBER.search(bare):
        raise error(f"{what}: a number has more than {MAX_NUMBER_DIGITS} digits")
    steps = array("b", bare.translate(_STEP, _NOT_BRACKET))
    if max(accumulate(steps), default=0) > MAX_DEPTH:
        raise error(f"{what}: JSON nested more than {MAX_DEPTH} levels deep")


BLANK_AT_ONCE = 64 << 10  # up to this size re.sub blanks the strings: faster, and its list of pieces is small


def blank_strings(raw: bytes) -> bytes:
    """``raw`` with every JSON string emptied (``""``). A large document (a bundle's index) is done
    string by string: re.sub would hold every piece at once, about 9x the input for small records."""
    if len(raw) <= BLANK_AT_ONCE:
        return _STRING.sub(b'""', raw)
    out, pos, view = bytearray(), 0, memoryview(raw)
    for m in _STRING.finditer(raw):
        start, end = m.span()
        out += view[pos:start]
        out += b'""'
        pos = end
    out += view[pos:]
    return bytes(out)


def load_json(raw: bytes, what: str, error: type[TransferError], limit: int,
              object_hook: Callable[[dict[str, Any]], Any] | None = None) -> Any:
    """Parse untrusted JSON bytes (at most ``limit`` of them); every failure raises ``error``.
    ``object_hook``: as json.loads's (each object as it is parsed, e.g. into a smaller form)."""
    if len(raw) > limit:
        raise error(f"{what} is {len(raw)} bytes, more than the {limit} allowed")
    check_shape(raw, what, error)
    try:
        return json.loads(raw, object_hook=object_hook)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise error(f"{what} is not valid JSON: {reason}") from None


def load_json_file(path: str | os.PathLike[str], what: str, error: type[TransferError],
                   limit: int = MAX_JSON_FILE) -> Any:
    """Parse a JSON file named by the user, reading at most ``limit`` + 1 bytes of it."""
    with open(path, "rb") as fh:
        raw = fh.read(limit + 1)
    return load_json(raw, what, error, limit)


def validate(model: type[M], data: Any, what: str, error: type[TransferError]) -> M:
    """``model.model_validate(data)``; a ValidationError raises ``error`` naming the first field
    at fault (and how many more there are)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{what}: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    """One line for a ValidationError: where (``layers.0.digest``) and what is wrong."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "value"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"
