#!/usr/bin/env bash
# One-time (idempotent, cheap on re-run) set-up of a Debian 12 machine for nodefleet.bitcoin
# development, tests and the local demo fleet:
#   - Debian packages: podman + runc (crun 1.8 fails on hybrid cgroups), netavark +
#     aardvark-dns (fleet nodes resolve each other by inventory name), debootstrap and the Debian
#     archive keyring it verifies the mirror with, tor, supervisor, gnupg (tests run the real
#     programs). Everything is named here: packages are installed without Recommends, so
#     nothing may depend on what a Recommends would have pulled in,
#   - /etc/containers/containers.conf: netavark network backend, runc and ulimits within the
#     host's hard limits,
#   - the fleet network: one created without DNS (or under the CNI backend) is removed with its
#     containers (tests/fleet/create.yml creates them again, with DNS),
#   - .venv with the pinned Python environment from requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# netavark + aardvark-dns: the fleet network is internal (nothing on a node reaches past this
# machine) and nodes resolve each other by inventory name. With --no-install-recommends, apt
# satisfies podman's network stack with CNI (containernetworking-plugins), whose DNS plugin
# (dnsname) refuses internal networks ("dnsname and internal networks are incompatible");
# netavark (a Recommends of golang-github-containers-common) with aardvark-dns (a Recommends
# of netavark) gives internal networks DNS. Both are named here, and the backend is pinned
# in containers.conf below. netavark 1.4 programs the bridge's firewall by running iptables,
# which Debian's netavark does not depend on: without it every container start on the fleet
# network fails with "netavark: No such file or directory (os error 2)" (seen on a fresh
# machine, 2026-12-02), so iptables is named too.
APT_PACKAGES=(podman runc netavark aardvark-dns iptables debootstrap debian-archive-keyring
  ca-certificates tor supervisor gnupg iproute2 procps rsync)
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

# Podman settings this kind of machine needs (docs/local-fleet.md).
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] && nofile=65536
[ "$nproc" = unlimited ] && nproc=65536
nofile=$((nofile < 4096 ? nofile : 4096)); nproc=$((nproc < 4096 ? nproc : 4096))
want_conf="# Written by nodefleet.bitcoin scripts/setup.sh
[containers]
default_ulimits = [\"nofile=${nofile}:${nofile}\", \"nproc=${nproc}:${nproc}\"]
[engine]
runtime = \"runc\"
[network]
network_backend = \"netavark\"
"
# The fleet's containers and network made under another backend (CNI, by an older setup)
# are unusable under netavark, and a network made without DNS keeps it off for good (podman
# decides at creation): remove both, tests/fleet/create.yml creates them again.
FLEET_NETWORK=nodefleet # tests/fleet/vars.yml: nodefleet_network
backend_before=$(podman info --format '{{.Host.NetworkBackend}}' 2>/dev/null || true)
mkdir -p /etc/containers
if [ ! -f /etc/containers/containers.conf ] || [ "$(cat /etc/containers/containers.conf)" != "$(printf '%s' "$want_conf")" ]; then
  printf '%s' "$want_conf" > /etc/containers/containers.conf
fi
if [ -n "$backend_before" ] && [ "$backend_before" != netavark ]; then
  echo "setup: podman's network backend was $backend_before; removing the fleet containers and network made under it"
  podman ps -a -q --filter "label=io.nodefleet.fleet" | xargs -r podman rm -f -t 10 >/dev/null
fi
if podman network exists "$FLEET_NETWORK" 2>/dev/null &&
  { [ "$backend_before" != netavark ] ||
    [ "$(podman network inspect --format '{{.DNSEnabled}}' "$FLEET_NETWORK")" != true ]; }; then
  echo "setup: the podman network $FLEET_NETWORK has no DNS; recreating it"
  podman network rm --force "$FLEET_NETWORK" >/dev/null
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

# --- promtool (issue 13; tests/integration/test_monitoring_files.py) ------------------------
# promtool only, from Debian's prometheus package: installing the package would start a
# Prometheus server on this machine. apt-get download fetches the pinned .deb through apt's
# signed indexes (so it is verified), and dpkg-deb -x unpacks it into .cache/; the tests run
# .cache/bin/promtool (tests/integration/promtool.py). Re-runs are a version check.
PROMTOOL_DEB_VERSION=2.42.0+ds-5+deb12u1
PROMTOOL_DIR=.cache/promtool/$PROMTOOL_DEB_VERSION
if [ ! -x "$PROMTOOL_DIR/usr/bin/promtool" ]; then
  echo "setup: unpacking promtool from Debian's prometheus $PROMTOOL_DEB_VERSION"
  rm -rf "$PROMTOOL_DIR.tmp" && mkdir -p "$PROMTOOL_DIR.tmp"
  if ! (cd "$PROMTOOL_DIR.tmp" && apt-get download -qq "prometheus=$PROMTOOL_DEB_VERSION" >/dev/null 2>&1); then
    apt-get update -qq
    (cd "$PROMTOOL_DIR.tmp" && apt-get download -qq "prometheus=$PROMTOOL_DEB_VERSION" >/dev/null)
  fi
  dpkg-deb -x "$PROMTOOL_DIR.tmp"/prometheus_*.deb "$PROMTOOL_DIR.tmp/root"
  mkdir -p "$PROMTOOL_DIR/usr/bin"
  install -m 0755 "$PROMTOOL_DIR.tmp/root/usr/bin/promtool" "$PROMTOOL_DIR/usr/bin/promtool"
  rm -rf "$PROMTOOL_DIR.tmp"
fi
mkdir -p .cache/bin
ln -sfn "$ROOT/$PROMTOOL_DIR/usr/bin/promtool" .cache/bin/promtool
# --- end promtool ---------------------------------------------------------------------------

# Make the collection importable as nodefleet.bitcoin from this checkout.
mkdir -p .cache/collections/ansible_collections/nodefleet
ln -sfn "$ROOT" .cache/collections/ansible_collections/nodefleet/bitcoin
echo "setup: ok"
