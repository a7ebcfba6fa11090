"""transfer: move container images across air gaps, digest for digest.

The public API (docs/api.md)::

    import transfer

    report = transfer.export(["localhost:5000/app:1.0"], "site.bundle")
    report = transfer.import_bundle("site.bundle", "registry.local:5000/mirror")

Jobs: ``export``, ``import_bundle``, ``import_plan``, ``copy``, ``inventory``, ``unpack``,
``verify``, ``open_bundle``. Their options (``ExportOptions``, ``ImportOptions``, ...,
``RegistryAccess``), reports (``ExportReport``, ``ImportReport``, ...), the ``Progress`` protocol
and the exception tree (``TransferError`` and its subclasses) are importable from here too.

Names are loaded on first use, so ``import transfer`` (and ``transfer --version``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "transfer.api": ("export", "import_bundle", "import_plan", "copy", "inventory", "unpack", "verify",
                     "open_bundle"),
    "transfer.options": ("RegistryAccess", "ExportOptions", "ImportOptions", "CopyOptions", "UnpackOptions",
                         "InventoryOptions"),
    "transfer.reports": ("ExportReport", "ImportReport", "PartImportReport", "ImportPlanReport", "CopyReport",
                         "UnpackReport", "InventoryReport", "BundleListing", "Failure", "Waiting", "UploadReport"),
    "transfer.bundle.verify": ("VerifyReport",),
    "transfer.bundle.reader": ("BundleReader",),
    "transfer.progress": ("Progress", "NullProgress"),
    "transfer.errors": ("TransferError", "UsageError", "InvalidReferenceError", "IntegrityError",
                        "UnsupportedManifestError", "BundleError", "CorruptBundleError", "LayoutError",
                        "RegistryError", "AuthenticationError", "NotFoundError", "RateLimitedError",
                        "UploadError", "RegistryUnreachableError", "IncompleteError", "PartOrderError",
                        "TransferInterrupted"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'transfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from transfer.api import copy, export, import_bundle, import_plan, inventory, open_bundle, unpack, verify
    from transfer.bundle.reader import BundleReader
    from transfer.bundle.verify import VerifyReport
    from transfer.errors import (AuthenticationError, BundleError, CorruptBundleError, IncompleteError,
                                 IntegrityError, InvalidReferenceError, LayoutError, NotFoundError, PartOrderError,
                                 RateLimitedError, RegistryError, RegistryUnreachableError, TransferError,
                                 TransferInterrupted, UnsupportedManifestError, UploadError, UsageError)
    from transfer.options import (CopyOptions, ExportOptions, ImportOptions, InventoryOptions, RegistryAccess,
                                  UnpackOptions)
    from transfer.progress import NullProgress, Progress
    from transfer.reports import (BundleListing, CopyReport, ExportReport, Failure, ImportPlanReport, ImportReport,
                                  InventoryReport, PartImportReport, UnpackReport, UploadReport, Waiting)
