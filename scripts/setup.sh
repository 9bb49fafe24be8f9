#!/usr/bin/env bash
# One-time (idempotent, cheap on re-run) set-up of a Debian 12 machine for nodefleet.bitcoin
# development, tests and the local demo fleet:
#   - Debian packages: podman + runc (crun 1.8 fails on hybrid cgroups), debootstrap, tor,
#     supervisor, gnupg (tests run the real programs),
#   - /etc/containers/containers.conf: runc and ulimits within the host's hard limits,
#   - .venv with the pinned Python environment from requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

APT_PACKAGES=(podman runc debootstrap tor supervisor gnupg iproute2 procps rsync)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The host's own tor/supervisor services are not used: tests start their own instances.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Podman settings this kind of machine needs (see docs/development.md).
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] && nofile=65536
[ "$nproc" = unlimited ] && nproc=65536
nofile=$((nofile < 4096 ? nofile : 4096)); nproc=$((nproc < 4096 ? nproc : 4096))
want_conf="# Written by nodefleet.bitcoin scripts/setup.sh
[containers]
default_ulimits = [\"nofile=${nofile}:${nofile}\", \"nproc=${nproc}:${nproc}\"]
[engine]
runtime = \"runc\"
"
mkdir -p /etc/containers
if [ ! -f /etc/containers/containers.conf ] || [ "$(cat /etc/containers/containers.conf)" != "$(printf '%s' "$want_conf")" ]; then
  printf '%s' "$want_conf" > /etc/containers/containers.conf
fi

# Python environment, reinstalled only when requirements.txt changes.
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating .venv from requirements.txt"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi

# Make the collection importable as nodefleet.bitcoin from this checkout.
mkdir -p .cache/collections/ansible_collections/nodefleet
ln -sfn "$ROOT" .cache/collections/ansible_collections/nodefleet/bitcoin
echo "setup: ok"
