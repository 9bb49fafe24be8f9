#!/usr/bin/env bash
# Build the nodefleet test node image: Debian bookworm (debootstrap, variant minbase) running
# systemd as PID 1 with Debian's own supervisor.service and tor@default.service.
#
#   tests/image/build.sh            build if needed; print the image name on the last line
#   tests/image/build.sh --print    print the image name for the current recipe, build nothing
#   tests/image/build.sh --mirror   print the Debian mirror a build would use, build nothing
#
# Tag: localhost/nodefleet-node:<recipe hash>, also tagged :latest. The recipe is this script,
# packages.txt and everything under files/; when an image with the recipe's tag exists,
# nothing is done (fast path). The debootstrap result is cached as a tarball under
# .cache/nodefleet-image/ keyed by the package list, so a change of the post-steps alone
# does not download anything again.
#
# The Debian mirror is the one the host's apt uses (first `deb` source for the suite in
# /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list); NODEFLEET_DEBIAN_MIRROR
# overrides it (NODEFLEET_APT_SOURCES_DIR / NODEFLEET_APT_SOURCES_LIST replace the two
# paths, for tests). Needs root, debootstrap and podman (scripts/setup.sh installs them).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REPO=localhost/nodefleet-node
SUITE=bookworm
VARIANT=minbase
CACHE_DIR=${NODEFLEET_IMAGE_CACHE:-$ROOT/.cache/nodefleet-image}
APT_SOURCES_DIR=${NODEFLEET_APT_SOURCES_DIR:-/etc/apt/sources.list.d}
APT_SOURCES_LIST=${NODEFLEET_APT_SOURCES_LIST:-/etc/apt/sources.list}

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The package list without comments and blank lines, one per line, in file order.
packages() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$HERE/packages.txt" | grep -v '^$'; }

# Hash of the recipe: relative path + content of every recipe file, in a stable order.
recipe_hash() {
  local f
  {
    printf '%s\0' build.sh packages.txt
    if [ -d "$HERE/files" ]; then (cd "$HERE" && find files -type f -print0 | LC_ALL=C sort -z); fi
  } | while IFS= read -r -d '' f; do
    printf '%s\0' "$f"
    sha256sum <"$HERE/$f" | cut -d' ' -f1
  done | sha256sum | cut -c1-12
}

# First mirror URI that serves $SUITE according to the host's apt configuration.
host_mirror() {
  local f uri
  for f in "$APT_SOURCES_DIR"/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk -v suite="$SUITE" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && suites ~ ("(^| )" suite "( |$)") && enabled != "no" && uris != "") {
          split(uris, u, " "); print u[1]; found = 1; exit
        }
        types = suites = uris = enabled = ""
      }
      /^[[:space:]]*$/ { flush(); next }
      /^#/ { next }
      tolower($1) == "types:" { $1 = ""; types = $0 " " }
      tolower($1) == "suites:" { $1 = ""; suites = $0 " " }
      tolower($1) == "uris:" { $1 = ""; sub(/^ +/, ""); uris = $0 }
      tolower($1) == "enabled:" { enabled = tolower($2) }
      END { if (!found) flush() }
    ' "$f")
    if [ -n "$uri" ]; then printf '%s\n' "$uri"; return 0; fi
  done
  if [ -f "$APT_SOURCES_LIST" ]; then
    uri=$(awk -v suite="$SUITE" '
      $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == suite) { print $i; exit } }
    ' "$APT_SOURCES_LIST")
    if [ -n "$uri" ]; then printf '%s\n' "$uri"; return 0; fi
  fi
  return 1
}

HASH=$(recipe_hash)
IMAGE=$REPO:$HASH

case "${1:-}" in
  --print) echo "$IMAGE"; exit 0 ;;
  --mirror)
    mirror=${NODEFLEET_DEBIAN_MIRROR:-$(host_mirror)} || die "no apt source for $SUITE found; set NODEFLEET_DEBIAN_MIRROR"
    echo "$mirror"; exit 0 ;;
  "") ;;
  *) die "unknown argument: $1 (use --print, --mirror or nothing)" ;;
esac
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, podman as root)"

mkdir -p "$CACHE_DIR"
# One build at a time (molecule and the demo may ask for the image together).
exec 9>"$CACHE_DIR/lock"
flock -w 900 9 || die "timed out waiting for another build (lock $CACHE_DIR/lock)"

