// VcpuState <-> ipc::CpuState (ipc/vcpu.capnp): each KVM structure as its bytes. Decoding
// checks every size, so a state from another build or architecture is refused, not misread.
#pragma once

#include <vector>

#include "base/result.h"
#include "ipc/vcpu.capnp.h"
#include "vcpu/kvm.h"

namespace moss {

void encode_cpu_state(const VcpuState& s, ipc::CpuState::Builder out);
Result<VcpuState> decode_cpu_state(ipc::CpuState::Reader in);

}  // namespace moss
