// A virtio device whose rings and configuration live in a vhost-user backend process: the
// VirtioBackend behind a virtio-pci Transport in the vcpu process.
//
// The connection is set up once, before the guest runs (features, protocol features, owner,
// guest memory as the memfd regions). At DRIVER_OK the negotiated rings are handed over with
// their kick eventfds (which the Machine registers as KVM ioeventfds on the notify addresses)
// and call eventfds (KVM irqfds); from then on the data path runs between the guest and the
// backend without us. A guest reset takes the rings back with GET_VRING_BASE.
//
// Any failure of the backend (it died, it sent garbage) is an Error; the transport then shows
// the driver DEVICE_NEEDS_RESET and stops calling us.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
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

// A device as the broker describes it in the start message (ipc/vcpu.capnp VhostUserDevice,
// which says what each field means). Nothing here depends on the kind of device.
struct VhostUserDeviceSpec {
  std::string name;  // For messages: "disk 1 (disk.img)".
  int fd = -1;
  uint16_t virtio_id = 0;
  uint32_t pci_class = 0;
  uint32_t config_size = 0;
  uint16_t num_queues = 1;
  uint16_t min_queues = 1;
  int16_t multiqueue_feature = -1;
  int32_t queue_count_offset = -1;
  uint16_t max_queue_size = 256;
};

// Whether `spec` describes a device a virtio-pci transport can carry; one sentence if not.
Result<void> check_spec(const VhostUserDeviceSpec& spec);

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

 private:
  explicit VhostUserDevice(vhost_user::Frontend fe) : fe_(std::move(fe)) {}
  Result<uint64_t> user_address(uint64_t gpa, uint64_t len) const;

  vhost_user::Frontend fe_;
  std::vector<SharedRegion> memory_;
  virtio_pci::DeviceInfo info_;
  uint64_t protocol_ = 0;
  std::vector<UniqueFd> kicks_, calls_;
  std::vector<uint16_t> started_;
  int32_t queue_count_offset_ = -1;  // Where GET_CONFIG's answer gets num_queues; -1: nowhere.
};

}  // namespace moss
