#include "vcpu/acpi.h"

#include <cstring>
#include <initializer_list>
#include <string_view>

#include "base/result.h"
#include "vcpu/bzimage.h"
#include "vcpu/i8042.h"
#include "vcpu/mptable.h"

// Section numbers refer to the ACPI Specification 6.3.
namespace moss::boot {
namespace {

// The platform devices the DSDT describes (machine.cc traps their ports; ISA IRQ n is GSI n).
constexpr uint16_t kCom1Port = 0x3f8;  // 16550A UART, 8 registers.
constexpr uint8_t kCom1Irq = 4;
constexpr uint8_t kI8042Irq = 1;        // Keyboard port; moss has no mouse behind the i8042.

constexpr size_t kSdtHeaderSize = 36;   // 5.2.6: every table but the RSDP starts with it.
constexpr size_t kRsdpSize = 36;        // 5.2.5.3, revision 2.
constexpr size_t kRsdpV1Size = 20;      // The part the first checksum covers.
constexpr size_t kFadtSize = 276;       // 5.2.9, FADT revision 6.
constexpr size_t kTableAlign = 16;

// Little-endian byte sink with in-place patching.
class Bytes {
 public:
  void u8(uint8_t v) { b_.push_back(v); }
  void u16(uint16_t v) { le(v, 2); }
  void u32(uint32_t v) { le(v, 4); }
  void u64(uint64_t v) { le(v, 8); }
  void text(std::string_view s) {  // A loop, not insert(): GCC 12 -O3 misreads that as an overflow.
    for (char c : s) b_.push_back(static_cast<uint8_t>(c));
  }
  void bytes(const std::vector<uint8_t>& v) { b_.insert(b_.end(), v.begin(), v.end()); }
  void zeros(size_t n) { b_.resize(b_.size() + n, 0); }
  void patch(size_t off, uint64_t v, size_t n) {
    MOSS_ASSERT(off + n <= b_.size());
    for (size_t i = 0; i < n; i++) b_[off + i] = static_cast<uint8_t>(v >> (8 * i));
  }
  size_t size() const { return b_.size(); }
  std::vector<uint8_t>& vec() { return b_; }

