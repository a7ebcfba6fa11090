"""The bundle: a compressed, digest-indexed, recoverable archive of images (one file or parts).

``BundleWriter`` is a Target and ``BundleReader`` a Source and Catalog (see transfer.store);
``docs/bundle-format.md`` specifies the bytes.
"""

from transfer.bundle.format import CatalogEntry
from transfer.bundle.reader import BundleInfo, BundleReader
from transfer.bundle.recover import rewrite_index
from transfer.bundle.stream import Record, iter_records
from transfer.bundle.writer import BundleWriter

__all__ = ["BundleWriter", "BundleReader", "BundleInfo", "CatalogEntry", "Record", "iter_records", "rewrite_index"]
