// check_spec: the start message's device entries the vcpu process accepts, whatever the kind.
#include <gtest/gtest.h>

#include "vcpu/vhost_user_device.h"

namespace moss {
namespace {

VhostUserDeviceSpec net_like() {
  // Net with two rx/tx pairs and a control queue, its MAC in a 12-byte config: no special case.
  return {{.virtio_id = 1, .pci_class = 0x020000, .config_size = 12, .num_queues = 5, .min_queues = 5}, "net"};
}

TEST(VhostUserDeviceSpec, AnyKindWithinTheTransportsLimitsIsAccepted) {
  EXPECT_TRUE(check_spec(net_like()).ok());
  // 9p: one queue, its config a le16 tag_len and the mount tag.
  EXPECT_TRUE(check_spec(GuestDevice{.virtio_id = 9, .config_size = 2 + 36}).ok());
  GuestDevice blk{.virtio_id = 2, .config_size = 60, .num_queues = 64, .multiqueue_feature = 12, .queue_count_offset = 34};
  EXPECT_TRUE(check_spec(blk).ok());
}

TEST(VhostUserDeviceSpec, WhatATransportCannotCarryIsOneSentence) {
  auto bad = [](auto change) {
    VhostUserDeviceSpec s = net_like();
    change(s);
    auto r = check_spec(s);
    return r ? std::string("accepted") : r.error().message;
  };
  EXPECT_EQ(bad([](auto& s) { s.virtio_id = 0; }), "the device has no virtio device id");
  EXPECT_EQ(bad([](auto& s) { s.config_size = 0x1001; }), "the device's configuration of 4097 bytes is larger than 4096");
  EXPECT_EQ(bad([](auto& s) { s.num_queues = 65; }),
            "the device asks for 5 to 65 queues; a virtio-pci function here carries 1 to 64");
  EXPECT_EQ(bad([](auto& s) { s.min_queues = 6; }),
            "the device asks for 6 to 5 queues; a virtio-pci function here carries 1 to 64");
  EXPECT_EQ(bad([](auto& s) { s.queue_count_offset = 11; }), "the device's queue count lies outside its configuration");
  EXPECT_EQ(bad([](auto& s) { s.multiqueue_feature = 64; }), "the device's multiqueue feature bit is out of range");
  EXPECT_EQ(bad([](auto& s) { s.max_queue_size = 100; }), "the device's largest queue size is not a power of 2 up to 32768");
}

}  // namespace
}  // namespace moss
