// GuestMemory: a bounds-checked view of guest physical memory as the host maps it.
//
// Every access is checked against the region table with overflow-safe arithmetic, so a
// guest-controlled address or length can never reach outside the mapping. An access may not
// straddle two regions (real guests never need it for the structures we read).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "base/result.h"

namespace moss {

struct GuestRegion {
  uint64_t gpa = 0;       // Guest physical address of the first byte.
  uint64_t size = 0;      // Bytes.
  uint8_t* host = nullptr;  // Host mapping of the first byte.
};

class GuestMemory {
 public:
  GuestMemory() = default;
  explicit GuestMemory(std::vector<GuestRegion> regions) : regions_(std::move(regions)) {}

  const std::vector<GuestRegion>& regions() const { return regions_; }
  uint64_t total_size() const;

  // The host bytes for [gpa, gpa+len), or an error if any byte lies outside one region.
  Result<std::span<uint8_t>> slice(uint64_t gpa, uint64_t len) const;

  Result<void> write(uint64_t gpa, std::span<const uint8_t> bytes) const;
  Result<void> read(uint64_t gpa, std::span<uint8_t> out) const;

  template <typename T>
  Result<void> write_obj(uint64_t gpa, const T& obj) const {
    static_assert(std::is_trivially_copyable_v<T>);
    return write(gpa, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&obj), sizeof(T)));
  }
  template <typename T>
  Result<T> read_obj(uint64_t gpa) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T obj;
    auto r = read(gpa, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&obj), sizeof(T)));
    if (!r) return std::move(r).take_error();
    return obj;
  }

 private:
  std::vector<GuestRegion> regions_;
};

}  // namespace moss
