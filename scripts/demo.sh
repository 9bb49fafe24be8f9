#!/usr/bin/env bash
# Brings the local demo fleet up from nothing on a Debian 12 machine and converges it:
# set-up (packages, podman config, .venv), the node image (cached), signed release-like
# archives of the stand-in daemon, three node containers running systemd, the converge of
# inventories/demo, and a per-instance summary (state, ports, onion address).
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