if podman image exists "$IMAGE"; then
  podman tag "$IMAGE" "$REPO:latest"
  log "cached: $IMAGE"
  echo "$IMAGE"
  exit 0
fi

command -v debootstrap >/dev/null || die "debootstrap is not installed (run scripts/setup.sh)"
START=$SECONDS
WORK=$(mktemp -d "$CACHE_DIR/work.XXXXXX")
ROOTFS=$WORK/rootfs

cleanup() {
  local m
  # debootstrap mounts proc/sys/dev inside the rootfs; never rm -rf through a live mount.
  if [ -d "$ROOTFS" ]; then
    for m in $(awk -v r="$ROOTFS" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
      umount -l "$m" 2>/dev/null || true
    done
  fi
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

# Stage 1: debootstrap, cached by package list, suite and variant.
mapfile -t PKGS < <(packages)
INCLUDE=$(IFS=,; echo "${PKGS[*]}")
STAGE1_KEY=$(printf '%s\n' "$SUITE" "$VARIANT" "$INCLUDE" | sha256sum | cut -c1-12)
STAGE1=$CACHE_DIR/debootstrap-$SUITE-$STAGE1_KEY.tar
mkdir -p "$ROOTFS"
if [ -f "$STAGE1" ]; then
  log "debootstrap cache hit: $STAGE1"
  tar --numeric-owner --xattrs -xpf "$STAGE1" -C "$ROOTFS"
else
  MIRROR=${NODEFLEET_DEBIAN_MIRROR:-$(host_mirror)} || die "no apt source for $SUITE found; set NODEFLEET_DEBIAN_MIRROR"
  log "debootstrap $SUITE ($VARIANT) from $MIRROR with: $INCLUDE"
  debootstrap --variant="$VARIANT" --include="$INCLUDE" "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 30 "$WORK/debootstrap.log" >&2
    die "debootstrap failed (log above)"
  }
  # Drop downloaded .debs and indexes before caching: they are not part of the image.
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin
  tar --numeric-owner --xattrs -C "$ROOTFS" -cf "$STAGE1.tmp" .
  mv "$STAGE1.tmp" "$STAGE1"
  log "debootstrap done in $((SECONDS - START)) s, cached as $STAGE1"
fi

# Stage 2: make it a container host. Only what systemd as PID 1 in podman needs.
# An empty machine-id: systemd generates one at boot, so every container has its own.
: >"$ROOTFS/etc/machine-id"
rm -f "$ROOTFS/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$ROOTFS/var/lib/dbus/machine-id"
# podman provides these per container.
rm -f "$ROOTFS/etc/hostname" "$ROOTFS/etc/resolv.conf"
# Debian enables these in the package scripts; be explicit (tor.service pulls tor@default).
systemctl --root="$ROOTFS" enable supervisor.service tor.service >/dev/null 2>&1
systemctl --root="$ROOTFS" set-default multi-user.target >/dev/null 2>&1
# Units that cannot work in a container and would leave the system "degraded".
mapfile -t MASK < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$HERE/files/masked-units.txt" | grep -v '^$')
if ((${#MASK[@]})); then systemctl --root="$ROOTFS" mask "${MASK[@]}" >/dev/null 2>&1; fi
if [ -d "$HERE/files/rootfs" ]; then cp -a "$HERE/files/rootfs/." "$ROOTFS/"; fi
# Keep it small: no apt indexes, caches or logs from the build.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
  "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/log/apt/* "$ROOTFS"/var/log/dpkg.log \
  "$ROOTFS"/var/log/bootstrap.log "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
mkdir -p "$ROOTFS/var/lib/apt/lists/partial"

log "importing $IMAGE"
tar --numeric-owner --xattrs -C "$ROOTFS" -c . | podman import --quiet \
  --change 'CMD ["/sbin/init"]' \
  --change 'STOPSIGNAL SIGRTMIN+3' \
  --change 'ENV container=podman' \
  --change "LABEL org.nodefleet.recipe=$HASH" \
  --message "nodefleet test node, recipe $HASH" \
  - "$IMAGE" >/dev/null
podman tag "$IMAGE" "$REPO:latest"

# Old recipes' images go unless a container still uses them.
podman images --format '{{.Repository}}:{{.Tag}}' | while read -r old; do
  case "$old" in
    "$REPO:$HASH" | "$REPO:latest") ;;
    "$REPO:"*) podman rmi "$old" >/dev/null 2>&1 || true ;;
  esac
done

log "built $IMAGE in $((SECONDS - START)) s"
echo "$IMAGE"
