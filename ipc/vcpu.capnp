# Control messages between the broker and the vcpu process.
#
# Transport: one Cap'n Proto message per SOCK_SEQPACKET packet on the socketpair made at spawn
# (see ipc/channel.h). The vcpu process holds only this interface: it cannot ask the broker for
# anything else. Bump protocolVersion (and the field it guards) on incompatible changes.
@0x9becaf2aacfadffe;

$import "/capnp/c++.capnp".namespace("moss::ipc");

const protocolVersion :UInt32 = 2;

struct MachineConfig {
  memBytes @0 :UInt64;
  cpus @1 :UInt32;
  cmdline @2 :Text;
  # File descriptors the vcpu process inherited at exec, by number. -1 = none.
  kvmFd @3 :Int32;
  kernelFd @4 :Int32;
  initrdFd @5 :Int32;
  # The VM's virtio devices, each a virtio-pci function on PCI bus 0 in this order (disks
  # first, so /dev/vda is the first), served by a vhost-user backend.
  devices @6 :List(VhostUserDevice);
  # Guest RAM: a memfd of exactly memBytes, sealed against shrinking and growing, which the
  # broker made (and keeps, to read RAM into a spore and to fill it from one). -1: the vcpu
  # process makes its own (tests that drive it directly).
  memFd @7 :Int32 = -1;
  # Set: no kernel is loaded; the VM continues from this state (a spore), restored in KVM's
  # order before the first KVM_RUN, RAM already in memFd. kernelFd and initrdFd are -1.
  restore @8 :MachineRestore;
}

# A virtio device whose rings and configuration live in a vhost-user backend (a moss worker or
# any other). The broker's device modules (devices/module.h) fill it; the vcpu process builds
# every device from it alike, with no knowledge of any kind.
struct VhostUserDevice {
  name @0 :Text;             # For messages: "disk 1 (disk.img)".
  fd @1 :Int32;              # The connected vhost-user socket (inherited fd).
  virtioId @2 :UInt16;       # Virtio device id (2 block, 19 socket); PCI device 0x1040 + id.
  pciClass @3 :UInt32;       # PCI class code: class << 16 | subclass << 8 | prog-if.
  # Bytes of device configuration. The bytes themselves come from the backend (GET_CONFIG),
  # which knows them (capacity, a MAC, a mount tag); this is how many the driver may read.
  configSize @4 :UInt32;
  # Queues: the VM uses numQueues, or fewer if the backend offers fewer (GET_QUEUE_NUM), but
  # never fewer than minQueues (then the device fails). Net: rx/tx pairs and a control queue,
  # numQueues = minQueues = 2 * pairs + 1; 9p: 1 and 1; vsock: 3 and 3.
  numQueues @5 :UInt16;
  minQueues @6 :UInt16 = 1;
  # A feature bit without which the driver uses only minQueues (virtio-blk's MQ, 12); -1: none.
  multiqueueFeature @7 :Int16 = -1;
  # Where the configuration holds the number of queues in use (a le16, virtio-blk's num_queues
  # at 34), rewritten to the count this VM uses; -1: nowhere.
  queueCountOffset @8 :Int32 = -1;
  maxQueueSize @9 :UInt16 = 256;  # The largest ring the driver may set up.
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
    # The whole machine (vCPUs, the VM's irqchip/PIT/clock, the platform device models), only
    # while paused: answered by `machineState`, and by `restored`.
    saveMachineState @8 :Void;
    restoreMachineState @9 :MachineRestore;
    # Whether saveMachineState could save every device (each backend speaks vhost-user
    # DEVICE_STATE): answered `restored` (yes) or `refused` naming the first that cannot.
    # Asked before anything is paused, so a suspend that cannot succeed changes nothing.
    checkSave @10 :Void;
  }
  version @3 :UInt32;
}

# One vCPU as KVM holds it: the kernel's own structures, byte for byte (same host
# architecture on both sides of a save and restore). Every size, count and the version are
# checked on restore (vcpu/cpu_state_codec.h), before anything changes.
const cpuStateVersion :UInt32 = 1;
struct CpuState {
  regs @0 :Data;        # struct kvm_regs
  sregs @1 :Data;       # struct kvm_sregs
  xsave @2 :Data;       # struct kvm_xsave: KVM_CAP_XSAVE2's size where the host has it, else 4096
  xcrs @3 :Data;        # struct kvm_xcrs
  lapic @4 :Data;       # struct kvm_lapic_state
  msrs @5 :Data;        # struct kvm_msr_entry[] (the saveable ones: vcpu/kvm.cc)
  mpState @6 :UInt32;
  events @7 :Data;      # struct kvm_vcpu_events
  debugregs @8 :Data;   # struct kvm_debugregs
  version @9 :UInt32;   # cpuStateVersion; any other is refused.
  cpuid @10 :Data;      # struct kvm_cpuid_entry2[]: what the vCPU was given (KVM_GET_CPUID2)
  tscKhz @11 :UInt32;   # KVM_GET_TSC_KHZ
}

# The VM-wide in-kernel state, kernel structures byte for byte as in CpuState.
const vmStateVersion :UInt32 = 1;
struct VmState {
  version @0 :UInt32;   # vmStateVersion
  pit @1 :Data;         # struct kvm_pit_state2 (KVM_GET_PIT2)
  clock @2 :Data;       # struct kvm_clock_data (KVM_GET_CLOCK, with its flags)
  picMaster @3 :Data;   # struct kvm_irqchip, chip_id KVM_IRQCHIP_PIC_MASTER
  picSlave @4 :Data;    # struct kvm_irqchip, chip_id KVM_IRQCHIP_PIC_SLAVE
  ioapic @5 :Data;      # struct kvm_irqchip, chip_id KVM_IRQCHIP_IOAPIC
}

# Everything the vcpu process holds of a paused VM but guest RAM and the virtio-pci side.
struct MachineState {
  cpus @0 :List(CpuState);
  vm @1 :VmState;
  uart @2 :Data;        # vcpu/uart.h Uart::state(): a versioned blob
  i8042 @3 :Data;       # vcpu/i8042.h I8042::state(): a versioned blob
  # One per MachineConfig.devices, in order. Saving stops each device's rings
  # (GET_VRING_BASE) and takes its backend's state; `resume` starts them again.
  devices @4 :List(DeviceState);
}

# One virtio device of the machine: the vcpu process's side (its virtio-pci transport and PCI
# config space, with the ring positions GET_VRING_BASE gave) and the backend's (the bytes it
# wrote to SET_DEVICE_STATE_FD, opaque to everyone but a backend of the same kind).
struct DeviceState {
  transport @0 :Data;   # vcpu/virtio_pci.h state blob, versioned by the vcpu process
  backend @1 :Data;     # vhost-user DEVICE_STATE bytes; empty if the driver never started it
}

struct MachineRestore {
  state @0 :MachineState;
  # Advance the guest's clock by the wall time since the save (KVM_CLOCK_REALTIME) instead of
  # continuing it from the saved value (the default: monotonic time does not jump).
  realtimeClock @1 :Bool;
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
    machineState @9 :MachineState;
  }
  version @3 :UInt32;
}

struct Started {
  # CLOCK_MONOTONIC nanoseconds of the moment before the first KVM_RUN, for start-up benches.
  firstRunNs @0 :UInt64;
  bootCpu @1 :UInt32;
}
