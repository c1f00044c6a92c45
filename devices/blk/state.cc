#include "devices/blk/state.h"

#include <algorithm>
#include <cstring>

#include "devices/blk/request.h"

namespace moss::blk {
namespace {

constexpr char kMagic[8] = {'M', 'O', 'S', 'S', 'B', 'L', 'K', '\0'};
constexpr uint8_t kFlagReadOnly = 1;
constexpr uint8_t kQueueValid = 1;

template <typename T>
void put(std::vector<uint8_t>& out, size_t off, T v) {
  static_assert(std::is_unsigned_v<T>);
  for (size_t i = 0; i < sizeof(T); i++) out[off + i] = static_cast<uint8_t>(v >> (8 * i));
}

template <typename T>
T get(std::span<const uint8_t> in, size_t off) {
  MOSS_ASSERT(off + sizeof(T) <= in.size());  // Callers checked the length first.
  T v = 0;
  for (size_t i = 0; i < sizeof(T); i++) v = static_cast<T>(v | (T{in[off + i]} << (8 * i)));
  return v;
}

bool all_zero(std::span<const uint8_t> b) {
  return std::all_of(b.begin(), b.end(), [](uint8_t c) { return c == 0; });
}

Error bad(const std::string& what) { return make_error("the saved virtio-blk state " + what); }

}  // namespace

std::vector<uint8_t> encode_state(const SavedState& s) {
  MOSS_ASSERT(!s.queues.empty() && s.queues.size() <= 256 && s.serial.size() <= kIdBytes);
  std::vector<uint8_t> out(SavedState::kHeaderBytes + SavedState::kQueueBytes * s.queues.size(), 0);
  std::memcpy(out.data(), kMagic, sizeof kMagic);
  put<uint32_t>(out, 8, SavedState::kVersion);
  put<uint32_t>(out, 12, static_cast<uint32_t>(out.size()));
  put<uint64_t>(out, 16, s.acked_features);
  put<uint64_t>(out, 24, s.capacity_sectors);
  put<uint16_t>(out, 32, static_cast<uint16_t>(s.queues.size()));
  out[34] = s.read_only ? kFlagReadOnly : 0;
  out[35] = static_cast<uint8_t>(s.serial.size());
  std::memcpy(out.data() + 36, s.serial.data(), s.serial.size());
  for (size_t i = 0; i < s.queues.size(); i++) {
    size_t at = SavedState::kHeaderBytes + SavedState::kQueueBytes * i;
    const QueuePosition& q = s.queues[i];
    out[at] = q.valid ? kQueueValid : 0;
    put<uint16_t>(out, at + 2, q.next_avail);
    put<uint16_t>(out, at + 4, q.used_idx);
  }
  return out;
}

Result<SavedState> decode_state(std::span<const uint8_t> in) {
  if (in.size() < SavedState::kHeaderBytes) return bad("is " + std::to_string(in.size()) + " bytes, shorter than its header");
  if (std::memcmp(in.data(), kMagic, sizeof kMagic) != 0) return bad("does not start with the MOSSBLK magic");
  uint32_t version = get<uint32_t>(in, 8);
  if (version != SavedState::kVersion) {
    return bad("has version " + std::to_string(version) + "; this moss-blk reads version 1");
  }
  uint32_t length = get<uint32_t>(in, 12);
  if (length != in.size()) {
    return bad("says it is " + std::to_string(length) + " bytes but " + std::to_string(in.size()) + " arrived");
  }
  SavedState s;
  s.acked_features = get<uint64_t>(in, 16);
  s.capacity_sectors = get<uint64_t>(in, 24);
  uint16_t nq = get<uint16_t>(in, 32);
  if (nq == 0 || nq > 256) return bad("has " + std::to_string(nq) + " queues; a device has 1 to 256");
  if (in.size() != SavedState::kHeaderBytes + SavedState::kQueueBytes * nq) {
    return bad("has the wrong length for " + std::to_string(nq) + " queues");
  }
  uint8_t flags = in[34];
  if (flags & ~kFlagReadOnly) return bad("sets unknown flags");
  s.read_only = flags & kFlagReadOnly;
  uint8_t serial_len = in[35];
  if (serial_len > kIdBytes) return bad("has a serial longer than 20 bytes");
  s.serial.assign(reinterpret_cast<const char*>(in.data() + 36), serial_len);
  if (!all_zero(in.subspan(36 + serial_len, kIdBytes - serial_len)) || !all_zero(in.subspan(56, 8))) {
    return bad("has non-zero reserved bytes");
  }
  for (uint16_t i = 0; i < nq; i++) {
    size_t at = SavedState::kHeaderBytes + SavedState::kQueueBytes * i;
    uint8_t qflags = in[at];
    if ((qflags & ~kQueueValid) || in[at + 1] != 0 || get<uint16_t>(in, at + 6) != 0) {
      return bad("has unknown flags or reserved bytes in queue " + std::to_string(i));
    }
    QueuePosition q{(qflags & kQueueValid) != 0, get<uint16_t>(in, at + 2), get<uint16_t>(in, at + 4)};
    if (!q.valid && (q.next_avail != 0 || q.used_idx != 0)) {
      return bad("gives positions for queue " + std::to_string(i) + ", which was never started");
    }
    // Each ring holds at most 32768 entries, so the driver can be at most that far ahead.
    if (static_cast<uint16_t>(q.next_avail - q.used_idx) > 32768) {
      return bad("has queue " + std::to_string(i) + " with more requests taken than a ring can hold");
    }
    s.queues.push_back(q);
  }
  return s;
}

}  // namespace moss::blk
