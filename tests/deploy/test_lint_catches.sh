#!/usr/bin/env bash
# test_lint_catches.sh REPO_ROOT: shows that every deployment check can fail.
# Copies the repository (the files git would commit) to a scratch directory,
# checks that the pristine copy passes scripts/lint-deploy.sh, then breaks one
# thing at a time (a duplicated YAML key, an undefined workflow expression, a
# relative WORKDIR, a .dockerignore hiding a COPY source, a grace period
# shorter than the drain time, ...) and requires the check responsible for it
# to report FAIL. Exit 0 all caught, 1 something slipped through, 77 no venv.
# The mutations quote ${{ }} and $1 literally on purpose:
# shellcheck disable=SC2016
set -uo pipefail

src=$(cd "${1:?usage: test_lint_catches.sh REPO_ROOT}" && pwd)
lint=$src/scripts/lint-deploy.sh
python=${FM_TEST_PYTHON:-$src/build/venv/bin/python3}
if [ ! -x "$python" ] || ! "$python" -c 'import yaml, kubernetes_validate' >/dev/null 2>&1; then
  if [ "${FM_REQUIRE_DEPLOY_LINT:-0}" = 1 ]; then
    echo "FAIL: the test venv ($python) is missing or incomplete" >&2
    exit 1
  fi
  echo "SKIP: the test venv ($python) is missing or incomplete; run scripts/test-env.sh (needs PyPI)" >&2
  exit 77
fi
export FM_TEST_PYTHON=$python

work=$(mktemp -d "${TMPDIR:-/tmp}/fm-lint-catches-XXXXXX")
trap 'rm -rf "$work"' EXIT
have_git=0
git -C "$src" rev-parse --git-dir >/dev/null 2>&1 && have_git=1

# make_copy DIR: the files a commit of the working tree would hold, with their
# modes, in a fresh git index so the checks see them as tracked.
make_copy() {
  mkdir -p "$1"
  if [ $have_git = 1 ]; then
    (cd "$src" && git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
      tar --null -T - -cf -) | tar -xf - -C "$1"
    git -C "$1" init -q && git -C "$1" add -A
  else
    (cd "$src" && tar --exclude='./build*' --exclude=./.git -cf - .) | tar -xf - -C "$1"
  fi
}

# edit FILE OLD NEW: replaces the first OLD with NEW; fails when OLD is absent,
# so a stale mutation cannot pass by changing nothing.
edit() {
  "$python" - "$@" <<'PY'
import sys
path, old, new = sys.argv[1:4]
text = open(path, encoding="utf-8").read()
if old not in text:
    sys.exit(f"mutation target not found in {path}: {old!r}")
open(path, "w", encoding="utf-8").write(text.replace(old, new, 1))
PY
}

failures=0
n=0
pass_case() { echo "  ok   $1"; }
fail_case() { echo "  FAIL $1"; failures=$((failures + 1)); }

echo "pristine copy:"
make_copy "$work/pristine"
if out=$("$lint" "$work/pristine" 2>&1); then
  pass_case "all checks pass on the unmodified repository"
else
  echo "$out" | tail -30
  fail_case "the unmodified repository does not pass (the cases below would prove nothing)"
fi

# expect_fail CHECK NEEDLE DESCRIPTION MUTATION-COMMAND...: runs the mutation
# in a fresh copy (the word ROOT stands for it); then lint-deploy --only CHECK
# must exit 1, list CHECK as FAIL and print NEEDLE (so the check failed for
# this breakage, not for another reason), without a Python traceback.
expect_fail() {
  local check=$1 needle=$2 what=$3 dir args=() a
  shift 3
  n=$((n + 1))
  dir=$work/case$n
  make_copy "$dir"
  for a in "$@"; do args+=("${a//ROOT/$dir}"); done
  if ! "${args[@]}"; then
    fail_case "$check: $what (the mutation itself failed)"
    return
  fi
  local out rc
  out=$("$lint" --only "$check" "$dir" 2>&1)
  rc=$?
  if [ $rc -eq 1 ] && echo "$out" | grep -Eq "^  $check +FAIL" && echo "$out" | grep -Fq -- "$needle" &&
     ! echo "$out" | grep -q '^Traceback'; then
    pass_case "$check catches: $what"
    echo "$out" | grep -F -m1 -- "$needle" | cut -c1-200 | sed 's/^ */         | /'
  else
    echo "$out" | tail -40
    fail_case "$check did not catch: $what (exit $rc; expected FAIL and '$needle')"
  fi
  rm -rf "$dir"
}

echo "each check fails on its deliberate breakage:"
expect_fail yamllint 'duplication of key "minAvailable"' "a duplicated key in a manifest" \
  edit ROOT/k8s/base/pdb.yaml "  minAvailable: 1
" "  minAvailable: 1
  minAvailable: 2
