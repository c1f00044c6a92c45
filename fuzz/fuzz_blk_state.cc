// libFuzzer target: the virtio-blk worker's saved-state decoder (devices/blk/state.h), which
// reads what a broker or a vhost-user frontend hands a worker to restore. Whatever it accepts
// must be a well-formed state with exactly one spelling: re-encoding gives the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "devices/blk/request.h"
#include "devices/blk/state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto s = moss::blk::decode_state(std::span<const uint8_t>(data, size));
  if (!s.ok()) {
    if (s.error().message.empty()) __builtin_trap();  // Every refusal says why.
    return 0;
  }
  if (s->rings.empty() || s->rings.size() > 256 || s->serial.size() > moss::blk::kIdBytes) __builtin_trap();
  for (const auto& q : s->rings) {
    if (!q.valid && (q.next_avail != 0 || q.used_idx != 0)) __builtin_trap();
  }
  auto again = moss::blk::encode_state(*s);
  if (again.size() != size || std::memcmp(again.data(), data, size) != 0) __builtin_trap();
  return 0;
}
