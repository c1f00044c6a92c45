#include "vcpu/acpi.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "vcpu/mptable.h"

namespace moss::boot {
namespace {

uint8_t sum(const uint8_t* p, size_t n) {
  uint8_t s = 0;
  for (size_t i = 0; i < n; i++) s = static_cast<uint8_t>(s + p[i]);
  return s;
}

// Reads the tables back by guest physical address, as a guest would.
struct Tables {
  uint64_t base;
  std::vector<uint8_t> bytes;
  AcpiLayout layout;

  const uint8_t* at(uint64_t gpa, size_t n) const {
    EXPECT_GE(gpa, base);
    EXPECT_LE(gpa - base + n, bytes.size());
    return bytes.data() + (gpa - base);
  }
  template <typename T>
  T get(uint64_t gpa) const {
    T v;
    std::memcpy(&v, at(gpa, sizeof v), sizeof v);
    return v;
  }
  std::string sig(uint64_t gpa) const { return std::string(reinterpret_cast<const char*>(at(gpa, 4)), 4); }
  uint32_t length(uint64_t gpa) const { return get<uint32_t>(gpa + 4); }
  std::vector<uint8_t> table(uint64_t gpa) const {
    const uint8_t* p = at(gpa, length(gpa));
    return {p, p + length(gpa)};
  }
};

Tables build(uint32_t cpus, uint64_t base = kAcpiGpa) {
  Tables t{base, {}, {}};
  t.bytes = build_acpi_tables(base, cpus, &t.layout);
  return t;
}

TEST(Acpi, RsdpHasBothChecksumsAndPointsAtTheXsdt) {
  auto t = build(2);
  EXPECT_EQ(t.layout.rsdp, kAcpiGpa);
  const uint8_t* r = t.at(t.layout.rsdp, 36);
  EXPECT_EQ(std::memcmp(r, "RSD PTR ", 8), 0);
  EXPECT_EQ(sum(r, 20), 0);
  EXPECT_EQ(sum(r, 36), 0);
  EXPECT_EQ(r[15], 2);                            // Revision.
  EXPECT_EQ(t.get<uint32_t>(t.layout.rsdp + 20), 36u);  // Length.
  EXPECT_EQ(t.get<uint64_t>(t.layout.rsdp + 24), t.layout.xsdt);
  EXPECT_EQ(t.layout.rsdp % 16, 0u);  // Linux scans on 16-byte boundaries.
}

TEST(Acpi, EveryTableChecksumsToZeroWithTheRightSignatureAndLength) {
  for (uint32_t cpus : {1u, 2u, 8u, 254u}) {
    auto t = build(cpus);
    struct {
      uint64_t gpa;
      const char* sig;
      uint32_t len;  // 0: depends on the contents.
    } tables[] = {{t.layout.xsdt, "XSDT", 36 + 2 * 8},
                  {t.layout.fadt, "FACP", 276},
                  {t.layout.madt, "APIC", 44 + 8 * cpus + 12 + 6},
                  {t.layout.dsdt, "DSDT", 0}};
    for (auto& e : tables) {
      SCOPED_TRACE(std::string(e.sig) + " with " + std::to_string(cpus) + " cpus");
      EXPECT_EQ(t.sig(e.gpa), e.sig);
      if (e.len) {
        EXPECT_EQ(t.length(e.gpa), e.len);
      }
      EXPECT_EQ(sum(t.at(e.gpa, t.length(e.gpa)), t.length(e.gpa)), 0);
      EXPECT_EQ(e.gpa % 16, 0u);
    }
  }
}

TEST(Acpi, XsdtListsTheFadtAndMadtAndTheFadtPointsAtTheDsdt) {
  auto t = build(4);
  ASSERT_EQ(t.length(t.layout.xsdt), 52u);
  EXPECT_EQ(t.get<uint64_t>(t.layout.xsdt + 36), t.layout.fadt);
  EXPECT_EQ(t.get<uint64_t>(t.layout.xsdt + 44), t.layout.madt);
  EXPECT_EQ(t.get<uint32_t>(t.layout.fadt + 40), t.layout.dsdt);   // DSDT.
  EXPECT_EQ(t.get<uint64_t>(t.layout.fadt + 140), t.layout.dsdt);  // X_DSDT.
  EXPECT_EQ(t.sig(t.layout.dsdt), "DSDT");
}

TEST(Acpi, FadtIsHardwareReducedWithIoSleepRegistersAndNoFacs) {
  auto t = build(1);
  uint64_t f = t.layout.fadt;
  EXPECT_EQ(t.at(f, 9)[8], 6);         // Revision 6...
  EXPECT_EQ(t.at(f + 131, 1)[0], 3);   // ...minor 3: ACPI 6.3.
  uint32_t flags = t.get<uint32_t>(f + 112);
  EXPECT_TRUE(flags & (1u << 20));     // HW_REDUCED_ACPI.
  EXPECT_TRUE(flags & (1u << 10));     // RESET_REG_SUP.
  EXPECT_EQ(t.get<uint32_t>(f + 36), 0u);  // FIRMWARE_CTRL.
  EXPECT_EQ(t.get<uint64_t>(f + 132), 0u); // X_FIRMWARE_CTRL.
  uint16_t boot_arch = t.get<uint16_t>(f + 109);
  EXPECT_TRUE(boot_arch & (1 << 1));   // 8042 present.
  EXPECT_TRUE(boot_arch & (1 << 2));   // VGA not present.
  EXPECT_TRUE(boot_arch & (1 << 5));   // CMOS RTC not present.
  EXPECT_FALSE(boot_arch & (1 << 3));  // MSI allowed.
  // Generic address structures: System I/O, 8 bits at offset 0, byte access.
  auto gas = [&](uint64_t gpa, uint16_t port) {
    const uint8_t* g = t.at(gpa, 12);
    EXPECT_EQ(g[0], 1);
    EXPECT_EQ(g[1], 8);
    EXPECT_EQ(g[2], 0);
    EXPECT_EQ(g[3], 1);
    EXPECT_EQ(t.get<uint64_t>(gpa + 4), port);
  };
  gas(f + 244, kAcpiSleepControlPort);
  gas(f + 256, kAcpiSleepStatusPort);
  gas(f + 116, 0x64);                  // RESET_REG: the i8042 command port...
  EXPECT_EQ(t.at(f + 128, 1)[0], 0xfe);  // ...pulsing reset.
  // No fixed-hardware register blocks: PM1a/b event and control, PM2, PM timer, GPE0/1.
  for (size_t off = 56; off < 88; off++) EXPECT_EQ(t.at(f + off, 1)[0], 0) << "offset " << off;
  for (size_t off = 148; off < 244; off++) EXPECT_EQ(t.at(f + off, 1)[0], 0) << "offset " << off;
}

TEST(Acpi, MadtListsEveryCpuAndTheIoapicWithoutOverrides) {
  for (uint32_t cpus : {1u, 3u, 64u}) {
    SCOPED_TRACE(std::to_string(cpus) + " cpus");
    auto t = build(cpus);
    auto madt = t.table(t.layout.madt);
    uint32_t lapic_addr, flags;
    std::memcpy(&lapic_addr, &madt[36], 4);
    std::memcpy(&flags, &madt[40], 4);
    EXPECT_EQ(lapic_addr, kLapicGpa);
    EXPECT_EQ(flags, 1u);  // PCAT_COMPAT.
    std::vector<uint32_t> apic_ids;
    int ioapics = 0, nmis = 0, others = 0;
    for (size_t off = 44; off < madt.size();) {
      const uint8_t* e = &madt[off];
      ASSERT_GE(e[1], 2);
      ASSERT_LE(off + e[1], madt.size());
      if (e[0] == 0) {
        ASSERT_EQ(e[1], 8);
        EXPECT_EQ(e[2], e[3]);  // Processor UID == APIC id.
        EXPECT_EQ(e[4] & 1, 1);  // Enabled.
        apic_ids.push_back(e[3]);
      } else if (e[0] == 1) {
        ASSERT_EQ(e[1], 12);
        uint32_t addr, gsi_base;
        std::memcpy(&addr, e + 4, 4);
        std::memcpy(&gsi_base, e + 8, 4);
        EXPECT_EQ(e[2], cpus);  // The IOAPIC id follows the APIC ids, as in the MP table.
        EXPECT_EQ(addr, kIoapicGpa);
        EXPECT_EQ(gsi_base, 0u);
        ioapics++;
      } else if (e[0] == 4) {
        ASSERT_EQ(e[1], 6);
        EXPECT_EQ(e[2], 0xff);  // All processors.
        EXPECT_EQ(e[5], 1);     // LINT1.
        nmis++;
      } else {
        others++;  // Interrupt source overrides (type 2) included: ISA IRQ n is GSI n.
      }
      off += e[1];
    }
    ASSERT_EQ(apic_ids.size(), cpus);
    for (uint32_t i = 0; i < cpus; i++) EXPECT_EQ(apic_ids[i], i);
    EXPECT_EQ(ioapics, 1);
    EXPECT_EQ(nmis, 1);
    EXPECT_EQ(others, 0);
  }
}

bool contains(const std::vector<uint8_t>& hay, const std::vector<uint8_t>& needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

TEST(Acpi, DsdtDefinesS5AsSleepType5InHandCheckedAml) {
  auto t = build(1);
  auto dsdt = t.table(t.layout.dsdt);
  EXPECT_EQ(dsdt[8], 2);  // Revision 2: 64-bit integers.
  // Name(\_S5_, Package(){5, 0, 0, 0}), the last object of the table:
  // NameOp, RootChar '\', "_S5_", PackageOp, PkgLength 7 (itself + count + 5 bytes of
  // elements), NumElements 4, BytePrefix 5, ZeroOp x3.
  const std::vector<uint8_t> s5 = {0x08, 0x5c, '_', 'S', '5', '_', 0x12, 0x07, 0x04, 0x0a, 0x05, 0x00, 0x00, 0x00};
  ASSERT_GE(dsdt.size(), 36 + s5.size());
  EXPECT_TRUE(std::equal(s5.begin(), s5.end(), dsdt.end() - static_cast<ptrdiff_t>(s5.size())));
}

TEST(Acpi, DsdtDescribesTheUartAndI8042WithTheirIsaInterrupts) {
  auto t = build(1);
  auto dsdt = t.table(t.layout.dsdt);
  // Scope(\_SB_) opens the body: 172 bytes of contents (COM1 40, PS2K 48, PCI0 79, the
  // name 5) need a two-byte PkgLength of 174: lead byte 0x40 | (174 & 0xf), then 174 >> 4.
  const std::vector<uint8_t> scope = {0x10, 0x4e, 0x0a, 0x5c, '_', 'S', 'B', '_'};
  EXPECT_TRUE(std::equal(scope.begin(), scope.end(), dsdt.begin() + 36));
  // Device(COM1) { Name(_HID, EisaId("PNP0501")) Name(_CRS, ResourceTemplate() {
  //   IO(Decode16, 0x3f8, 0x3f8, 1, 8) IRQ(Edge, ActiveHigh, Exclusive) {4} }) }
  const std::vector<uint8_t> com1 = {
      0x5b, 0x82, 0x26, 'C', 'O', 'M', '1',                      // DeviceOp, PkgLength 38.
      0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x05, 0x01,    // EISA id PNP0501.
      0x08, '_', 'C', 'R', 'S', 0x11, 0x11, 0x0a, 0x0e,          // Buffer, PkgLength 17, 14 bytes.
      0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08,            // I/O 0x3f8, 8 ports.
      0x23, 0x10, 0x00, 0x01,                                    // IRQ 4, edge, high, exclusive.
      0x79, 0x00};                                               // End tag.
  EXPECT_TRUE(contains(dsdt, com1));
  // Device(PS2K): EISA id PNP0303, I/O 0x60 and 0x64 (one port each), IRQ 1.
  const std::vector<uint8_t> ps2k_id = {0x5b, 0x82, 0x2e, 'P', 'S', '2', 'K', 0x08, '_', 'H', 'I', 'D',
                                        0x0c, 0x41, 0xd0, 0x03, 0x03};
  const std::vector<uint8_t> ps2k_crs = {0x47, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01, 0x47, 0x01, 0x64, 0x00,
                                         0x64, 0x00, 0x01, 0x01, 0x23, 0x02, 0x00, 0x01, 0x79, 0x00};
  EXPECT_TRUE(contains(dsdt, ps2k_id));
  EXPECT_TRUE(contains(dsdt, ps2k_crs));
}

TEST(Acpi, DsdtDescribesThePciHostBridgeAndItsWindows) {
  auto t = build(1);
  auto dsdt = t.table(t.layout.dsdt);
  // Device(PCI0) { Name(_HID, EisaId("PNP0A03")) Name(_CRS, ResourceTemplate() {
  //   WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0, 0, 1)
  //   IO(Decode16, 0xcf8, 0xcf8, 1, 8)
  //   DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
  //               0, 0xc0000000, 0xfebfffff, 0, 0x3ec00000) }) }
  const std::vector<uint8_t> pci0 = {
      0x5b, 0x82, 0x4d, 0x04, 'P', 'C', 'I', '0',                // DeviceOp, PkgLength 75 + 2.
      0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03,    // EISA id PNP0A03.
      0x08, '_', 'C', 'R', 'S', 0x11, 0x37, 0x0a, 0x34,          // Buffer, PkgLength 55, 52 bytes.
      0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00,                        // Word address space: bus numbers,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,  // 0..0, length 1.
      0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08,            // I/O 0xcf8, 8 ports.
      0x87, 0x17, 0x00, 0x00, 0x0c, 0x01,                        // DWord memory, read-write:
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0,            // granularity 0, min 0xc0000000,
      0xff, 0xff, 0xbf, 0xfe, 0x00, 0x00, 0x00, 0x00,            // max 0xfebfffff, translation 0,
      0x00, 0x00, 0xc0, 0x3e,                                    // length 0x3ec00000.
      0x79, 0x00};
  EXPECT_TRUE(contains(dsdt, pci0));
}

// An independent AML implementation reads our DSDT back: ACPICA's disassembler (iasl -d),
// the interpreter Linux itself uses.
TEST(Acpi, AcpicaDisassemblesTheDsdtIntoTheDevicesWeMeant) {
  if (std::system("command -v iasl >/dev/null 2>&1") != 0) GTEST_SKIP() << "SKIP: iasl (acpica-tools) is not installed";
  auto t = build(2);
  auto dsdt = t.table(t.layout.dsdt);
  char dir[] = "/tmp/moss-acpi-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string aml = std::string(dir) + "/dsdt.aml", dsl = std::string(dir) + "/dsdt.dsl";
  FILE* f = std::fopen(aml.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fwrite(dsdt.data(), 1, dsdt.size(), f), dsdt.size());
  std::fclose(f);
  ASSERT_EQ(std::system(("iasl -d " + aml + " >/dev/null 2>&1").c_str()), 0);
  std::string text;
  if (FILE* in = std::fopen(dsl.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, in)) > 0) text.append(buf, n);
    std::fclose(in);
  }
  EXPECT_EQ(std::system(("rm -rf " + std::string(dir)).c_str()), 0);
  for (const char* want : {"Device (COM1)", "EisaId (\"PNP0501\")", "Device (PS2K)", "Device (PCI0)",
                           "EisaId (\"PNP0A03\")", "WordBusNumber (ResourceProducer, MinFixed, MaxFixed",
                           "IO (Decode16,", "0x0CF8,", "DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,",
                           "0xC0000000,", "0xFEBFFFFF,", "Name (\\_S5, Package (0x04)"}) {
    EXPECT_NE(text.find(want), std::string::npos) << "missing " << want << " in:\n" << text;
  }
}

TEST(Acpi, EverythingFitsTheReservedBiosArea) {
  for (uint32_t cpus : {1u, 254u}) {
    auto t = build(cpus);
    EXPECT_EQ(t.bytes.size(), t.layout.end - kAcpiGpa);
    EXPECT_LE(t.layout.end, kAcpiEndGpa);
    EXPECT_LT(t.layout.rsdp, t.layout.xsdt);
    EXPECT_LT(t.layout.xsdt, t.layout.fadt);
    EXPECT_LT(t.layout.fadt, t.layout.madt);
    EXPECT_LT(t.layout.madt, t.layout.dsdt);
    EXPECT_LE(t.layout.dsdt + t.length(t.layout.dsdt), t.layout.end);
  }
}

TEST(Acpi, TablesFollowTheBaseAddress) {
  auto t = build(2, 0xe0000);
  EXPECT_EQ(t.layout.rsdp, 0xe0000u);
  EXPECT_EQ(t.get<uint64_t>(t.layout.rsdp + 24), t.layout.xsdt);
  EXPECT_EQ(t.get<uint64_t>(t.layout.xsdt + 36), t.layout.fadt);
  EXPECT_EQ(t.sig(t.layout.fadt), "FACP");
}

TEST(Acpi, SleepControlDecoderRecognisesExactlyS5WithSleepEnable) {
  EXPECT_EQ(decode_sleep_control_write((5 << 2) | (1 << 5)), PowerEvent::kPowerOff);
  for (unsigned v = 0; v < 256; v++) {
    bool s5_enable = ((v >> 2) & 7) == 5 && (v & 0x20);
    EXPECT_EQ(decode_sleep_control_write(static_cast<uint8_t>(v)).has_value(), s5_enable) << "value " << v;
  }
  EXPECT_FALSE(decode_sleep_control_write(5 << 2).has_value());     // SLP_TYP without SLP_EN.
  EXPECT_FALSE(decode_sleep_control_write(0x80).has_value());       // WAK_STS is a status bit.
  EXPECT_FALSE(decode_sleep_control_write((3 << 2) | 0x20).has_value());  // S3: not offered.
}

}  // namespace
}  // namespace moss::boot
