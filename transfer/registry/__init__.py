"""Registry access: the only package that imports requests.

- ``RegistryClient`` (client.py): API calls for one host.
- ``RegistryStore`` (store.py): a registry as a Source, Target and Catalog.
- ``ChunkedUploader`` (upload.py): resumable blob uploads, with the blob read by cursor.py, limits
  per registry from settings.py and sessions in flight kept by journal.py.
- credentials.py, auth.py, tls.py: where credentials come from, how they are used, whom we trust.
"""

from transfer.registry.client import Manifest, RegistryClient, UploadStatus
from transfer.registry.credentials import Credentials, resolve_credentials
from transfer.registry.http import RetryPolicy
from transfer.registry.store import BlobUploader, MonolithicUploader, RegistryStore
from transfer.registry.tls import TLSPolicy, tls_policy

__all__ = [
    "BlobUploader", "Credentials", "Manifest", "MonolithicUploader", "RegistryClient", "RegistryStore",
    "RetryPolicy", "TLSPolicy", "UploadStatus", "resolve_credentials", "tls_policy",
]
