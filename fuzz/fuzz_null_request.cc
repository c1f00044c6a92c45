// libFuzzer target: moss-null's answer to a virtio-blk request (devices/null/request.h) on
// chains cut from fuzz input (devices/null/fuzz_input.h). It must never write past the
// chain, never claim more bytes than the chain can take, put the status in the last writable
// byte, and give zeros for everything it says it wrote before it.
#include <cstddef>
#include <cstdint>

#include "devices/null/fuzz_input.h"
#include "devices/null/request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moss::null::fuzz::Decoded d;
  if (!moss::null::fuzz::decode(std::span<const uint8_t>(data, size), d)) return 0;
  moss::null::Answer a = moss::null::answer_request(d.chain, d.disk);
  if (a.used_len > d.chain.writable_bytes) __builtin_trap();
  if (!a.status) {
    if (a.used_len != 0) __builtin_trap();
    return 0;
  }
  const auto& last = d.chain.writable.back();
  if (last[last.size() - 1] != *a.status) __builtin_trap();
  uint64_t left = a.used_len - 1;
  for (auto seg : d.chain.writable) {
    for (size_t i = 0; i < seg.size() && left > 0; i++, left--) {
      if (seg[i] != 0) __builtin_trap();
    }
  }
  return 0;
}
