#!/usr/bin/env bash
# Installs what transfer's tests and demo need on a fresh Debian machine, once:
#   - Debian's docker-registry (distribution 2.8), skopeo, apache2-utils and openssl, with apt, when missing;
#   - a virtual environment in .venv with transfer and its test dependencies.
# Sourced by .ci/run and samples/demo.sh; safe to run again (it does nothing the second time).
set -euo pipefail
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

_need_apt=()
command -v docker-registry >/dev/null 2>&1 || _need_apt+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || _need_apt+=(skopeo)
command -v htpasswd >/dev/null 2>&1 || _need_apt+=(apache2-utils)  # bcrypt htpasswd files for the auth tests
command -v openssl >/dev/null 2>&1 || _need_apt+=(openssl)  # checks signatures independently in the tests
if ((${#_need_apt[@]})); then
  _sudo=""
  [ "$(id -u)" = 0 ] || _sudo="sudo"
  echo "setup: installing ${_need_apt[*]} with apt-get" >&2
  $_sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $_sudo apt-get install -y -qq --no-install-recommends "${_need_apt[@]}" >&2
fi
# The Debian package starts a system registry on :5000 where an init system runs; tests never use it.

PY="${PYTHON:-python3}"
if [ ! -x "$_root/.venv/bin/python" ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv "$_root/.venv"
fi
_stamp="$_root/.venv/.installed-$(sha256sum "$_root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$_stamp" ]; then
  echo "setup: installing transfer and test dependencies into .venv" >&2
  "$_root/.venv/bin/pip" install -q --disable-pip-version-check -e "$_root[test]" >&2
  rm -f "$_root"/.venv/.installed-* && touch "$_stamp"
fi
export PATH="$_root/.venv/bin:$PATH"
