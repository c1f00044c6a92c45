// ACPI tables for a hardware-reduced platform (ACPI 6.3, section 4.1 "Hardware-Reduced
// ACPI"): how a guest with ACPI finds its CPUs and IOAPIC (MADT), the UART and the i8042
// (DSDT devices with their I/O ports and ISA interrupts), and how it powers off (the FADT's
// sleep control register plus \_S5_ in the DSDT).
//
// Hardware-reduced means no PM1 event/control blocks, no PM timer, no GPE blocks, no FACS
// and no SCI: power-off is one byte written to an I/O port that the VMM traps. Linux then
// also drops the legacy 8259 PIC and the PIT (acpi_generic_reduced_hw_init), so every ISA
// interrupt a guest driver needs must be described in the DSDT: a legacy driver that
// hard-codes IRQ 4 no longer gets it.
//
// Pure: no guest memory, no KVM; unit-tested directly.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace moss::boot {

// The tables live in the BIOS read-only area: Linux (and any ACPI OS without UEFI) finds the
// RSDP by scanning [0xe0000, 0x100000) on 16-byte boundaries, and the e820 map already
// reserves [0xf0000, 0x100000) for them (plan_boot), so no RAM is given away.
constexpr uint64_t kAcpiGpa = 0xf0000;
constexpr uint64_t kAcpiEndGpa = 0x100000;

// SLEEP_CONTROL_REG and SLEEP_STATUS_REG (FADT, 8-bit System I/O registers). 0x600 and
// 0x601 belong to no ISA/PC device (VGA is 0x3b0-0x3df, the moss exit port 0x5f0), so a
// guest probing legacy hardware never writes them by accident.
constexpr uint16_t kAcpiSleepControlPort = 0x600;
constexpr uint16_t kAcpiSleepStatusPort = 0x601;
// The SLP_TYP value \_S5_ (soft-off) names in the DSDT, written to SLEEP_CONTROL_REG bits 2-4.
constexpr uint8_t kAcpiS5SleepType = 5;

// Where each table landed: guest physical addresses, for tests and logs (nothing parses the
// bytes back).
struct AcpiLayout {
  uint64_t rsdp = 0;
  uint64_t xsdt = 0;
  uint64_t fadt = 0;
  uint64_t madt = 0;
  uint64_t dsdt = 0;
  uint64_t end = 0;  // One past the last byte written.
};

// RSDP (revision 2) at `base_gpa` (16-byte aligned, within [0xe0000, 0x100000)), followed by
// the XSDT, FADT, MADT and DSDT, each 16-byte aligned. CPU i has local APIC id and ACPI
// processor UID i; the IOAPIC's id is `cpus` (as in the MP table), at kIoapicGpa with GSI
// base 0. ISA IRQ n is GSI n (KVM's default routing), so the MADT has no interrupt source
// overrides. Requires 1 <= cpus <= 254.
std::vector<uint8_t> build_acpi_tables(uint64_t base_gpa, uint32_t cpus, AcpiLayout* layout = nullptr);

enum class PowerEvent { kPowerOff };

// What a guest's byte written to SLEEP_CONTROL_REG asks for: power-off when SLP_EN (bit 5) is
// set and SLP_TYP (bits 2-4) is kAcpiS5SleepType; nothing otherwise (the DSDT names no other
// sleep state, so a guest has no reason to write anything else).
std::optional<PowerEvent> decode_sleep_control_write(uint8_t value);

}  // namespace moss::boot
