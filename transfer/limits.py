"""Defaults and limits the command line shows in its help and checks while parsing, kept here so
that ``transfer COMMAND --help`` and argument errors load none of the modules that use them
(pydantic options, the registry client, the bundle format). Those modules take them from here."""

from __future__ import annotations

from transfer.errors import UsageError
from transfer.sizes import format_size

DEFAULT_JOBS = 4  # parallel blob transfers
DEFAULT_LOOKUPS = 16  # requests in flight while planning (resolving, reading manifests and referrers)
MIN_SPLIT_SIZE = 64 << 10  # a bundle part must hold its header, a record and its index
# A chunk size asked for is at least this: smaller chunks cost a request (and, on distribution,
# a sync to disk) for every few bytes. A registry that demands more raises it (with a note).
MIN_CHUNK_SIZE = 64 << 10
CHUNK_SECONDS = 2.0  # an upload chunk after the first: about this long at the measured rate


def check_chunk_size(size: int) -> int:
    """``size`` if it may be asked for as the chunk size, else a UsageError."""
    if size < MIN_CHUNK_SIZE:
        raise UsageError(f"chunk size {format_size(size)} is too small (at least {format_size(MIN_CHUNK_SIZE)})")
    return size
