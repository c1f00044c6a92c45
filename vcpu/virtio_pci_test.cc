#include "vcpu/virtio_pci.h"

#include <gtest/gtest.h>

#include <map>

namespace moss::virtio_pci {
namespace {

constexpr uint64_t kBar = 0xc0000000;

// Records what the transport asks of its device.
class FakeBackend : public VirtioBackend {
 public:
  Result<void> read_config(uint32_t offset, std::span<uint8_t> data) override {
    reads++;
    if (fail_config) return make_error("backend gone");
    for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<uint8_t>(0xa0 + offset + i);
    return {};
  }
  Result<void> write_config(uint32_t offset, std::span<const uint8_t> data) override {
    written[offset] = std::vector<uint8_t>(data.begin(), data.end());
    return {};
  }
  Result<void> activate(uint64_t features, std::span<const QueueState> queues) override {
    if (fail_activate) return make_error("no");
    activated++;
    acked = features;
    started.assign(queues.begin(), queues.end());
    return {};
  }
  Result<void> reset() override {
    resets++;
    return {};
  }
  int reads = 0, activated = 0, resets = 0;
  bool fail_config = false, fail_activate = false;
  uint64_t acked = 0;
  std::vector<QueueState> started;
  std::map<uint32_t, std::vector<uint8_t>> written;
};

// Common configuration offsets (virtio 1.2, 4.1.4.3).
enum : uint64_t {
  kDfSelect = 0x00, kDf = 0x04, kGfSelect = 0x08, kGf = 0x0c, kMsixConfig = 0x10, kNumQueues = 0x12,
  kStatus = 0x14, kQSelect = 0x16, kQSize = 0x18, kQVector = 0x1a, kQEnable = 0x1c, kQNotifyOff = 0x1e,
  kQDesc = 0x20, kQDriver = 0x28, kQDevice = 0x30,
};

struct Fixture {
  FakeBackend backend;
  DeviceInfo info{2, 0x010000, (1ull << 9) | (1ull << 12) | (1ull << 29) | (1ull << 40) | (1ull << 30), 2, 128, 60};
  Transport t{info, backend, kBar};

