// PCI configuration space of one function (type 0 header), and configuration mechanism #1
// (ports 0xcf8/0xcfc) for a single bus.
//
// Pure models: the guest's config reads and writes in, register values out. A function
// declares which bits are writable; BARs answer the all-ones sizing probe with their size,
// as firmware and Linux expect. Thread-safety is the caller's.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace moss::pci {

constexpr uint16_t kConfigAddressPort = 0xcf8;
constexpr uint16_t kConfigDataPort = 0xcfc;  // Through 0xcff.
constexpr size_t kConfigSize = 256;
constexpr uint8_t kCapabilitiesOffset = 0x40;  // First capability; the header ends at 0x40.

struct Bar {
  uint64_t size = 0;     // Power of two, >= 16 for memory BARs; 0 = unused.
  bool is_64bit = true;  // Takes two BAR slots.
  bool prefetchable = false;
};

class ConfigSpace {
 public:
  ConfigSpace(uint16_t vendor, uint16_t device, uint32_t class_code, uint16_t subsystem_vendor = 0,
              uint16_t subsystem_id = 0, uint8_t revision = 1);

  // Memory BAR `index` (0-5) of `bar.size` bytes, placed at `address` (aligned to its size).
  void set_bar(int index, const Bar& bar, uint64_t address);
  // The address the guest has programmed into a memory BAR now (it may move it).
  uint64_t bar_address(int index) const;
  bool memory_enabled() const { return (read(0x04, 2) & 0x2) != 0; }
  // Appends a capability (id, next pointer left to us, then `body`); returns its offset.
  uint8_t add_capability(uint8_t id, const std::vector<uint8_t>& body, const std::vector<uint8_t>& writable_mask);
  void set_interrupt_pin(uint8_t pin, uint8_t line);

  uint32_t read(size_t offset, size_t size) const;
  void write(size_t offset, size_t size, uint32_t value);
  // Direct access for device models (e.g. MSI-X enable bits in their capability).
  uint8_t byte(size_t offset) const { return bytes_[offset]; }

 private:
  std::array<uint8_t, kConfigSize> bytes_{};
  std::array<uint8_t, kConfigSize> writable_{};  // Per-bit write mask.
  std::array<Bar, 6> bars_{};
  uint8_t last_cap_ = 0;     // Offset of the last capability, 0 if none.
  uint8_t next_cap_ = kCapabilitiesOffset;
};

// One bus of up to 32 single-function devices behind configuration mechanism #1. Slot 0 is
// the host bridge.
class Bus {
 public:
  Bus();
  // Places `config` at the first free slot; returns the slot.
  int add(std::shared_ptr<ConfigSpace> config);
  ConfigSpace* at(int slot) const { return slots_[static_cast<size_t>(slot)].get(); }

  uint32_t io_read(uint16_t port, uint8_t size);
  void io_write(uint16_t port, uint8_t size, uint32_t value);

 private:
  std::optional<std::pair<ConfigSpace*, size_t>> selected(uint16_t port) const;
  uint32_t address_ = 0;
  std::array<std::shared_ptr<ConfigSpace>, 32> slots_{};
};

}  // namespace moss::pci
