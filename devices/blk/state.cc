#include "devices/blk/state.h"

#include <algorithm>
#include <cstring>

#include "devices/blk/request.h"

namespace moss::blk {
namespace {

using virtio::get_le;
using virtio::put_le;

// Version 1; the queue positions start at 64, the features stand at 16.
constexpr size_t kHeaderBytes = 64;
constexpr virtio::StateFormat kFormat{"MOSSBLK", "virtio-blk", "moss-blk", 1, kHeaderBytes, 16};
constexpr uint8_t kFlagReadOnly = 1;

bool all_zero(std::span<const uint8_t> b) {
  return std::all_of(b.begin(), b.end(), [](uint8_t c) { return c == 0; });
}

}  // namespace

std::vector<uint8_t> encode_state(const SavedState& s) {
  MOSS_ASSERT(!s.rings.empty() && s.rings.size() <= 256 && s.serial.size() <= kIdBytes);
  std::vector<uint8_t> out = kFormat.start(s);
  put_le<uint64_t>(out, 24, s.capacity_sectors);
  put_le<uint16_t>(out, 32, static_cast<uint16_t>(s.rings.size()));
  out[34] = s.read_only ? kFlagReadOnly : 0;
  out[35] = static_cast<uint8_t>(s.serial.size());
  std::memcpy(out.data() + 36, s.serial.data(), s.serial.size());
  return out;
}

Result<SavedState> decode_state(std::span<const uint8_t> in) {
  MOSS_TRY_VOID(kFormat.check_header(in));
  SavedState s;
  s.capacity_sectors = get_le<uint64_t>(in, 24);
  uint16_t nq = get_le<uint16_t>(in, 32);
  if (nq == 0 || nq > 256) return kFormat.bad("has " + std::to_string(nq) + " queues; a device has 1 to 256");
  if (in.size() != kHeaderBytes + virtio::StateFormat::kRingBytes * nq) {
    return kFormat.bad("has the wrong length for " + std::to_string(nq) + " queues");
  }
  uint8_t flags = in[34];
  if (flags & ~kFlagReadOnly) return kFormat.bad("sets unknown flags");
  s.read_only = flags & kFlagReadOnly;
  uint8_t serial_len = in[35];
  if (serial_len > kIdBytes) return kFormat.bad("has a serial longer than 20 bytes");
  s.serial.assign(reinterpret_cast<const char*>(in.data() + 36), serial_len);
  if (!all_zero(in.subspan(36 + serial_len, kIdBytes - serial_len)) || !all_zero(in.subspan(56, 8))) {
    return kFormat.bad("has non-zero reserved bytes");
  }
  MOSS_TRY(virtio::CommonState common, kFormat.read_common(in));
  static_cast<virtio::CommonState&>(s) = std::move(common);
  for (size_t i = 0; i < s.rings.size(); i++) {
    // Each ring holds at most 32768 entries, so the driver can be at most that far ahead.
    if (static_cast<uint16_t>(s.rings[i].next_avail - s.rings[i].used_idx) > 32768) {
      return kFormat.bad("has queue " + std::to_string(i) + " with more requests taken than a ring can hold");
    }
  }
  return s;
}

}  // namespace moss::blk
