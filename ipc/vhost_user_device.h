// The virtio device the vcpu process shows the guest for a vhost-user backend, as one plain
// value: what a device module plans (devices/module.h Device::guest), what the start message
// carries (ipc/vcpu.capnp VhostUserDevice, which says what each field means) and what the vcpu
// process builds the virtio-pci function from (vcpu/vhost_user_device.h). Nothing in it
// depends on the kind of device; the vcpu process checks it (check_spec) before use.
#pragma once

#include <cstdint>

#include "ipc/vcpu.capnp.h"

namespace moss {

struct GuestDevice {
  uint16_t virtio_id = 0;
  uint32_t pci_class = 0;
  uint32_t config_size = 0;
  uint16_t num_queues = 1;
  uint16_t min_queues = 1;
  int16_t multiqueue_feature = -1;
  int32_t queue_count_offset = -1;
  uint16_t max_queue_size = 256;
  bool operator==(const GuestDevice&) const = default;
};

// The fields of `g` into `out` (its name and fd are the sender's to set).
void encode_guest_device(const GuestDevice& g, ipc::VhostUserDevice::Builder out);
// The fields as sent; unchecked (the vcpu process's check_spec judges them).
GuestDevice decode_guest_device(ipc::VhostUserDevice::Reader in);

}  // namespace moss
