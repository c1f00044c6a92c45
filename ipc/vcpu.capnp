# Control messages between the broker and the vcpu process.
#
# Transport: one Cap'n Proto message per SOCK_SEQPACKET packet on the socketpair made at spawn
# (see ipc/channel.h). The vcpu process holds only this interface: it cannot ask the broker for
# anything else. Bump protocolVersion (and the field it guards) on incompatible changes.
@0x9becaf2aacfadffe;

$import "/capnp/c++.capnp".namespace("moss::ipc");

const protocolVersion :UInt32 = 1;

struct MachineConfig {
  memBytes @0 :UInt64;
  cpus @1 :UInt32;
  cmdline @2 :Text;
  # File descriptors the vcpu process inherited at exec, by number. -1 = none.
  kvmFd @3 :Int32;
  kernelFd @4 :Int32;
  initrdFd @5 :Int32;
  # Connected vhost-user sockets of block-device workers (inherited fds), one virtio-pci
  # disk each, in guest order (/dev/vda first).
  vhostUserBlkFds @6 :List(Int32);
  # The connected vhost-user socket of the VM's vsock worker (inherited fd), -1 for none.
  vhostUserVsockFd @7 :Int32 = -1;
}

struct ExitInfo {
  enum Reason {
    guestStatus @0;   # The guest wrote its status to the exit port (0x5f0).
    reset @1;         # i8042 reset pulse, triple fault or a KVM reset event.
    powerOff @2;      # The guest powered off (KVM system event).
    stopped @3;       # The broker asked us to stop (Ctrl-C, SIGTERM, moss stop).
    error @4;         # The VMM failed; message says why.
  }
  reason @0 :Reason;
  status @1 :Int32;   # Meaningful for guestStatus.
  message @2 :Text;
  # CLOCK_MONOTONIC nanoseconds of the boot vCPU's first VM exit (0 if none), for benches.
  firstExitNs @3 :UInt64;
}

struct BrokerToVcpu {
  union {
    start @0 :MachineConfig;   # Exactly once, first.
    stop @1 :Void;             # Orderly shutdown; answered by `exited`.
    consoleInput @2 :Data;     # Bytes typed at the terminal, for the UART.
    pause @4 :Void;            # Park every vCPU outside KVM_RUN; answered by `paused`.
    resume @5 :Void;           # Answered by `resumed`.
    saveCpuState @6 :Void;     # Only while paused; answered by `cpuState`.
    restoreCpuState @7 :List(CpuState);  # Only while paused; answered by `restored`.
  }
  version @3 :UInt32;
}

# One vCPU as KVM holds it: the kernel's own structures, byte for byte (same host
# architecture on both sides of a save and restore). Sizes are checked on restore.
struct CpuState {
  regs @0 :Data;        # struct kvm_regs
  sregs @1 :Data;       # struct kvm_sregs
  xsave @2 :Data;       # struct kvm_xsave (4096 bytes)
  xcrs @3 :Data;        # struct kvm_xcrs
  lapic @4 :Data;       # struct kvm_lapic_state
  msrs @5 :Data;        # struct kvm_msr_entry[]
  mpState @6 :UInt32;
  events @7 :Data;      # struct kvm_vcpu_events
  debugregs @8 :Data;   # struct kvm_debugregs
}

struct VcpuToBroker {
  union {
    started @0 :Started;
    console @1 :Data;          # Guest serial output, in order.
    exited @2 :ExitInfo;       # Last message; the process exits right after.
    paused @4 :Void;
    resumed @5 :Void;
    cpuState @6 :List(CpuState);
    restored @7 :Void;
    refused @8 :Text;          # A pause/resume/save/restore request failed; one sentence.
  }
  version @3 :UInt32;
}

struct Started {
  # CLOCK_MONOTONIC nanoseconds of the moment before the first KVM_RUN, for start-up benches.
  firstRunNs @0 :UInt64;
  bootCpu @1 :UInt32;
}
