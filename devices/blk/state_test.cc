#include "devices/blk/state.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

namespace moss::blk {
namespace {

SavedState sample() {
  SavedState s;
  s.acked_features = (uint64_t{1} << 32) | (1 << 29) | (1 << 9);
  s.capacity_sectors = 123456789;
  s.read_only = true;
  s.serial = "moss-serial-01";
  s.queues = {{true, 17, 17}, {false, 0, 0}, {true, 65535, 65530}};
  return s;
}

void expect_refused(std::vector<uint8_t> bytes, const std::string& needle) {
  auto d = decode_state(bytes);
  ASSERT_FALSE(d.ok()) << "accepted a blob that should say: " << needle;
  EXPECT_NE(d.error().message.find(needle), std::string::npos) << d.error().message;
}

TEST(BlkState, RoundTripsEveryField) {
  SavedState s = sample();
  auto bytes = encode_state(s);
  EXPECT_EQ(bytes.size(), 64u + 3 * 8);
  auto d = decode_state(bytes);
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(*d, s);
}

TEST(BlkState, RefusesEveryMalformedField) {
  const auto good = encode_state(sample());
  expect_refused({}, "shorter than its header");
  expect_refused(std::vector<uint8_t>(good.begin(), good.begin() + 63), "shorter than its header");
  auto b = good;
  b[0] = 'X';
  expect_refused(b, "magic");
  b = good;
  b[8] = 2;
  expect_refused(b, "has version 2");
  b = good;
  b.push_back(0);
  expect_refused(b, "says it is 88 bytes but 89 arrived");
  b = good;
  b.pop_back();
  expect_refused(b, "says it is 88 bytes but 87 arrived");
  b = good;
  b[32] = 0;
  expect_refused(b, "has 0 queues");
  b = good;
  b[32] = 4;  // Length field and size still say 3 queues.
  expect_refused(b, "wrong length for 4 queues");
  b = good;
  b[34] = 2;
  expect_refused(b, "unknown flags");
  b = good;
  b[35] = 21;
  expect_refused(b, "serial longer than 20");
  b = good;
  b[36 + 19] = 'x';  // Past the 14-byte serial: padding.
  expect_refused(b, "reserved");
  b = good;
  b[60] = 1;
  expect_refused(b, "reserved");
  b = good;
  b[64 + 8 + 1] = 1;  // Queue 1's reserved byte.
  expect_refused(b, "queue 1");
  b = good;
  b[64 + 8 + 2] = 5;  // Queue 1 was never started yet has a position.
  expect_refused(b, "never started");
  b = good;
  b[64 + 4] = 0;  // Queue 0: used 0, avail 17 is fine ...
  b[64 + 2] = 0;
  b[64 + 3] = 0x90;  // ... but avail 0x9000 is more than a ring ahead of used 0.
  expect_refused(b, "more requests taken than a ring can hold");
}

TEST(BlkState, AcceptsTheLargestDevice) {
  SavedState s;
  s.queues.assign(256, QueuePosition{true, 1, 1});
  auto bytes = encode_state(s);
  EXPECT_EQ(bytes.size(), SavedState::kMaxBytes);
  auto d = decode_state(bytes);
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(*d, s);
}

// Every single-bit flip and a batch of random rewrites of a valid blob: the decoder never
// reads out of bounds (the sanitizer build checks), and whatever it accepts re-encodes to
// exactly the bytes it read: the format has one spelling for each state.
TEST(BlkState, MutatedBlobsAreRefusedOrCanonical) {
  const auto good = encode_state(sample());
  auto check = [](const std::vector<uint8_t>& b) {
    auto d = decode_state(b);
    if (d.ok()) {
      EXPECT_EQ(encode_state(*d), b);
    } else {
      EXPECT_FALSE(d.error().message.empty());
    }
  };
  for (size_t i = 0; i < good.size(); i++) {
    for (int bitn = 0; bitn < 8; bitn++) {
      auto b = good;
      b[i] ^= static_cast<uint8_t>(1 << bitn);
      check(b);
    }
  }
  std::mt19937 rng(42);
  for (int round = 0; round < 2000; round++) {
    auto b = good;
    b.resize(rng() % (good.size() + 16));
    for (int k = 0; k < 4; k++) {
      if (!b.empty()) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    }
    check(b);
  }
}

}  // namespace
}  // namespace moss::blk
