"""How the library reports progress. Only the CLI draws it (tqdm); the library calls this protocol.

Keys are digests (one per blob or manifest). ``advance`` may be negative when a transfer rewinds
(a restarted blob), so a bar never overstates what was done.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def planned(self, key: str, total: int, label: str = "") -> None:
        """Work ``key`` of ``total`` bytes will be done (adds to the overall total)."""

    def started(self, key: str) -> None:
        """Work on ``key`` began (it is now in flight)."""

    def advance(self, key: str, n: int) -> None:
        """``n`` more bytes of ``key`` are done; negative on a rewind."""

    def skipped(self, key: str, total: int, reason: str = "") -> None:
        """``key`` needed no work (present already, mounted, resumed part); counts as done."""

    def finished(self, key: str) -> None:
        """``key`` is complete."""

    def message(self, text: str) -> None:
        """A note for the user (a warning, a decision taken on their behalf)."""

    def images(self, found: int, planned: int) -> None:
        """Planning: ``found`` images selected and resolved so far, ``planned`` of them read
        (manifests and referrers); called as planning goes on, so a long run never looks hung."""


class NullProgress:
    """The do-nothing default."""

    def planned(self, key: str, total: int, label: str = "") -> None:
        pass

    def started(self, key: str) -> None:
        pass

    def advance(self, key: str, n: int) -> None:
        pass

    def skipped(self, key: str, total: int, reason: str = "") -> None:
        pass

    def finished(self, key: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def images(self, found: int, planned: int) -> None:
        pass
