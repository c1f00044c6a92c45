#!/usr/bin/env bash
# Builds the moss guest initramfs (newc cpio, gzip): /init = moss-init,
# static busybox + applet symlinks, and the virtio (+9p, vsock, ext4) kernel
# modules of one kernel version, in dependency order in
# /lib/modules/moss-modules.list. See guest/README.md.
#
# Deterministic: sorted entries, mtime 0, uid/gid 0, renumbered inodes,
# gzip -n.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: mkinitramfs.sh --kernel-version KVER --init PATH --out OUT.cpio.gz
                      [--busybox PATH] [--moddir DIR] [--module NAME]...
                      [--no-modules]
  --kernel-version KVER  modules come from DIR/KVER (DIR: --moddir, default
                         /lib/modules); optional with --no-modules
  --init PATH            static moss-init binary, installed as /init
  --out OUT              output file (gzip-compressed newc cpio)
  --busybox PATH         static busybox (default /bin/busybox)
  --module NAME          extra module to include (with its dependencies)
  --no-modules           include no kernel modules (for kernels with
                         everything built in)
EOF
}

die() { echo "mkinitramfs: $*" >&2; exit 1; }

kver=""
init=""
out=""
busybox=/bin/busybox
moddir=/lib/modules
with_modules=1
extra_modules=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --kernel-version) kver=${2:?}; shift 2 ;;
    --init) init=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --busybox) busybox=${2:?}; shift 2 ;;
    --moddir) moddir=${2:?}; shift 2 ;;
    --module) extra_modules+=("${2:?}"); shift 2 ;;
    --no-modules) with_modules=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

[[ -n "$init" && -n "$out" ]] || { usage >&2; die "--init and --out are required"; }
[[ $with_modules == 0 || -n "$kver" ]] || die "--kernel-version is required (or --no-modules)"
[[ -f "$init" ]] || die "init binary not found: $init"
[[ -x "$busybox" ]] || die "busybox not found: $busybox"
if [[ $with_modules == 1 ]]; then
  [[ -f "$moddir/$kver/modules.dep" ]] || die "no $moddir/$kver/modules.dep"
fi

# Both binaries must be static: the initramfs has no dynamic loader/libc.
if command -v readelf >/dev/null 2>&1; then
  for bin in "$init" "$busybox"; do
    if LC_ALL=C readelf -lW "$bin" 2>/dev/null | grep -q 'program interpreter'; then
      die "$bin is dynamically linked (need a static binary)"
    fi
  done
fi

# Modules requested by default; names as in modules.dep basenames, '-' and '_'
# are equivalent. Missing ones (built in, or not built) are skipped silently.
default_modules=(
  virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
  virtio_mmio
  virtio_blk
  failover net_failover virtio_net
  vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport
  netfs fscache 9pnet 9pnet_virtio 9p
  virtio_console virtio_rng
  crc32c_generic crc16 mbcache jbd2 ext4
)

stage=$(mktemp -d "${TMPDIR:-/tmp}/moss-initramfs.XXXXXX")
tmp_out="$out.tmp.$$"
cleanup() { rm -rf "$stage"; rm -f "$tmp_out"; }
trap cleanup EXIT

# ---------------------------------------------------------------- layout --
(cd "$stage" && mkdir -p bin sbin usr/bin usr/sbin dev proc sys tmp run root \
   etc mnt var lib/modules)
chmod 0755 "$stage"
chmod 1777 "$stage/tmp"
chmod 0700 "$stage/root"
ln -s /run "$stage/var/run"

install -m 0755 "$init" "$stage/init"
install -m 0755 "$busybox" "$stage/bin/busybox"

# Busybox applets as symlinks (at build time, so the guest needs no
# `busybox --install`). --list-full prints e.g. "bin/sh", "usr/bin/awk".
# (Forks are slow in some sandboxes: one perl for ~400 links if available.)
applets=$("$busybox" --list-full | grep -v -x -e bin/busybox -e linuxrc) ||
  die "cannot run $busybox --list-full"
