"""The peer tools the benchmarks measure transfer against, installed on first use without touching
the system's package sources:

- skopeo: Debian's package (``apt-get install skopeo``, as .ci/setup.sh does);
- crane: Debian's unstable suite only has it; ``apt-get download crane`` with a temporary sources list
  for ``sid`` on the same mirror as the system's, then ``dpkg -x`` into ``benchmarks/.peers/``.

    python -m benchmarks.peers        # prints the path of each tool, installing what is missing
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PEERS = Path(__file__).resolve().parent / ".peers"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")


def _mirror() -> str:
    """The Debian mirror the system uses (deb.debian.org when it cannot tell)."""
    text = SOURCES.read_text() if SOURCES.exists() else ""
    found = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M)
    return found.group(1) if found else "http://deb.debian.org/debian"


def crane() -> str:
    """The path of a crane binary (installed into benchmarks/.peers on first use)."""
    binary = PEERS / "usr" / "bin" / "crane"
    if binary.is_file():
        return str(binary)
    with tempfile.TemporaryDirectory(prefix="apt-sid-") as tmp:
        root = Path(tmp)
        (root / "lists" / "partial").mkdir(parents=True)
        (root / "sources.list").write_text(f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {_mirror()} sid main\n")
        opts = ["-o", f"Dir::Etc::SourceList={root / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
                "-o", f"Dir::State::Lists={root / 'lists'}", "-o", "APT::Get::List-Cleanup=0"]
        subprocess.run(["apt-get", *opts, "update", "-qq"], check=True)
        subprocess.run(["apt-get", *opts, "download", "-qq", "crane"], check=True, cwd=root)
        deb = next(root.glob("crane_*.deb"))
        PEERS.mkdir(exist_ok=True)
        subprocess.run(["dpkg", "-x", str(deb), str(PEERS)], check=True)
    return str(binary)


def skopeo() -> str:
    found = shutil.which("skopeo")
    if not found:
        raise SystemExit("skopeo is missing: run bash .ci/run once (it installs it), or apt-get install skopeo")
    return found


if __name__ == "__main__":
    print(f"crane  {crane()}")
    print(f"skopeo {skopeo()}")
    subprocess.run([crane(), "version"], check=False, stdout=sys.stdout)
