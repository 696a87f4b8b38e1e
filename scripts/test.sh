#!/usr/bin/env bash
# The README's test command: sets up the independent peers the tests check our files with,
# then runs the whole test suite. Works on a fresh machine with only the Rust toolchain and
# Python 3:
#   * Debian tools (dcmtk, dicom3tools' dciodvfy, Orthanc as a real PACS) through apt-get when they are missing and apt-get can be
#     used (root); otherwise it stops and says what to install;
#   * the Python peers (pydicom, numpy, nibabel, highdicom; bench/requirements-test.txt) into a local
#     virtual environment (.venv-test, or $HN_TEST_VENV), put first on PATH for the tests.
# The peer checks are real tests: nothing is skipped when a peer is missing.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p hn-engine`).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v dcmdump >/dev/null 2>&1 || need_apt+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need_apt+=(dicom3tools)
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || need_apt+=(orthanc)
if ((${#need_apt[@]})); then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing ${need_apt[*]} (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || true
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "the tests need ${need_apt[*]}: run 'sudo apt-get install ${need_apt[*]}' and retry" >&2
    exit 1
  fi
fi

venv="${HN_TEST_VENV:-.venv-test}"
if [ ! -x "$venv/bin/python3" ]; then
  echo "creating the Python test environment in $venv" >&2
  python3 -m venv "$venv"
fi
"$venv/bin/python3" -m pip install -q --no-cache-dir --disable-pip-version-check \
  -r bench/requirements-test.txt
export PATH="$(cd "$venv/bin" && pwd):$PATH"

cargo test --workspace "$@"
