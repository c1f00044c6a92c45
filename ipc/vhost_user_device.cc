#include "ipc/vhost_user_device.h"

namespace moss {

void encode_guest_device(const GuestDevice& g, ipc::VhostUserDevice::Builder out) {
  out.setVirtioId(g.virtio_id);
  out.setPciClass(g.pci_class);
  out.setConfigSize(g.config_size);
  out.setNumQueues(g.num_queues);
  out.setMinQueues(g.min_queues);
  out.setMultiqueueFeature(g.multiqueue_feature);
  out.setQueueCountOffset(g.queue_count_offset);
  out.setMaxQueueSize(g.max_queue_size);
}

GuestDevice decode_guest_device(ipc::VhostUserDevice::Reader in) {
  GuestDevice g;
  g.virtio_id = in.getVirtioId();
  g.pci_class = in.getPciClass();
  g.config_size = in.getConfigSize();
  g.num_queues = in.getNumQueues();
  g.min_queues = in.getMinQueues();
  g.multiqueue_feature = in.getMultiqueueFeature();
  g.queue_count_offset = in.getQueueCountOffset();
  g.max_queue_size = in.getMaxQueueSize();
  return g;
}

}  // namespace moss
