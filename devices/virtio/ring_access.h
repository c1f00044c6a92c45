// Internal to devices/virtio: single-access loads and stores of the 16-bit ring fields that
// the driver and the device share (flags, idx, ring entries, used_event, avail_event).
//
// The other side writes these concurrently, so each is one aligned atomic access (never torn,
// never re-read by the compiler). The accesses themselves are relaxed; ordering against the
// data they publish is done with explicit fences at the call sites, where the reason is.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>

#include "base/result.h"

namespace moss::virtio::ring {

inline uint16_t* field16(std::span<uint8_t> ring, uint64_t offset) {
  // Offsets are computed by us from a validated size: out of range is our bug.
  MOSS_ASSERT(offset <= ring.size() && ring.size() - offset >= 2);
  auto* p = ring.data() + offset;
  MOSS_ASSERT(reinterpret_cast<uintptr_t>(p) % alignof(uint16_t) == 0);
  return reinterpret_cast<uint16_t*>(p);
}

inline uint16_t load16(std::span<uint8_t> ring, uint64_t offset) {
  return std::atomic_ref<uint16_t>(*field16(ring, offset)).load(std::memory_order_relaxed);
}

inline void store16(std::span<uint8_t> ring, uint64_t offset, uint16_t value) {
  std::atomic_ref<uint16_t>(*field16(ring, offset)).store(value, std::memory_order_relaxed);
}

}  // namespace moss::virtio::ring
