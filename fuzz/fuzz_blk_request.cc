// libFuzzer target: the virtio-blk request parser on chains cut from fuzz input: a readable
// part and a writable part, split into segments at input-chosen points.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "devices/blk/request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Input: u16 split (readable | writable), u8 cut in each part, u8 disk flags, then bytes.
  if (size < 5) return 0;
  std::vector<uint8_t> bytes(data + 5, data + size);
  size_t split = (data[0] | (data[1] << 8)) % (bytes.size() + 1);
  size_t cut_r = data[2] % (split + 1), cut_w = split + data[3] % (bytes.size() - split + 1);
  moss::virtio::DescriptorChain chain;
  auto add = [&](bool writable, size_t from, size_t to) {
    if (from == to) return;
    if (writable) {
      chain.writable.emplace_back(bytes.data() + from, to - from);
      chain.writable_bytes += to - from;
    } else {
      chain.readable.emplace_back(bytes.data() + from, to - from);
      chain.readable_bytes += to - from;
    }
  };
  add(false, 0, cut_r);
  add(false, cut_r, split);
  add(true, split, cut_w);
  add(true, cut_w, bytes.size());
  moss::blk::DiskGeometry disk{static_cast<uint64_t>(data[4]) * 8, (data[4] & 1) != 0, true, (data[4] & 2) != 0};
  auto p = moss::blk::parse_request(chain, disk);
  if (p.request) {
    // The parser promises the status byte is inside the chain's last writable segment.
    const auto& last = chain.writable.back();
    if (p.request->status.data() != last.data() + last.size() - 1) __builtin_trap();
  }
  return 0;
}
