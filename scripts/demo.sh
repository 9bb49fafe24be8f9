#!/usr/bin/env bash
# Brings the local demo fleet up from nothing on a Debian 12 machine and converges it:
# set-up (packages, podman config, .venv), the node image (cached), the signed release
# archives (core: the real Bitcoin Core from ../shared/bitcoin-core when it is there, else the
# stand-in daemon; knots and garbageman: always the stand-in), three node containers running
# systemd, the converge of inventories/demo, a per-instance summary (state, ports, onion
# address, user agent) and which daemon each implementation runs.
# The fleet stays up; `scripts/demo.sh down` removes it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
INVENTORY=inventories/demo

bash scripts/setup.sh
if [ "${1:-up}" = down ]; then
  ansible-playbook -i "$INVENTORY" tests/fleet/destroy.yml
  exit 0
fi
fleet_up "$INVENTORY"
ansible-playbook -i "$INVENTORY" playbooks/status.yml
release_daemons build/release build/status/fleet-status.json
