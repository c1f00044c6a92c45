// Intel MultiProcessor Specification 1.4 tables: how a guest without ACPI finds its CPUs, its
// IOAPIC and the routing of the ISA interrupts.
#pragma once

#include <cstdint>
#include <vector>

namespace moss::boot {

constexpr uint64_t kIoapicGpa = 0xfec00000;
constexpr uint64_t kLapicGpa = 0xfee00000;

// Floating pointer structure followed by the configuration table, for placing at `gpa`.
// CPU i has local APIC id i; CPU 0 is the bootstrap processor; the IOAPIC's id is `cpus`.
std::vector<uint8_t> build_mptable(uint64_t gpa, uint32_t cpus);

}  // namespace moss::boot
