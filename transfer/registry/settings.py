"""Per-registry upload settings: chunk minimum and maximum, monolithic only, last chunk in the
PUT, whether Range can be believed. Built-in defaults for ECR, GHCR and GAR/GCR, overridden by a
JSON or TOML file (``load_registry_settings``); ``effective_chunk_size`` applies them."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from transfer.errors import UsageError
from transfer.sizes import parse_size

MAX_CHUNK_MIN = 1 << 30  # OCI-Chunk-Min-Length is honoured up to this
from transfer.limits import MIN_CHUNK_SIZE, check_chunk_size  # noqa: E402,F401  (the command line checks them)


@dataclass(frozen=True)
class RegistrySettings:
    """How to upload to one kind of registry."""

    min_chunk: int | None = None  # every chunk but the last at least this long (ECR: 5 MiB)
    max_chunk: int | None = None  # no PATCH body longer than this (GHCR: 4 MiB)
    monolithic_only: bool = False  # no chunked uploads at all (GAR, GCR)
    last_chunk_in_put: bool = False  # send the final chunk in the PUT, not an empty PUT (ECR)
    trust_range: bool = True  # believe Range answers (ECR's stops advancing after one PATCH)


BUILTIN_SETTINGS: dict[str, RegistrySettings] = {
    "*.dkr.ecr.*.amazonaws.com": RegistrySettings(min_chunk=5 << 20, last_chunk_in_put=True, trust_range=False),
    "ghcr.io": RegistrySettings(max_chunk=4 << 20),
    "*-docker.pkg.dev": RegistrySettings(monolithic_only=True),
    "gcr.io": RegistrySettings(monolithic_only=True),
    "*.gcr.io": RegistrySettings(monolithic_only=True),
}
_SIZE_FIELDS = {"min_chunk", "max_chunk"}
_BOOL_FIELDS = {f.name for f in fields(RegistrySettings)} - _SIZE_FIELDS


def load_registry_settings(path: str | Path) -> dict[str, RegistrySettings]:
    """Read ``{"registries": {"<host glob>": {"min_chunk": "5MiB", "monolithic_only": true, ...}}}``
    from a JSON file, or the same shape from TOML (``[registries."ghcr.io"]``) for ``*.toml``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".toml":
            import tomllib  # only where a settings file is TOML

            data = tomllib.loads(raw.decode())
        else:
            data = json.loads(raw)
    except OSError as exc:
        raise UsageError(f"registry settings {path}: cannot read it ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise UsageError(f"registry settings {path}: not valid {kind} ({exc})") from None
    table = data.get("registries") if isinstance(data, dict) else None
    if not isinstance(table, dict):
        raise UsageError(f"registry settings {path}: expected a \"registries\" table of host globs")
    return {str(glob): _settings_from(value, f"{path}: {glob}") for glob, value in table.items()}


def _settings_from(value: Any, where: str) -> RegistrySettings:
    if not isinstance(value, dict):
        raise UsageError(f"registry settings {where}: expected a table of settings")
    unknown = set(value) - _SIZE_FIELDS - _BOOL_FIELDS
    if unknown:
        raise UsageError(f"registry settings {where}: unknown setting {sorted(unknown)[0]!r}")
    kw: dict[str, Any] = {}
    for name, item in value.items():
        if name in _SIZE_FIELDS:
            kw[name] = parse_size(item, f"registry settings {where} {name}") or None
        elif not isinstance(item, bool):
            raise UsageError(f"registry settings {where} {name}: expected true or false")
        else:
            kw[name] = item
    return RegistrySettings(**kw)


def settings_for(host: str, table: Mapping[str, RegistrySettings] | None = None) -> RegistrySettings:
    """The first entry of ``table``, then of BUILTIN_SETTINGS, whose glob matches ``host`` (with
    or without its port); defaults otherwise."""
    names = {host.lower(), host.lower().rsplit(":", 1)[0]}
    for glob, settings in [*(table or {}).items(), *BUILTIN_SETTINGS.items()]:
        if any(fnmatch.fnmatchcase(name, glob.lower()) for name in names):
            return settings
    return RegistrySettings()


def effective_chunk_size(configured: int, settings: RegistrySettings, min_chunk: int | None = None) -> int:
    """``configured`` raised to the settings' and the registry's minimum (OCI-Chunk-Min-Length,
    at most 1 GiB), then capped at the settings' maximum (a hard limit, it wins)."""
    size = max(configured, settings.min_chunk or 0, min(min_chunk or 0, MAX_CHUNK_MIN))
    if settings.max_chunk:
        size = min(size, settings.max_chunk)
    return max(size, 1)

