#include "devices/vsock/state.h"

#include <string>

#include "devices/vsock/packet.h"

namespace moss::vsock {
namespace {

using virtio::get_le;
using virtio::put_le;

constexpr virtio::StateFormat kFormat{"MOSSVSK", "virtio-vsock", "moss-vsock", SavedState::kVersion, 16};
constexpr size_t kRingsAt = 32;
constexpr const char* kRingNames[] = {"receive", "transmit", "event"};

}  // namespace

std::vector<uint8_t> encode_state(const SavedState& s) {
  std::vector<uint8_t> out = kFormat.start(SavedState::kBytes);
  put_le<uint64_t>(out, 16, s.guest_cid);
  put_le<uint64_t>(out, 24, s.acked_features);
  for (size_t i = 0; i < s.rings.size(); i++) {
    virtio::put_ring(out, kRingsAt + virtio::StateFormat::kRingBytes * i, s.rings[i]);
  }
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
  s.acked_features = get_le<uint64_t>(in, 24);
  for (size_t i = 0; i < s.rings.size(); i++) {
    const std::string name = std::string("the ") + kRingNames[i] + " ring";
    MOSS_TRY(RingPosition r, kFormat.get_ring(in, kRingsAt + virtio::StateFormat::kRingBytes * i, name));
    // The device holds no buffer between events: everything taken was returned.
    if (r.next_avail != r.used_idx) return kFormat.bad("has buffers of " + name + " taken and not returned");
    s.rings[i] = r;
  }
  return s;
}

}  // namespace moss::vsock
