"""Byte sizes as people write them: ``8MiB``, ``64M``, ``1G``, ``512k``, ``1.5GiB``, ``4000000``.

``k``/``K``, ``M``, ``G``, ``T`` and ``KiB``, ``MiB``, ``GiB``, ``TiB`` are binary (powers of 1024,
as docker and most tools read ``64m``); ``kB``, ``MB``, ``GB``, ``TB`` are decimal (SI). Case is
ignored except that ``b`` alone means bytes.
"""

from __future__ import annotations

import re

from transfer.errors import UsageError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DECIMAL = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
MAX_SIZE = 1 << 60  # 1 EiB: more than any file or disk; larger numbers are typing mistakes
_FORMAT_UNITS = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def _multiplier(unit: str) -> int | None:
    u = unit.lower()
    if u in ("", "b"):
        return 1
    if u in _DECIMAL:
        return _DECIMAL[u]
    if u.endswith("ib") and len(u) == 3:
        u = u[0]
    return _BINARY.get(u)


def parse_size(text: str | int, what: str = "size") -> int:
    """``text`` as a whole number of bytes; UsageError naming ``what`` when it does not parse."""
    if isinstance(text, int) and not isinstance(text, bool):
        if not 0 <= text <= MAX_SIZE:
            raise UsageError(f"{what}: {text} is negative or too large (more than 1 EiB)")
        return text
    m = _SIZE_RE.match(str(text))
    factor = _multiplier(m.group(2)) if m else None
    if not m or factor is None:
        raise UsageError(f"{what}: cannot read {text!r} as a size (examples: 8MiB, 64M, 1G, 512k, 4000000)")
    number = m.group(1)
    if "." in number:
        whole, frac = number.split(".")
        value = int(whole) * factor + int(frac) * factor // 10 ** len(frac)
    else:
        value = int(number) * factor
    if value > MAX_SIZE:
        raise UsageError(f"{what}: {text!r} is too large (more than 1 EiB)")
    return value


def format_size(n: int) -> str:
    """``8388608`` -> ``8 MiB``, ``1536`` -> ``1.5 KiB``, ``100`` -> ``100 B``."""
    for unit, factor in _FORMAT_UNITS:
        if abs(n) >= factor:
            value = n / factor
            text = f"{value:.0f}" if n % factor == 0 else f"{value:.1f}"
            return f"{text} {unit}"
    return f"{n} B"