if command -v perl >/dev/null 2>&1; then
  (cd "$stage" && printf '%s\n' "$applets" | perl -ne '
     chomp; next if $_ eq "" || -e $_ || -l $_;
     (my $d = $_) =~ s{/[^/]*$}{};
     system("mkdir", "-p", $d) if $d ne $_ && !-d $d;
     symlink("/bin/busybox", $_) or die "symlink $_: $!\n";')
else
  while IFS= read -r applet; do
    [[ -n "$applet" ]] || continue
    [[ "$applet" != */* || -d "$stage/${applet%/*}" ]] || mkdir -p "$stage/${applet%/*}"
    [[ -e "$stage/$applet" || -L "$stage/$applet" ]] || ln -s /bin/busybox "$stage/$applet"
  done <<<"$applets"
fi

printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
printf 'root:x:0:\ntty:x:5:\n' >"$stage/etc/group"
printf 'moss\n' >"$stage/etc/hostname"
printf '127.0.0.1\tlocalhost moss\n::1\tlocalhost\n' >"$stage/etc/hosts"

# ---------------------------------------------------------------- modules --
: >"$stage/lib/modules/moss-modules.list"
if [[ $with_modules == 1 ]]; then
  # Dependency-ordered (post-order DFS over modules.dep) relative paths.
  ordered=$(awk -v want="${default_modules[*]} ${extra_modules[*]}" '
    function norm(p,   b) {
      b = p; sub(/.*\//, "", b); sub(/\.ko(\.(xz|gz|zst))?$/, "", b)
      gsub(/-/, "_", b); return b
    }
    function visit(p,   n, i, d) {
      if (p in done) return
      done[p] = 1
      n = split(deps[p], d, " ")
      for (i = n; i >= 1; i--) visit(d[i])
      print p
    }
    {
      key = $1; sub(/:$/, "", key)
      $1 = ""; deps[key] = $0
      byname[norm(key)] = key
    }
    END {
      n = split(want, w, " ")
      for (i = 1; i <= n; i++) {
        name = w[i]; gsub(/-/, "_", name)
        if (name in byname) visit(byname[name])
      }
    }' "$moddir/$kver/modules.dep")

  dest="$stage/lib/modules/$kver"
  mkdir -p "$dest"
  plain=()
  while IFS= read -r rel; do
    [[ -n "$rel" ]] || continue
    # moss-init uses plain finit_module: store modules uncompressed.
    case "$rel" in
      *.ko.xz|*.ko.gz|*.ko.zst)
        mkdir -p "$dest/${rel%/*}"
        case "$rel" in
          *.xz) xz -dc "$moddir/$kver/$rel" >"$dest/${rel%.*}" ;;
          *.gz) gzip -dc "$moddir/$kver/$rel" >"$dest/${rel%.*}" ;;
          *.zst) zstd -qdc "$moddir/$kver/$rel" >"$dest/${rel%.*}" ;;
        esac
        rel=${rel%.*} ;;
      *) plain+=("$rel") ;;
    esac
    printf '%s\n' "$rel" >>"$stage/lib/modules/moss-modules.list"
  done <<<"$ordered"
  if [[ ${#plain[@]} -gt 0 ]]; then
    (cd "$moddir/$kver" && cp --parents -- "${plain[@]}" "$dest/")
  fi
  chmod -R u=rwX,go=rX "$stage/lib/modules"

  # A modules.dep restricted to what is included, so busybox modprobe works.
  awk 'NR == FNR { have[$0] = 1; next }
       { key = $1; sub(/:$/, "", key); sub(/\.(xz|gz|zst)$/, "", key)
         if (!(key in have)) next
         line = key ":"
         for (i = 2; i <= NF; i++) { d = $i; sub(/\.(xz|gz|zst)$/, "", d); line = line " " d }
         print line }' \
    "$stage/lib/modules/moss-modules.list" "$moddir/$kver/modules.dep" \
    >"$dest/modules.dep"
fi

# ---------------------------------------------------------------- archive --
# /dev/console must exist before /init runs: the kernel opens it for init's
# stdin/stdout/stderr. mknod needs root (CAP_MKNOD); otherwise a second
# archive holding just that node is appended (the kernel accepts
# concatenated archives; `cpio -t` lists only the first one).
console_appended=0
if ! mknod -m 0600 "$stage/dev/console" c 5 1 2>/dev/null; then
  console_appended=1
fi

find "$stage" -exec touch -h -d @0 {} +

newc_header() {  # name mode nlink rdevmajor rdevminor filesize
  local name=$1 mode=$2 nlink=$3 rmaj=$4 rmin=$5 size=$6
  local namesize=$(( ${#name} + 1 ))
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
    1 "$mode" 0 0 "$nlink" 0 "$size" 0 0 "$rmaj" "$rmin" "$namesize" 0
  printf '%s\0' "$name"
  local pad=$(( (4 - (110 + namesize) % 4) % 4 ))
  head -c "$pad" /dev/zero
}

{
  (cd "$stage" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
     cpio -o -H newc --reproducible -R 0:0 --quiet)
  if [[ $console_appended == 1 ]]; then
    newc_header dev/console $(( 0020000 | 0600 )) 1 5 1 0
    newc_header TRAILER!!! 0 1 0 0 0
  fi
} | gzip -6 -n >"$tmp_out"  # -9: 7x slower for <1% smaller
mv -f "$tmp_out" "$out"
