#!/usr/bin/env bash
# test-env.sh BUILD_DIR: prepares what the test suite needs beyond the build:
# a Python virtual environment (BUILD_DIR/venv) with the packages in
# tests/requirements.txt, used by tests that compare against independent
# implementations or drive real third-party clients and servers. Tests that
# need it skip, saying why, when it could not be made (e.g. no PyPI access).
set -uo pipefail
build=$1
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$build/venv
req=$root/tests/requirements.txt
stamp=$venv/.requirements.sha256

# The constraints files are part of what gets installed, so they count too.
want=$(cat "$req" "$root"/tests/constraints-*.txt | sha256sum | cut -d' ' -f1)
if [ -x "$venv/bin/python3" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "test-env: $venv is up to date"
  exit 0
fi
echo "test-env: creating $venv from tests/requirements.txt"
python3 -m venv "$venv" || { echo "test-env: WARNING: python3 -m venv failed; Python-based tests will skip" >&2; exit 0; }
if "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check -r "$req"; then
  echo "$want" >"$stamp"
  echo "test-env: installed $(grep -cv '^\s*#' "$req") requirement lines"
else
  echo "test-env: WARNING: pip install failed; tests that need these packages will skip" >&2
fi
exit 0
