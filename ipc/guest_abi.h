// Numbers of the host/guest contract that the vcpu process and the guest side share, kept
// below both (vcpu/ must not include guest/). guest/moss-init/cmdline.h repeats kExitPort for
// moss-init, which builds on its own; broker/run.cc checks the two agree at compile time.
#pragma once

#include <cstdint>

namespace moss::guest_abi {

// I/O port the guest writes its 32-bit exit status to (outl): the VM ends with it.
inline constexpr uint16_t kExitPort = 0x5f0;

}  // namespace moss::guest_abi
