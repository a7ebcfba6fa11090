#!/usr/bin/env bash
# The main job end to end on a fresh machine: installs what it needs (docker-registry, skopeo, a
# .venv), starts two throwaway registries, seeds one with sample images, exports it to a bundle,
# verifies the bundle, imports it into the other registry, checks every digest with skopeo, and
# cleans up. Exit 0 means every image arrived digest for digest.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/setup.sh
exec .venv/bin/python samples/demo.py "$@"
