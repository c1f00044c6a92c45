#include "devices/blk/inflight.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>

namespace moss::blk {
namespace {

constexpr uint64_t kVersionOffset = 8;
constexpr uint64_t kDescNumOffset = 10;
constexpr uint64_t kLastBatchHeadOffset = 12;
constexpr uint64_t kUsedIdxOffset = 14;
constexpr uint64_t kInflightField = 0;  // Within a DescStateSplit.
constexpr uint64_t kNextField = 6;
constexpr uint64_t kCounterField = 8;

uint64_t desc_offset(uint16_t head, uint64_t field) {
  return InflightTracker::kHeaderBytes + uint64_t{head} * InflightTracker::kDescBytes + field;
}

// Single accesses to a naturally aligned field of the shared region (another process may
// read it at any time, and the frontend could write it: each value is read once).
template <typename T>
T load(std::span<uint8_t> r, uint64_t off) {
  MOSS_ASSERT(off + sizeof(T) <= r.size());
  return std::atomic_ref<T>(*reinterpret_cast<T*>(r.data() + off)).load(std::memory_order_relaxed);
}
template <typename T>
void store(std::span<uint8_t> r, uint64_t off, T v) {
  MOSS_ASSERT(off + sizeof(T) <= r.size());
  std::atomic_ref<T>(*reinterpret_cast<T*>(r.data() + off)).store(v, std::memory_order_relaxed);
}

// Orders the steps of the protocol: a reader after our death sees them in program order.
void step() { std::atomic_thread_fence(std::memory_order_release); }

Error region_error(const std::string& what) { return make_error("the inflight region " + what); }

}  // namespace

Result<InflightTracker> InflightTracker::attach(std::span<uint8_t> region, uint16_t capacity, uint16_t ring_size,
                                                uint16_t used_idx) {
  if (ring_size == 0 || ring_size > capacity) {
    return region_error("tracks " + std::to_string(capacity) + " descriptors, fewer than the ring's " +
                        std::to_string(ring_size));
  }
  uint64_t need = kHeaderBytes + kDescBytes * capacity;
  if (region.size() < need) return region_error("is smaller than its descriptor count needs");
  // Mappings are page-aligned and regions 64-byte aligned within them.
  MOSS_ASSERT(reinterpret_cast<uintptr_t>(region.data()) % alignof(uint64_t) == 0);
  InflightTracker t(region.first(need));
  t.ring_size_ = ring_size;
  std::span<uint8_t> r = t.region_;

  uint16_t version = load<uint16_t>(r, kVersionOffset);
  if (version == 0) {
    // Never used: start clean (SET_INFLIGHT_FD may hand us any bytes at version 0).
    std::memset(r.data(), 0, r.size());
    store<uint16_t>(r, kDescNumOffset, capacity);
    store<uint16_t>(r, kUsedIdxOffset, used_idx);
    step();
    store<uint16_t>(r, kVersionOffset, kVersion);
    t.fresh_ = true;
    return t;
  }
  if (version != kVersion) return region_error("has version " + std::to_string(version) + "; moss knows version 1");
  uint16_t desc_num = load<uint16_t>(r, kDescNumOffset);
  if (desc_num != capacity) {
    return region_error("describes " + std::to_string(desc_num) + " descriptors but the buffer was set up for " +
                        std::to_string(capacity));
  }

  // The writer may have died after publishing used->idx and before clearing the heads of
  // that batch: they are done, clear them (the spec's reconnect step 1).
  uint16_t region_used = load<uint16_t>(r, kUsedIdxOffset);
  if (region_used != used_idx) {
    uint16_t batch = static_cast<uint16_t>(used_idx - region_used);
    if (batch > ring_size) {
      return region_error("records used index " + std::to_string(region_used) + " but the used ring is at " +
                          std::to_string(used_idx) + ", further apart than one batch can be");
    }
    uint16_t head = load<uint16_t>(r, kLastBatchHeadOffset);
    for (uint16_t i = 0; i < batch; i++) {
      if (head >= ring_size) return region_error("links its last batch through a head outside the ring");
      store<uint8_t>(r, desc_offset(head, kInflightField), 0);
      head = load<uint16_t>(r, desc_offset(head, kNextField));
    }
    step();
    store<uint16_t>(r, kUsedIdxOffset, used_idx);
  }

  struct Entry {
    uint64_t counter;
    uint16_t head;
  };
  std::vector<Entry> live;
  for (uint32_t i = 0; i < capacity; i++) {
    uint16_t head = static_cast<uint16_t>(i);
    uint8_t flag = load<uint8_t>(r, desc_offset(head, kInflightField));
    if (flag == 0) continue;
    if (flag != 1) return region_error("marks descriptor " + std::to_string(i) + " with an invalid in-flight value");
    if (head >= ring_size) return region_error("marks descriptor " + std::to_string(i) + " in flight, outside the ring");
    live.push_back({load<uint64_t>(r, desc_offset(head, kCounterField)), head});
  }
  std::sort(live.begin(), live.end(), [](const Entry& a, const Entry& b) {
    return a.counter != b.counter ? a.counter < b.counter : a.head < b.head;
  });
  for (const Entry& e : live) t.resubmit_.push_back(e.head);
  if (!live.empty()) t.counter_ = live.back().counter + 1;
  return t;
}

void InflightTracker::mark(uint16_t head) {
  MOSS_ASSERT(head < ring_size_);
  store<uint64_t>(region_, desc_offset(head, kCounterField), counter_++);
  step();
  store<uint8_t>(region_, desc_offset(head, kInflightField), 1);
  step();
}

void InflightTracker::before_push(uint16_t head) {
  MOSS_ASSERT(head < ring_size_);
  // A batch of one: the device publishes each used element on its own.
  store<uint16_t>(region_, desc_offset(head, kNextField), load<uint16_t>(region_, kLastBatchHeadOffset));
  store<uint16_t>(region_, kLastBatchHeadOffset, head);
  step();
}

void InflightTracker::after_push(uint16_t head, uint16_t new_used_idx) {
  MOSS_ASSERT(head < ring_size_);
  step();
  store<uint8_t>(region_, desc_offset(head, kInflightField), 0);
  step();
  store<uint16_t>(region_, kUsedIdxOffset, new_used_idx);
}

}  // namespace moss::blk
