// What every worker's saved state (vhost-user DEVICE_STATE; a spore's per-device blob) is
// built of: little-endian fields, the common header and the per-ring position.
//
// Header, little-endian: 0 char[8] magic ("MOSSBLK\0"), 8 u32 version, 12 u32 total length in
// bytes. A ring's position, 8 bytes: u8 flags (bit 0: the ring was started), u8 0,
// u16 next_avail, u16 used_idx, u16 0. Each device's state.h gives the rest of its layout.
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

// One device's state format: its header and its error sentences.
struct StateFormat {
  static constexpr size_t kRingBytes = 8;

  const char* magic;    // 7 characters; the NUL is the header's eighth byte.
  const char* device;   // "virtio-blk", for errors.
  const char* worker;   // "moss-blk", for errors.
  uint32_t version;
  size_t header_bytes;  // Shorter blobs are refused before anything is read.

  // "the saved virtio-blk state " + what.
  Error bad(const std::string& what) const;
  // `total` zero bytes starting with the header.
  std::vector<uint8_t> start(size_t total) const;
  // The magic, the version and that the length field is the blob's size.
  Result<void> check_header(std::span<const uint8_t> in) const;
  // The ring position at `at`; `name` ("queue 2", "the receive ring") is for errors.
  Result<RingPosition> get_ring(std::span<const uint8_t> in, size_t at, const std::string& name) const;
};

void put_ring(std::vector<uint8_t>& out, size_t at, const RingPosition& r);

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
