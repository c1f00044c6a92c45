#include "vcpu/mptable.h"

#include <cstring>

#include "base/result.h"

namespace moss::boot {
namespace {

class Writer {
 public:
  void u8(uint8_t v) { b_.push_back(v); }
  void u16(uint16_t v) { raw(&v, 2); }
  void u32(uint32_t v) { raw(&v, 4); }
  void str(const char* s, size_t n) {  // Space-padded, not NUL-terminated.
    size_t len = std::strlen(s);
    for (size_t i = 0; i < n; i++) u8(i < len ? static_cast<uint8_t>(s[i]) : ' ');
  }
  void raw(const void* p, size_t n) {
    auto* c = static_cast<const uint8_t*>(p);
    b_.insert(b_.end(), c, c + n);
  }
  std::vector<uint8_t>& bytes() { return b_; }

 private:
  std::vector<uint8_t> b_;
};

uint8_t checksum(const uint8_t* p, size_t n) {
  uint8_t sum = 0;
  for (size_t i = 0; i < n; i++) sum = static_cast<uint8_t>(sum + p[i]);
  return static_cast<uint8_t>(-sum);
}

constexpr uint8_t kApicVersion = 0x14;
constexpr uint8_t kIoapicVersion = 0x11;
constexpr uint8_t kIsaIrqs = 16;

}  // namespace

std::vector<uint8_t> build_mptable(uint64_t gpa, uint32_t cpus) {
  MOSS_ASSERT(cpus >= 1 && cpus < 255);
  const uint8_t ioapic_id = static_cast<uint8_t>(cpus);
  Writer w;
  // Floating pointer (16 bytes).
  w.str("_MP_", 4);
  w.u32(static_cast<uint32_t>(gpa + 16));  // Configuration table follows immediately.
  w.u8(1);                                  // Length in 16-byte units.
  w.u8(4);                                  // Spec revision 1.4.
  w.u8(0);                                  // Checksum, patched below.
  w.u8(0);                                  // Feature 1: 0 = a configuration table is present.
  w.u32(0);                                 // Features 2..5.
  // Configuration table header (44 bytes).
  size_t hdr = w.bytes().size();
  w.str("PCMP", 4);
  w.u16(0);  // Base table length, patched.
  w.u8(4);
  w.u8(0);  // Checksum, patched.
  w.str("MOSS", 8);
  w.str("MOSSVM", 12);
  w.u32(0);   // OEM table pointer.
  w.u16(0);   // OEM table size.
  w.u16(0);   // Entry count, patched.
  w.u32(static_cast<uint32_t>(kLapicGpa));
  w.u16(0);   // Extended table length.
  w.u8(0);    // Extended table checksum.
  w.u8(0);
  uint16_t entries = 0;
  for (uint32_t i = 0; i < cpus; i++, entries++) {
    w.u8(0);  // Processor entry.
    w.u8(static_cast<uint8_t>(i));
    w.u8(kApicVersion);
    w.u8(static_cast<uint8_t>(0x01 | (i == 0 ? 0x02 : 0)));  // Enabled; bootstrap processor.
    w.u32(0x600);   // CPU signature: family 6.
    w.u32(0x201);   // Feature flags: FPU, APIC.
    w.u32(0);
    w.u32(0);
  }
  w.u8(1);  // Bus entry: bus 0 is ISA.
  w.u8(0);
  w.str("ISA", 6);
  entries++;
  w.u8(2);  // IOAPIC entry.
  w.u8(ioapic_id);
  w.u8(kIoapicVersion);
  w.u8(1);  // Enabled.
  w.u32(static_cast<uint32_t>(kIoapicGpa));
  entries++;
  // ISA IRQ n -> IOAPIC pin n, matching KVM's default GSI routing for the in-kernel irqchip.
  for (uint8_t irq = 0; irq < kIsaIrqs; irq++, entries++) {
    w.u8(3);  // I/O interrupt assignment.
    w.u8(0);  // INT (vectored).
    w.u16(0); // Conforming polarity and trigger (ISA: active high, edge).
    w.u8(0);  // Source bus 0.
    w.u8(irq);
    w.u8(ioapic_id);
    w.u8(irq);
  }
  // LINT0 = ExtINT (the 8259 PIC), LINT1 = NMI, on every local APIC.
  for (uint8_t lint = 0; lint < 2; lint++, entries++) {
    w.u8(4);
    w.u8(lint == 0 ? 3 : 1);
    w.u16(0);
    w.u8(0);
    w.u8(0);
    w.u8(0xff);
    w.u8(lint);
  }
  auto& b = w.bytes();
  uint16_t table_len = static_cast<uint16_t>(b.size() - hdr);
  std::memcpy(&b[hdr + 4], &table_len, 2);
  std::memcpy(&b[hdr + 34], &entries, 2);
  b[hdr + 7] = checksum(&b[hdr], table_len);
  b[10] = checksum(b.data(), 16);
  return b;
}

}  // namespace moss::boot
