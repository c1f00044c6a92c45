#include "devices/vsock/state.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "devices/vsock/packet.h"

namespace moss::vsock {
namespace {

constexpr char kMagic[8] = {'M', 'O', 'S', 'S', 'V', 'S', 'K', '\0'};
constexpr uint8_t kRingValid = 1;
constexpr size_t kRingsAt = 32;
constexpr size_t kRingBytes = 8;
constexpr const char* kRingNames[] = {"receive", "transmit", "event"};

template <typename T>
void put(std::vector<uint8_t>& out, size_t off, T v) {
  for (size_t i = 0; i < sizeof(T); i++) out[off + i] = static_cast<uint8_t>(v >> (8 * i));
}

template <typename T>
T get(std::span<const uint8_t> in, size_t off) {
  MOSS_ASSERT(off + sizeof(T) <= in.size());  // Callers checked the length first.
  T v = 0;
  for (size_t i = 0; i < sizeof(T); i++) v = static_cast<T>(v | (T{in[off + i]} << (8 * i)));
  return v;
}

Error bad(const std::string& what) { return make_error("the saved virtio-vsock state " + what); }

}  // namespace

std::vector<uint8_t> encode_state(const SavedState& s) {
  std::vector<uint8_t> out(SavedState::kBytes, 0);
  std::memcpy(out.data(), kMagic, sizeof kMagic);
  put<uint32_t>(out, 8, SavedState::kVersion);
  put<uint32_t>(out, 12, static_cast<uint32_t>(out.size()));
  put<uint64_t>(out, 16, s.guest_cid);
  put<uint64_t>(out, 24, s.acked_features);
  for (size_t i = 0; i < s.rings.size(); i++) {
    size_t at = kRingsAt + kRingBytes * i;
    out[at] = s.rings[i].valid ? kRingValid : 0;
    put<uint16_t>(out, at + 2, s.rings[i].next_avail);
    put<uint16_t>(out, at + 4, s.rings[i].used_idx);
  }
  return out;
}

Result<SavedState> decode_state(std::span<const uint8_t> in) {
  if (in.size() < 16) return bad("is " + std::to_string(in.size()) + " bytes, shorter than its header");
  if (std::memcmp(in.data(), kMagic, sizeof kMagic) != 0) return bad("does not start with the MOSSVSK magic");
  uint32_t version = get<uint32_t>(in, 8);
  if (version != SavedState::kVersion) {
    return bad("has version " + std::to_string(version) + "; this moss-vsock reads version 1");
  }
  uint32_t length = get<uint32_t>(in, 12);
  if (length != in.size()) {
    return bad("says it is " + std::to_string(length) + " bytes but " + std::to_string(in.size()) + " arrived");
  }
  if (in.size() != SavedState::kBytes) return bad("is " + std::to_string(in.size()) + " bytes, not 56");
  SavedState s;
  s.guest_cid = get<uint64_t>(in, 16);
  if (s.guest_cid < kMinGuestCid || s.guest_cid > kMaxGuestCid) {
    return bad("has guest CID " + std::to_string(s.guest_cid) + ", which no guest can have");
  }
  s.acked_features = get<uint64_t>(in, 24);
  for (size_t i = 0; i < s.rings.size(); i++) {
    size_t at = kRingsAt + kRingBytes * i;
    const std::string name = std::string("the ") + kRingNames[i] + " ring";
    if ((in[at] & ~kRingValid) || in[at + 1] != 0 || in[at + 6] != 0 || in[at + 7] != 0) {
      return bad("has unknown flags or reserved bytes for " + name);
    }
    RingPosition r{(in[at] & kRingValid) != 0, get<uint16_t>(in, at + 2), get<uint16_t>(in, at + 4)};
    if (!r.valid && (r.next_avail != 0 || r.used_idx != 0)) {
      return bad("gives positions for " + name + ", which was never started");
    }
    // The device holds no buffer between events: everything taken was returned.
    if (r.next_avail != r.used_idx) return bad("has buffers of " + name + " taken and not returned");
    s.rings[i] = r;
  }
  return s;
}

}  // namespace moss::vsock
