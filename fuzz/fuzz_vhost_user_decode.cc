// libFuzzer target: the vhost-user message decoder, both directions, with 0..8 fds.
//
// Input: one selector byte (bits 0-3: fd count modulo 9; bit 4: decode as a backend reply
// rather than a frontend request), then the message bytes. Whatever decodes must re-encode
// to the same length and decode to the same message: decode and encode agree on every layout.
#include <cstddef>
#include <cstdint>
#include <span>

#include "vhost-user/message.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moss::vhost_user;
  if (size < 1) return 0;
  size_t nfds = (data[0] & 0x0f) % 9;
  Direction dir = (data[0] & 0x10) ? Direction::kReply : Direction::kRequest;
  std::span<const uint8_t> bytes(data + 1, size - 1);
  (void)decode_header(bytes);
  auto m = decode(bytes, nfds, dir);
  if (!m.ok()) return 0;
  auto again = encode(*m);
  MOSS_ASSERT(again.size() == bytes.size());
  auto back = decode(again, nfds, dir);
  MOSS_ASSERT(back.ok());
  MOSS_ASSERT(*back == *m);
  return 0;
}
