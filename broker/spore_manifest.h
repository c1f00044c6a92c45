// The broker's side of a spore's manifest (store/spore.capnp), as pure functions: building it
// from what a suspend gathered (the vcpu process's MachineState and the broker's own facts),
// turning it back into the MachineState a restore starts the vcpu process with, and checking
// that this host can run it. No I/O here: broker/suspend.cc and broker/restore.cc do that.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <functional>
#include <string>
#include <vector>

#include "base/result.h"
#include "ipc/vcpu.capnp.h"
#include "store/manifest.h"
#include "store/spore.capnp.h"

namespace moss::sporemf {

// A device as the manifest records it: its kind and what its module recorded of it (for blk,
// the disk's size and identity: devices/blk/module.h DiskRecord).
struct DeviceRecord {
  std::string kind;
  std::vector<uint8_t> config;
};

// A device of a running VM as a spore sees it: its kind, and how to take its record
// (devices/module.h Device::record; none: it records nothing).
struct DeviceSource {
  std::string kind;
  std::function<Result<std::vector<uint8_t>>()> record;
};
// Each device's record, taken now (a suspend takes them with the VM paused; a restore, of the
// devices it was given), in order.
Result<std::vector<DeviceRecord>> take_records(const std::vector<DeviceSource>& devices);

// What the broker knows of the VM it suspends (the vcpu process's state comes separately).
struct MachineFacts {
  std::string arch;                 // uname machine: "x86_64"
  std::vector<uint32_t> kvm_caps;   // The KVM_CAP_* the VMM relies on (required_kvm_caps()).
  uint64_t mem_bytes = 0;
  uint32_t cpus = 0;
  std::string cmdline;
  std::vector<DeviceRecord> devices;  // In guest order, as MachineConfig.devices.
  uint64_t generation = 0;
  uint32_t vsock_cid = 0;
  std::string name;
};

// The KVM capabilities a spore's VM relies on, recorded in its host contract and required on
// restore: the in-kernel irqchip and PIT, kvmclock's get/set, the TSC frequency's get, vCPU
// events and debug registers, and XSAVE/XCRs (the state every spore carries).
std::vector<uint32_t> required_kvm_caps();

// Guest RAM as boot::memory_map lays it out for `mem_bytes`: [0, low) and [4 GiB, 4 GiB +
// high), in that order, which is also their order in the RAM memfd.
struct RamRange {
  uint64_t guest_addr = 0, bytes = 0, file_offset = 0;
};
std::vector<RamRange> ram_ranges(uint64_t mem_bytes);

// The name under which a device model's state is recorded (store/spore.capnp deviceModels).
inline constexpr const char* kUartModel = "uart-0x3f8";
inline constexpr const char* kI8042Model = "i8042";
std::string transport_model(size_t device_index);  // "virtio-pci-N"

// Fills `out` with everything but formatVersion and memory (write_spore fills those): the host
// contract (vCPU 0's CPUID and TSC kHz), the machine, the vCPUs and VM state, the device
// models (uart, i8042, one virtio-pci transport per device), the workers' blobs, identity.
// Refuses a state whose vCPU or device count is not the machine's.
Result<void> build(spore::Manifest::Builder out, ipc::MachineState::Reader state, const MachineFacts& facts);

// The manifest's machine as the vcpu process restores it: vCPUs, VM, UART, i8042 and each
// device's transport and backend state. Refuses a manifest that misses one of them.
Result<void> machine_state_of(spore::Manifest::Reader m, ipc::MachineState::Builder out);
// Guest RAM bytes of the manifest's machine (its RAM ranges must be memory_map's for it).
Result<uint64_t> ram_bytes_of(spore::Manifest::Reader m);

// The devices a restore planned (the user's --disk in order, then vsock), each with what it
// records now, against the spore's: the same count and kinds in order, each disk the same
// size, identity and read-only flag (devices/blk/module.h). One sentence naming the device.
Result<void> check_devices(capnp::List<spore::Device>::Reader recorded, const std::vector<DeviceRecord>& given);

// This host, as a restore checks it against a spore's host contract.
struct HostFacts {
  std::string arch;
  std::vector<kvm_cpuid_entry2> supported_cpuid;  // KVM_GET_SUPPORTED_CPUID
  // What this host's KVM reports (KVM_GET_CPUID2) for a vCPU given supported_cpuid: some KVMs
  // (PVM) show a vCPU more than they list as supported, and a spore records what its vCPU
  // showed. A feature is offered when either has it.
  std::vector<kvm_cpuid_entry2> vcpu_cpuid;
  std::vector<uint32_t> kvm_caps;                 // The KVM_CAP_* present (checked among required ones).
  uint32_t tsc_khz = 0;                           // The host's TSC frequency (KVM_GET_TSC_KHZ), 0 unknown.
  bool tsc_scaling = false;                       // KVM_CAP_TSC_CONTROL
};

// One sentence per refusal: another architecture; a CPUID feature bit the spore's guest saw
// that this host's KVM does not offer (names leaf, register and bit); a KVM capability
// missing; a TSC frequency that differs and cannot be scaled.
Result<void> check_host(spore::HostContract::Reader contract, const HostFacts& host);

// The CPUID registers that hold feature bits, and the bits in them KVM or moss set on their
// own (the hypervisor bit, HTT, OSXSAVE, OSPKE, APIC), which the check skips.
struct FeatureRegister {
  uint32_t function;
  int32_t index;  // -1: any subleaf.
  int reg;        // 0 eax, 1 ebx, 2 ecx, 3 edx
  uint32_t ignored;
};
std::span<const FeatureRegister> feature_registers();

// Decodes a kvm_cpuid_entry2 array (a multiple of its size).
Result<std::vector<kvm_cpuid_entry2>> decode_cpuid(std::span<const uint8_t> bytes);

}  // namespace moss::sporemf
