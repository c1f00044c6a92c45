// The virtio-blk worker's saved state (vhost-user DEVICE_STATE; a spore's per-device blob):
// a small versioned binary format and its pure decoder.
//
// What a resumed device needs beyond what the frontend re-sends: the features the driver
// accepted, where each ring stood (next available index, used index), and the configuration
// the guest saw, so a worker started on a different disk or with other options refuses the
// state instead of showing the guest a changed device. Nothing is in flight when state is
// saved (rings are stopped, so I/O was drained).
//
// Layout, version 1, little-endian (the header and ring positions of devices/virtio/saved_state.h):
//   0  char[8] "MOSSBLK\0"    8  u32 version     12 u32 total length in bytes
//   16 u64 acked features     24 u64 capacity in 512-byte sectors
//   32 u16 num_queues (1-256) 34 u8 flags (bit 0 read-only)   35 u8 serial length (0-20)
//   36 u8[20] serial, zero-padded                              56 u64 reserved (0)
//   64 num_queues x { u8 flags (bit 0: the ring was started), u8 0, u16 next_avail,
//                     u16 used_idx, u16 0 }
// The decoder checks every field, the exact length and that reserved bytes are zero.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "devices/virtio/saved_state.h"

namespace moss::blk {

using QueuePosition = virtio::RingPosition;

// The driver's features and 1..256 queue positions (`rings`), and the disk the guest saw.
struct SavedState : virtio::CommonState {
  static constexpr size_t kMaxBytes = 64 + virtio::StateFormat::kRingBytes * 256;  // 256 queues.

  uint64_t capacity_sectors = 0;
  bool read_only = false;
  std::string serial;  // At most 20 bytes.
  bool operator==(const SavedState&) const = default;
};

// The wire bytes of a well-formed `s` (1-256 queues, a serial of at most 20 bytes), and the
// pure decoder, which validates everything; its Error says what is wrong in one sentence.
std::vector<uint8_t> encode_state(const SavedState& s);
Result<SavedState> decode_state(std::span<const uint8_t> bytes);

}  // namespace moss::blk
