// The input format of fuzz/fuzz_null_request.cc, shared with the test that writes and checks
// its seeds (request_test.cc), so the checked-in seeds always decode the way the fuzzer reads
// them.
//
//   u16 split (readable | writable), u8 cut in the readable part, u8 cut in the writable part,
//   u8 capacity in 4 KiB units, then the chain's bytes: readable first, then writable, each
//   part cut into two segments.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "devices/blk/request.h"
#include "devices/virtio/queue.h"

namespace moss::null::fuzz {

inline constexpr size_t kHeaderBytes = 5;

struct Decoded {
  std::vector<uint8_t> bytes;  // The chain's buffers point in here.
  virtio::DescriptorChain chain;
  blk::DiskGeometry disk;
};

// nullopt if `data` is shorter than the header. The returned chain points into `out.bytes`.
inline std::optional<Decoded> decode(std::span<const uint8_t> data, Decoded& out) {
  if (data.size() < kHeaderBytes) return std::nullopt;
  out.bytes.assign(data.begin() + kHeaderBytes, data.end());
  out.chain = {};
  const size_t n = out.bytes.size();
  const size_t split = static_cast<size_t>(data[0] | (data[1] << 8)) % (n + 1);
  const size_t cut_r = data[2] % (split + 1), cut_w = split + data[3] % (n - split + 1);
  auto add = [&](bool writable, size_t from, size_t to) {
    if (from == to) return;
    if (writable) {
      out.chain.writable.emplace_back(out.bytes.data() + from, to - from);
      out.chain.writable_bytes += to - from;
    } else {
      out.chain.readable.emplace_back(out.bytes.data() + from, to - from);
      out.chain.readable_bytes += to - from;
    }
  };
  add(false, 0, cut_r);
  add(false, cut_r, split);
  add(true, split, cut_w);
  add(true, cut_w, n);
  out.disk = blk::DiskGeometry{uint64_t{data[4]} * 8, false, false, false};
  return out;
}

// The inverse for a chain of one readable and one writable segment.
inline std::vector<uint8_t> encode(std::span<const uint8_t> readable, size_t writable_bytes, uint8_t capacity_4k) {
  std::vector<uint8_t> out(kHeaderBytes + readable.size() + writable_bytes, 0);
  const size_t split = readable.size();
  out[0] = static_cast<uint8_t>(split);
  out[1] = static_cast<uint8_t>(split >> 8);
  out[2] = 0;  // cut_r = 0: one readable segment
  out[3] = 0;                                                          // cut_w = split: one writable segment
  out[4] = capacity_4k;
  for (size_t i = 0; i < readable.size(); i++) out[kHeaderBytes + i] = readable[i];
  // Writable bytes start as 0xee, so zeros the device writes show.
  for (size_t i = 0; i < writable_bytes; i++) out[kHeaderBytes + split + i] = 0xee;
  return out;
}

}  // namespace moss::null::fuzz
