#!/usr/bin/env bash
# Builds the minimal moss guest kernel (tinyconfig + moss-minimal.config, all
# built in) from Debian's linux-source package and prints the bzImage path on
# stdout (everything else goes to stderr). Results are cached in
#   CACHE/<sha256(fragment + linux-source version)>/bzImage
# and reused (sources unpacked once per linux-source version in
# CACHE/src-<version>). See guest/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: build-kernel.sh [--cache DIR] [--config FRAGMENT] [--jobs N] [--config-only]
  --cache DIR       cache directory (default: $MOSS_KERNEL_CACHE or
                    ${XDG_CACHE_HOME:-~/.cache}/moss/kernel)
  --config FILE     config fragment (default: moss-minimal.config next to
                    this script)
  --jobs N          make -j (default: nproc)
  --config-only     stop after `make olddefconfig` and the option check;
                    print the .config path instead of the bzImage path
EOF
}

log() { echo "build-kernel: $*" >&2; }
die() { log "$*"; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${MOSS_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/moss/kernel}
fragment=$here/moss-minimal.config
jobs=$(nproc)
config_only=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --cache) cache=${2:?}; shift 2 ;;
    --config) fragment=${2:?}; shift 2 ;;
    --jobs) jobs=${2:?}; shift 2 ;;
    --config-only) config_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ -f "$fragment" ]] || die "no config fragment: $fragment"
fragment=$(cd "$(dirname "$fragment")" && pwd)/$(basename "$fragment")

apt_install() {
  [[ $(id -u) == 0 ]] || die "missing $*; run: sudo apt-get install -y $*"
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
}

# --- sources --------------------------------------------------------------
find_tarball() {
  # shellcheck disable=SC2012  # fixed, simple names
  ls /usr/src/linux-source-*.tar.xz /usr/src/linux-source-*.tar.bz2 2>/dev/null |
    sort -V | tail -n 1
}
tarball=$(find_tarball || true)
if [[ -z "$tarball" ]]; then
  apt_install linux-source
  tarball=$(find_tarball || true)
  [[ -n "$tarball" ]] || die "linux-source installed but no /usr/src/linux-source-*.tar.*"
fi
pkg=$(basename "$tarball"); pkg=${pkg%.tar.*}
version=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true)
[[ -n "$version" ]] || version=$(sha256sum <"$tarball" | cut -d' ' -f1)

# --- build dependencies ---------------------------------------------------
missing=()
for tool in make gcc flex bison bc perl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[[ -f /usr/include/gelf.h ]] || missing+=(libelf-dev)  # objtool
if [[ ${#missing[@]} -gt 0 ]]; then
  apt_install "${missing[@]}"
fi

# --- cache ----------------------------------------------------------------
# Sources are unpacked once per linux-source version ($cache/src-<ver>,
# shared, read-only) and built out of tree per configuration ($cache/<key>).
key=$( { sha256sum <"$fragment" | cut -d' ' -f1; echo "$pkg $version"; } |
       sha256sum | cut -c1-16)
dir=$cache/$key
src=$cache/src-$pkg-${version//[^A-Za-z0-9.+-]/_}
mkdir -p "$dir"
have_flock=0
command -v flock >/dev/null 2>&1 && have_flock=1

exec 8>"$src.lock"
[[ $have_flock == 0 ]] || flock 8
if [[ ! -f "$src/Makefile" ]]; then
  log "unpacking $tarball ($pkg $version) into $src"
  rm -rf "$src" "$src.tmp"
  mkdir -p "$src.tmp"
  tar -xf "$tarball" -C "$src.tmp" --strip-components=1
  mv "$src.tmp" "$src"
fi
exec 8>&-

exec 9>"$dir/lock"
[[ $have_flock == 0 ]] || flock 9
if [[ $config_only == 0 && -f "$dir/bzImage" ]]; then
  log "cached: $dir ($pkg $version)"
  echo "$dir/bzImage"
  exit 0
fi
cp "$fragment" "$dir/fragment.config"

# --- configure ------------------------------------------------------------
build=$dir/build
mkdir -p "$build"
cd "$src"
log "configuring in $build"
make -s O="$build" tinyconfig >&2
scripts/kconfig/merge_config.sh -m -O "$build" "$build/.config" \
    "$dir/fragment.config" >"$dir/merge.log" 2>&1 ||
  { cat "$dir/merge.log" >&2; die "merge_config.sh failed"; }
make -s O="$build" olddefconfig >&2

# Every option of the fragment must have survived olddefconfig (an unmet
# dependency silently drops it).
bad=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*) want=$line; opt=${line%%=*} ;;
    "# CONFIG_"*" is not set") opt=${line#\# }; opt=${opt%% *}; want="# $opt is not set" ;;
    *) continue ;;
  esac
  got=$(grep -E "^(# )?${opt}[= ]" "$build/.config" || true)
  if [[ "$got" != "$want" ]]; then
    # An unset bool can also be absent from .config.
    if [[ "$want" == "# $opt is not set" && -z "$got" ]]; then continue; fi
    log "option mismatch: want '$want', got '${got:-<absent>}'"
    bad=1
  fi
done <"$dir/fragment.config"
[[ $bad == 0 ]] || die "config fragment did not apply cleanly (see above)"
cp "$build/.config" "$dir/config"

if [[ $config_only == 1 ]]; then
  echo "$dir/config"
  exit 0
fi

# --- build ----------------------------------------------------------------
log "building bzImage with -j$jobs (takes minutes)"
make -s O="$build" -j"$jobs" bzImage >&2
cp "$build/arch/x86/boot/bzImage" "$dir/bzImage.tmp"
mv "$dir/bzImage.tmp" "$dir/bzImage"
echo "$dir/bzImage"
