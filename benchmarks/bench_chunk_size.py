"""Upload throughput by chunk size against a real local registry (Debian docker-registry 2.8).

    python -m benchmarks.bench_chunk_size [--size 256MiB] [--repeat 3] [--chunks 1M,4M,16M,...]

Starts one plain-HTTP registry on 127.0.0.1, makes a random blob of ``--size`` once, and uploads
it with ``ChunkedUploader`` at each chunk size, with the default time-sized chunks (``auto``, a
new uploader each time, so it starts from 8 MiB knowing no rate) and once in a single PUT,
``--repeat`` times each,
changing the first bytes every time so each upload is a new blob. Reports the median MB/s
(10^6 bytes per second, digest checking included) and the bytes a resume could lose at that
chunk size (one chunk). The uploaded blob files are removed after each run to save disk.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tests.bed.registry import Registry
from transfer.models import Descriptor
from transfer.registry.client import RegistryClient
from transfer.registry.upload import ChunkedUploader
from transfer.sizes import format_size, parse_size

DEFAULT_CHUNKS = "1MiB,2MiB,4MiB,8MiB,16MiB,32MiB,64MiB,128MiB"
MONOLITHIC = 0
AUTO = -1


def upload_once(client: RegistryClient, data: bytearray, chunk: int, run: int) -> float:
    """Upload a variant of ``data``; return seconds taken."""
    data[:8] = run.to_bytes(8, "big")
    view = memoryview(data)
    digest = "sha256:" + hashlib.sha256(view).hexdigest()
    desc = Descriptor(media_type="application/octet-stream", digest=digest, size=len(data))
    if chunk == AUTO:
        uploader = ChunkedUploader()
    else:
        uploader = ChunkedUploader(chunk or len(data), threshold=len(data) if chunk == MONOLITHIC else 0)
    began = time.perf_counter()
    uploader.upload(client, "bench/blob", desc, lambda: io.BytesIO(view),
                    lambda: client.start_upload("bench/blob"))
    elapsed = time.perf_counter() - began
    assert client.blob_size("bench/blob", digest) == len(data)
    return elapsed


def drop_blobs(registry: Registry) -> None:
    shutil.rmtree(registry.data_dir / "docker" / "registry" / "v2" / "blobs", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256MiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunks", default=DEFAULT_CHUNKS)
    args = parser.parse_args()
    size = parse_size(args.size, "--size")
    chunks = [parse_size(c, "--chunks") for c in args.chunks.split(",")] + [AUTO, MONOLITHIC]
    data = bytearray(os.urandom(size))
    run = 0
    with tempfile.TemporaryDirectory() as tmp, Registry(Path(tmp) / "registry") as registry:
        with RegistryClient(registry.host) as client:
            print(f"blob {format_size(size)}, {args.repeat} runs each, median")
            print(f"{'chunk':>12} {'MB/s':>8} {'min..max MB/s':>16} {'chunks':>7}")
            for chunk in chunks:
                times = []
                for _ in range(args.repeat):
                    run += 1
                    times.append(upload_once(client, data, chunk, run))
                    drop_blobs(registry)
                rates = sorted(size / t / 1e6 for t in times)
                label = {AUTO: "auto", MONOLITHIC: "one PUT"}.get(chunk) or format_size(chunk)
                count = -(-size // chunk) if chunk > 0 else 1 if chunk == MONOLITHIC else "-"
                print(f"{label:>12} {statistics.median(rates):8.1f} {rates[0]:7.1f}..{rates[-1]:<7.1f} {count:>7}",
                      flush=True)


if __name__ == "__main__":
    main()
