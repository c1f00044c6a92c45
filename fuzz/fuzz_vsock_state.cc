// libFuzzer target: the virtio-vsock worker's saved-state decoder (devices/vsock/state.h), which
// reads what a vhost-user frontend hands a worker with SET_DEVICE_STATE_FD. Whatever it accepts
// must be a well-formed state with exactly one spelling: re-encoding gives the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "devices/vsock/packet.h"
#include "devices/vsock/state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto s = moss::vsock::decode_state(std::span<const uint8_t>(data, size));
  if (!s.ok()) {
    if (s.error().message.empty()) __builtin_trap();  // Every refusal says why.
    return 0;
  }
  if (s->guest_cid < moss::vsock::kMinGuestCid || s->guest_cid > moss::vsock::kMaxGuestCid) __builtin_trap();
  for (const auto& r : s->rings) {
    if (r.next_avail != r.used_idx) __builtin_trap();
    if (!r.valid && r.next_avail != 0) __builtin_trap();
  }
  auto again = moss::vsock::encode_state(*s);
  if (again.size() != size || std::memcmp(again.data(), data, size) != 0) __builtin_trap();
  return 0;
}