"
expect_fail actionlint 'property "shaa" is not defined' "an undefined property in a workflow expression" \
  edit ROOT/.github/workflows/ci.yml 'VERSION=${{ github.sha }}' 'VERSION=${{ github.shaa }}'
expect_fail workflow-schema "'timeout-minutes': 'ninety'" "a non-numeric timeout-minutes" \
  edit ROOT/.github/workflows/ci.yml "timeout-minutes: 90" "timeout-minutes: ninety"
expect_fail workflow-timeouts "\$.jobs['cuda-build']" "a job without timeout-minutes" \
  edit ROOT/.github/workflows/ci.yml "    timeout-minutes: 60
" ""
expect_fail workflows "actions/checkout@v4 must be pinned" "an action pinned to a moving tag" \
  edit ROOT/.github/workflows/ci.yml "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683  # v4.2.2" \
  "actions/checkout@v4"
expect_fail workflows "does not run only on pushes to main" "packages: write on a job that also runs for pull requests" \
  edit ROOT/.github/workflows/ci.yml "    if: github.event_name == 'push' && github.ref == 'refs/heads/main'
" ""
expect_fail hadolint "DL3000" "a relative WORKDIR" \
  edit ROOT/docker/Dockerfile.cpu "WORKDIR /opt/fmserve" "WORKDIR opt/fmserve"
expect_fail dockerfiles "COPY source host/ is excluded by .dockerignore" ".dockerignore hiding a COPY source" \
  sh -c 'echo "host/" >>"$1"' sh ROOT/.dockerignore
expect_fail dockerfiles "docker/fm-drift-loop-typo.sh is not in the repository" "a COPY of a file that does not exist" \
  edit ROOT/docker/Dockerfile.gpu "COPY docker/fm-drift-loop.sh" "COPY docker/fm-drift-loop-typo.sh"
expect_fail dockerfiles "numeric non-root USER (found 'root')" "a final stage running as root" \
  edit ROOT/docker/Dockerfile.cpu "USER 10001:10001" "USER root"
expect_fail dockerfiles "fm-drift-loop.sh is copied into the image but not executable" "a copied script that is not executable" \
  chmod -x ROOT/docker/fm-drift-loop.sh
expect_fail compose-schema "'stop_grace' was unexpected" "an unknown service property" \
  edit ROOT/docker-compose.yml "    stop_grace_period: 30s" "    stop_grace_period: 30s
    stop_grace: 30s"
expect_fail compose "must exceed the drain timeout (20 s)" "stop_grace_period shorter than the drain timeout" \
  edit ROOT/docker-compose.yml "stop_grace_period: 30s" "stop_grace_period: 10s"
expect_fail compose "depends_on names unknown service migrator" "depends_on naming a service that does not exist" \
  edit ROOT/docker-compose.yml "      migrate:
        condition: service_completed_successfully
    # Longer" "      migrator:
        condition: service_completed_successfully
    # Longer"
expect_fail k8s-schema "'imagePullPolicyy' was unexpected" "an unknown field in a container (strict schema)" \
  edit ROOT/k8s/base/deployment.yaml "          image: fmserve
" "          image: fmserve
          imagePullPolicyy: Always
"
expect_fail k8s-schema "'two' is not of type 'integer'" "a wrong type (replicas as a string)" \
  edit ROOT/k8s/base/deployment.yaml "replicas: 2" "replicas: two"
expect_fail k8s-schema "['commonLabels'] not supported" "a kustomization field the renderer does not support" \
  sh -c 'printf "commonLabels:\n  team: ml\n" >>"$1"' sh ROOT/k8s/overlays/gpu/kustomization.yaml
expect_fail k8s-policy "terminationGracePeriodSeconds 20 must be at least" "terminationGracePeriodSeconds shorter than preStop + drain" \
  edit ROOT/k8s/base/deployment.yaml "terminationGracePeriodSeconds: 40" "terminationGracePeriodSeconds: 20"
expect_fail k8s-policy "readOnlyRootFilesystem must be true" "a writable root filesystem" \
  edit ROOT/k8s/base/job-migrate.yaml "readOnlyRootFilesystem: true" "readOnlyRootFilesystem: false"
expect_fail k8s-policy "does not tolerate the nvidia.com/gpu taint" "a GPU pod without the GPU toleration" \
  edit ROOT/k8s/overlays/gpu/deployment.yaml "        - key: nvidia.com/gpu
" "        - key: nvidia.com/gpuu
"
expect_fail k8s-policy "targetPort grpc is not a port of fmserve" "a Service targeting a port name the pod lacks" \
  edit ROOT/k8s/base/service-lb.yaml "      targetPort: rpc" "      targetPort: grpc"
expect_fail shellcheck "SC2154" "an unassigned variable in a container script" \
  edit ROOT/docker/fm-drift-loop.sh "  rc=\$?
" "  rc=\$?
  echo \"\$undefined_status\"
"

echo "test_lint_catches: $n breakages tried, $failures not caught"
[ $failures -eq 0 ]
