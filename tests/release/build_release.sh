#!/usr/bin/env bash
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Build the release directories that tests and the offline demo install exactly like official
# releases: one per implementation, each with its archive, SHA256SUMS and a multi-signer
# SHA256SUMS.asc made by three throwaway GPG keys, plus negative fixtures.
#
# core: the REAL Bitcoin Core archive when one is present in the core archive directory
#   ($NODEFLEET_CORE_ARCHIVE_DIR, default ../shared/bitcoin-core next to the repository, i.e.
#   /work/shared/bitcoin-core for the repository /work/main): bitcoin-<version>-x86_64-linux-gnu.tar.gz
#   with the SHA256SUMS beside it, which must list the archive with its hash (checked before
#   anything is built; a mismatch fails the build). When the directory or the archive is
#   absent, core falls back to the stand-in daemon (tests/standin/bitcoind), and says so.
# knots, garbageman: always the stand-in (no real build of them exists here).
# The stand-in is NOT BITCOIN: it validates nothing and stores no blocks.
#
# Usage: tests/release/build_release.sh OUTDIR
#        NODEFLEET_CORE_ARCHIVE_DIR=/path/to/dir tests/release/build_release.sh OUTDIR
#
# OUTDIR layout (see tests/standin/README.md):
#   releases.json                       impl -> version, archive, topdir, sha256, dir, daemon
#                                       (daemon: "bitcoin-core-<version>" for the real archive,
#                                       "stand-in" otherwise), plus core_source (the archive's path
#                                       or "stand-in")
#   signers.json                        the three signers: name, uid, fingerprint, key file
#   signers/<name>.asc                  their public keys (ASCII armor)
#   <impl>/<archive>                    bitcoin-<version>-x86_64-linux-gnu.tar.gz
#   <impl>/SHA256SUMS                   sha256sum format, also lists other platforms' names
#   <impl>/SHA256SUMS.asc               three concatenated detached signatures
#   bad/wrong-checksum/                 stand-in core archive (bitcoin-30.0-...) whose SHA256SUMS line
#                                       does not match (signed by all); bad/ is always built from the
#                                       stand-in's core archive, whichever daemon core/ holds
#   bad/one-signer/                     core release signed by signer1 only
#   bad/unknown-key/                    core release signed by a key not in signers.json
#                                       (its public key: bad/unknown-key/unknown-signer.asc)
#   bad/tampered-sums/                  SHA256SUMS edited after signing (signatures are BAD)
#   upgrade/releases.json               rolling-upgrade fixtures: {"variants": {variant: {impl: {version,
#                                       archive, dir, breakage}}}}, dir relative to OUTDIR; all stand-in,
#                                       signed by the same three signers, SHA256SUMS as above:
#   upgrade/good/{knots,garbageman}/    newer good releases: knots 29.2.knots20251101, garbageman
#                                       29.2.knots20251101-garbageman1
#   upgrade/exits/garbageman/           garbageman 29.2.knots20251102-garbageman1 whose bitcoind exits 1
#                                       at start (supervisord: BACKOFF, then FATAL)
#   upgrade/wrong-version/garbageman/   garbageman 29.2.knots20251103-garbageman1 that reports the old
#                                       version 29.1.knots20250903-garbageman1 (getnetworkinfo)
#   upgrade/wrong-chain/garbageman/     garbageman 29.2.knots20251104-garbageman1 whose getblockchaininfo
#                                       reports another chain than the one it was started on
#   stamp                               sha256 of the inputs; a rebuild happens only when it changes
#
# Idempotent: when OUTDIR/stamp matches the inputs (the stand-in, this script, and which real
# core archive, if any, by its sha256), nothing is done (keys are regenerated only on a
# rebuild). Uses only gpg, tar, gzip, sha256sum, python3.
set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
standin="$here/../standin/bitcoind"
outdir="$(python3 -c 'import os,sys; print(os.path.abspath(sys.argv[1]))' "$1")"

