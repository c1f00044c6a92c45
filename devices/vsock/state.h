// The virtio-vsock worker's saved state (vhost-user DEVICE_STATE; a spore's per-device blob):
// a small versioned binary format and its pure decoder.
//
// What a resumed device needs beyond what the frontend re-sends: the features the driver
// accepted, where each of the three rings stood, and the guest CID the guest saw (a record: a
// worker loading the state keeps the CID it was started with, since a restored VM has a CID
// lease of its own). Connections are not carried: after a load the device sends
// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue, as for any new frontend, and the
// guest drops the connections it had and reads its CID again (Linux: virtio_transport's
// event handler re-reads guest_cid from the config and resets every connected socket). Nothing is held between events, so every ring's next
// available index equals its used index.
//
// Layout, version 1, little-endian, 56 bytes (the header and ring positions of
// devices/virtio/saved_state.h):
//   0  char[8] "MOSSVSK\0"   8  u32 version   12 u32 total length in bytes (56)
//   16 u64 guest CID         24 u64 acked features
//   32 3 x { u8 flags (bit 0: the ring was started), u8 0, u16 next_avail, u16 used_idx,
//            u16 0 } (receive, transmit, event)
// The decoder checks every field, the exact length and that reserved bytes are zero.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"
#include "devices/virtio/saved_state.h"

namespace moss::vsock {

// The driver's features, the positions of the receive, transmit and event rings (`rings`),
// and the guest CID.
struct SavedState : virtio::CommonState {
  static constexpr size_t kBytes = 56;
  SavedState() { rings.resize(3); }
  uint64_t guest_cid = 0;
  bool operator==(const SavedState&) const = default;
};

std::vector<uint8_t> encode_state(const SavedState& s);
// Pure: checks every field; an Error says in one sentence what is wrong.
Result<SavedState> decode_state(std::span<const uint8_t> bytes);

}  // namespace moss::vsock
