#!/bin/bash
# Build the outer initramfs of the nested KVM test host (see README.md here).
#
#   build-outer-initramfs.sh OUT.cpio.gz
#
# Contents: busybox-static as /bin/busybox, /init (outer-init.sh, run by busybox sh),
# /bin/kvm-anchor (kvm-anchor.c, built here statically with cc), and the kernel modules the nested host needs (kvm-amd, virtio-pci, virtio-console,
# 9p; tun if present) with all their dependencies, taken from modules.dep.
#
# The kernel is the newest /boot/vmlinuz-* that has a matching /lib/modules/ dir, or
# the one named by $KVER. The archive is reproducible (sorted, fixed mtimes and owners,
# gzip -n). It is cached: a manifest of the inputs (paths, sizes, mtimes) is kept in
# OUT.manifest, and if OUT exists with the same manifest nothing is done.
set -eu

die() { echo "build-outer-initramfs: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUT.cpio.gz"
OUT=$1
HERE=$(cd "$(dirname "$0")" && pwd)
INIT_SRC=$HERE/outer-init.sh
ANCHOR_SRC=$HERE/kvm-anchor.c

# ---- pick the kernel -------------------------------------------------------------
newest_kver() {
    local f v best=''
    for v in $(for f in /boot/vmlinuz-*; do echo "${f#/boot/vmlinuz-}"; done | sort -V); do
        [ -f "/lib/modules/$v/modules.dep" ] && best=$v
    done
    [ -n "$best" ] || die "no /boot/vmlinuz-* with a matching /lib/modules/*/modules.dep"
    echo "$best"
}
KVER=${KVER:-$(newest_kver)}
MODDIR=/lib/modules/$KVER
[ -f "$MODDIR/modules.dep" ] || die "$MODDIR/modules.dep not found"

BUSYBOX=$(command -v busybox) || die "busybox not found (apt-get install busybox-static)"
BUSYBOX=$(readlink -f "$BUSYBOX")
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' ||
    die "$BUSYBOX is not statically linked (apt-get install busybox-static)"

# ---- resolve modules ---------------------------------------------------------------
# Targets: "required|optional NAME [module args]". modules.dep lists, for each module,
# the transitive closure of its dependencies, in an order that loads correctly when read
# from the end (modprobe does that), so: reversed deps first, then the module itself.
TARGETS='required kvm-amd nested=1
required virtio_pci
required virtio_console
required 9pnet_virtio
required 9p
optional tun'

# One pass over modules.dep prints LIST: lines "required|optional PATH [args]" in load
# order ("-" and "_" in module names are equivalent, as for modprobe).
LIST=$(awk -v targets="$TARGETS" '
    function key(s) { sub(/.*\//, "", s); sub(/\.ko(\.xz|\.zst|\.gz)?$/, "", s); gsub(/-/, "_", s); return s }
    function add(need, p, args) {
        if (p in seen) return
        seen[p] = 1
        print need " " p (args != "" ? " " args : "")
    }
    { i = index($0, ":"); p = substr($0, 1, i - 1); path[key(p)] = p; deps[p] = substr($0, i + 1) }
    END {
        nt = split(targets, t, "\n")
        for (i = 1; i <= nt; i++) {
            nw = split(t[i], w, " ")
            args = ""
            for (j = 3; j <= nw; j++) args = args (j > 3 ? " " : "") w[j]
            k = key(w[2])
            if (!(k in path)) {
                if (w[1] == "optional") continue
                print "missing module " w[2] > "/dev/stderr"; exit 1
            }
            p = path[k]
            nd = split(deps[p], d, " ")
            for (j = nd; j >= 1; j--) add(w[1], d[j], "")
            add(w[1], p, args)
        }
    }' "$MODDIR/modules.dep") || die "cannot resolve the modules in $MODDIR/modules.dep"
LIST="$LIST
"

# ---- cache check -------------------------------------------------------------------
INPUTS=("$HERE/$(basename "$0")" "$INIT_SRC" "$ANCHOR_SRC" "$BUSYBOX" "/boot/vmlinuz-$KVER" "$MODDIR/modules.dep")
for p in $(printf '%s' "$LIST" | awk '{print $2}'); do INPUTS+=("$MODDIR/$p"); done
MANIFEST="kver $KVER
$(printf '%s' "$LIST")
$(stat -L -c '%n %s %Y' "${INPUTS[@]}")"
if [ -f "$OUT" ] && [ -f "$OUT.manifest" ] && [ "$(cat "$OUT.manifest")" = "$MANIFEST" ]; then
    exit 0
fi

# ---- stage and pack ----------------------------------------------------------------
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/outer-initramfs.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,dev,proc,sys,host,modules}
cp "$BUSYBOX" "$STAGE/bin/busybox"
ln -s busybox "$STAGE/bin/sh"
install -m 0755 "$INIT_SRC" "$STAGE/init"
"${CC:-cc}" -static -O2 -Wall -Werror -o "$STAGE/bin/kvm-anchor" "$ANCHOR_SRC" ||
    die "cannot build $ANCHOR_SRC statically (apt-get install build-essential)"
# The kernel hands /init its console only if /dev/console exists in the initramfs.
# (Needs root; if it fails, /init reopens the console itself after mounting devtmpfs.)
mknod -m 0600 "$STAGE/dev/console" c 5 1 2>/dev/null || true

# Modules are stored flat as /modules/NAME.ko, decompressed (busybox insmod wants .ko).
: >"$STAGE/modules.list"
printf '%s' "$LIST" | while read -r need path args; do
    base=$(basename "$path"); base=${base%.xz}; base=${base%.zst}; base=${base%.gz}
    case $path in
        *.xz)  xz -dc "$MODDIR/$path" ;;
        *.zst) zstd -qdc "$MODDIR/$path" ;;
        *.gz)  gzip -dc "$MODDIR/$path" ;;
        *)     cat "$MODDIR/$path" ;;
    esac >"$STAGE/modules/$base"
    echo "$need $base${args:+ $args}" >>"$STAGE/modules.list"
done
echo "$KVER" >"$STAGE/kver"

mkdir -p "$(dirname "$OUT")"
find "$STAGE" -exec touch -h -d @0 {} +
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort |
    cpio --quiet --reproducible -o -H newc -R 0:0) | gzip -n -6 >"$OUT.tmp.$$"
mv -f "$OUT.tmp.$$" "$OUT"
printf '%s\n' "$MANIFEST" >"$OUT.manifest"
echo "build-outer-initramfs: built $OUT for kernel $KVER" >&2
