// The virtio-pci transport's saved state (vcpu/virtio_pci.h TransportState): a driven
// transport saves, a fresh one restores to exactly what the guest saw, and the decoder
// refuses every malformed blob with one sentence. The cases are the seeds of
// fuzz/fuzz_virtio_pci_state.cc (fuzz/corpus/fuzz_virtio_pci_state), byte for byte.
#include <gtest/gtest.h>

#include "devices/virtio/state_test_support.h"
#include "vcpu/virtio_pci.h"

namespace moss::virtio_pci {
namespace {

constexpr uint64_t kBar = 0xc0000000;

class NullBackend : public VirtioBackend {
 public:
  Result<void> read_config(uint32_t, std::span<uint8_t> data) override {
    for (auto& b : data) b = 0x5a;
    return {};
  }
  Result<void> write_config(uint32_t, std::span<const uint8_t>) override { return {}; }
  Result<void> activate(uint64_t, std::span<const QueueState>) override {
    activated++;
    return {};
  }
  Result<void> reset() override { return {}; }
  int activated = 0;
};

// What the fuzz target and the seeds decode against: 2 queues of at most 128 entries.
DeviceInfo info() { return DeviceInfo{2, 0x010000, (1ull << 9) | (1ull << 29), 2, 128, 60}; }

// A transport a driver brought up: BAR moved, MSI-X on, both queues set up, DRIVER_OK.
void drive(Transport& t) {
  auto& c = *t.config_space();
  c.write(0x10, 4, 0xd0000000);
  c.write(0x04, 2, 0x0006);
  t.config_written();
  t.write(0x14, 1, kStatusAcknowledge);
  t.write(0x14, 1, kStatusAcknowledge | kStatusDriver);
  t.write(0x08, 4, 0);
  t.write(0x0c, 4, 1u << 9);
  t.write(0x08, 4, 1);
  t.write(0x0c, 4, 1);  // VERSION_1.
  t.write(0x14, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  t.write(0x10, 2, 2);  // Config vector.
  for (uint16_t q = 0; q < 2; q++) {
    t.write(0x16, 2, q);
    t.write(0x18, 2, 64);
    t.write(0x1a, 2, q);
    t.write(0x20, 8, 0x100000 + q * 0x10000);
    t.write(0x28, 8, 0x101000 + q * 0x10000);
    t.write(0x30, 8, 0x102000 + q * 0x10000);
    t.write(0x1c, 2, 1);
  }
  for (uint64_t v = 0; v < 3; v++) {
    t.write(kMsixTableOffset + 16 * v, 4, 0xfee00000);
    t.write(kMsixTableOffset + 16 * v + 8, 4, 0x40 + v);
    t.write(kMsixTableOffset + 16 * v + 12, 4, 0);
  }
  for (uint32_t p = c.read(0x34, 1); p; p = c.read(p + 1, 1)) {
    if (c.read(p, 1) == 0x11) c.write(p + 2, 2, 0x8000);
  }
  t.config_written();
  t.write(0x14, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
}

TransportState sample() {
  NullBackend b;
  Transport t(info(), b, kBar);
  drive(t);
  auto s = t.state();
  s.queues[0].started = true;
  s.queues[0].base = 17;
  s.queues[1].started = true;
  s.queues[1].base = 3;
  s.pba[0] = 1;  // Vector 0 pending.
  return s;
}

TEST(VirtioPciState, RestoredTransportShowsTheGuestWhatItSaw) {
  NullBackend b1, b2;
  Transport t1(info(), b1, kBar), t2(info(), b2, kBar);
  drive(t1);
  auto bytes = encode_transport_state(t1.state());
  auto d = decode_transport_state(bytes, info());
  ASSERT_TRUE(d.ok()) << d.error().message;
  uint64_t g = t2.generation();
  t2.restore(*d);
  EXPECT_NE(t2.generation(), g);
  EXPECT_EQ(b2.activated, 0);  // The backend is restored on its own, not through activate.
  EXPECT_EQ(t2.state(), t1.state());
  EXPECT_EQ(t2.bar(), 0xd0000000u);
  EXPECT_EQ(t2.status(), t1.status());
  for (uint16_t q = 0; q < 2; q++) EXPECT_EQ(t2.queue_interrupt(q), t1.queue_interrupt(q));
  ASSERT_TRUE(t2.queue_interrupt(1).has_value());
  EXPECT_EQ(t2.queue_interrupt(1)->data, 0x41u);
  // Every register the driver reads back.
  for (uint64_t off = 0; off < kCommonSize; off += 2) {
    for (uint16_t q = 0; q < 2; q++) {
      t1.write(0x16, 2, q);
      t2.write(0x16, 2, q);
      EXPECT_EQ(t2.read(off, 2), t1.read(off, 2)) << "offset " << off;
    }
  }
  for (uint64_t off = kMsixTableOffset; off < kMsixTableOffset + 48; off += 4) EXPECT_EQ(t2.read(off, 4), t1.read(off, 4));
  for (size_t off = 0; off < 256; off += 4) EXPECT_EQ(t2.config_space()->read(off, 4), t1.config_space()->read(off, 4));
  // A restored live transport refuses what a live one refuses: queue size after DRIVER_OK.
  t2.write(0x16, 2, 0);
  t2.write(0x18, 2, 32);
  EXPECT_EQ(t2.read(0x18, 2), 64u);
}

TEST(VirtioPciState, FreshTransportRoundTrips) {
  NullBackend backend;
  Transport t(info(), backend, kBar);
  auto s = t.state();
  EXPECT_EQ(s.status, 0);
  EXPECT_EQ(s.bar, kBar);
  virtio::expect_round_trip(s, TransportState::kHeaderBytes + 2 * 32 + 3 * 16, encode_transport_state,
                            [](std::span<const uint8_t> b) { return decode_transport_state(b, info()); });
}

std::vector<virtio::StateCase> cases() {
  virtio::StateCases c{encode_transport_state(sample()), {}};
  c.accept("valid-running", c.good);
  {
    NullBackend b;
    Transport t(info(), b, kBar);
    c.accept("valid-fresh", encode_transport_state(t.state()));
  }
  // Offsets: header fields, then queue 0 at 72 and queue 1 at 104, vectors at 136.
  c.refuse("empty", {}, "truncated");
  c.refuse("short-header", std::vector<uint8_t>(c.good.begin(), c.good.begin() + 71), "truncated");
  c.refuse_changed("bad-magic", "MOSSVPCI", [](auto& b) { b[4] = 'X'; });
  c.refuse_changed("version-2", "has version 2", [](auto& b) { b[8] = 2; });
  c.refuse_changed("one-byte-long", "wrong length", [](auto& b) { b.push_back(0); });
  c.refuse_changed("one-byte-short", "wrong length", [](auto& b) { b.pop_back(); });
  c.refuse_changed("length-field", "wrong length", [](auto& b) { b[12]++; });
  c.refuse_changed("queue-count", "has 3 queues; the device has 2", [](auto& b) { b[20] = 3; });
  c.refuse_changed("vector-count", "MSI-X vectors", [](auto& b) { b[22] = 4; });
  c.refuse_changed("command-bits", "PCI command bits", [](auto& b) { b[16] |= 0x40; });
  c.refuse_changed("msix-control-bits", "MSI-X control bits", [](auto& b) { b[18] = 0x07; });
  c.refuse_changed("bar-misaligned", "not aligned", [](auto& b) { b[25] = 0x10; });
  c.refuse_changed("feature-not-offered", "does not offer", [](auto& b) { b[40] |= 0x01; });
  c.refuse_changed("unknown-status", "unknown device status", [](auto& b) { b[48] |= 0x10; });
  c.refuse_changed("features-ok-without-version-1", "without VERSION_1", [](auto& b) { b[44] = 0; });
  c.refuse_changed("driver-ok-without-features-ok", "DRIVER_OK without FEATURES_OK",
                   [](auto& b) { b[48] = kStatusAcknowledge | kStatusDriver | kStatusDriverOk; });
  c.refuse_changed("config-vector", "configuration an MSI-X vector", [](auto& b) { b[50] = 3; });
  c.refuse_changed("reserved-flags", "reserved bits", [](auto& b) { b[54] = 2; });
  c.refuse_changed("reserved-byte", "reserved bits", [](auto& b) { b[55] = 1; });
  c.refuse_changed("pba-beyond-vectors", "pending", [](auto& b) { b[56] = 0x08; });
  c.refuse_changed("queue-size-not-power-of-2", "power of 2 up to 128", [](auto& b) { b[72] = 48; });
  c.refuse_changed("queue-size-too-large", "power of 2 up to 128", [](auto& b) { b[72] = 0; b[73] = 1; });
  c.refuse_changed("queue-enabled-byte", "reserved bits", [](auto& b) { b[74] = 2; });
  c.refuse_changed("queue-vector", "MSI-X vector the device lacks", [](auto& b) { b[76] = 7; });
  c.refuse_changed("started-ring-not-enabled", "did not start", [](auto& b) { b[74] = 0; });
  c.refuse_changed("started-ring-not-live", "did not start", [](auto& b) { b[48] &= ~kStatusDriverOk; });
  c.refuse_changed("base-without-ring", "never ran", [](auto& b) { b[75] = 0; });
  c.refuse_changed("msix-control-reserved", "vector control", [](auto& b) { b[136 + 12] = 2; });
  return c.list;
}

TEST(VirtioPciState, NamedCasesAreAcceptedOrRefused) {
  virtio::expect_cases(cases(), encode_transport_state,
                       [](std::span<const uint8_t> b) { return decode_transport_state(b, info()); });
}

// Regenerate after changing the cases or the format: MOSS_WRITE_VIRTIO_PCI_STATE_SEEDS=1 vcpu_test
TEST(VirtioPciState, FuzzSeedsAreTheCasesAbove) {
  virtio::expect_seed_files(cases(), &virtio::StateCase::bytes, "fuzz_virtio_pci_state",
                            "MOSS_WRITE_VIRTIO_PCI_STATE_SEEDS");
}

TEST(VirtioPciState, RefusesAStateOfAnotherDevice) {
  auto bytes = encode_transport_state(sample());
  DeviceInfo smaller = info();
  smaller.max_queue_size = 32;
  auto d = decode_transport_state(bytes, smaller);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().message.find("power of 2 up to 32"), std::string::npos) << d.error().message;
  DeviceInfo fewer = info();
  fewer.features = 0;  // Bit 9 no longer offered.
  EXPECT_FALSE(decode_transport_state(bytes, fewer).ok());
}

TEST(VirtioPciState, MutatedBlobsAreRefusedOrCanonical) {
  virtio::expect_mutations_refused_or_canonical(encode_transport_state(sample()), 7, encode_transport_state,
                                                [](std::span<const uint8_t> b) { return decode_transport_state(b, info()); });
}

}  // namespace
}  // namespace moss::virtio_pci
