"""Cooperative stop: the CLI sets STOP on SIGINT/SIGTERM; long loops call ``check()`` at safe points
(between blobs, between upload chunks) so state is saved before the process exits with 130."""

from __future__ import annotations

import threading

from transfer.errors import TransferInterrupted

STOP = threading.Event()


def check(what: str = "transfer") -> None:
    if STOP.is_set():
        raise TransferInterrupted(f"{what} interrupted; its state is saved")
