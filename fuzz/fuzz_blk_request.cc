// libFuzzer target: the virtio-blk request parser on chains cut from fuzz input: a readable
// part and a writable part, split into segments at input-chosen points
// (devices/blk/fuzz_input.h).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "devices/blk/fuzz_input.h"
#include "devices/blk/request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The input format is devices/blk/fuzz_input.h's, which the seed test decodes too.
  std::vector<uint8_t> bytes;
  auto in = moss::blk::fuzz::decode_request({data, size}, bytes);
  if (!in) return 0;
  auto p = moss::blk::parse_request(in->chain, in->disk);
  if (p.request) {
    // The parser promises the status byte is inside the chain's last writable segment.
    const auto& last = in->chain.writable.back();
    if (p.request->status.data() != last.data() + last.size() - 1) __builtin_trap();
  }
  return 0;
}
