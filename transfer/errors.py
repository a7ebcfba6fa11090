"""The exception tree. Every error the library raises on purpose is a TransferError.

The CLI catches TransferError in one place and prints ``str(exc)``: one line a person can act on.
No message may contain a credential or a token; registry URLs are stored with their query
string removed (``_state`` and signed URLs stay out of logs).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class TransferError(Exception):
    """Root of every error this package raises on purpose."""

    exit_code = 1


class UsageError(TransferError):
    """The command line or an argument is wrong (exit code 2)."""

    exit_code = 2


class InvalidReferenceError(TransferError, ValueError):
    """An image reference, repository name, tag or digest does not parse."""

    exit_code = 2


class InvalidDigestError(InvalidReferenceError):
    """A digest string is malformed or uses an unsupported algorithm."""


class IntegrityError(TransferError):
    """Bytes did not match their digest or declared size."""

    def __init__(self, what: str, expected: str, actual: str, detail: str = "") -> None:
        self.what = what
        self.expected = expected
        self.actual = actual
        msg = f"integrity check failed for {what}: expected {expected}, got {actual}"
        super().__init__(msg + (f" ({detail})" if detail else ""))


class UnsupportedManifestError(TransferError):
    """A manifest cannot be carried faithfully (schema1, unknown media type, too large)."""


class BundleError(TransferError):
    """A bundle cannot be read or written."""


class BundleBusyError(BundleError):
    """Another process is writing this bundle (its lock is taken)."""


class CorruptBundleError(BundleError):
    """The bundle's bytes are damaged or hostile."""


class UnsupportedBundleError(BundleError):
    """The bundle uses a format version or feature this build does not know."""


class SignatureError(TransferError):
    """A signature is missing, was made by a key that is not trusted, or does not match what it
    claims to sign (a signed bundle, or an image under a signature policy)."""


class LayoutError(TransferError):
    """An OCI image layout or a docker archive is malformed or hostile, or cannot hold what was
    asked of it (an index in a docker archive, a layer that is not a tar)."""


class JournalError(TransferError):
    """The upload journal cannot be read or written."""


class PartOrderError(TransferError):
    """A part of a split bundle was given before the part it continues was imported; ``needed`` is
    that part's number."""

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


class IncompleteError(TransferError):
    """A job ran, but not all of it succeeded (images failed, tags wrong, content missing);
    ``report`` holds what was done, as the job's report."""

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


class ImagePolicyError(SignatureError, IncompleteError):
    """Images were refused by the image-signature policy (``--require-signed``): unsigned, signed by
    a key that is not trusted, or with a signature that does not verify or names another digest.
    ``report`` lists each image with its reason; nothing of a refused image was pushed."""


class TransferInterrupted(TransferError):
    """The user interrupted a transfer; state was saved and it can be resumed (exit code 130)."""

    exit_code = 130


class ErrorDetail(NamedTuple):
    """One entry of a registry's ``{"errors": [...]}`` body. (A NamedTuple, not a dataclass:
    ``transfer --version`` imports this module, and dataclasses costs it about 10 ms.)"""

    code: str
    message: str = ""
    detail: Any = None


class RegistryError(TransferError):
    """A registry answered with an error status (or not at all).

    ``url`` never carries a query string; ``retryable`` says whether the same request may succeed
    if sent again (5xx, 429, connection failures).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str = "",
        url: str = "",
        errors: list[ErrorDetail] | None = None,
        retryable: bool = False,
    ) -> None:
        self.status = status
        self.method = method
        self.url = url
        self.errors = errors or []
        self.retryable = retryable
        super().__init__(message)

    @property
    def codes(self) -> list[str]:
        return [e.code for e in self.errors]


class AuthenticationError(RegistryError):
    """Credentials were refused or are missing (401/403, token endpoint failures)."""


class NotFoundError(RegistryError):
    """The repository, manifest, tag or blob does not exist (404)."""


class RateLimitedError(RegistryError):
    """429 Too Many Requests; ``retry_after`` is in seconds when the registry said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        kw.setdefault("retryable", True)
        super().__init__(message, **kw)
        self.retry_after = retry_after


class UploadError(RegistryError):
    """A blob upload session failed (invalid, unknown or expired session, rejected chunk)."""


class RegistryUnreachableError(RegistryError):
    """No connection could be made, or it broke (DNS, refused, reset, TLS, timeout)."""

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("retryable", True)
        super().__init__(message, **kw)


__all__ = [
    name for name, obj in list(globals().items()) if isinstance(obj, type) and issubclass(obj, Exception)
] + ["ErrorDetail"]
