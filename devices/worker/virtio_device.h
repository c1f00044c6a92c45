// The vhost_user::DeviceInterface of every moss virtio device, written once: a device derives
// from VirtioDevice, says what it is (VirtioSpec) and keeps only what is its own: processing a
// ring (process), a few optional hooks, and its own part of the saved state.
//
// What the base does for every device, on the rings of devices/virtio/rings.h:
// - features, protocol features (CONFIG always, DEVICE_STATE when the device saves state, and
//   what the spec adds: blk's INFLIGHT_SHMFD), queue count and size, the driver's features
//   (virtio::DriverFeatures: after a load they must be the saved ones);
// - the config space: get_config serves the spec's bytes, set_config is refused (no moss
//   device has a writable field it offers);
// - rings: starts each at its base (ring_started may move or refuse it), checks after a load
//   that it starts where the state says, processes it when it starts enabled, is enabled or
//   kicked; on GET_VRING_BASE lets the device finish what it has in flight (ring_stopping)
//   and records where the ring stopped; memory changes and RESET_DEVICE;
// - state: save_state writes the driver's features and every ring's position with the
//   device's own fields (write_state); load_state reads them back (read_state), checks them
//   and makes the rings start there.
//
// Hot path: one virtual call per kick (process); the device's loop over the ring's chains is
// its own (virtio::RingSet::take_available inlines it).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "devices/virtio/rings.h"
#include "devices/virtio/saved_state.h"
#include "devices/worker/device.h"
#include "vhost-user/backend.h"

namespace moss::runtime {

// What a virtio device is, fixed for its life.
struct VirtioSpec {
  std::string name;                    // "virtio-blk": log lines and errors.
  uint64_t features = 0;               // The virtio feature bits offered, device and transport.
  uint64_t protocol_features = 0;      // Beyond CONFIG and DEVICE_STATE: INFLIGHT_SHMFD (blk).
  uint32_t num_queues = 1;             // 1..256.
  uint32_t max_queue_size = 1024;
  std::vector<std::string> ring_names;  // For log lines ("receive", ...); empty: "queue N".
  std::vector<uint8_t> config;          // The config space, read-only.
  size_t max_state_bytes = 0;           // 0: the device saves no state (no DEVICE_STATE).
};

class VirtioDevice : public Device {
 public:
  explicit VirtioDevice(VirtioSpec spec);

  // runtime::Device.
  void attach(const vhost_user::Backend& backend) final { rings_.attach(backend); }
  void on_kick(uint32_t queue) final;

  // vhost_user::DeviceInterface.
  uint64_t features() const final { return spec_.features; }
  uint64_t protocol_features() const final;
  uint32_t num_queues() const final { return spec_.num_queues; }
  uint32_t max_queue_size() const final { return spec_.max_queue_size; }
  Result<void> set_features(uint64_t acked) final { return features_.set(acked); }
  Result<std::vector<uint8_t>> get_config(uint32_t offset, uint32_t size) final;
  Result<void> set_config(uint32_t offset, std::span<const uint8_t> data, uint32_t flags) final;
  Result<void> on_queue_started(uint32_t index, const vhost_user::Vring& vring) final;
  uint16_t on_queue_stopped(uint32_t index) final;
  void on_queue_enabled(uint32_t index, bool enabled) final;
  void on_memory_changing() final;
  void reset() final;
  Result<std::vector<uint8_t>> save_state() final;
  Result<void> load_state(std::span<const uint8_t> bytes) final;
  size_t max_state_bytes() const final { return spec_.max_state_bytes; }

 protected:
  // Ring `q` (started, perhaps disabled, broken or with guest memory remapped: check
  // rings().ready(q)) may have work: it was kicked, enabled, or started enabled.
  virtual void process(uint32_t q) = 0;

  // Optional hooks.
  // Ring `q` started at `queue`'s position; the device may move it (blk: to where its inflight
  // buffer says) or refuse the ring (an Error leaves it stopped; ring_stopping follows).
  virtual Result<void> ring_started(uint32_t q, virtio::Queue& queue) {
    (void)q;
    (void)queue;
    return {};
  }
  // Ring `q` stops (GET_VRING_BASE, or refused after ring_started): finish what is in flight
  // on it and return it to the guest, and forget the ring.
  virtual void ring_stopping(uint32_t q) { (void)q; }
  // Guest memory is about to be remapped while rings run: finish I/O that targets it. The
  // rings are rebuilt before they are next used.
  virtual void memory_changing() {}
  // RESET_DEVICE, with every ring stopped: the driver starts over.
  virtual void driver_reset() {}

  // State: a device whose spec has max_state_bytes implements these (without, the base
  // refuses DEVICE_STATE and never calls them). The device's saved state with `common` (the
  // driver's features and each ring's position) in it.
  virtual Result<std::vector<uint8_t>> write_state(const virtio::CommonState& common) const;
  // Decodes `bytes` and checks them against this device, changing nothing: their common part.
  virtual Result<virtio::CommonState> read_state(std::span<const uint8_t> bytes) const;
  // A state read_state accepted was loaded: the device drops what it had.
  virtual void state_loaded() {}

  virtio::RingSet& rings() { return rings_; }
  const virtio::RingSet& rings() const { return rings_; }
  // The features the driver accepted.
  uint64_t acked_features() const { return features_.acked(); }

 private:
  const VirtioSpec spec_;
  virtio::DriverFeatures features_;
  virtio::RingSet rings_;
  // Where each ring stood when it last stopped (what a save records), and after a load where
  // each must start (valid until it has).
  std::vector<virtio::RingPosition> positions_;
  std::vector<virtio::RingPosition> expected_;
};

}  // namespace moss::runtime