for tool in gpg tar gzip sha256sum python3; do
    command -v "$tool" >/dev/null || { echo "build_release.sh: $tool is required" >&2; exit 1; }
done
[ -f "$standin" ] || { echo "build_release.sh: missing $standin" >&2; exit 1; }

PLATFORM="x86_64-linux-gnu"

# The real Bitcoin Core archive for core, when present (see the header).
repo_root="$(cd "$here/../.." && pwd)"
core_dir="${NODEFLEET_CORE_ARCHIVE_DIR:-$(dirname "$repo_root")/shared/bitcoin-core}"
core_archive=""
core_version=""
core_sha=""
if [ -d "$core_dir" ]; then
    shopt -s nullglob
    candidates=("$core_dir"/bitcoin-*-"$PLATFORM".tar.gz)
    shopt -u nullglob
    if [ "${#candidates[@]}" -gt 1 ]; then
        echo "build_release.sh: $core_dir holds ${#candidates[@]} core archives (${candidates[*]}); keep one" >&2
        exit 1
    fi
    if [ "${#candidates[@]}" -eq 1 ]; then
        core_archive="${candidates[0]}"
        core_name="$(basename "$core_archive")"
        core_version="${core_name#bitcoin-}"
        core_version="${core_version%-"$PLATFORM".tar.gz}"
        [[ "$core_version" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?(rc[0-9]+)?$ ]] || {
            echo "build_release.sh: $core_archive: version '$core_version' is not a Bitcoin Core version" >&2
            exit 1
        }
        [ -f "$core_dir/SHA256SUMS" ] || {
            echo "build_release.sh: $core_dir/SHA256SUMS is missing; refusing to package $core_name unverified" >&2
            exit 1
        }
        core_sha="$(sha256sum "$core_archive" | cut -d' ' -f1)"
        listed="$(awk -v n="$core_name" '$2 == n || $2 == "*" n {print $1}' "$core_dir/SHA256SUMS")"
        if [ "$listed" != "$core_sha" ]; then
            echo "build_release.sh: $core_archive has sha256 $core_sha but $core_dir/SHA256SUMS lists" \
                "'${listed:-nothing}' for it; refusing to package it" >&2
            exit 1
        fi
    fi
fi
if [ -n "$core_archive" ]; then
    echo "build_release.sh: core = real Bitcoin Core $core_version ($core_archive, sha256 verified against its SHA256SUMS)"
else
    echo "build_release.sh: core = the STAND-IN daemon (no bitcoin-*-$PLATFORM.tar.gz in $core_dir;" \
        "set NODEFLEET_CORE_ARCHIVE_DIR to use a real Bitcoin Core archive)"
fi
echo "build_release.sh: knots, garbageman = the STAND-IN daemon"

summary() {  # outdir: which daemon each implementation's release holds
    python3 - "$1/releases.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["releases"]:
    print("build_release.sh:   %-10s %-32s %s" % (r["impl"], r["version"], r["daemon"]))
PY
}

stamp="$( (cat "$standin" "${BASH_SOURCE[0]}"; echo "core:${core_sha:-stand-in}:$core_version") | sha256sum | cut -d' ' -f1)"
if [ -f "$outdir/stamp" ] && [ "$(cat "$outdir/stamp")" = "$stamp" ]; then
    echo "build_release.sh: $outdir is up to date"
    summary "$outdir"
    exit 0
fi

# impl | version (as in the archive name) | baked VERSION constant
RELEASES=(
    "core|30.0|30.0"
    "knots|29.1.knots20250903|29.1.knots20250903"
    "garbageman|29.1.knots20250903-garbageman1|29.1.knots20250903-garbageman1"
)
OTHER_PLATFORMS=("aarch64-linux-gnu" "arm-linux-gnueabihf" "riscv64-linux-gnu")
SIGNERS=(signer1 signer2 signer3)

