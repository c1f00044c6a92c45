# The spore manifest: everything needed to continue a VM, except guest RAM, which lives as
# chunks in a chunk store (store/chunk_store.h) that the memory map below names.
#
# A spore is a directory SPORE/ (0700) holding SPORE/manifest (0600): one Cap'n Proto message,
# unpacked, flat (capnp::messageToFlatArray). store/manifest.h decodes it (a pure function) and
# refuses what it cannot trust; store/spore.h writes and reads spores.
#
# Versioning: sporeFormatVersion is bumped on any change a reader of the previous version
# would misread (a field whose meaning changes); a reader refuses every version it does not
# know. Adding a field does not bump it (old readers ignore it, new readers see its default).
@0xde9a7122351f3322;

$import "/capnp/c++.capnp".namespace("moss::spore");

using Vcpu = import "/ipc/vcpu.capnp";

const sporeFormatVersion :UInt32 = 1;

struct Manifest {
  formatVersion @0 :UInt32;       # sporeFormatVersion of the writer; readers refuse others.
  host @1 :HostContract;
  machine @2 :MachineConfig;
  # One per vCPU, in vCPU index order: KVM's own structures byte for byte (ipc/vcpu.capnp).
  vcpus @3 :List(Vcpu.CpuState);
  vm @4 :Vcpu.VmState;            # PIT, kvmclock, PICs and IOAPIC (ipc/vcpu.capnp).
  # The vcpu process's device models (PCI config spaces, each virtio-pci transport, UART,
  # i8042, ACPI PM), one opaque blob each, versioned by the vcpu process.
  deviceModels @5 :List(DeviceModelState);
  # Each worker's DEVICE_STATE blob (vhost-user SET_DEVICE_STATE_FD), one per device in
  # machine.devices order; opaque to the broker, checked by the worker that reads it.
  workers @6 :List(WorkerState);
  memory @7 :MemoryMap;
  identity @8 :Identity;
  # The spore this one is relative to (reserved for incremental spores and fork). The null
  # id (all zero) means none; then the memory map covers every byte of machine.ramRanges.
  parent @9 :SporeId;
}

# XXH3-128 of the parent's manifest file: the same value its store root records.
struct SporeId {
  hi @0 :UInt64;
  lo @1 :UInt64;
}

# What the host must offer for this spore to run: restore refuses a host without it.
struct HostContract {
  arch @0 :Text;                  # "x86_64" (uname machine).
  # The CPUID leaves the guest saw (KVM_GET_CPUID2 of vCPU 0): struct kvm_cpuid_entry2[],
  # byte for byte. Restore requires every feature bit set here to be offered by the host's
  # KVM_GET_SUPPORTED_CPUID.
  cpuid @1 :Data;
  # KVM capabilities the VMM relied on (KVM_CAP_* numbers); each must be present on restore.
  kvmCapabilities @2 :List(UInt32);
  tscKhz @3 :UInt32;              # The guest's TSC frequency (KVM_GET_TSC_KHZ).
}

struct MachineConfig {
  ramRanges @0 :List(RamRange);   # Guest-physical RAM, sorted, non-overlapping.
  cpus @1 :UInt32;
  cmdline @2 :Text;               # The kernel command line the guest booted with.
  devices @3 :List(Device);       # In guest order (PCI slot order).
}

struct RamRange {
  guestAddr @0 :UInt64;           # Page aligned.
  bytes @1 :UInt64;               # Page aligned, non-zero.
}

struct Device {
  kind @0 :Text;                  # "blk", "vsock", "net", "9p".
  # Kind-specific configuration the device was created with, e.g. for blk the disk's size in
  # bytes and identity (never a path to open for writing: the user names disks on restore).
  config @1 :Data;
}

struct DeviceModelState {
  name @0 :Text;                  # "pci-host", "virtio-pci-0", "uart-0x3f8", "i8042", "acpi-pm".
  version @1 :UInt32;             # The model's own state version; it refuses others.
  state @2 :Data;
}

struct WorkerState {
  kind @0 :Text;                  # The worker's device kind, as in MachineConfig.devices.
  version @1 :UInt32;             # The worker's state version; it refuses others.
  state @2 :Data;                 # What the worker wrote to the DEVICE_STATE fd.
}

# Guest RAM as chunks of chunkBytes bytes. Each range is split into chunks from its start; its
# last chunk may be short (bytes - chunkBytes * (count - 1)). With no parent the ranges cover
# machine.ramRanges exactly; with a parent, absent ranges come from the parent.
struct MemoryMap {
  chunkBytes @0 :UInt32;          # A power of two, at least 4096.
  ranges @1 :List(MemoryRange);   # Sorted by guestAddr, non-overlapping.
}

struct MemoryRange {
  guestAddr @0 :UInt64;           # Page aligned, inside machine.ramRanges.
  bytes @1 :UInt64;               # Page aligned, non-zero.
  chunks @2 :List(ChunkRef);      # Exactly ceil(bytes / chunkBytes) entries.
}

# One chunk: its bytes are all zero (never stored), or the chunk whose XXH3-128 is (hi, lo).
struct ChunkRef {
  zero @0 :Bool;                  # All zero: hi and lo are 0.
  hi @1 :UInt64;
  lo @2 :UInt64;
}

struct Identity {
  # The VM's generation: 0 until it is first restored, then a fresh random number (1..2^63-1)
  # on every restore, so that two restores of one spore differ, as VMGenID's ids do. The
  # guest agent publishes it in /run/moss/generation.
  generation @0 :UInt64;
  vsockCid @1 :UInt32;
  name @2 :Text;                  # The VM's --name when captured, "" for none.
  mac @3 :Data;                   # The virtio-net MAC (6 bytes), empty without a NIC.
}
