// What every worker's saved state (vhost-user DEVICE_STATE; a spore's per-device blob) is
// built of: little-endian fields, the common header, the driver's features and the per-ring
// positions, which end the blob.
//
// Layout, little-endian: 0 char[8] magic ("MOSSBLK\0"), 8 u32 version, 12 u32 total length in
// bytes; then the device's own fields, with a u64 of the features the driver accepted among
// them (StateFormat::features_at); from StateFormat::header_bytes to the end, one position per
// ring, 8 bytes: u8 flags (bit 0: the ring was started), u8 0, u16 next_avail, u16 used_idx,
// u16 0. Each device's state.h gives the rest of its layout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "base/result.h"

namespace moss::virtio {

template <typename T>
void put_le(std::vector<uint8_t>& out, size_t off, T v) {
  static_assert(std::is_unsigned_v<T>);
  MOSS_ASSERT(off + sizeof(T) <= out.size());
  for (size_t i = 0; i < sizeof(T); i++) out[off + i] = static_cast<uint8_t>(v >> (8 * i));
}

template <typename T>
T get_le(std::span<const uint8_t> in, size_t off) {
  static_assert(std::is_unsigned_v<T>);
  MOSS_ASSERT(off + sizeof(T) <= in.size());  // Callers checked the length first.
  T v = 0;
  for (size_t i = 0; i < sizeof(T); i++) v = static_cast<T>(v | (T{in[off + i]} << (8 * i)));
  return v;
}

struct RingPosition {
  bool valid = false;  // The ring had been started (and then stopped) when state was saved.
  uint16_t next_avail = 0;
  uint16_t used_idx = 0;
  bool operator==(const RingPosition&) const = default;
};

// What every device's saved state holds beside its own fields: the features the driver
// accepted (or those a loaded state expects) and where each ring stood. A device's SavedState
// derives from it; the runtime's VirtioDevice keeps this part (devices/worker/virtio_device.h).
struct CommonState {
  uint64_t acked_features = 0;
  std::vector<RingPosition> rings;  // By ring index.
  bool operator==(const CommonState&) const = default;
};

// One device's state format: its header, where the common part stands, its error sentences.
struct StateFormat {
  static constexpr size_t kRingBytes = 8;

  const char* magic;    // 7 characters; the NUL is the header's eighth byte.
  const char* device;   // "virtio-blk", for errors.
  const char* worker;   // "moss-blk", for errors.
  uint32_t version;
  size_t header_bytes;  // The header and the device's fields: the ring positions follow. Shorter
                        // blobs are refused before anything is read.
  size_t features_at;   // Where the u64 of the driver's features stands.

  // "the saved virtio-blk state " + what.
  Error bad(const std::string& what) const;
  // The blob of `s`: the header, the features and the ring positions, the device's own fields
  // zero for it to fill.
  std::vector<uint8_t> start(const CommonState& s) const;
  // The magic, the version and that the length field is the blob's size.
  Result<void> check_header(std::span<const uint8_t> in) const;
  // The features and the ring positions of `in`, whose header was checked and whose length the
  // device checked is header_bytes and a whole number of rings. `names` names ring i for errors
  // ("the receive ring"); empty, ring i is "queue i".
  Result<CommonState> read_common(std::span<const uint8_t> in, std::span<const char* const> names = {}) const;
};

// The features a device's driver accepted, held against a loaded state's: after a load the
// driver must accept exactly the state's features, and a driver that already accepted others
// makes the load fail.
class DriverFeatures {
 public:
  uint64_t acked() const { return acked_; }
  // SET_FEATURES.
  Result<void> set(uint64_t acked);
  // A state loaded whose driver had accepted `features`.
  Result<void> expect(uint64_t features);
  // What a saved state records: the accepted features, or those a loaded state expects.
  uint64_t saved() const { return acked_ != 0 ? acked_ : expected_.value_or(0); }
  // The driver starts over.
  void reset() {
    acked_ = 0;
    expected_.reset();
  }

 private:
  uint64_t acked_ = 0;
  std::optional<uint64_t> expected_;
};

}  // namespace moss::virtio
