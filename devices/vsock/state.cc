#include "devices/vsock/state.h"

#include <string>

#include "devices/vsock/packet.h"

namespace moss::vsock {
namespace {

using virtio::get_le;
using virtio::put_le;

// Version 1; the ring positions start at 32, the features stand at 24.
constexpr virtio::StateFormat kFormat{"MOSSVSK", "virtio-vsock", "moss-vsock", 1, 32, 24};
constexpr const char* kRingNames[] = {"receive", "transmit", "event"};

}  // namespace

std::vector<uint8_t> encode_state(const SavedState& s) {
  MOSS_ASSERT(s.rings.size() == 3);
  std::vector<uint8_t> out = kFormat.start(s);
  put_le<uint64_t>(out, 16, s.guest_cid);
  return out;
}

Result<SavedState> decode_state(std::span<const uint8_t> in) {
  MOSS_TRY_VOID(kFormat.check_header(in));
  if (in.size() != SavedState::kBytes) return kFormat.bad("is " + std::to_string(in.size()) + " bytes, not 56");
  SavedState s;
  s.guest_cid = get_le<uint64_t>(in, 16);
  if (s.guest_cid < kMinGuestCid || s.guest_cid > kMaxGuestCid) {
    return kFormat.bad("has guest CID " + std::to_string(s.guest_cid) + ", which no guest can have");
  }
  MOSS_TRY(virtio::CommonState common, kFormat.read_common(in, kRingNames));
  static_cast<virtio::CommonState&>(s) = std::move(common);
  for (size_t i = 0; i < s.rings.size(); i++) {
    // The device holds no buffer between events: everything taken was returned.
    if (s.rings[i].next_avail != s.rings[i].used_idx) {
      return kFormat.bad(std::string("has buffers of the ") + kRingNames[i] + " ring taken and not returned");
    }
  }
  return s;
}

}  // namespace moss::vsock
