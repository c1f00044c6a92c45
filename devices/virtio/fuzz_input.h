// The input format of fuzz/fuzz_virtqueue_chain.cc and what the fuzzer does with an input
// (run()), shared with the seed tests (devices/virtio/fuzz_seeds_test.cc,
// tests/harness/fuzz_seeds_test.cc) so a seed is checked exactly as the fuzzer runs it.
//
//   Header (20 bytes, little-endian), then an image of guest memory: the first `low_len`
//   bytes go to the low region from gpa 0, the rest to the high region from its start.
//
// Guest memory is testing::TwoRegions (64 KiB, a 64 KiB hole, 64 KiB), so any queue
// position, ring address, descriptor and indirect table the fuzzer invents is checked against
// a map with a hole in it, and ASan sees each region as its own allocation.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "devices/virtio/queue.h"
#include "devices/virtio/test_memory.h"

namespace moss::virtio::fuzz {

struct Header {
  uint8_t size_log2;    // Queue size = 1 << (size_log2 % 16); big ones fail validation.
  uint8_t flags;        // kFlag*.
  uint16_t last_avail;  // The device's starting position (as after SET_VRING_BASE).
  uint32_t desc_gpa;
  uint32_t avail_gpa;
  uint32_t used_gpa;
  uint16_t low_len;     // Image bytes for the low region; the rest go to the high region.
  uint16_t reserved;
};
static_assert(sizeof(Header) == 20);

inline constexpr uint8_t kFlagEventIdx = 1;
inline constexpr uint8_t kFlagIndirect = 2;

struct Decoded {
  QueueConfig config;
  uint16_t last_avail;
};

// Zeroes `m` and fills it from `data`; nullopt if `data` is shorter than a header.
inline std::optional<Decoded> decode(std::span<const uint8_t> data, testing::TwoRegions& m) {
  if (data.size() < sizeof(Header)) return std::nullopt;
  Header h;
  std::memcpy(&h, data.data(), sizeof h);
  data = data.subspan(sizeof h);
  // memset, not std::fill: in a fuzz build a loop in this header is instrumented, and a
  // coverage callback per byte of 128 KiB cost 4 ms an input (250 executions a second).
  std::memset(m.low.data(), 0, m.low.size());
  std::memset(m.high.data(), 0, m.high.size());
  size_t low = std::min<size_t>({h.low_len, data.size(), m.low.size()});
  std::memcpy(m.low.data(), data.data(), low);
  data = data.subspan(low);
  std::memcpy(m.high.data(), data.data(), std::min(data.size(), m.high.size()));
  Decoded d;
  d.config.size = static_cast<uint16_t>(1u << (h.size_log2 % 16));
  d.config.desc_gpa = h.desc_gpa;
  d.config.avail_gpa = h.avail_gpa;
  d.config.used_gpa = h.used_gpa;
  d.config.event_idx = (h.flags & kFlagEventIdx) != 0;
  d.config.indirect = (h.flags & kFlagIndirect) != 0;
  d.last_avail = h.last_avail;
  return d;
}

// The inverse, keeping only the first `low_len` / `high_len` bytes of each region.
inline std::vector<uint8_t> encode(const QueueConfig& c, uint16_t last_avail,
                                   const testing::TwoRegions& m, uint16_t low_len,
                                   uint16_t high_len) {
  Header h{};
  h.size_log2 = static_cast<uint8_t>(std::countr_zero(static_cast<unsigned>(c.size)));
  h.flags = static_cast<uint8_t>((c.event_idx ? kFlagEventIdx : 0) | (c.indirect ? kFlagIndirect : 0));
  h.last_avail = last_avail;
  h.desc_gpa = static_cast<uint32_t>(c.desc_gpa);
  h.avail_gpa = static_cast<uint32_t>(c.avail_gpa);
  h.used_gpa = static_cast<uint32_t>(c.used_gpa);
  h.low_len = low_len;
  // Sized once and filled with memcpy (GCC 12 misreports vector::insert here as out of bounds).
  std::vector<uint8_t> out(sizeof h + low_len + high_len);
  std::memcpy(out.data(), &h, sizeof h);
  std::memcpy(out.data() + sizeof h, m.low.data(), low_len);
  std::memcpy(out.data() + sizeof h + low_len, m.high.data(), high_len);
  return out;
}

inline constexpr uint32_t kWalkedHeads = 4;   // Heads the pure walker is tried on.
inline constexpr int kMaxChainsRun = 64;      // Chains the queue loop takes at most.

// What fuzz_virtqueue_chain does with an input: decode it into `m`; the pure walker on the
// first kWalkedHeads heads, whatever the table holds (`on_walk(config, chain)` sees each chain it
// returns); then the queue as a lenient device runs it, at most kMaxChainsRun chains: pop a
// head, walk it (`on_chain(config, chain)` sees each chain and returns the bytes it wrote; a chain
// that fails to walk goes back with 0 written), push it used, ask whether to notify.
// Returns the first error the queue steps met: "" if none, "too short" without a header.
template <typename OnWalk, typename OnChain>
std::string run(std::span<const uint8_t> data, testing::TwoRegions& m, OnWalk&& on_walk, OnChain&& on_chain) {
  auto in = decode(data, m);
  if (!in) return "too short";
  const QueueConfig& config = in->config;
  for (uint32_t head = 0; head < std::min<uint32_t>(config.size, kWalkedHeads); ++head) {
    auto c = walk_chain(m.mem, config, static_cast<uint16_t>(head));
    if (c.ok()) on_walk(config, *c);
  }
  auto q = Queue::create(m.mem, config);
  if (!q.ok()) return q.error().message;
  std::string first_error;
  auto note = [&](const Error& e) {
    if (first_error.empty()) first_error = e.message;
  };
  q->set_last_avail_idx(in->last_avail);
  q->disable_notification();
  for (int i = 0; i < kMaxChainsRun; ++i) {
    auto head = q->pop_head();
    if (!head.ok()) {
      note(head.error());
      break;
    }
    if (!head->has_value()) break;
    MOSS_ASSERT(**head < config.size);  // pop_head() checks the guest's head.
    uint32_t written = 0;
    auto c = walk_chain(m.mem, config, **head);
    if (c.ok()) {
      written = on_chain(config, *c);
    } else {
      note(c.error());
    }
    // Fails only when the guest-written used->idx we started from says too much is in flight.
    auto pushed = q->push_used(**head, written);
    if (!pushed.ok()) {
      note(pushed.error());
      break;
    }
    (void)q->needs_notification();
  }
  (void)q->enable_notification();
  return first_error;
}

// run() with nothing checked or written: the outcome alone (the seed tests).
inline std::string run(std::span<const uint8_t> data) {
  testing::TwoRegions m;
  return run(
      data, m, [](const QueueConfig&, const DescriptorChain&) {},
      [](const QueueConfig&, const DescriptorChain&) { return uint32_t{0}; });
}

}  // namespace moss::virtio::fuzz
