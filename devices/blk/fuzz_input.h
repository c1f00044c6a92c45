// The input format of fuzz/fuzz_blk_request.cc, shared with the seed test that builds its
// corpus from the harness's malformed chains (tests/harness/fuzz_seeds_test.cc), so a seed is
// parsed exactly as the fuzzer parses it.
//
//   u16 split (little-endian), u8 readable cut, u8 writable cut, u8 disk, then the bytes.
//
// The bytes are the chain's readable part ([0, split mod (n + 1))) then its writable part,
// each cut in two segments at its cut byte (modulo the part's length + 1; an empty segment is
// left out). The disk byte: capacity = 8 * value sectors; bit 0 read-only, bit 1
// WRITE_ZEROES; DISCARD always.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "devices/blk/request.h"
#include "devices/virtio/queue.h"

namespace moss::blk::fuzz {

inline constexpr size_t kHeaderBytes = 5;

struct RequestInput {
  virtio::DescriptorChain chain;  // Spans into the `bytes` given to decode_request.
  DiskGeometry disk;
};

// Decodes `data`, copying its bytes into `bytes`, which the chain points into; nullopt if
// `data` is shorter than the header.
inline std::optional<RequestInput> decode_request(std::span<const uint8_t> data, std::vector<uint8_t>& bytes) {
  if (data.size() < kHeaderBytes) return std::nullopt;
  bytes.assign(data.begin() + kHeaderBytes, data.end());
  size_t split = (data[0] | (data[1] << 8)) % (bytes.size() + 1);
  size_t cut_r = data[2] % (split + 1), cut_w = split + data[3] % (bytes.size() - split + 1);
  RequestInput in;
  auto add = [&](bool writable, size_t from, size_t to) {
    if (from == to) return;
    if (writable) {
      in.chain.writable.emplace_back(bytes.data() + from, to - from);
      in.chain.writable_bytes += to - from;
    } else {
      in.chain.readable.emplace_back(bytes.data() + from, to - from);
      in.chain.readable_bytes += to - from;
    }
  };
  add(false, 0, cut_r);
  add(false, cut_r, split);
  add(true, split, cut_w);
  add(true, cut_w, bytes.size());
  in.disk = DiskGeometry{static_cast<uint64_t>(data[4]) * 8, (data[4] & 1) != 0, true, (data[4] & 2) != 0};
  return in;
}

// An input that decodes to `chain`'s bytes on `disk_byte`: the readable part cut after its
// first segment (when that is shorter than 256 bytes), the writable part uncut.
inline std::vector<uint8_t> encode_request(const virtio::DescriptorChain& chain, uint8_t disk_byte) {
  auto split = static_cast<uint16_t>(chain.readable_bytes);
  uint8_t cut_r = chain.readable.empty() || chain.readable[0].size() > 255 ? 0 : static_cast<uint8_t>(chain.readable[0].size());
  std::vector<uint8_t> out = {static_cast<uint8_t>(split), static_cast<uint8_t>(split >> 8), cut_r, 0, disk_byte};
  for (auto s : chain.readable) out.insert(out.end(), s.begin(), s.end());
  for (auto s : chain.writable) out.insert(out.end(), s.begin(), s.end());
  return out;
}

}  // namespace moss::blk::fuzz
