// x86 vCPU set-up: CPUID per vCPU, boot MSRs, and the register state the 64-bit Linux boot
// protocol asks for (flat segments, identity paging, RSI = boot_params).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "base/guest_memory.h"
#include "base/result.h"
#include "vcpu/kvm.h"

namespace moss::x86 {

// KVM's supported CPUID adjusted for vCPU `index` of `count`: APIC ids, topology, the
// hypervisor bit. Pure.
std::vector<kvm_cpuid_entry2> cpuid_for_vcpu(const std::vector<kvm_cpuid_entry2>& supported, uint32_t index,
                                             uint32_t count);

std::vector<kvm_msr_entry> boot_msrs();

// Writes the GDT and identity page tables (first 4 GiB, 2 MiB pages) into guest memory.
Result<void> write_long_mode_tables(const GuestMemory& mem);

// Puts the boot vCPU in 64-bit mode at `entry` with RSI = `boot_params`.
Result<void> setup_boot_vcpu(KvmVcpu& vcpu, uint64_t entry, uint64_t boot_params);

}  // namespace moss::x86
