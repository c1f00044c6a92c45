#include "devices/virtio/saved_state.h"

#include <cstring>

namespace moss::virtio {
namespace {

constexpr size_t kMagicBytes = 8;
constexpr uint8_t kRingValid = 1;

void put_ring(std::vector<uint8_t>& out, size_t at, const RingPosition& r) {
  out[at] = r.valid ? kRingValid : 0;
  put_le<uint16_t>(out, at + 2, r.next_avail);
  put_le<uint16_t>(out, at + 4, r.used_idx);
}

}  // namespace

Error StateFormat::bad(const std::string& what) const {
  return make_error(std::string("the saved ") + device + " state " + what);
}

std::vector<uint8_t> StateFormat::start(const CommonState& s) const {
  const size_t total = header_bytes + kRingBytes * s.rings.size();
  MOSS_ASSERT(total <= UINT32_MAX && std::strlen(magic) == kMagicBytes - 1);
  MOSS_ASSERT(features_at >= 16 && features_at + 8 <= header_bytes);
  std::vector<uint8_t> out(total, 0);
  std::memcpy(out.data(), magic, kMagicBytes);
  put_le<uint32_t>(out, 8, version);
  put_le<uint32_t>(out, 12, static_cast<uint32_t>(total));
  put_le<uint64_t>(out, features_at, s.acked_features);
  for (size_t i = 0; i < s.rings.size(); i++) put_ring(out, header_bytes + kRingBytes * i, s.rings[i]);
  return out;
}

Result<void> StateFormat::check_header(std::span<const uint8_t> in) const {
  if (in.size() < header_bytes) return bad("is " + std::to_string(in.size()) + " bytes, shorter than its header");
  if (std::memcmp(in.data(), magic, kMagicBytes) != 0) {
    return bad(std::string("does not start with the ") + magic + " magic");
  }
  uint32_t got = get_le<uint32_t>(in, 8);
  if (got != version) {
    return bad("has version " + std::to_string(got) + "; this " + worker + " reads version " + std::to_string(version));
  }
  uint32_t length = get_le<uint32_t>(in, 12);
  if (length != in.size()) {
    return bad("says it is " + std::to_string(length) + " bytes but " + std::to_string(in.size()) + " arrived");
  }
  return {};
}

Result<CommonState> StateFormat::read_common(std::span<const uint8_t> in, std::span<const char* const> names) const {
  MOSS_ASSERT(in.size() >= header_bytes && (in.size() - header_bytes) % kRingBytes == 0);
  CommonState s;
  s.acked_features = get_le<uint64_t>(in, features_at);
  const size_t count = (in.size() - header_bytes) / kRingBytes;
  MOSS_ASSERT(names.empty() || names.size() == count);
  for (size_t i = 0; i < count; i++) {
    const size_t at = header_bytes + kRingBytes * i;
    const std::string name = names.empty() ? "queue " + std::to_string(i) : std::string("the ") + names[i] + " ring";
    uint8_t flags = in[at];
    if ((flags & ~kRingValid) || in[at + 1] != 0 || get_le<uint16_t>(in, at + 6) != 0) {
      return bad("has unknown flags or reserved bytes for " + name);
    }
    RingPosition r{(flags & kRingValid) != 0, get_le<uint16_t>(in, at + 2), get_le<uint16_t>(in, at + 4)};
    if (!r.valid && (r.next_avail != 0 || r.used_idx != 0)) {
      return bad("gives positions for " + name + ", which was never started");
    }
    s.rings.push_back(r);
  }
  return s;
}

Result<void> DriverFeatures::set(uint64_t acked) {
  if (expected_ && acked != *expected_) {
    return make_error("the driver's features differ from those in the saved state being restored");
  }
  acked_ = acked;
  return {};
}

Result<void> DriverFeatures::expect(uint64_t features) {
  if (acked_ != 0 && acked_ != features) return make_error("the driver's features differ from those in the saved state");
  expected_ = features;
  return {};
}

}  // namespace moss::virtio
