# Sourced by the KVM test scripts: what this host's /dev/kvm can run.
#   kvm_mode: "none" (no usable /dev/kvm), "pvm" (KVM API, emulated guest kernels: no Linux
#   guests), or "hw" (hardware virtualization, nested or not).
kvm_mode() {
  if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then echo none; return; fi
  if [ -e /sys/module/kvm_pvm ] && [ ! -e /sys/module/kvm_amd ] && [ ! -e /sys/module/kvm_intel ]; then
    echo pvm; return
  fi
  echo hw
}

# Whether test $1 can run on this host directly.
test_runs_here() {
  case "$(kvm_mode)" in
    hw) return 0 ;;
    pvm) case "$1" in LinuxGuest.*) return 1 ;; *) return 0 ;; esac ;;
    *) return 1 ;;
  esac
}
