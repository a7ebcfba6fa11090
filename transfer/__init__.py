"""transfer: move container images across air gaps, digest for digest.

The public API (docs/api.md)::

    import transfer

    report = transfer.export(["localhost:5000/app:1.0"], "site.bundle")
    report = transfer.import_bundle("site.bundle", "registry.local:5000/mirror")

Jobs: ``export``, ``import_bundle``, ``import_plan``, ``copy``, ``inventory``, ``unpack``,
``verify``, ``open_bundle``, ``sign``, ``keygen``. Their options (``ExportOptions``, ``ImportOptions``, ...,
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
                     "recover", "list_remote", "open_bundle", "diff", "rm", "sign", "keygen"),
    "transfer.options": ("RegistryAccess", "ExportOptions", "ImportOptions", "CopyOptions", "UnpackOptions",
                         "InventoryOptions"),
    "transfer.reports": ("ExportReport", "ImportReport", "PartImportReport", "ImportPlanReport", "CopyReport",
                         "UnpackReport", "InventoryReport", "BundleListing", "Failure", "Waiting", "UploadReport",
                         "RecoverReport", "RemoteListing", "DiffReport", "TagDiff", "PruneReport", "Deletion",
                         "RmReport", "SignatureStatus", "SignReport", "KeygenReport", "ImageSignature"),
    "transfer.bundle.verify": ("VerifyReport",),
    "transfer.bundle.reader": ("BundleReader",),
    "transfer.progress": ("Progress", "NullProgress"),
    "transfer.errors": ("TransferError", "UsageError", "InvalidReferenceError", "IntegrityError",
                        "UnsupportedManifestError", "BundleError", "CorruptBundleError", "LayoutError",
                        "RegistryError", "AuthenticationError", "NotFoundError", "RateLimitedError",
                        "UploadError", "RegistryUnreachableError", "IncompleteError", "PartOrderError",
                        "TransferInterrupted", "InvalidDigestError", "BundleBusyError", "JournalError",
                        "UnsupportedBundleError", "SignatureError", "ImagePolicyError"),
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


if TYPE_CHECKING:  # what type checkers see (each name re-exported explicitly)
    from transfer.api import export as export
    from transfer.api import import_bundle as import_bundle
    from transfer.api import import_plan as import_plan
    from transfer.api import copy as copy
    from transfer.api import inventory as inventory
    from transfer.api import unpack as unpack
    from transfer.api import verify as verify
    from transfer.api import open_bundle as open_bundle
    from transfer.api import recover as recover
    from transfer.api import list_remote as list_remote
    from transfer.api import diff as diff
    from transfer.api import rm as rm
    from transfer.api import sign as sign
    from transfer.api import keygen as keygen
    from transfer.options import RegistryAccess as RegistryAccess
    from transfer.options import ExportOptions as ExportOptions
    from transfer.options import ImportOptions as ImportOptions
    from transfer.options import CopyOptions as CopyOptions
    from transfer.options import UnpackOptions as UnpackOptions
    from transfer.options import InventoryOptions as InventoryOptions
    from transfer.reports import ExportReport as ExportReport
    from transfer.reports import ImportReport as ImportReport
    from transfer.reports import PartImportReport as PartImportReport
    from transfer.reports import ImportPlanReport as ImportPlanReport
    from transfer.reports import CopyReport as CopyReport
    from transfer.reports import UnpackReport as UnpackReport
    from transfer.reports import InventoryReport as InventoryReport
    from transfer.reports import BundleListing as BundleListing
    from transfer.reports import Failure as Failure
    from transfer.reports import Waiting as Waiting
    from transfer.reports import UploadReport as UploadReport
    from transfer.reports import RecoverReport as RecoverReport
    from transfer.reports import RemoteListing as RemoteListing
    from transfer.reports import DiffReport as DiffReport
    from transfer.reports import TagDiff as TagDiff
    from transfer.reports import PruneReport as PruneReport
    from transfer.reports import Deletion as Deletion
    from transfer.reports import RmReport as RmReport
    from transfer.reports import SignatureStatus as SignatureStatus
    from transfer.reports import SignReport as SignReport
    from transfer.reports import KeygenReport as KeygenReport
    from transfer.reports import ImageSignature as ImageSignature
    from transfer.bundle.verify import VerifyReport as VerifyReport
    from transfer.bundle.reader import BundleReader as BundleReader
    from transfer.progress import Progress as Progress
    from transfer.progress import NullProgress as NullProgress
    from transfer.errors import TransferError as TransferError
    from transfer.errors import UsageError as UsageError
    from transfer.errors import InvalidReferenceError as InvalidReferenceError
    from transfer.errors import IntegrityError as IntegrityError
    from transfer.errors import UnsupportedManifestError as UnsupportedManifestError
    from transfer.errors import BundleError as BundleError
    from transfer.errors import CorruptBundleError as CorruptBundleError
    from transfer.errors import LayoutError as LayoutError
    from transfer.errors import RegistryError as RegistryError
    from transfer.errors import AuthenticationError as AuthenticationError
    from transfer.errors import NotFoundError as NotFoundError
    from transfer.errors import RateLimitedError as RateLimitedError
    from transfer.errors import UploadError as UploadError
    from transfer.errors import RegistryUnreachableError as RegistryUnreachableError
    from transfer.errors import IncompleteError as IncompleteError
    from transfer.errors import PartOrderError as PartOrderError
    from transfer.errors import TransferInterrupted as TransferInterrupted
    from transfer.errors import InvalidDigestError as InvalidDigestError
    from transfer.errors import BundleBusyError as BundleBusyError
    from transfer.errors import JournalError as JournalError
    from transfer.errors import UnsupportedBundleError as UnsupportedBundleError
    from transfer.errors import SignatureError as SignatureError
    from transfer.errors import ImagePolicyError as ImagePolicyError