 private:
  void le(uint64_t v, size_t n) {
    for (size_t i = 0; i < n; i++) b_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t> b_;
};

uint8_t checksum(const uint8_t* p, size_t n) {  // The byte that makes the sum 0 mod 256.
  uint8_t sum = 0;
  for (size_t i = 0; i < n; i++) sum = static_cast<uint8_t>(sum + p[i]);
  return static_cast<uint8_t>(-sum);
}

// 5.2.6 System Description Table header; length and checksum are set by finish_sdt.
Bytes sdt_header(std::string_view signature, uint8_t revision) {
  Bytes t;
  t.text(signature);    // 4 bytes.
  t.u32(0);             // Length, patched.
  t.u8(revision);
  t.u8(0);              // Checksum, patched.
  t.text("MOSS  ");     // OEM ID, 6 bytes.
  t.text("MOSSVM  ");   // OEM table ID, 8 bytes.
  t.u32(1);             // OEM revision.
  t.text("MOSS");       // Creator ID.
  t.u32(1);             // Creator revision.
  return t;
}

std::vector<uint8_t> finish_sdt(Bytes t) {
  t.patch(4, t.size(), 4);
  t.vec()[9] = checksum(t.vec().data(), t.size());
  return std::move(t.vec());
}

// 5.2.3.2 Generic Address Structure for an 8-bit System I/O register, byte access.
void gas_io8(Bytes& t, size_t off, uint16_t port) {
  t.patch(off, 1, 1);      // Address space: System I/O.
  t.patch(off + 1, 8, 1);  // Register bit width.
  t.patch(off + 2, 0, 1);  // Register bit offset.
  t.patch(off + 3, 1, 1);  // Access size: byte.
  t.patch(off + 4, port, 8);
}

// ---- AML (section 20, "ACPI Machine Language Specification").

using Aml = std::vector<uint8_t>;

Aml cat(std::initializer_list<Aml> parts) {
  Aml out;
  for (const Aml& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// 20.2.4 PkgLength: counts itself. One byte holds lengths up to 63; longer ones take 1-3
// more bytes, the lead byte's bits 7-6 saying how many and its bits 3-0 the low nibble.
Aml pkg_length(size_t payload) {
  for (size_t extra = 0; extra <= 3; extra++) {
    size_t total = payload + 1 + extra;
    if (extra == 0 && total <= 0x3f) return {static_cast<uint8_t>(total)};
    if (extra > 0 && total < (size_t{1} << (4 + 8 * extra))) {
      Aml out{static_cast<uint8_t>((extra << 6) | (total & 0xf))};
      for (size_t i = 0; i < extra; i++) out.push_back(static_cast<uint8_t>(total >> (4 + 8 * i)));
      return out;
    }
  }
  MOSS_ASSERT(false && "AML package longer than 2^28 bytes");
  return {};
}

// An opcode followed by PkgLength and the body it measures (Scope, Device, Package, Buffer).
Aml with_pkg(const Aml& opcode, const Aml& body) { return cat({opcode, pkg_length(body.size()), body}); }

// 20.2.2 NameSeg: exactly four characters ('_', 'A'-'Z', '0'-'9'), so "_S5_" not "_S5".
Aml name_seg(std::string_view seg) {
  MOSS_ASSERT(seg.size() == 4);
  return Aml(seg.begin(), seg.end());
}
Aml root_name(std::string_view seg) { return cat({{0x5c}, name_seg(seg)}); }  // RootChar '\'.

constexpr uint8_t kNameOp = 0x08;
constexpr uint8_t kBytePrefix = 0x0a;
constexpr uint8_t kDWordPrefix = 0x0c;
constexpr uint8_t kScopeOp = 0x10;
constexpr uint8_t kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kZeroOp = 0x00;
constexpr uint8_t kExtOpPrefix = 0x5b;
constexpr uint8_t kDeviceOp = 0x82;  // After kExtOpPrefix.

Aml name(const Aml& name_string, const Aml& object) { return cat({{kNameOp}, name_string, object}); }
Aml byte_const(uint8_t v) { return v == 0 ? Aml{kZeroOp} : Aml{kBytePrefix, v}; }

// EISAID("PNPxxxx") (the ASL macro, 19.6): three letters of 5 bits each, then four hex digits, as a
// DWordConst whose bytes read in memory order: the letters' 15 bits big-endian, then the digits.
Aml eisa_id(std::string_view id) {
  MOSS_ASSERT(id.size() == 7);
  auto letter = [&](size_t i) { return static_cast<uint32_t>(id[i] - 0x40) & 0x1f; };  // 'A' = 1.
  auto hex = [&](size_t i) {
    char c = id[i];
    return static_cast<uint32_t>(c <= '9' ? c - '0' : c - 'A' + 10);
  };
  uint16_t letters = static_cast<uint16_t>((letter(0) << 10) | (letter(1) << 5) | letter(2));
  return {kDWordPrefix, static_cast<uint8_t>(letters >> 8), static_cast<uint8_t>(letters),
          static_cast<uint8_t>((hex(3) << 4) | hex(4)), static_cast<uint8_t>((hex(5) << 4) | hex(6))};
}

// Resource template descriptors (6.4.2): small items whose first byte is type << 3 | length.
Aml io_port(uint16_t port, uint8_t length) {  // 6.4.2.5 I/O Port Descriptor, fixed address.
  auto lo = static_cast<uint8_t>(port), hi = static_cast<uint8_t>(port >> 8);
  return {0x47, 0x01 /* 16-bit decode */, lo, hi /* min */, lo, hi /* max */, 0x01 /* align */, length};
}
Aml isa_irq(uint8_t irq) {  // 6.4.2.1 IRQ Descriptor with its flags byte: edge, active-high, exclusive.
  uint16_t mask = static_cast<uint16_t>(1u << irq);
  return {0x23, static_cast<uint8_t>(mask), static_cast<uint8_t>(mask >> 8), 0x01};
}
Aml end_tag() { return {0x79, 0x00}; }

// 6.4.3.5.3 Word and 6.4.3.5.2 DWord Address Space Descriptors, as a resource producer with
// fixed minimum and maximum (a bridge window). `type`: 0 memory, 1 I/O, 2 bus numbers.
constexpr uint8_t kAddrMemory = 0, kAddrBus = 2;
constexpr uint8_t kProducerMinMaxFixed = 0x0c;
Aml word_address(uint8_t type, uint16_t min, uint16_t max) {
  Aml d{0x88, 0x0d, 0x00, type, kProducerMinMaxFixed, 0x00};
  for (uint16_t v : {uint16_t{0}, min, max, uint16_t{0}, static_cast<uint16_t>(max - min + 1)}) {
    d.push_back(static_cast<uint8_t>(v));
    d.push_back(static_cast<uint8_t>(v >> 8));
  }
  return d;
}
Aml dword_memory(uint32_t min, uint32_t max) {  // Read-write, non-cacheable.
  Aml d{0x87, 0x17, 0x00, kAddrMemory, kProducerMinMaxFixed, 0x01};
  for (uint32_t v : {0u, min, max, 0u, max - min + 1}) {
    for (int i = 0; i < 4; i++) d.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  return d;
}  // 6.4.2.9; checksum 0 means "treat as valid".

// Name(_CRS, ResourceTemplate() {...}): a Buffer of the descriptors plus the end tag.
Aml crs(const Aml& descriptors) {
  Aml data = cat({descriptors, end_tag()});
  MOSS_ASSERT(data.size() < 0x100);
  Aml buffer = with_pkg({kBufferOp}, cat({{kBytePrefix, static_cast<uint8_t>(data.size())}, data}));
  return name(name_seg("_CRS"), buffer);
}

Aml device(std::string_view seg, std::string_view hid, const Aml& resources) {
  Aml body = cat({name_seg(seg), name(name_seg("_HID"), eisa_id(hid)), crs(resources)});
  return with_pkg({kExtOpPrefix, kDeviceOp}, body);
}

// Name(\_S5_, Package(){SLP_TYPa, SLP_TYPb, reserved, reserved}) (7.4.2): soft-off. Linux
// uses only the first value in hardware-reduced mode.
Aml s5_object() {
  Aml elements = cat({byte_const(kAcpiS5SleepType), byte_const(0), byte_const(0), byte_const(0)});
  return name(root_name("_S5_"), with_pkg({kPackageOp}, cat({{4 /* NumElements */}, elements})));
}

// Scope(\_SB_) { Device(COM1) {...} Device(PS2K) {...} } and \_S5_. The devices give Linux
// the ISA interrupts it no longer assumes in hardware-reduced mode (through PNP ACPI).
std::vector<uint8_t> build_dsdt() {
  Bytes t = sdt_header("DSDT", 2);  // Revision 2: 64-bit AML integers.
  Aml com1 = device("COM1", "PNP0501", cat({io_port(kCom1Port, 8), isa_irq(kCom1Irq)}));
  Aml ps2k = device("PS2K", "PNP0303",
                    cat({io_port(I8042::kDataPort, 1), io_port(I8042::kCommandPort, 1), isa_irq(kI8042Irq)}));
  // The PCI host bridge (configuration mechanism #1 at 0xcf8): bus 0 and the memory window
  // where moss places BARs, from the start of the PCI hole to the IOAPIC.
  Aml pci0 = device("PCI0", "PNP0A03",
                    cat({word_address(kAddrBus, 0, 0), io_port(0xcf8, 8),
                         dword_memory(static_cast<uint32_t>(kPciHoleStart), static_cast<uint32_t>(kIoapicGpa - 1))}));
  t.bytes(with_pkg({kScopeOp}, cat({root_name("_SB_"), com1, ps2k, pci0})));
  t.bytes(s5_object());
  return finish_sdt(std::move(t));
}

// 5.2.12 MADT.
std::vector<uint8_t> build_madt(uint32_t cpus) {
  Bytes t = sdt_header("APIC", 5);
  t.u32(static_cast<uint32_t>(kLapicGpa));
  t.u32(1);  // PCAT_COMPAT: the VM also has the (in-kernel) dual 8259.
  for (uint32_t i = 0; i < cpus; i++) {  // 5.2.12.2 Processor Local APIC.
    t.u8(0);
    t.u8(8);
    t.u8(static_cast<uint8_t>(i));  // ACPI processor UID.
    t.u8(static_cast<uint8_t>(i));  // APIC id.
    t.u32(1);                       // Enabled.
  }
  t.u8(1);  // 5.2.12.3 I/O APIC.
  t.u8(12);
  t.u8(static_cast<uint8_t>(cpus));  // I/O APIC id, after the local APIC ids (as in the MP table).
  t.u8(0);
  t.u32(static_cast<uint32_t>(kIoapicGpa));
  t.u32(0);  // Global system interrupt base: pin n is GSI n.
  t.u8(4);   // 5.2.12.7 Local APIC NMI: LINT1 of every processor, as the vCPUs are set up.
  t.u8(6);
  t.u8(0xff);  // ACPI processor UID 0xff: all processors.
  t.u16(0);    // MPS INTI flags: conforming polarity and trigger.
  t.u8(1);     // LINT1.
  return finish_sdt(std::move(t));
}

// 5.2.9 FADT, revision 6 (minor 3): hardware-reduced.
std::vector<uint8_t> build_fadt(uint64_t dsdt_gpa) {
  Bytes t = sdt_header("FACP", 6);
  t.zeros(kFadtSize - kSdtHeaderSize);
  // FIRMWARE_CTRL (36) and X_FIRMWARE_CTRL (132) stay 0: no FACS in hardware-reduced mode.
  t.patch(40, dsdt_gpa, 4);  // DSDT.
  t.patch(46, 9, 2);         // SCI_INT: unused without fixed hardware; 9 is the PC convention.
  // SMI_CMD (48) = 0: no SMM, the platform is always in ACPI mode. Every PM1/PM2/PM timer/GPE
  // block (56-95, 148-243) stays 0: hardware-reduced has none.
  t.patch(96, 101, 2);       // P_LVL2_LAT > 100 us: C2 not supported.
  t.patch(98, 1001, 2);      // P_LVL3_LAT > 1000 us: C3 not supported.
  // IAPC_BOOT_ARCH (5.2.9.3): ISA-style devices exist (the UART), an 8042 sits at 0x60/0x64,
  // there is no VGA to probe, and no CMOS RTC (wall time comes from kvm-clock). MSIs stay
  // allowed for a future PCI bus.
  constexpr uint16_t kLegacyDevices = 1 << 0, k8042 = 1 << 1, kVgaNotPresent = 1 << 2, kCmosRtcNotPresent = 1 << 5;
  t.patch(109, kLegacyDevices | k8042 | kVgaNotPresent | kCmosRtcNotPresent, 2);
  // Flags (the fixed feature flags table of 5.2.9).
  constexpr uint32_t kWbinvd = 1u << 0;        // WBINVD flushes caches (KVM runs it).
  constexpr uint32_t kProcC1 = 1u << 2;        // HLT works on every CPU.
  constexpr uint32_t kPwrButton = 1u << 4;     // No fixed-feature power button...
  constexpr uint32_t kSlpButton = 1u << 5;     // ...nor sleep button.
  constexpr uint32_t kResetRegSup = 1u << 10;  // RESET_REG below works.
  constexpr uint32_t kHwReducedAcpi = 1u << 20;
  t.patch(112, kWbinvd | kProcC1 | kPwrButton | kSlpButton | kResetRegSup | kHwReducedAcpi, 4);
  // RESET_REG (116) + RESET_VALUE (128): 0xfe to the i8042 command port pulses the reset
  // line, which moss's i8042 turns into a VM reset.
  gas_io8(t, 116, I8042::kCommandPort);
  t.patch(128, 0xfe, 1);
  t.patch(131, 3, 1);           // FADT minor version: ACPI 6.3.
  t.patch(140, dsdt_gpa, 8);    // X_DSDT (same as DSDT, so neither wins a disagreement).
  gas_io8(t, 244, kAcpiSleepControlPort);  // SLEEP_CONTROL_REG.
  gas_io8(t, 256, kAcpiSleepStatusPort);   // SLEEP_STATUS_REG.
  // Hypervisor vendor identity (268) stays 0: nothing to claim.
  return finish_sdt(std::move(t));
}

std::vector<uint8_t> build_xsdt(const std::vector<uint64_t>& entries) {
  Bytes t = sdt_header("XSDT", 1);
  for (uint64_t e : entries) t.u64(e);
  return finish_sdt(std::move(t));
}

// 5.2.5.3 RSDP, revision 2 (ACPI 2.0+): the XSDT only; RsdtAddress 0 (no ACPI 1.0 RSDT).
std::vector<uint8_t> build_rsdp(uint64_t xsdt_gpa) {
  Bytes t;
  t.text("RSD PTR ");
  t.u8(0);         // Checksum of the first 20 bytes, patched.
  t.text("MOSS  ");
  t.u8(2);         // Revision.
  t.u32(0);        // RsdtAddress.
  t.u32(kRsdpSize);
  t.u64(xsdt_gpa);
  t.u8(0);         // Extended checksum of all 36 bytes, patched.
  t.zeros(3);
  auto& b = t.vec();
  b[8] = checksum(b.data(), kRsdpV1Size);
  b[32] = checksum(b.data(), kRsdpSize);
  return std::move(b);
}

size_t align_up(size_t v) { return (v + kTableAlign - 1) & ~(kTableAlign - 1); }

}  // namespace

std::vector<uint8_t> build_acpi_tables(uint64_t base_gpa, uint32_t cpus, AcpiLayout* layout) {
  MOSS_ASSERT(cpus >= 1 && cpus <= 254);  // APIC ids 0..cpus-1 and the IOAPIC's id fit 8 bits.
  MOSS_ASSERT(base_gpa % kTableAlign == 0);
  // Tables without pointers first, so their sizes fix every offset.
  std::vector<uint8_t> dsdt = build_dsdt(), madt = build_madt(cpus);
  const size_t xsdt_size = kSdtHeaderSize + 2 * 8;
  const size_t xsdt_off = align_up(kRsdpSize);
  const size_t fadt_off = align_up(xsdt_off + xsdt_size);
  const size_t madt_off = align_up(fadt_off + kFadtSize);
  const size_t dsdt_off = align_up(madt_off + madt.size());
  const size_t end_off = dsdt_off + dsdt.size();

  std::vector<uint8_t> fadt = build_fadt(base_gpa + dsdt_off);
  std::vector<uint8_t> xsdt = build_xsdt({base_gpa + fadt_off, base_gpa + madt_off});
  std::vector<uint8_t> rsdp = build_rsdp(base_gpa + xsdt_off);
  MOSS_ASSERT(xsdt.size() == xsdt_size && fadt.size() == kFadtSize);

  std::vector<uint8_t> out(end_off, 0);
  auto place = [&](size_t off, const std::vector<uint8_t>& table) {
    std::memcpy(out.data() + off, table.data(), table.size());
  };
  place(0, rsdp);
  place(xsdt_off, xsdt);
  place(fadt_off, fadt);
  place(madt_off, madt);
  place(dsdt_off, dsdt);
  if (layout) {
    *layout = {base_gpa, base_gpa + xsdt_off, base_gpa + fadt_off, base_gpa + madt_off, base_gpa + dsdt_off,
               base_gpa + end_off};
  }
  return out;
}

std::optional<PowerEvent> decode_sleep_control_write(uint8_t value) {
  constexpr uint8_t kSlpTypShift = 2, kSlpTypMask = 0x7, kSlpEn = 1 << 5;  // 4.8.3.7.
  const uint8_t slp_typ = (value >> kSlpTypShift) & kSlpTypMask;
  if ((value & kSlpEn) && slp_typ == kAcpiS5SleepType) return PowerEvent::kPowerOff;
  return std::nullopt;
}

}  // namespace moss::boot
