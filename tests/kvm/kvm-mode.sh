# Sourced by the KVM test scripts: what this host's /dev/kvm can run.
#   kvm_mode: "none" (no usable /dev/kvm), "pvm" (KVM API, emulated guest kernels: no Linux
#   guests), or "hw" (hardware virtualization, nested or not).
#   MOSS_TEST_ROUTE=nested makes the tests, the benches and the README's main job route as if
#   the host had no usable KVM: everything runs in the nested test host (so a PVM machine can
#   also run that configuration). Unset (or "auto"): by what the host has.
kvm_mode() {
  case "${MOSS_TEST_ROUTE:-auto}" in
    auto) kvm_host_mode ;;
    nested) echo none ;;
    *) echo "kvm-mode.sh: MOSS_TEST_ROUTE must be 'nested' or 'auto', not '$MOSS_TEST_ROUTE'" >&2; echo none ;;
  esac
}

# What the host itself has, whatever MOSS_TEST_ROUTE says.
kvm_host_mode() {
  if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then echo none; return; fi
  if [ -e /sys/module/kvm_pvm ] && [ ! -e /sys/module/kvm_amd ] && [ ! -e /sys/module/kvm_intel ]; then
    echo pvm; return
  fi
  echo hw
}

# Why this host does not run Linux guests itself (for messages), from kvm_mode.
kvm_mode_why() {
  case "$(kvm_mode)" in
    hw) echo "this host's KVM runs Linux guests" ;;
    pvm) echo "this host's /dev/kvm is PVM, which cannot run a Linux guest" ;;
    *) if [ "${MOSS_TEST_ROUTE:-auto}" = nested ]; then echo "MOSS_TEST_ROUTE=nested routes everything to the nested test host"
       else echo "this host has no usable /dev/kvm"; fi ;;
  esac
}

# Whether a KVM test that needs $1 can run on this host directly. $1 is what the test declares
# (tests/kvm/needs.h): "kvm" (any KVM, PVM included) or "linux" (a KVM that runs Linux).
test_runs_here() {
  case "$(kvm_mode)" in
    hw) return 0 ;;
    pvm) [ "$1" = kvm ] ;;
    *) return 1 ;;
  esac
}
