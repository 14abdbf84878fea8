#!/usr/bin/env bash
# with-venv.sh SCRIPT ARGS...: runs a Python test with the test venv's python
# (FM_TEST_PYTHON). Without a usable venv the test is skipped (exit 77) with
# the reason, or fails when FM_REQUIRE_DEPLOY_LINT=1 (CI).
python=${FM_TEST_PYTHON:-}
if [ -z "$python" ] || [ ! -x "$python" ] || ! "$python" -c 'import yaml' >/dev/null 2>&1; then
  if [ "${FM_REQUIRE_DEPLOY_LINT:-0}" = 1 ]; then
    echo "FAIL: the test venv (${python:-FM_TEST_PYTHON unset}) is missing or incomplete" >&2
    exit 1
  fi
  echo "SKIP: the test venv (${python:-FM_TEST_PYTHON unset}) is missing or incomplete; run scripts/test-env.sh" >&2
  exit 77
fi
exec "$python" "$@"