  void enable_memory() {
    t.config_space()->write(0x04, 2, 0x0006);
    t.config_written();
  }
  // Walks the capability list like a driver: cfg_type -> (offset, length).
  std::map<uint8_t, std::pair<uint32_t, uint32_t>> virtio_caps() {
    std::map<uint8_t, std::pair<uint32_t, uint32_t>> caps;
    auto& c = *t.config_space();
    for (uint32_t p = c.read(0x34, 1); p; p = c.read(p + 1, 1)) {
      if (c.read(p, 1) == 0x09) caps[static_cast<uint8_t>(c.read(p + 3, 1))] = {c.read(p + 8, 4), c.read(p + 12, 4)};
    }
    return caps;
  }
  uint8_t msix_cap() {
    auto& c = *t.config_space();
    for (uint32_t p = c.read(0x34, 1); p; p = c.read(p + 1, 1)) {
      if (c.read(p, 1) == 0x11) return static_cast<uint8_t>(p);
    }
    return 0;
  }
  // The driver's side of initialization (3.1.1) up to FEATURES_OK.
  void negotiate(uint64_t features) {
    t.write(kStatus, 1, 0);
    t.write(kStatus, 1, kStatusAcknowledge);
    t.write(kStatus, 1, kStatusAcknowledge | kStatusDriver);
    t.write(kGfSelect, 4, 0);
    t.write(kGf, 4, static_cast<uint32_t>(features));
    t.write(kGfSelect, 4, 1);
    t.write(kGf, 4, static_cast<uint32_t>(features >> 32));
    t.write(kStatus, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  }
  void setup_queue(uint16_t q, uint16_t size, uint64_t base) {
    t.write(kQSelect, 2, q);
    t.write(kQSize, 2, size);
    t.write(kQDesc, 4, static_cast<uint32_t>(base));  // Two 32-bit halves, as Linux writes them.
    t.write(kQDesc + 4, 4, static_cast<uint32_t>(base >> 32));
    t.write(kQDriver, 8, base + 0x1000);
    t.write(kQDevice, 8, base + 0x2000);
    t.write(kQEnable, 2, 1);
  }
};

TEST(VirtioPci, ModernIdsAndCapabilitiesPointIntoBarZero) {
  Fixture f;
  auto& c = *f.t.config_space();
  EXPECT_EQ(c.read(0x00, 2), 0x1af4u);
  EXPECT_EQ(c.read(0x02, 2), 0x1042u);  // 0x1040 + block.
  EXPECT_EQ(c.read(0x08, 1), 1u);       // Revision 1: modern only.
  EXPECT_EQ(c.read(0x2e, 2), 0x42u);
  EXPECT_EQ(c.read(0x10, 4), static_cast<uint32_t>(kBar) | 0x4);
  auto caps = f.virtio_caps();
  ASSERT_EQ(caps.size(), 4u);
  EXPECT_EQ(caps[1], std::make_pair(uint32_t(kCommonOffset), uint32_t(kCommonSize)));
  EXPECT_EQ(caps[2], std::make_pair(uint32_t(kNotifyOffset), uint32_t(2 * kNotifyMultiplier)));
  EXPECT_EQ(caps[3].first, kIsrOffset);
  EXPECT_EQ(caps[4], std::make_pair(uint32_t(kDeviceOffset), 60u));
  uint8_t m = f.msix_cap();
  ASSERT_NE(m, 0);
  EXPECT_EQ(c.read(m + 2u, 2) & 0x7ff, 2u);  // Three vectors: two queues and config.
  EXPECT_EQ(c.read(m + 4u, 4), kMsixTableOffset);
  EXPECT_EQ(c.read(m + 8u, 4), kMsixPbaOffset);
  EXPECT_EQ(c.read(0x3d, 1), 0u);  // No INTx pin.
}

TEST(VirtioPci, BarIsVisibleOnlyWithMemoryDecodingAndFollowsTheGuest) {
  Fixture f;
  EXPECT_FALSE(f.t.bar());
  uint64_t g = f.t.generation();
  f.enable_memory();
  EXPECT_EQ(f.t.bar(), kBar);
  EXPECT_NE(f.t.generation(), g);
  f.t.config_space()->write(0x10, 4, 0xffffffff);  // Sizing probe.
  EXPECT_EQ(f.t.config_space()->read(0x10, 4), static_cast<uint32_t>(~(kBarSize - 1)) | 0x4);
  f.t.config_space()->write(0x10, 4, 0xd0000000);
  f.t.config_written();
  EXPECT_EQ(f.t.bar(), 0xd0000000u);
  EXPECT_EQ(f.t.notify_address(1), 0xd0000000u + kNotifyOffset + 4);
}

TEST(VirtioPci, OffersVersion1AndOnlyFeaturesTheTransportCanCarry) {
  Fixture f;
  f.t.write(kDfSelect, 4, 0);
  uint32_t lo = static_cast<uint32_t>(f.t.read(kDf, 4));
  f.t.write(kDfSelect, 4, 1);
  uint32_t hi = static_cast<uint32_t>(f.t.read(kDf, 4));
  EXPECT_EQ(lo, (1u << 9) | (1u << 12) | (1u << 29));  // Bit 30 (vhost-user's own) is not passed.
  EXPECT_EQ(hi, 1u);                                    // VERSION_1; RING_RESET (40) is not.
  f.t.write(kDfSelect, 4, 7);
  EXPECT_EQ(f.t.read(kDf, 4), 0u);
  EXPECT_EQ(f.t.read(kNumQueues, 2), 2u);
}

TEST(VirtioPci, FeaturesOkIsRefusedForUnofferedBitsOrWithoutVersion1) {
  Fixture f;
  f.negotiate(1ull << 9);  // No VERSION_1: a legacy driver.
  EXPECT_FALSE(f.t.read(kStatus, 1) & kStatusFeaturesOk);
  f.negotiate((1ull << 32) | (1ull << 5));  // Bit 5 was not offered.
  EXPECT_FALSE(f.t.read(kStatus, 1) & kStatusFeaturesOk);
  f.negotiate((1ull << 32) | (1ull << 9));
  EXPECT_TRUE(f.t.read(kStatus, 1) & kStatusFeaturesOk);
}

TEST(VirtioPci, DriverOkActivatesTheBackendWithTheQueuesAsConfigured) {
  Fixture f;
  f.negotiate((1ull << 32) | (1ull << 29));
  f.setup_queue(0, 64, 0x100000);
  f.t.write(kQSelect, 2, 1);
  EXPECT_EQ(f.t.read(kQSize, 2), 128u);  // Untouched: the maximum.
  EXPECT_EQ(f.t.read(kQNotifyOff, 2), 1u);
  EXPECT_EQ(f.t.read(kQDesc + 4, 4), 0u);
  f.t.write(kQSelect, 2, 0);
  EXPECT_EQ(f.t.read(kQDesc, 8), 0x100000u);
  EXPECT_EQ(f.t.read(kQDriver, 4), 0x101000u);
  EXPECT_EQ(f.backend.activated, 0);
  f.t.write(kStatus, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  ASSERT_EQ(f.backend.activated, 1);
  EXPECT_EQ(f.backend.acked, (1ull << 32) | (1ull << 29));
  ASSERT_EQ(f.backend.started.size(), 2u);
  EXPECT_TRUE(f.backend.started[0].enabled);
  EXPECT_EQ(f.backend.started[0].size, 64);
  EXPECT_EQ(f.backend.started[0].desc, 0x100000u);
  EXPECT_EQ(f.backend.started[0].driver, 0x101000u);
  EXPECT_EQ(f.backend.started[0].device, 0x102000u);
  EXPECT_FALSE(f.backend.started[1].enabled);
  // Live queues cannot be moved under the backend.
  f.t.write(kQDesc, 8, 0x200000);
  f.t.write(kQSize, 2, 16);
  EXPECT_EQ(f.t.read(kQDesc, 8), 0x100000u);
  EXPECT_EQ(f.t.read(kQSize, 2), 64u);
}

TEST(VirtioPci, BadQueueSizesAndVectorsAreRefused) {
  Fixture f;
  f.t.write(kQSelect, 2, 0);
  for (uint64_t bad : {0ull, 3ull, 256ull, 100ull}) {
    f.t.write(kQSize, 2, bad);
    EXPECT_EQ(f.t.read(kQSize, 2), 128u) << bad;
  }
  f.t.write(kQVector, 2, 3);  // Only vectors 0-2 exist.
  EXPECT_EQ(f.t.read(kQVector, 2), kNoVector);
  f.t.write(kQVector, 2, 1);
  EXPECT_EQ(f.t.read(kQVector, 2), 1u);
  f.t.write(kMsixConfig, 2, 9);
  EXPECT_EQ(f.t.read(kMsixConfig, 2), kNoVector);
  f.t.write(kQSelect, 2, 5);  // No such queue: size reads 0, writes go nowhere.
  EXPECT_EQ(f.t.read(kQSize, 2), 0u);
  f.t.write(kQEnable, 2, 1);
  f.t.write(kQDesc, 8, 0x1234);
  EXPECT_EQ(f.t.read(kQDesc, 8), 0u);
}

TEST(VirtioPci, ResetStopsTheBackendAndClearsTheDriversState) {
  Fixture f;
  f.negotiate(1ull << 32);
  f.setup_queue(0, 64, 0x100000);
  f.t.write(kQVector, 2, 0);
  f.t.write(kStatus, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  f.t.write(kStatus, 1, 0);
  EXPECT_EQ(f.backend.resets, 1);
  EXPECT_EQ(f.t.read(kStatus, 1), 0u);
  f.t.write(kQSelect, 2, 0);
  EXPECT_EQ(f.t.read(kQEnable, 2), 0u);
  EXPECT_EQ(f.t.read(kQVector, 2), kNoVector);
  EXPECT_EQ(f.t.read(kQDesc, 8), 0u);
  // A reset before DRIVER_OK has nothing to stop.
  f.t.write(kStatus, 1, 0);
  EXPECT_EQ(f.backend.resets, 1);
}

TEST(VirtioPci, DeviceConfigIsForwardedWithExactSizesAndBounds) {
  Fixture f;
  EXPECT_EQ(f.t.read(kDeviceOffset + 4, 4), 0xa7a6a5a4u);
  EXPECT_EQ(f.t.read(kDeviceOffset, 8), 0xa7a6a5a4a3a2a1a0ull);
  EXPECT_EQ(f.t.read(kDeviceOffset + 59, 1), 0xa0u + 59);
  int reads = f.backend.reads;
  EXPECT_EQ(f.t.read(kDeviceOffset + 58, 4), 0u);  // Past the 60 bytes: not forwarded.
  EXPECT_EQ(f.backend.reads, reads);
  f.t.write(kDeviceOffset + 32, 1, 1);  // virtio-blk's writeback byte.
  EXPECT_EQ(f.backend.written[32], std::vector<uint8_t>{1});
}

TEST(VirtioPci, BackendFailureShowsNeedsResetAndStopsForwarding) {
  Fixture f;
  f.backend.fail_config = true;
  EXPECT_EQ(f.t.read(kDeviceOffset, 4), 0xffffffffu);
  EXPECT_TRUE(f.t.read(kStatus, 1) & kStatusNeedsReset);
  int reads = f.backend.reads;
  f.t.read(kDeviceOffset, 4);
  EXPECT_EQ(f.backend.reads, reads);
  f.backend.fail_config = false;
  f.negotiate(1ull << 32);
  f.t.write(kStatus, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  EXPECT_EQ(f.backend.activated, 0);
  EXPECT_TRUE(f.t.read(kStatus, 1) & kStatusNeedsReset);
}

TEST(VirtioPci, ActivationFailureIsReportedAsNeedsReset) {
  Fixture f;
  f.backend.fail_activate = true;
  f.negotiate(1ull << 32);
  f.setup_queue(0, 64, 0x100000);
  f.t.write(kStatus, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  EXPECT_TRUE(f.t.read(kStatus, 1) & kStatusNeedsReset);
}

TEST(VirtioPci, QueueInterruptFollowsMsixEnableMasksAndVectors) {
  Fixture f;
  f.enable_memory();
  auto& c = *f.t.config_space();
  uint8_t m = f.msix_cap();
  f.t.write(kQSelect, 2, 1);
  f.t.write(kQVector, 2, 2);
  // Program vector 2: address, data, then unmask.
  uint64_t e = kMsixTableOffset + 2 * 16;
  f.t.write(e, 4, 0xfee01000);
  f.t.write(e + 4, 4, 0);
  f.t.write(e + 8, 4, 0x4041);
  EXPECT_FALSE(f.t.queue_interrupt(1));  // MSI-X is off.
  c.write(m + 2u, 2, 0x8000);
  f.t.config_written();
  EXPECT_FALSE(f.t.queue_interrupt(1));  // The vector is still masked (its reset state).
  EXPECT_EQ(f.t.read(e + 12, 4), 1u);
  uint64_t g = f.t.generation();
  f.t.write(e + 12, 4, 0);
  EXPECT_NE(f.t.generation(), g);
  auto msg = f.t.queue_interrupt(1);
  ASSERT_TRUE(msg);
  EXPECT_EQ(msg->address, 0xfee01000u);
  EXPECT_EQ(msg->data, 0x4041u);
  EXPECT_EQ(f.t.read(e + 8, 4), 0x4041u);
  EXPECT_FALSE(f.t.queue_interrupt(0));  // Queue 0 has no vector.
  c.write(m + 2u, 2, 0xc000);            // Function mask.
  f.t.config_written();
  EXPECT_FALSE(f.t.queue_interrupt(1));
  c.write(m + 2u, 2, 0x8000);
  f.t.config_written();
  EXPECT_TRUE(f.t.queue_interrupt(1));
  f.t.write(e + 12, 4, 0xfffffffe);  // Only the mask bit is writable.
  EXPECT_EQ(f.t.read(e + 12, 4), 0u);
  f.t.write(e + 2, 2, 0xffff);  // Not a dword: ignored.
  EXPECT_EQ(f.t.read(e, 4), 0xfee01000u);
  EXPECT_EQ(f.t.read(kMsixPbaOffset, 8), 0u);
}

TEST(VirtioPci, NotifyAreaMapsWritesToQueues) {
  EXPECT_EQ(Transport::notify_queue(kNotifyOffset, 2), 0);
  EXPECT_EQ(Transport::notify_queue(kNotifyOffset + 4, 2), 1);
  EXPECT_EQ(Transport::notify_queue(kNotifyOffset + 6, 2), 1);
  EXPECT_FALSE(Transport::notify_queue(kNotifyOffset + 8, 2));
  EXPECT_FALSE(Transport::notify_queue(kIsrOffset, 2));
}

TEST(VirtioPci, OddAccessesNeverReachTheBackend) {
  Fixture f;
  int reads = f.backend.reads;
  EXPECT_EQ(f.t.read(kDeviceOffset, 3), 0u);
  EXPECT_EQ(f.t.read(kBarSize + 100, 4), 0u);
  EXPECT_EQ(f.t.read(kCommonOffset + 0x36, 4), 0u);  // Past the common config.
  f.t.write(kStatus, 2, 0xffff);                      // device_status is one byte.
  EXPECT_EQ(f.t.read(kStatus, 1), 0u);
  EXPECT_EQ(f.backend.reads, reads);
  EXPECT_EQ(f.t.read(kIsrOffset, 1), 0u);
}

}  // namespace
}  // namespace moss::virtio_pci
