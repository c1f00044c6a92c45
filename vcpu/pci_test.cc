#include "vcpu/pci.h"

#include <gtest/gtest.h>

namespace moss::pci {
namespace {

uint32_t cfg_read(Bus& bus, int slot, uint8_t reg, uint8_t size = 4) {
  bus.io_write(kConfigAddressPort, 4, 0x80000000u | (slot << 11) | (reg & 0xfc));
  return bus.io_read(static_cast<uint16_t>(kConfigDataPort + (reg & 3)), size);
}
void cfg_write(Bus& bus, int slot, uint8_t reg, uint32_t v, uint8_t size = 4) {
  bus.io_write(kConfigAddressPort, 4, 0x80000000u | (slot << 11) | (reg & 0xfc));
  bus.io_write(static_cast<uint16_t>(kConfigDataPort + (reg & 3)), size, v);
}

TEST(PciBus, HostBridgeAtSlotZeroAndEmptySlotsReadAllOnes) {
  Bus bus;
  EXPECT_EQ(cfg_read(bus, 0, 0), 0x00081b36u);
  EXPECT_EQ(cfg_read(bus, 0, 0x08) >> 8, 0x060000u);
  EXPECT_EQ(cfg_read(bus, 5, 0), 0xffffffffu);
  EXPECT_EQ(cfg_read(bus, 0, 0x02, 2), 0x0008u);  // Word access at an offset.
}

TEST(PciBus, DisabledAddressOrOtherBusReadsAllOnes) {
  Bus bus;
  bus.io_write(kConfigAddressPort, 4, 0x00000000u);
  EXPECT_EQ(bus.io_read(kConfigDataPort, 4), 0xffffffffu);
  bus.io_write(kConfigAddressPort, 4, 0x80010000u);  // Bus 1.
  EXPECT_EQ(bus.io_read(kConfigDataPort, 4), 0xffffffffu);
  // The address register reads back what was written (Linux's conf1 probe relies on it).
  EXPECT_EQ(bus.io_read(kConfigAddressPort, 4), 0x80010000u);
}

TEST(ConfigSpace, BarSizingProbeReturnsTheSize) {
  Bus bus;
  auto dev = std::make_shared<ConfigSpace>(0x1af4, 0x1042, 0x018000);
  dev->set_bar(0, Bar{0x4000, true, false}, 0xe0000000);
  int slot = bus.add(dev);
  EXPECT_EQ(cfg_read(bus, slot, 0x10), 0xe0000004u);
  cfg_write(bus, slot, 0x10, 0xffffffffu);
  cfg_write(bus, slot, 0x14, 0xffffffffu);
  EXPECT_EQ(cfg_read(bus, slot, 0x10), 0xffffc004u);  // Size 16 KiB, 64-bit memory BAR.
  EXPECT_EQ(cfg_read(bus, slot, 0x14), 0xffffffffu);
  cfg_write(bus, slot, 0x10, 0xd0000000u);
  cfg_write(bus, slot, 0x14, 0x1u);
  EXPECT_EQ(dev->bar_address(0), 0x1d0000000ull);
}

TEST(ConfigSpace, ReadOnlyFieldsIgnoreWritesAndCommandBitsStick) {
  Bus bus;
  auto dev = std::make_shared<ConfigSpace>(0x1af4, 0x1042, 0x018000);
  int slot = bus.add(dev);
  cfg_write(bus, slot, 0x00, 0x12345678u);
  EXPECT_EQ(cfg_read(bus, slot, 0x00), 0x10421af4u);
  EXPECT_FALSE(dev->memory_enabled());
  cfg_write(bus, slot, 0x04, 0xffff, 2);
  EXPECT_TRUE(dev->memory_enabled());
  EXPECT_EQ(cfg_read(bus, slot, 0x04, 2), 0x0407u);
}

TEST(ConfigSpace, CapabilitiesAreChained) {
  ConfigSpace dev(0x1af4, 0x1042, 0x018000);
  uint8_t a = dev.add_capability(0x09, {1, 2, 3}, {0, 0, 0});
  uint8_t b = dev.add_capability(0x11, {0, 0}, {0xff, 0xff});
  EXPECT_EQ(a, 0x40);
  EXPECT_EQ(b, 0x48);
  EXPECT_EQ(dev.read(0x34, 1), 0x40u);
  EXPECT_EQ(dev.read(0x41, 1), 0x48u);
  EXPECT_EQ(dev.read(0x49, 1), 0u);
  EXPECT_EQ(dev.read(0x06, 2) & 0x10, 0x10u);
  dev.write(0x4a, 2, 0xbeef);
  EXPECT_EQ(dev.read(0x4a, 2), 0xbeefu);
  dev.write(0x42, 1, 0xff);
  EXPECT_EQ(dev.read(0x42, 1), 1u);
}

TEST(ConfigSpace, OutOfRangeAccessesAreHarmless) {
  ConfigSpace dev(0x1af4, 0x1042, 0x018000);
  EXPECT_EQ(dev.read(254, 4), 0xffffffffu);
  dev.write(254, 4, 0);
}

}  // namespace
}  // namespace moss::pci
