"""The main job end to end, on this machine alone (run it through ``samples/demo.sh``):

1. start two throwaway registries (Debian's docker-registry) on free loopback ports;
2. seed the source with the sample images using skopeo (an independent client);
3. transfer export --catalog SOURCE -o demo.bundle   (the whole registry into one file)
4. transfer verify demo.bundle; transfer ls demo.bundle
5. transfer import demo.bundle DESTINATION
6. check with skopeo that every tag at the destination has the source's manifest digest;
7. stop the registries and remove everything.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.bed.images import sample_set  # noqa: E402
from tests.bed.registry import Registry  # noqa: E402
from tests.bed.skopeo import Skopeo, seed_sample_set  # noqa: E402


def run(*args: str) -> None:
    cmd = [sys.executable, "-m", "transfer", *args]
    print(f"\n$ transfer {shlex.join(args)}", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="transfer-demo-") as tmp:
        work = Path(tmp)
        source = Registry(work / "source").start()
        destination = Registry(work / "destination").start()
        try:
            print(f"source registry      {source.host}\ndestination registry {destination.host}")
            skopeo = Skopeo(work / "skopeo")
            seeded = seed_sample_set(skopeo, source, *sample_set(work / "layout"))
            print(f"seeded {len(seeded)} images into the source with skopeo")
            bundle = str(work / "demo.bundle")
            run("ls-remote", source.host, "--tags")
            run("export", "--catalog", source.host, "-o", bundle)
            run("verify", bundle)
            run("ls", bundle)
            run("import", bundle, destination.host)
            return check(skopeo, source, destination, seeded)
        finally:
            source.stop()
            destination.stop()


def check(skopeo: Skopeo, source: Registry, destination: Registry, seeded: dict) -> int:
    print("\nchecking every image with skopeo (source digest == destination digest):")
    bad = 0
    for s in seeded.values():
        want, got = skopeo.digest(source, s.image), skopeo.digest(destination, s.image)
        ok = want == got == s.manifest.digest
        bad += not ok
        print(f"  {'ok ' if ok else 'BAD'} {s.image:60.60} {got}")
    print("demo: all digests identical" if not bad else f"demo: {bad} image(s) differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
