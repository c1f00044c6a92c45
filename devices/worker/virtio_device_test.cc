// runtime::VirtioDevice without rings: what the base answers for every device (features,
// protocol features, config space, DEVICE_STATE's common part and its checks, reset) and which
// hooks it calls. Rings started and stopped through a Backend are covered by the devices'
// own tests (blk, vsock, null device_test.cc), which run on this base.
#include "devices/worker/virtio_device.h"

#include <gtest/gtest.h>

#include "devices/virtio/saved_state.h"

namespace moss::runtime {
namespace {

using vhost_user::bit;
namespace pf = vhost_user::protocol_feature;

// A state format of the test device: the header, the features at 16, the rings from 24.
constexpr virtio::StateFormat kFormat{"MOSSTST", "virtio-test", "moss-test", 1, 24, 16};

class TestDevice final : public VirtioDevice {
 public:
  explicit TestDevice(size_t max_state_bytes, uint64_t extra_protocol_features = 0)
      : VirtioDevice({"virtio-test", bit(virtio::feature::kVersion1) | bit(virtio::feature::kEventIdx),
                      extra_protocol_features, 2, 256, {}, {1, 2, 3, 4, 5, 6, 7, 8}, max_state_bytes}) {}

  Stats stats() const override { return {}; }

  int loaded = 0;
  int resets = 0;

 private:
  void process(uint32_t) override {}
  void driver_reset() override { ++resets; }
  void state_loaded() override { ++loaded; }
  Result<std::vector<uint8_t>> write_state(const virtio::CommonState& common) const override {
    return kFormat.start(common);
  }
  Result<virtio::CommonState> read_state(std::span<const uint8_t> bytes) const override {
    MOSS_TRY_VOID(kFormat.check_header(bytes));
    if ((bytes.size() - kFormat.header_bytes) % virtio::StateFormat::kRingBytes != 0) return kFormat.bad("is cut short");
    return kFormat.read_common(bytes);
  }
};

std::vector<uint8_t> state_of(uint64_t features, std::vector<virtio::RingPosition> rings) {
  return kFormat.start(virtio::CommonState{features, std::move(rings)});
}

TEST(VirtioDevice, OffersConfigAlwaysAndDeviceStateOnlyWithAState) {
  TestDevice stateless(0, bit(pf::kInflightShmfd));
  EXPECT_EQ(stateless.protocol_features(), bit(pf::kConfig) | bit(pf::kInflightShmfd));
  EXPECT_EQ(stateless.max_state_bytes(), 0u);
  auto saved = stateless.save_state();
  ASSERT_FALSE(saved.ok());
  EXPECT_NE(saved.error().message.find("virtio-test"), std::string::npos) << saved.error().message;
  EXPECT_FALSE(stateless.load_state(state_of(0, {{}, {}})).ok());

  TestDevice device(64);
  EXPECT_EQ(device.protocol_features(), bit(pf::kConfig) | bit(pf::kDeviceState));
  EXPECT_EQ(device.features(), bit(virtio::feature::kVersion1) | bit(virtio::feature::kEventIdx));
  EXPECT_EQ(device.num_queues(), 2u);
  EXPECT_EQ(device.max_queue_size(), 256u);
}

TEST(VirtioDevice, ServesItsConfigSpaceAndRefusesWritesToIt) {
  TestDevice device(0);
  auto all = device.get_config(0, 8);
  ASSERT_TRUE(all.ok()) << all.error().message;
  EXPECT_EQ(*all, (std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  auto slice = device.get_config(6, 2);
  ASSERT_TRUE(slice.ok());
  EXPECT_EQ(*slice, (std::vector<uint8_t>{7, 8}));
  auto past = device.get_config(4, 8);
  ASSERT_FALSE(past.ok());
  EXPECT_NE(past.error().message.find("virtio-test config bytes 4+8, past its 8 bytes"), std::string::npos)
      << past.error().message;
  EXPECT_FALSE(device.get_config(UINT32_MAX, 2).ok());
  uint8_t b = 0;
  auto written = device.set_config(0, std::span(&b, 1), 0);
  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.error().message, "the virtio-test config space is read-only");
}

TEST(VirtioDevice, SavesTheDriversFeaturesAndWhereEveryRingStands) {
  TestDevice device(64);
  ASSERT_TRUE(device.set_features(bit(virtio::feature::kVersion1)).ok());
  auto saved = device.save_state();
  ASSERT_TRUE(saved.ok()) << saved.error().message;
  EXPECT_EQ(*saved, state_of(bit(virtio::feature::kVersion1), {{}, {}})) << "rings never started";
}

TEST(VirtioDevice, ALoadedStateHoldsTheDriverToItsFeaturesUntilReset) {
  TestDevice device(64);
  const uint64_t f = bit(virtio::feature::kVersion1);
  const auto state = state_of(f, {{true, 7, 7}, {false, 0, 0}});
  ASSERT_TRUE(device.load_state(state).ok());
  EXPECT_EQ(device.loaded, 1);
  // Until the rings start, a save gives back what was loaded.
  auto again = device.save_state();
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, state);
  EXPECT_FALSE(device.set_features(f | bit(virtio::feature::kEventIdx)).ok()) << "not the saved features";
  EXPECT_TRUE(device.set_features(f).ok());
  // RESET_DEVICE: the driver starts over, the state's expectations go.
  device.reset();
  EXPECT_EQ(device.resets, 1);
  EXPECT_TRUE(device.set_features(f | bit(virtio::feature::kEventIdx)).ok());
  auto fresh = device.save_state();
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(*fresh, state_of(f | bit(virtio::feature::kEventIdx), {{}, {}}));
}

TEST(VirtioDevice, ARefusedStateChangesNothing) {
  TestDevice device(64);
  const uint64_t f = bit(virtio::feature::kVersion1);
  ASSERT_TRUE(device.set_features(f).ok());
  // Another ring count than the device's.
  auto rings = device.load_state(state_of(f, {{true, 1, 1}}));
  ASSERT_FALSE(rings.ok());
  EXPECT_NE(rings.error().message.find("has 1 rings; this virtio-test device has 2"), std::string::npos)
      << rings.error().message;
  // Features other than those the driver already accepted.
  EXPECT_FALSE(device.load_state(state_of(f | bit(virtio::feature::kEventIdx), {{}, {}})).ok());
  // Not a state at all.
  EXPECT_FALSE(device.load_state(std::vector<uint8_t>(24, 0)).ok());
  EXPECT_EQ(device.loaded, 0);
  auto saved = device.save_state();
  ASSERT_TRUE(saved.ok());
  EXPECT_EQ(*saved, state_of(f, {{}, {}}));
}

}  // namespace
}  // namespace moss::runtime
