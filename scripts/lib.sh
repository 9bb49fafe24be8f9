# Sourced by scripts/demo.sh, scripts/chaos.sh and scripts/test.sh (after scripts/setup.sh
# has made .venv): work from the repository root with the project's venv and ansible.cfg.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
export PATH="$ROOT/.venv/bin:$PATH"

# fleet_up INVENTORY [RELEASE_DIR]: the node image (cached by recipe hash), the signed
# release archives (core: real Bitcoin Core when ../shared/bitcoin-core or
# $NODEFLEET_CORE_ARCHIVE_DIR holds it, else the stand-in; knots/garbageman: the stand-in),
# the inventory's node containers (kept when unchanged, recreated when their settings
# changed) and one converge of playbooks/site.yml (a no-op on a converged fleet). Arguments
# after RELEASE_DIR go to that converge (scripts/chaos.sh: -e bitcoind_restart_loop_threshold=0).
fleet_up() {
  bash tests/image/build.sh
  bash tests/release/build_release.sh "${2:-build/release}"
  ansible-playbook -i "$1" tests/fleet/create.yml
  ansible-playbook -i "$1" playbooks/site.yml "${@:3}"
}

# release_daemons [RELEASE_DIR] [STATUS_JSON]: which daemon each implementation's release
# holds, from the releases.json that tests/release/build_release.sh wrote ("real Bitcoin Core
# <version>" or "the stand-in daemon, NOT Bitcoin"), and, when STATUS_JSON (the report of
# playbooks/status.yml) exists, the user agent each instance answered with.
release_daemons() {
  python3 - "${1:-build/release}/releases.json" "${2:-}" <<'PY'
import json, os, sys
data = json.load(open(sys.argv[1]))
what = {}
print("Daemons of this fleet (%s):" % sys.argv[1])
for r in data["releases"]:
    daemon = r.get("daemon", "stand-in")
    what[r["impl"]] = ("real Bitcoin Core %s" % daemon[len("bitcoin-core-"):]) if daemon.startswith("bitcoin-core-") \
        else "the stand-in daemon (tests/standin/bitcoind), NOT Bitcoin"
    print("  %-10s %-32s %s" % (r["impl"], r["version"], what[r["impl"]]))
if data.get("core_source", "stand-in") == "stand-in":
    print("  (no real Bitcoin Core archive in ../shared/bitcoin-core or $NODEFLEET_CORE_ARCHIVE_DIR: core runs the stand-in)")
if sys.argv[2] and os.path.exists(sys.argv[2]):
    print("Instances (user agent from %s):" % sys.argv[2])
    for host, hv in sorted(json.load(open(sys.argv[2]))["hosts"].items()):
        for i in hv["instances"]:
            print("  %-11s %-14s %-11s %-46s %s" % (host, i["name"], i.get("impl") or "-",
                  i.get("subversion") or "(%s)" % i.get("state"), what.get(i.get("impl"), "?")))
PY
}
