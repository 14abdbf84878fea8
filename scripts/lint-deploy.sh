#!/usr/bin/env bash
# lint-deploy.sh [--only CHECK[,CHECK...]] [ROOT]: checks everything that
# deploys fmserve (workflows, Dockerfiles, compose files, Kubernetes
# manifests) without Docker, a cluster or the network. ROOT defaults to this
# repository. Run by CTest (tests/deploy) as part of `./fm test`.
#
# Tools come from the test venv (build/venv, made by scripts/test-env.sh from
# the pinned tests/requirements.txt; FM_TEST_PYTHON names its python), then
# from PATH. Verdicts: exit 0 every check passed; 1 a check failed or a tool
# is missing; 77 the venv itself is missing (no PyPI access), reported as
# NOT RUN, unless FM_REQUIRE_DEPLOY_LINT=1 (CI) turns that into a failure too.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only=$2; shift 2 ;;
    --only=*) only=${1#--only=}; shift ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
root=$(cd "${1:-$here/..}" && pwd)

python=${FM_TEST_PYTHON:-$here/../build/venv/bin/python3}
if [ ! -x "$python" ] || ! "$python" -c 'import yaml, kubernetes_validate' >/dev/null 2>&1; then
  msg="the test venv ($python) is missing or lacks the packages in tests/requirements.txt; run scripts/test-env.sh BUILD_DIR (needs PyPI)"
  if [ "${FM_REQUIRE_DEPLOY_LINT:-0}" = 1 ]; then
    echo "lint-deploy: FAIL: $msg" >&2
    exit 1
  fi
  echo "lint-deploy: NOT RUN: $msg" >&2
  exit 77
fi
venv_bin=$(cd "$(dirname "$python")" && pwd)

# Finds a tool in the venv, then on PATH; empty when it is nowhere.
tool() {
  if [ -x "$venv_bin/$1" ]; then echo "$venv_bin/$1"; else command -v "$1" 2>/dev/null || true; fi
}

results=()
failed=0
selected() {
  [ -z "$only" ] && return 0
  case ",$only," in *",$1,"*) return 0 ;; esac
  return 1
}
record() { # NAME STATUS DETAIL
  results+=("$(printf '%-18s %-5s %s' "$1" "$2" "$3")")
  [ "$2" = PASS ] || failed=1
}
# run_check NAME TOOL-NAME COMMAND...: runs COMMAND when TOOL-NAME resolves;
# the word TOOL in COMMAND is replaced by the tool's path.
run_check() {
  local name=$1 toolname=$2 path
  shift 2
  selected "$name" || return 0
  path=$(tool "$toolname")
  if [ -z "$path" ]; then
    echo "== $name: $toolname not found in $venv_bin or on PATH"
    record "$name" FAIL "$toolname missing (pip install -r tests/requirements.txt)"
    return
  fi
  local args=() a
  for a in "$@"; do
    if [ "$a" = TOOL ]; then args+=("$path"); else args+=("$a"); fi
  done
  echo "== $name: ${args[*]#"$root"/}"
  if (cd "$root" && "${args[@]}"); then
    record "$name" PASS "$toolname"
  else
    record "$name" FAIL "$toolname reported problems (above)"
  fi
}

cd "$root" || exit 1
shopt -s nullglob globstar
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
dockerfiles=(docker/**/Dockerfile*)
composes=(docker-compose*.yml)
shells=(scripts/lint-deploy.sh scripts/ensure-cmake.sh scripts/deploy/*.sh docker/*.sh tests/deploy/*.sh)
shopt -u nullglob globstar

echo "lint-deploy: root $root"
echo "lint-deploy: tools:" \
  "yamllint $("$(tool yamllint)" --version 2>/dev/null | awk '{print $2}')," \
  "actionlint $("$(tool actionlint)" -version 2>/dev/null | head -n1 | awk '{print $NF}')," \
  "hadolint $("$(tool hadolint)" --version 2>/dev/null | awk '{print $NF}')," \
  "check-jsonschema $("$(tool check-jsonschema)" --version 2>/dev/null | awk '{print $NF}')," \
  "shellcheck $("$(tool shellcheck)" --version 2>/dev/null | awk '/^version/ {print $2}')," \
  "kubernetes-validate $("$python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)"

run_check yamllint yamllint TOOL -c .yamllint.yaml --strict .
shellcheck_path=$(tool shellcheck)
# actionlint also runs shellcheck on every `run:` script when it is given one.
run_check actionlint actionlint TOOL -color=false -shellcheck="$shellcheck_path" "${workflows[@]}"
run_check workflow-schema check-jsonschema TOOL --builtin-schema vendor.github-workflows "${workflows[@]}"
run_check workflow-timeouts check-jsonschema TOOL --builtin-schema custom.github-workflows-require-timeout \
  "${workflows[@]}"
run_check hadolint hadolint TOOL --no-color --config .hadolint.yaml "${dockerfiles[@]}"
run_check compose-schema check-jsonschema TOOL --builtin-schema vendor.compose-spec "${composes[@]}"
run_check shellcheck shellcheck TOOL "${shells[@]}"
for check in dockerfiles compose k8s-schema k8s-policy workflows; do
  selected "$check" || continue
  echo "== $check: scripts/deploy/check_deploy.py"
  if "$python" "$here/deploy/check_deploy.py" "$root" "$check"; then
    record "$check" PASS "scripts/deploy/check_deploy.py"
  else
    record "$check" FAIL "scripts/deploy/check_deploy.py reported problems (above)"
  fi
done

echo
echo "lint-deploy summary:"
for line in "${results[@]}"; do
  echo "  $line"
done
if [ ${#results[@]} -eq 0 ]; then
  echo "lint-deploy: no check matched --only $only" >&2
  exit 2
fi
exit $failed
