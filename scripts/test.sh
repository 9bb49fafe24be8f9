#!/usr/bin/env bash
# Runs every test of nodefleet.bitcoin on a fresh Debian 12 machine (set-up included).
#   scripts/test.sh                 # all stages
#   scripts/test.sh lint units      # only the named stages
# Stages: lint (ruff, ansible-lint production, yamllint via ansible-lint), docs (ansible-doc
# renders every module), sanity (ansible-test sanity), units (ansible-test units),
# integration (real supervisord, tor and the stand-in daemon on this machine),
# molecule (the local podman fleet: converge, idempotence, check-diff, verify),
# chaos (the chaos matrix subset that CI runs; scripts/chaos.sh runs the full matrix).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
export PATH="$ROOT/.venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0

ALL_STAGES=(lint docs sanity units integration molecule chaos)
if (($#)); then STAGES=("$@"); else STAGES=("${ALL_STAGES[@]}"); fi

bash scripts/setup.sh

declare -A RESULT
FAILED=0
run_stage() {
  local stage=$1 start rc
  start=$(date +%s)
  echo "=== stage: $stage"
  set +e
  ( set -euo pipefail; "stage_$stage" )
  rc=$?
  set -e
  RESULT[$stage]="$([ $rc -eq 0 ] && echo passed || echo "FAILED (rc=$rc)") in $(( $(date +%s) - start ))s"
  echo "=== stage: $stage ${RESULT[$stage]}"
  [ $rc -eq 0 ] || FAILED=$((FAILED + 1))
}

# ansible-test must run from an ansible_collections/<ns>/<name> tree that is not inside
# another git work tree; build the collection and install the tarball there, as users do.
COLLECTION_TREE=""
install_built_collection() {
  [ -n "$COLLECTION_TREE" ] && return 0
  local base="${TMPDIR:-/tmp}/nodefleet-ansible-test"
  rm -rf "$base" && mkdir -p "$base/dist"
  ansible-galaxy collection build --force --output-path "$base/dist" . >/dev/null
  ansible-galaxy collection install --force -p "$base" "$base"/dist/nodefleet-bitcoin-*.tar.gz >/dev/null
  COLLECTION_TREE="$base/ansible_collections/nodefleet/bitcoin"
  # ansible-test downloads a get-pip.py from a host outside the package registries; give it
  # the documented cached copy instead (tests/ansible-test/get_pip_offline.py explains).
  local pip_version
  pip_version=$(python -c 'from ansible_test._internal.python_requirements import get_venv_packages as g; import inspect, re; print(re.search(r"pip=.(\d+\.\d+)", inspect.getsource(g)).group(1))')
  mkdir -p ~/.ansible/test/cache
  cp tests/ansible-test/get_pip_offline.py ~/.ansible/test/cache/get_pip_${pip_version//./_}.py
  # ansible-galaxy install drops tests/ only if build_ignore says so; keep unit tests.
  test -d "$COLLECTION_TREE/tests/unit"
}

stage_lint() {
  ruff check .
  ruff format --check .
  ansible-lint --offline --profile production
}

stage_docs() {
  install_built_collection
  local mod
  for mod in plugins/modules/*.py; do
    mod=$(basename "$mod" .py)
    ANSIBLE_COLLECTIONS_PATH="${TMPDIR:-/tmp}/nodefleet-ansible-test" ansible-doc "nodefleet.bitcoin.$mod" >/dev/null
    echo "ansible-doc nodefleet.bitcoin.$mod: ok"
  done
}

stage_sanity() {
  install_built_collection
  (cd "$COLLECTION_TREE" && ansible-test sanity --python 3.11 --color no)
}

stage_units() {
  install_built_collection
  (cd "$COLLECTION_TREE" && ansible-test units --python 3.11 --color no)
}

stage_integration() {
  # The stand-in daemon (test infrastructure, not in the artifact) has its unit tests here too.
  pytest -p no:cacheprovider tests/unit/standin tests/integration
}

stage_molecule() {
  (cd "$ROOT" && molecule test -s default)
}

stage_chaos() {
  bash scripts/chaos.sh --ci
}

for stage in "${STAGES[@]}"; do
  declare -F "stage_$stage" >/dev/null || { echo "unknown stage: $stage (known: ${ALL_STAGES[*]})"; exit 2; }
  run_stage "$stage"
done

echo
echo "Summary:"
for stage in "${STAGES[@]}"; do printf '  %-12s %s\n' "$stage" "${RESULT[$stage]}"; done
passed=$(( ${#STAGES[@]} - FAILED ))
echo "stages: $passed passed, $FAILED failed"
exit $((FAILED > 0))
