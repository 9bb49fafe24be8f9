#!/usr/bin/env bash
# The chaos matrix against the local podman fleet (docs/chaos.md).
#
#   bash scripts/chaos.sh            # every cell of tests/chaos/matrix.yml; updates docs/chaos.md
#   bash scripts/chaos.sh --ci       # the CI subset (cells with `ci: true`, about 12 minutes)
#   bash scripts/chaos.sh --cell ID[,ID...]   # named cells only (manual cells too)
#
# Brings the fleet up first when it is not (node image, signed stand-in releases, the
# containers of inventories/demo, one converge of playbooks/site.yml), then runs molecule's
# chaos scenario side effect (tests/chaos/run_cell.yml) and its verify step. Results:
# build/chaos/<cell>.json, build/chaos/summary.md; logs of every playbook run the cells make
# in build/chaos/logs/. Exit status 0 only when every selected cell passed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
INVENTORY=${NODEFLEET_INVENTORY:-$ROOT/inventories/demo/hosts.yml}

set_name=full
cells=""
while (($#)); do
  case "$1" in
    --ci) set_name=ci ;;
    --cell) cells=${2:?--cell needs an id}; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "chaos.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

bash scripts/setup.sh

echo "chaos.sh: self-test of the chaos tooling"
python -m pytest -q -p no:cacheprovider tests/chaos

# The fleet: create what is missing (idempotent), then converge (a no-op when it is up).
# Image, releases and containers are cached/idempotent: a running node whose container
# settings changed (e.g. a new capability) is recreated, an unchanged one is kept.
echo "chaos.sh: bringing the fleet up and converging it (idempotent)"
# (The matrix kills instances on purpose: an earlier run's kills are no restart loop.)
fleet_up "$INVENTORY" "${NODEFLEET_RELEASE_DIR:-build/release}" -e bitcoind_restart_loop_threshold=0

export CHAOS_SET=$set_name CHAOS_CELLS=$cells NODEFLEET_INVENTORY="$INVENTORY"
start=$(date +%s)
rc=0
molecule side-effect -s chaos || rc=$?
molecule verify -s chaos || rc=$?
echo "chaos.sh: ${set_name}${cells:+ (cells $cells)} finished in $(( $(date +%s) - start ))s, rc=$rc"

if [ "$set_name" = full ] && [ -z "$cells" ]; then
  # docs/chaos.md shows the latest FULL run, whatever its outcome.
  python tests/chaos/chaos.py report --out "${CHAOS_OUT:-build/chaos}" --docs docs/chaos.md \
    --expect-ids "$(python tests/chaos/chaos.py select --matrix tests/chaos/matrix.yml --set full | python -c 'import json,sys; print(",".join(c["id"] for c in json.load(sys.stdin)))')" >/dev/null || true
  echo "chaos.sh: docs/chaos.md updated"
fi
exit $rc
