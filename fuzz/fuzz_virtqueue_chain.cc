// libFuzzer target: the device side of a split virtqueue (devices/virtio/queue.h) over guest
// memory built from the input (format and steps: devices/virtio/fuzz_input.h): ring
// placement, queue size, features, the device's starting position, and every byte of the
// rings, descriptors, indirect tables and buffers. It walks the first heads with the pure
// walker, then runs the queue like a device would (pop, read, write, push used, notification
// decisions), checking that every span the walker returns lies inside a region and adds up
// to the totals.
#include <cstddef>
#include <cstdint>
#include <span>

#include "devices/virtio/fuzz_input.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/test_memory.h"

namespace {

using moss::virtio::DescriptorChain;
using moss::virtio::QueueConfig;
using moss::virtio::testing::TwoRegions;

bool inside(const std::vector<uint8_t>& region, const uint8_t* p, size_t n) {
  auto base = reinterpret_cast<uintptr_t>(region.data()), at = reinterpret_cast<uintptr_t>(p);
  return at >= base && at - base <= region.size() && region.size() - (at - base) >= n;
}

template <typename Span>
uint64_t checked_total(const TwoRegions& m, const std::vector<Span>& spans) {
  uint64_t total = 0;
  for (const auto& s : spans) {
    if (s.empty()) __builtin_trap();
    if (!inside(m.low, s.data(), s.size()) && !inside(m.high, s.data(), s.size())) __builtin_trap();
    total += s.size();
  }
  return total;
}

void check_chain(const TwoRegions& m, const moss::virtio::QueueConfig& config, const DescriptorChain& c) {
  if (checked_total(m, c.readable) != c.readable_bytes) __builtin_trap();
  if (checked_total(m, c.writable) != c.writable_bytes) __builtin_trap();
  if (c.readable_bytes + c.writable_bytes > moss::virtio::kMaxChainBytes) __builtin_trap();
  if (c.descriptors > config.size + moss::virtio::kMaxIndirectDescriptors) __builtin_trap();
}

// What a device does with a chain: parse a little, read the rest in place, answer.
uint32_t serve(const DescriptorChain& c) {
  moss::virtio::ChainReader r(c);
  uint8_t buf[512];
  (void)r.read_obj<uint32_t>();  // May fail on a short chain: that is a guest error.
  uint64_t n = std::min<uint64_t>(r.remaining(), sizeof buf);
  if (!r.read(std::span(buf, n)).ok()) __builtin_trap();
  if (!r.take(r.remaining()).ok()) __builtin_trap();
  moss::virtio::ChainWriter w(c);
  n = std::min<uint64_t>(w.remaining(), sizeof buf);
  if (!w.write(std::span<const uint8_t>(buf, n)).ok()) __builtin_trap();
  if (!w.take(w.remaining()).ok()) __builtin_trap();
  return static_cast<uint32_t>(w.written());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Reused across inputs (decode zeroes it): two 64 KiB allocations per input would dominate.
  static TwoRegions* m = new TwoRegions;
  // The steps are fuzz_input.h's run(), which the seed tests run too; the checks are here.
  (void)moss::virtio::fuzz::run(
      {data, size}, *m, [&](const QueueConfig& config, const DescriptorChain& c) { check_chain(*m, config, c); },
      [&](const QueueConfig& config, const DescriptorChain& c) {
        check_chain(*m, config, c);
        return serve(c);
      });
  return 0;
}
