#include "vcpu/pci.h"

#include <cstring>

#include "base/result.h"

namespace moss::pci {
namespace {
constexpr size_t kVendorId = 0x00, kCommand = 0x04, kStatus = 0x06, kRevision = 0x08, kClass = 0x09;
constexpr size_t kHeaderType = 0x0e, kBar0 = 0x10, kSubsystemVendor = 0x2c, kSubsystemId = 0x2e;
constexpr size_t kCapPointer = 0x34, kInterruptLine = 0x3c, kInterruptPin = 0x3d;
constexpr uint16_t kStatusCapList = 0x10;
// Command: I/O space, memory space, bus master, INTx disable are the bits a guest may set.
constexpr uint16_t kCommandWritable = 0x0001 | 0x0002 | 0x0004 | 0x0400;
constexpr uint32_t kBarMem64 = 0x4, kBarPrefetch = 0x8;
constexpr uint32_t kConfigEnable = 0x80000000u;

void put(std::array<uint8_t, kConfigSize>& b, size_t off, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; i++) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}
}  // namespace

ConfigSpace::ConfigSpace(uint16_t vendor, uint16_t device, uint32_t class_code, uint16_t subsystem_vendor,
                         uint16_t subsystem_id, uint8_t revision) {
  put(bytes_, kVendorId, vendor, 2);
  put(bytes_, kVendorId + 2, device, 2);
  bytes_[kRevision] = revision;
  put(bytes_, kClass, class_code, 3);  // Programming interface, subclass, class.
  bytes_[kHeaderType] = 0;             // Type 0, single function.
  put(bytes_, kSubsystemVendor, subsystem_vendor, 2);
  put(bytes_, kSubsystemId, subsystem_id, 2);
  put(writable_, kCommand, kCommandWritable, 2);
  writable_[kInterruptLine] = 0xff;
}

void ConfigSpace::set_bar(int index, const Bar& bar, uint64_t address) {
  MOSS_ASSERT(index >= 0 && index < 6 && (!bar.is_64bit || index < 5));
  MOSS_ASSERT(bar.size >= 16 && (bar.size & (bar.size - 1)) == 0 && (address & (bar.size - 1)) == 0);
  bars_[static_cast<size_t>(index)] = bar;
  size_t off = kBar0 + 4 * static_cast<size_t>(index);
  uint64_t flags = (bar.is_64bit ? kBarMem64 : 0) | (bar.prefetchable ? kBarPrefetch : 0);
  uint64_t mask = ~(bar.size - 1);  // Address bits the guest may write; the rest read as the size.
  put(bytes_, off, address | flags, bar.is_64bit ? 8 : 4);
  put(writable_, off, mask & ~0xfull, bar.is_64bit ? 8 : 4);
}

uint64_t ConfigSpace::bar_address(int index) const {
  size_t off = kBar0 + 4 * static_cast<size_t>(index);
  uint64_t v = read(off, 4) & ~0xfull;
  if (bars_[static_cast<size_t>(index)].is_64bit) v |= static_cast<uint64_t>(read(off + 4, 4)) << 32;
  return v;
}

uint8_t ConfigSpace::add_capability(uint8_t id, const std::vector<uint8_t>& body,
                                    const std::vector<uint8_t>& writable_mask) {
  MOSS_ASSERT(writable_mask.size() == body.size());
  size_t len = (2 + body.size() + 3) & ~size_t{3};
  MOSS_ASSERT(next_cap_ + len <= kConfigSize);
  uint8_t off = next_cap_;
  bytes_[off] = id;
  bytes_[off + 1] = 0;
  std::memcpy(&bytes_[off + 2], body.data(), body.size());
  std::memcpy(&writable_[off + 2], writable_mask.data(), writable_mask.size());
  if (last_cap_) bytes_[last_cap_ + 1] = off;
  else bytes_[kCapPointer] = off;
  put(bytes_, kStatus, kStatusCapList, 2);
  last_cap_ = off;
  next_cap_ = static_cast<uint8_t>(off + len);
  return off;
}

void ConfigSpace::set_interrupt_pin(uint8_t pin, uint8_t line) {
  bytes_[kInterruptPin] = pin;
  bytes_[kInterruptLine] = line;
}

uint32_t ConfigSpace::read(size_t offset, size_t size) const {
  MOSS_ASSERT(size == 1 || size == 2 || size == 4);
  if (offset + size > kConfigSize) return 0xffffffffu >> (32 - 8 * size);
  uint32_t v = 0;
  for (size_t i = 0; i < size; i++) v |= static_cast<uint32_t>(bytes_[offset + i]) << (8 * i);
  return v;
}

void ConfigSpace::write(size_t offset, size_t size, uint32_t value) {
  MOSS_ASSERT(size == 1 || size == 2 || size == 4);
  if (offset + size > kConfigSize) return;
  for (size_t i = 0; i < size; i++) {
    uint8_t m = writable_[offset + i];
    uint8_t b = static_cast<uint8_t>(value >> (8 * i));
    bytes_[offset + i] = static_cast<uint8_t>((bytes_[offset + i] & ~m) | (b & m));
  }
}

Bus::Bus() {
  // Host bridge: Red Hat's generic PCIe host bridge id, class 06/00/00.
  slots_[0] = std::make_shared<ConfigSpace>(0x1b36, 0x0008, 0x060000);
}

int Bus::add(std::shared_ptr<ConfigSpace> config) {
  for (size_t i = 1; i < slots_.size(); i++) {
    if (!slots_[i]) {
      slots_[i] = std::move(config);
      return static_cast<int>(i);
    }
  }
  MOSS_ASSERT(!"PCI bus full");
  return -1;
}

std::optional<std::pair<ConfigSpace*, size_t>> Bus::selected(uint16_t port) const {
  if (!(address_ & kConfigEnable)) return std::nullopt;
  uint32_t bus = (address_ >> 16) & 0xff, slot = (address_ >> 11) & 0x1f, function = (address_ >> 8) & 0x7;
  if (bus != 0 || function != 0 || !slots_[slot]) return std::nullopt;
  return std::make_pair(slots_[slot].get(), (address_ & 0xfc) + (port - kConfigDataPort));
}

uint32_t Bus::io_read(uint16_t port, uint8_t size) {
  const uint32_t none = size == 4 ? 0xffffffffu : (1u << (8 * size)) - 1;
  if (port == kConfigAddressPort && size == 4) return address_;
  if (port < kConfigDataPort || port + size > kConfigDataPort + 4) return none;
  auto sel = selected(port);
  return sel ? sel->first->read(sel->second, size) : none;  // Absent devices read all-ones.
}

void Bus::io_write(uint16_t port, uint8_t size, uint32_t value) {
  if (port == kConfigAddressPort && size == 4) {
    address_ = value & 0x80fffffcu;  // Enable, bus, device, function, dword register.
    return;
  }
  if (port < kConfigDataPort || port + size > kConfigDataPort + 4) return;
  if (auto sel = selected(port)) sel->first->write(sel->second, size, value);
}

}  // namespace moss::pci
