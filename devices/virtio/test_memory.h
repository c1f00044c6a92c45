// Test helper: guest memory of two 64 KiB regions with a 64 KiB hole between them, each region
// its own heap allocation so AddressSanitizer reports any access that escapes a region.
#pragma once

#include <cstdint>
#include <vector>

#include "base/guest_memory.h"

namespace moss::virtio::testing {

inline constexpr uint64_t kRegionSize = 0x10000;
inline constexpr uint64_t kLowGpa = 0x0;       // [0x00000, 0x10000)
inline constexpr uint64_t kHoleGpa = 0x10000;  // [0x10000, 0x20000) is not RAM.
inline constexpr uint64_t kHighGpa = 0x20000;  // [0x20000, 0x30000)

struct TwoRegions {
  std::vector<uint8_t> low = std::vector<uint8_t>(kRegionSize);
  std::vector<uint8_t> high = std::vector<uint8_t>(kRegionSize);
  GuestMemory mem{{{kLowGpa, kRegionSize, low.data()}, {kHighGpa, kRegionSize, high.data()}}};

  TwoRegions() = default;
  TwoRegions(const TwoRegions&) = delete;  // mem points into the vectors.
  TwoRegions& operator=(const TwoRegions&) = delete;
};

}  // namespace moss::virtio::testing
