// VcpuState / VmState <-> ipc::CpuState / ipc::VmState / ipc::MachineState (ipc/vcpu.capnp):
// each KVM structure as its bytes. The decoders are pure and check every size, count and
// version, so a state from another build, version or architecture is refused with one
// sentence, not misread; fuzz/fuzz_cpu_state.cc drives them with arbitrary bytes.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"
#include "ipc/vcpu.capnp.h"
#include "vcpu/i8042.h"
#include "vcpu/kvm.h"
#include "vcpu/uart.h"

namespace moss {

// KVM's index list holds well under this on any host (about 40 on PVM, a few hundred with
// every PMU and LBR MSR); the ioctls go in batches of 255 (KVM's MAX_IO_MSRS).
inline constexpr size_t kMaxSavedMsrs = 1024;
// KVM_MAX_CPUID_ENTRIES.
inline constexpr size_t kMaxSavedCpuidEntries = 256;
// KVM_MAX_VCPUS on x86 is at most 4096; moss's MP table and ACPI stop at 254.
inline constexpr size_t kMaxSavedCpus = 254;

void encode_cpu_state(const VcpuState& s, ipc::CpuState::Builder out);
Result<VcpuState> decode_cpu_state(ipc::CpuState::Reader in);
void encode_vm_state(const VmState& s, ipc::VmState::Builder out);
Result<VmState> decode_vm_state(ipc::VmState::Reader in);

struct MachineStateValue {
  std::vector<VcpuState> cpus;
  VmState vm;
  UartState uart;
  I8042State i8042;
};
Result<MachineStateValue> decode_machine_state(ipc::MachineState::Reader in);
// A whole MachineState as one Cap'n Proto message (unpacked, as a spore stores it); a
// malformed message is an Error, never an exception.
Result<MachineStateValue> decode_machine_state_message(std::span<const uint8_t> bytes);

}  // namespace moss
