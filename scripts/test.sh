#!/usr/bin/env bash
# Runs every test of nodefleet.bitcoin on a fresh Debian 12 machine (set-up included).
#   scripts/test.sh                 # all stages
#   scripts/test.sh lint units      # only the named stages
# Stages: lint (ruff, ansible-lint production, yamllint via ansible-lint), artifact (the built
# tarball installs, ansible-doc renders every module, a module from it runs), sanity (ansible-test sanity), units (ansible-test units),
# integration (real supervisord, tor, real Bitcoin Core from ../shared/bitcoin-core and the
# stand-in daemon on this machine), property (generated hostile inputs against every module,
# hypothesis, seeded and bounded),
# molecule (the local podman fleet: converge, idempotence, check-diff, verify),
# chaos (the chaos matrix subset that CI runs; scripts/chaos.sh runs the full matrix).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0

ALL_STAGES=(lint artifact sanity units integration property molecule chaos)
if (($#)); then STAGES=("$@"); else STAGES=("${ALL_STAGES[@]}"); fi

bash scripts/setup.sh

declare -A RESULT
FAILED=0
# Each stage's output is also kept in build/stage-<name>.log, so the summary at the end can name
# the failed tests of every stage (CI shows the end of the output; a failure far above it would
# otherwise be invisible there).
run_stage() {
  local stage=$1 start rc
  start=$(date +%s)
  echo "=== stage: $stage"
  mkdir -p "$ROOT/build"
  set +e
  ( set -euo pipefail; "stage_$stage" ) 2>&1 | tee "$ROOT/build/stage-$stage.log"
  rc=${PIPESTATUS[0]}
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
  antsibull-changelog lint
}

stage_artifact() {
  # The built tarball installs, every module's documentation renders from it, and a module
  # from it runs: rpcauth_derive with a fixed salt must give Bitcoin Core's answer, computed
  # here independently with Python's hmac.
  install_built_collection
  local mod collections="${TMPDIR:-/tmp}/nodefleet-ansible-test"
  for mod in plugins/modules/*.py; do
    mod=$(basename "$mod" .py)
    ANSIBLE_COLLECTIONS_PATH="$collections" ansible-doc "nodefleet.bitcoin.$mod" >/dev/null
    echo "ansible-doc nodefleet.bitcoin.$mod: ok"
  done
  local salt=00112233445566778899aabbccddeeff expected got
  expected=$(python -c 'import hmac,hashlib,sys; s=sys.argv[1]; print("alice:%s$%s" % (s, hmac.new(s.encode(), b"correct horse", hashlib.sha256).hexdigest()))' "$salt")
  got=$(cd "${TMPDIR:-/tmp}" && env -u ANSIBLE_CONFIG ANSIBLE_COLLECTIONS_PATH="$collections" ANSIBLE_LOAD_CALLBACK_PLUGINS=1 \
    ANSIBLE_STDOUT_CALLBACK=ansible.posix.json ansible localhost -m nodefleet.bitcoin.rpcauth_derive \
    -a "{\"user\": \"alice\", \"password\": \"correct horse\", \"salt\": \"$salt\"}" 2>/dev/null |
    python -c 'import json,sys; print(json.load(sys.stdin)["plays"][0]["tasks"][0]["hosts"]["localhost"]["rpcauth"])')
  [ "$got" = "$expected" ] || { echo "rpcauth_derive from the installed tarball gave '$got', expected '$expected'"; return 1; }
  echo "rpcauth_derive from the installed tarball: $got (matches Core's algorithm)"
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

stage_property() {
  # Its own pytest process: the suite moves itself into a private mount namespace (host
  # read-only, a fresh /tmp), see tests/property/README.md.
  pytest -p no:cacheprovider -q tests/property
}

stage_molecule() {
  # The demo fleet (default) and the adopt scenario (its own one-node fleet, nodefleet-ado-node1)
  # use different containers: they run side by side and the stage fails when either fails.
  # `molecule test -s seed` is not run here: seeding is covered with real Core by
  # tests/integration/test_seed_real_core.py and test_bitcoind_role_seed.py (molecule/README.md).
  local adopt_log="$ROOT/build/molecule-adopt.log" adopt_pid adopt_rc=0 default_rc=0
  mkdir -p "$ROOT/build"
  (cd "$ROOT" && molecule test -s adopt) >"$adopt_log" 2>&1 &
  adopt_pid=$!
  # The default scenario's fleet is the demo fleet that the chaos stage runs on: it is
  # destroyed first (a fresh fleet for the scenario's first converge) and left up, converged
  # and verified, at the end, so the chaos stage does not create and converge it again.
  (cd "$ROOT" && molecule destroy -s default && molecule test -s default --destroy=never) || default_rc=$?
  wait "$adopt_pid" || adopt_rc=$?
  echo "=== molecule -s adopt (rc=$adopt_rc), output:"
  cat "$adopt_log"
  echo "=== molecule: default rc=$default_rc, adopt rc=$adopt_rc"
  [ "$default_rc" -eq 0 ] && [ "$adopt_rc" -eq 0 ]
}

stage_chaos() {
  bash scripts/chaos.sh --ci
}

# The molecule stage (podman containers) is the longest and shares nothing with the stages before
# it (lint, artifact, sanity, units, integration, property: files, temp dirs and daemons on this
# machine with their own ports): when molecule is asked for together with any of them, it starts
# in the background with the first stage, and its output and result are reported at its place in
# the order. This keeps CI well inside its time limit.
BG_MOLECULE_PID="" BG_MOLECULE_LOG="" BG_MOLECULE_START=0
start_molecule_in_background() {
  mkdir -p "$ROOT/build"
  BG_MOLECULE_LOG="$ROOT/build/stage-molecule.log"
  BG_MOLECULE_START=$(date +%s)
  ( set -euo pipefail; stage_molecule ) >"$BG_MOLECULE_LOG" 2>&1 &
  BG_MOLECULE_PID=$!
  echo "=== stage: molecule started in the background (beside the stages before it), log: $BG_MOLECULE_LOG"
}
finish_molecule_in_background() {
  local rc=0
  echo "=== stage: molecule (started in the background, waiting for it)"
  wait "$BG_MOLECULE_PID" || rc=$?
  cat "$BG_MOLECULE_LOG"
  RESULT[molecule]="$([ $rc -eq 0 ] && echo passed || echo "FAILED (rc=$rc)") in $(( $(date +%s) - BG_MOLECULE_START ))s"
  echo "=== stage: molecule ${RESULT[molecule]}"
  [ $rc -eq 0 ] || FAILED=$((FAILED + 1))
}

for stage in "${STAGES[@]}"; do
  declare -F "stage_$stage" >/dev/null || { echo "unknown stage: $stage (known: ${ALL_STAGES[*]})"; exit 2; }
done
for stage in "${STAGES[@]}"; do
  if [ "$stage" != molecule ] && [ "$stage" != chaos ] && [ -z "$BG_MOLECULE_PID" ] &&
     [[ " ${STAGES[*]} " == *" molecule "* ]] && [ -z "${RESULT[molecule]:-}" ]; then
    start_molecule_in_background
  fi
  if [ "$stage" = molecule ] && [ -n "$BG_MOLECULE_PID" ]; then
    finish_molecule_in_background
    continue
  fi
  run_stage "$stage"
done

echo
echo "Summary:"
for stage in "${STAGES[@]}"; do printf '  %-12s %s\n' "$stage" "${RESULT[$stage]}"; done
passed=$(( ${#STAGES[@]} - FAILED ))
echo "stages: $passed passed, $FAILED failed"
# The failed tests (pytest's short summary, molecule's and ansible's failures) of each failed stage.
for stage in "${STAGES[@]}"; do
  case "${RESULT[$stage]}" in FAILED*) ;; *) continue ;; esac
  echo "--- $stage: what failed (build/stage-$stage.log)"
  grep -E '^(FAILED|ERROR) |^E +[A-Za-z]+Error|^fatal: |^failed: |CRITICAL|^ERROR:|would be reformatted|^[a-z_/.]+:[0-9]+:[0-9]+: |^[A-Z]+[0-9]+ ' "$ROOT/build/stage-$stage.log" 2>/dev/null \
    | head -40 || true
done
exit $((FAILED > 0))