work="$(mktemp -d "${TMPDIR:-/tmp}/nf-release.XXXXXX")"
export GNUPGHOME="$work/gnupg"
cleanup() {
    gpgconf --kill all >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -m 0700 "$GNUPGHOME"
build="$work/out"
mkdir -p "$build/signers" "$build/bad"

gen_key() {  # name -> prints fingerprint
    local uid="nodefleet test $1 <$1@nodefleet.invalid>"
    gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
        --quick-gen-key "$uid" ed25519 sign never 2>/dev/null
    gpg --batch --with-colons --list-keys "$uid" 2>/dev/null | awk -F: '/^fpr:/ {print $10; exit}'
}

declare -A FPR
for name in "${SIGNERS[@]}" unknown-signer; do
    FPR[$name]="$(gen_key "$name")"
done
for name in "${SIGNERS[@]}"; do
    gpg --batch --armor --export "${FPR[$name]}" > "$build/signers/$name.asc"
done

sign() {  # file out fpr...
    local file="$1" out="$2"
    shift 2
    : > "$out"
    for fpr in "$@"; do
        gpg --batch --yes --pinentry-mode loopback --passphrase '' --armor --detach-sign \
            --local-user "$fpr" --output - "$file" >> "$out"
    done
}

make_archive() {  # impl version baked [destdir [breakage]] -> prints archive path
    # breakage (upgrade fixtures): none | exits (bitcoind exits 1 at start) | wrong-chain
    # (getblockchaininfo reports another chain than the one it runs on)
    local impl="$1" version="$2" baked="$3" dest="${4:-$build/$1}" breakage="${5:-none}"
    local topdir="bitcoin-$version" stage
    stage="$(mktemp -d "$work/stage.XXXXXX")"
    mkdir -p "$stage/$topdir/bin"
    python3 - "$standin" "$stage/$topdir/bin/bitcoind" "$impl" "$baked" "$breakage" <<'PY'
import re, sys
src, dst, impl, version, breakage = sys.argv[1:]
text = open(src, encoding="utf-8").read()
text, n1 = re.subn(r'^IMPL = ".*"$', 'IMPL = "%s"' % impl, text, count=1, flags=re.M)
text, n2 = re.subn(r'^VERSION = ".*"$', 'VERSION = "%s"' % version, text, count=1, flags=re.M)
if n1 != 1 or n2 != 1:
    sys.exit("build_release.sh: IMPL/VERSION constants not found in the stand-in")
patches = {
    "none": None,
    "exits": ("def main(argv: list) -> int:\n",
              "def main(argv: list) -> int:\n"
              "    sys.stderr.write(\"Error: nodefleet BROKEN test release: exits at start\\n\")\n"
              "    return 1\n"),
    "wrong-chain": ("        chain = self.chain\n        bits = CHAINS[chain][\"bits\"]\n",
                    "        chain = \"main\" if self.chain != \"main\" else \"test\"  # BROKEN test release\n"
                    "        bits = CHAINS[chain][\"bits\"]\n"),
}
if breakage not in patches:
    sys.exit("build_release.sh: unknown breakage %r" % breakage)
if patches[breakage]:
    old, new = patches[breakage]
    if text.count(old) != 1:
        sys.exit("build_release.sh: breakage %s: patch point not found once in the stand-in" % breakage)
    text = text.replace(old, new)
open(dst, "w", encoding="utf-8").write(text)
PY
    chmod 0755 "$stage/$topdir/bin/bitcoind"
    local archive="$dest/$topdir-$PLATFORM.tar.gz"
    mkdir -p "$dest"
    tar --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner --format=gnu \
        -C "$stage" -cf - "$topdir" | gzip -n -9 > "$archive"
    echo "$archive"
}

write_sums() {  # dir archive-name archive-path version
    local dir="$1" name="$2" path="$3" version="$4"
    {
        for plat in "${OTHER_PLATFORMS[@]}"; do
            other="bitcoin-$version-$plat.tar.gz"
            printf '%s  %s\n' "$(printf '%s' "$other" | sha256sum | cut -d' ' -f1)" "$other"
        done
        printf '%s  %s\n' "$(sha256sum "$path" | cut -d' ' -f1)" "$name"
    } | sort -k2 > "$dir/SHA256SUMS"
}

real_core_topdir() {  # archive -> prints its one top directory, which must hold bin/bitcoind
    python3 - "$1" <<'PY'
import sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    names = tar.getnames()
tops = sorted({n.split("/", 1)[0] for n in names})
if len(tops) != 1 or tops[0] + "/bin/bitcoind" not in names:
    sys.exit("build_release.sh: %s: expected one top directory holding bin/bitcoind, found %s" % (sys.argv[1], tops))
print(tops[0])
PY
}

releases_json="["
for entry in "${RELEASES[@]}"; do
    IFS='|' read -r impl version baked <<< "$entry"
    daemon="stand-in"
    if [ "$impl" = core ] && [ -n "$core_archive" ]; then
        version="$core_version"
        daemon="bitcoin-core-$core_version"
        mkdir -p "$build/core"
        archive="$build/core/$(basename "$core_archive")"
        cp "$core_archive" "$archive"
        chmod 0644 "$archive"
        topdir="$(real_core_topdir "$archive")"
        [ "$(sha256sum "$archive" | cut -d' ' -f1)" = "$core_sha" ] || {
            echo "build_release.sh: $core_archive changed while it was copied" >&2
            exit 1
        }
    else
        archive="$(make_archive "$impl" "$version" "$baked")"
        topdir="bitcoin-$version"
    fi
    name="$(basename "$archive")"
    write_sums "$build/$impl" "$name" "$archive" "$version"
    sign "$build/$impl/SHA256SUMS" "$build/$impl/SHA256SUMS.asc" \
        "${FPR[signer1]}" "${FPR[signer2]}" "${FPR[signer3]}"
    sha="$(sha256sum "$archive" | cut -d' ' -f1)"
    releases_json+="$(printf '{"impl":"%s","version":"%s","archive":"%s","topdir":"%s","sha256":"%s","dir":"%s","daemon":"%s"},' \
        "$impl" "$version" "$name" "$topdir" "$sha" "$impl" "$daemon")"
done
releases_json="${releases_json%,}]"

# Negative fixtures, all built from the stand-in's core archive (small, and the same whether
# or not core/ holds the real Bitcoin Core).
core_name="bitcoin-30.0-$PLATFORM.tar.gz"
if [ -f "$build/core/$core_name" ]; then
    bad_src="$build/core/$core_name"
else
    bad_src="$(make_archive core 30.0 30.0 "$work/bad-src")"
fi
for variant in wrong-checksum one-signer unknown-key tampered-sums; do
    mkdir -p "$build/bad/$variant"
    cp "$bad_src" "$build/bad/$variant/"
    write_sums "$build/bad/$variant" "$core_name" "$bad_src" 30.0
done
python3 - "$build/bad/wrong-checksum/SHA256SUMS" "$core_name" <<'PY'
import sys
path, name = sys.argv[1:]
lines = []
for line in open(path, encoding="utf-8"):
    digest, fname = line.rstrip("\n").split("  ", 1)
    if fname == name:
        digest = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    lines.append("%s  %s\n" % (digest, fname))
open(path, "w", encoding="utf-8").write("".join(lines))
PY
sign "$build/bad/wrong-checksum/SHA256SUMS" "$build/bad/wrong-checksum/SHA256SUMS.asc" \
    "${FPR[signer1]}" "${FPR[signer2]}" "${FPR[signer3]}"
sign "$build/bad/one-signer/SHA256SUMS" "$build/bad/one-signer/SHA256SUMS.asc" "${FPR[signer1]}"
sign "$build/bad/unknown-key/SHA256SUMS" "$build/bad/unknown-key/SHA256SUMS.asc" "${FPR[unknown-signer]}"
gpg --batch --armor --export "${FPR[unknown-signer]}" > "$build/bad/unknown-key/unknown-signer.asc"
cp "$build/core/SHA256SUMS.asc" "$build/bad/tampered-sums/SHA256SUMS.asc"
printf '%s  %s\n' "$(printf 'x' | sha256sum | cut -d' ' -f1)" "bitcoin-30.0-evil.tar.gz" \
    >> "$build/bad/tampered-sums/SHA256SUMS"

# Rolling-upgrade fixtures (see the header): variant | impl | version | baked VERSION | breakage.
UPGRADES=(
    "good|knots|29.2.knots20251101|29.2.knots20251101|none"
    "good|garbageman|29.2.knots20251101-garbageman1|29.2.knots20251101-garbageman1|none"
    "exits|garbageman|29.2.knots20251102-garbageman1|29.2.knots20251102-garbageman1|exits"
    "wrong-version|garbageman|29.2.knots20251103-garbageman1|29.1.knots20250903-garbageman1|none"
    "wrong-chain|garbageman|29.2.knots20251104-garbageman1|29.2.knots20251104-garbageman1|wrong-chain"
)
upgrades_tsv=""
for entry in "${UPGRADES[@]}"; do
    IFS='|' read -r variant impl version baked breakage <<< "$entry"
    dest="$build/upgrade/$variant/$impl"
    archive="$(make_archive "$impl" "$version" "$baked" "$dest" "$breakage")"
    write_sums "$dest" "$(basename "$archive")" "$archive" "$version"
    sign "$dest/SHA256SUMS" "$dest/SHA256SUMS.asc" "${FPR[signer1]}" "${FPR[signer2]}" "${FPR[signer3]}"
    upgrades_tsv+="$(printf '%s\t%s\t%s\t%s\t%s\t%s' "$variant" "$impl" "$version" "$(basename "$archive")" \
        "upgrade/$variant/$impl" "$breakage")"$'\n'
done
python3 -c '
import json, sys
variants = {}
for line in filter(None, sys.stdin.read().splitlines()):
    variant, impl, version, archive, rdir, breakage = line.split("\t")
    variants.setdefault(variant, {})[impl] = {
        "version": version, "archive": archive, "dir": rdir, "breakage": breakage, "daemon": "stand-in"}
json.dump({"variants": variants}, open(sys.argv[1], "w"), indent=2, sort_keys=True)
' "$build/upgrade/releases.json" <<<"$upgrades_tsv"

python3 - "$build" "$releases_json" "${core_archive:-stand-in}" "${SIGNERS[@]}" <<PY
import json, sys
build, releases, core_source = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
fprs = {"signer1": "${FPR[signer1]}", "signer2": "${FPR[signer2]}", "signer3": "${FPR[signer3]}"}
signers = [
    {"name": n, "uid": "nodefleet test %s <%s@nodefleet.invalid>" % (n, n), "fingerprint": fprs[n],
     "key_file": "signers/%s.asc" % n}
    for n in sys.argv[4:]
]
json.dump({"signers": signers, "unknown_signer_fingerprint": "${FPR[unknown-signer]}"},
          open(build + "/signers.json", "w"), indent=2, sort_keys=True)
json.dump({"releases": releases, "platform": "$PLATFORM", "core_source": core_source},
          open(build + "/releases.json", "w"), indent=2, sort_keys=True)
PY
echo "$stamp" > "$build/stamp"

# Replace OUTDIR in one step (a concurrent reader never sees a half-built tree).
mkdir -p "$(dirname "$outdir")"
if [ -e "$outdir" ]; then
    old="$outdir.old.$$"
    mv "$outdir" "$old"
    mv "$build" "$outdir"
    rm -rf "$old"
else
    mv "$build" "$outdir"
fi
echo "build_release.sh: built $outdir"
summary "$outdir"
