"""Start-up (issue 16): `transfer --version` and the fixed cost of a one-image export, from the
process's start to its first request on the wire, against a bare interpreter in the same run.

The export is pointed at a socket that only accepts: the time is taken when the first bytes of
the first connection arrive (a TLS ClientHello or an HTTP request line), so it includes the
interpreter, every import, the argument parsing, the settings and credentials, and the TLS set-up;
the process is then killed. Rounds alternate the commands; medians.

    BENCH_PYTHON=/work/main/.venv/bin/python python -m benchmarks.bench_startup [--repeat 21] \
        [--baseline TREE] [--importtime]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import PYTHON, child_env, machine, median, table, warm_bytecode, warm_tree  # noqa: E402


LIBRARIES = "import requests, pydantic\nclass M(pydantic.BaseModel):\n    x: int = 0\nM()"


def wall(cmd: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - began


def to_first_request(cmd_for: "callable", env: dict[str, str]) -> float:
    """Seconds from spawning ``cmd_for(host)`` to the first bytes it sends to ``host``."""
    with socket.socket() as server, tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        host = f"127.0.0.1:{server.getsockname()[1]}"
        cmd = cmd_for(host, str(Path(tmp) / "one.bundle"))
        began = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            server.settimeout(30)
            conn, _ = server.accept()
            with conn:
                conn.settimeout(30)
                if not conn.recv(1):
                    raise SystemExit(f"{' '.join(cmd)} connected and sent nothing")
                return time.perf_counter() - began
        finally:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--baseline", action="append", default=[], metavar="TREE",
                        help="also measure transfer from this source tree (e.g. a worktree of an older commit)")
    parser.add_argument("--importtime", action="store_true", help="print the top of `-X importtime` of --version and the export")
    args = parser.parse_args()

    warm_bytecode()
    env = child_env()
    # (label, argv prefix, environment): this tree, then each baseline from its own source tree
    builds = [("transfer", [PYTHON, "-m", "transfer"], env)]
    for tree in args.baseline:
        warm_tree(tree)
        rev = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        builds.append((f"transfer at {rev or tree}", [PYTHON, "-P", "-m", "transfer"],
                       dict(env, PYTHONPATH=str(Path(tree).resolve()))))

    times: dict[str, list[float]] = {}
    steps: list[tuple[str, callable]] = [
        ("python -c pass", lambda: wall([PYTHON, "-c", "pass"], env)),
        # the floor of the libraries a registry export cannot do without: requests (HTTP) imported
        # and one pydantic model (the OCI descriptors, options and reports) declared and used
        ("libraries: requests + one pydantic model", lambda: wall([PYTHON, "-c", LIBRARIES], env)),
    ]
    for label, argv, benv in builds:
        steps.append((f"{label} --version", lambda argv=argv, benv=benv: wall([*argv, "--version"], benv)))
        if benv is env:  # (an older tree may not have these modules)
            steps.append((f"{label}: import the export's modules",
                          lambda argv=argv, benv=benv: wall([*argv[:-2], "-c", "import transfer.api, transfer.cli.export_cmd"], benv)))
        steps.append((f"{label} export: start to first request",
                      lambda argv=argv, benv=benv: to_first_request(
                          lambda host, out: [*argv, "export", f"{host}/bench/one:1", "-o", out, "-q"], benv)))
    for label, fn in steps:  # once unmeasured: caches warm
        fn()
    for i in range(args.repeat):
        order = steps[i % len(steps):] + steps[:i % len(steps)]
        for label, fn in order:
            times.setdefault(label, []).append(fn())

    print(f"# {machine()}, {args.repeat} rounds, load average {os.getloadavg()[0]:.2f}")
    rows = [[label, f"{median(v) * 1000:.0f}", f"{min(v) * 1000:.0f}..{max(v) * 1000:.0f}"] for label, v in times.items()]
    print(table(["command", "median ms", "min..max ms"], rows))
    if args.importtime:
        for what in (["--version"], ["export", "127.0.0.1:9/bench/one:1", "-o", os.devnull, "-q"]):
            done = subprocess.run([PYTHON, "-X", "importtime", "-m", "transfer", *what], env=env, capture_output=True, text=True)
            lines = [ln for ln in done.stderr.splitlines() if ln.startswith("import time:") and "|" in ln]
            top = sorted(lines[1:], key=lambda ln: -int(ln.split("|")[1]))[:15]
            print(f"\n# -X importtime transfer {' '.join(what)}: {len(lines)} modules; top by cumulative µs")
            print("\n".join(top))


if __name__ == "__main__":
    main()
