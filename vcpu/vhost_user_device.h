// A virtio device whose rings and configuration live in a vhost-user backend process: the
// VirtioBackend behind a virtio-pci Transport in the vcpu process.
//
// The connection is set up once, before the guest runs (features, protocol features, owner,
// guest memory as the memfd regions). At DRIVER_OK the negotiated rings are handed over with
// their kick eventfds (which the Machine registers as KVM ioeventfds on the notify addresses)
// and call eventfds (KVM irqfds); from then on the data path runs between the guest and the
// backend without us. A guest reset takes the rings back with GET_VRING_BASE.
//
// Saving (a spore): the backend must have negotiated DEVICE_STATE. save() stops every running
// ring with GET_VRING_BASE (the backend finishes what is in flight first) and takes the
// backend's bytes through SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE; restart() runs the rings
// again from where they stopped (the VM continues in this process); restore() brings a fresh
// backend, connected to a fresh vcpu process, to a saved device and starts its rings.
//
// Any failure of the backend (it died, it sent garbage) is an Error; the transport then shows
// the driver DEVICE_NEEDS_RESET and stops calling us.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "ipc/vhost_user_device.h"
#include "vcpu/virtio_pci.h"
#include "vhost-user/frontend.h"

namespace moss {

// Guest RAM as the backend must map it: a slice of a shareable file.
struct SharedRegion {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint8_t* host = nullptr;   // Our mapping; its address is the "user address" of vhost-user.
  int fd = -1;
  uint64_t fd_offset = 0;
};

// A device as the broker describes it in the start message: its guest device (which says
// nothing of its kind), and for this process its name and the vhost-user socket.
struct VhostUserDeviceSpec : GuestDevice {
  std::string name;  // For messages: "disk 1 (disk.img)".
  int fd = -1;
};

// Whether `spec` describes a device a virtio-pci transport can carry; one sentence if not.
Result<void> check_spec(const GuestDevice& spec);

// What save() took of a device: where each ring stopped, and the backend's own bytes.
struct SavedBackend {
  bool activated = false;                  // The driver had started the device.
  std::vector<std::optional<uint16_t>> bases;  // By queue: set for a ring that ran.
  std::vector<uint8_t> state;              // DEVICE_STATE bytes; empty if never activated.
};

// The most DEVICE_STATE bytes taken from a backend, and how long it may take to send them.
inline constexpr size_t kMaxBackendStateBytes = 16u << 20;
inline constexpr int kBackendStateTimeoutMs = 10'000;

class VhostUserDevice final : public virtio_pci::VirtioBackend {
 public:
  // Connects over `sock` (already connected) to the backend of the device `spec` describes
  // (its fd field is not used) and offers it `memory`. The device uses spec.num_queues queues,
  // or as many as the backend has if fewer, but at least spec.min_queues.
  static Result<std::unique_ptr<VhostUserDevice>> connect(UniqueFd sock, const VhostUserDeviceSpec& spec,
                                                          std::span<const SharedRegion> memory);

  const virtio_pci::DeviceInfo& info() const { return info_; }
  int kick_fd(uint16_t queue) const { return kicks_.at(queue).get(); }
  int call_fd(uint16_t queue) const { return calls_.at(queue).get(); }

  Result<void> read_config(uint32_t offset, std::span<uint8_t> data) override;
  Result<void> write_config(uint32_t offset, std::span<const uint8_t> data) override;
  Result<void> activate(uint64_t features, std::span<const virtio_pci::QueueState> queues) override;
  Result<void> reset() override;

  // Whether save() can work: the backend negotiated DEVICE_STATE; else one sentence naming
  // the device.
  Result<void> can_save() const;
  // Only while the vCPUs are parked. After it (success or not), the rings are stopped until
  // restart(); a failure leaves the device restartable.
  Result<SavedBackend> save();
  // Whether save() stopped rings that restart() would start again.
  bool stopped_for_save() const { return !stopped_.empty(); }
  // Starts the rings save() stopped, from the bases it got, and kicks them so the backend
  // looks at what the driver queued meanwhile.
  Result<void> restart();
  // On a fresh connection: the features the driver negotiated and each running ring (its
  // transport state and base), then the backend's bytes; starts the rings. Nothing to do if
  // the device was never activated. The call eventfds are signalled once (an interrupt the
  // saved VM had not taken yet is not lost; a spurious one is harmless to a virtio driver).
  Result<void> restore(uint64_t features, std::span<const virtio_pci::SavedQueue> queues,
                       std::span<const uint8_t> state);

 private:
  explicit VhostUserDevice(vhost_user::Frontend fe) : fe_(std::move(fe)) {}
  Result<uint64_t> user_address(uint64_t gpa, uint64_t len) const;
  // SET_VRING_NUM, BASE, ADDR, CALL, KICK, ENABLE for one ring; records it as started.
  Result<void> start_ring(uint16_t q, const virtio_pci::QueueState& s, uint16_t base);
  // A pipe for DEVICE_STATE in `direction` whose far end the backend is given (or the fd it
  // answers with instead): our end, non-blocking.
  Result<UniqueFd> open_state_transfer(uint32_t direction);
  Result<std::vector<uint8_t>> take_state();
  Result<void> give_state(std::span<const uint8_t> state);

  vhost_user::Frontend fe_;
  std::vector<SharedRegion> memory_;
  virtio_pci::DeviceInfo info_;
  uint64_t protocol_ = 0;
  std::vector<UniqueFd> kicks_, calls_;
  std::string name_;
  std::vector<uint16_t> started_;
  std::vector<virtio_pci::QueueState> rings_;  // By queue: as the driver set it up at activate.
  bool activated_ = false;
  std::vector<std::pair<uint16_t, uint16_t>> stopped_;  // (queue, base) save() stopped.
  int32_t queue_count_offset_ = -1;  // Where GET_CONFIG's answer gets num_queues; -1: nowhere.
};

}  // namespace moss
