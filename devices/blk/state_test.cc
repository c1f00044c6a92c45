#include "devices/blk/state.h"

#include <gtest/gtest.h>

#include "devices/virtio/state_test_support.h"

namespace moss::blk {
namespace {

SavedState sample() {
  SavedState s;
  s.acked_features = (uint64_t{1} << 32) | (1 << 29) | (1 << 9);
  s.capacity_sectors = 123456789;
  s.read_only = true;
  s.serial = "moss-serial-01";
  s.rings = {{true, 17, 17}, {false, 0, 0}, {true, 65535, 65530}};
  return s;
}

TEST(BlkState, RoundTripsEveryField) {
  virtio::expect_round_trip(sample(), 64u + 3 * 8, encode_state, decode_state);
}

// A named blob and what decode_state must say (virtio::StateCase). Also the seeds of
// fuzz/corpus/fuzz_blk_state (named as here).
std::vector<virtio::StateCase> cases() {
  virtio::StateCases c{encode_state(sample()), {}};
  // Valid states.
  c.accept("valid-three-queues", c.good);
  SavedState one;
  one.acked_features = (uint64_t{1} << 32) | (1 << 29) | (1 << 28) | (1 << 9) | (1 << 13) | (1 << 14);
  one.capacity_sectors = 16384;
  one.serial = "moss0123456789abcdef";
  one.rings = {{true, 40, 40}};
  c.accept("valid-one-queue", encode_state(one));
  SavedState fresh;
  fresh.capacity_sectors = 1;
  fresh.rings.assign(4, QueuePosition{});
  c.accept("valid-never-started", encode_state(fresh));
  SavedState largest;
  largest.rings.assign(256, QueuePosition{true, 1, 1});
  c.accept("valid-256-queues", encode_state(largest));
  // Malformed ones.
  c.refuse("empty", {}, "shorter than its header");
  c.refuse("short-header", std::vector<uint8_t>(c.good.begin(), c.good.begin() + 63), "shorter than its header");
  c.refuse_changed("bad-magic", "magic", [](auto& b) { b[0] = 'X'; });
  c.refuse_changed("version-2", "has version 2", [](auto& b) { b[8] = 2; });
  c.refuse_changed("one-byte-long", "says it is 88 bytes but 89 arrived", [](auto& b) { b.push_back(0); });
  c.refuse_changed("one-byte-short", "says it is 88 bytes but 87 arrived", [](auto& b) { b.pop_back(); });
  c.refuse_changed("zero-queues", "has 0 queues", [](auto& b) { b[32] = 0; });
  // The length field and the size still say 3 queues.
  c.refuse_changed("queue-count-mismatch", "wrong length for 4 queues", [](auto& b) { b[32] = 4; });
  c.refuse_changed("unknown-flags", "unknown flags", [](auto& b) { b[34] = 2; });
  c.refuse_changed("serial-too-long", "serial longer than 20", [](auto& b) { b[35] = 21; });
  c.refuse_changed("serial-padding", "reserved", [](auto& b) { b[36 + 19] = 'x'; });  // Past the 14-byte serial.
  c.refuse_changed("reserved-header", "reserved", [](auto& b) { b[60] = 1; });
  c.refuse_changed("queue-reserved", "queue 1", [](auto& b) { b[64 + 8 + 1] = 1; });
  // Queue 1 was never started yet has a position.
  c.refuse_changed("never-started-position", "never started", [](auto& b) { b[64 + 8 + 2] = 5; });
  // Queue 0: used 0, avail 0x9000, more than a ring ahead.
  c.refuse_changed("avail-too-far-ahead", "more requests taken than a ring can hold", [](auto& b) {
    b[64 + 4] = 0;
    b[64 + 2] = 0;
    b[64 + 3] = 0x90;
  });
  return std::move(c.list);
}

// RefusesEveryMalformedField, FuzzSeedsAreTheCasesAbove (fuzz/fuzz_blk_state.cc; regenerate
// with MOSS_WRITE_BLK_STATE_SEEDS=1 blk_state_test), MutatedBlobsAreRefusedOrCanonical.
MOSS_STATE_FORMAT_TESTS(BlkState, "fuzz_blk_state", "MOSS_WRITE_BLK_STATE_SEEDS", 42)

TEST(BlkState, AcceptsTheLargestDevice) {
  SavedState s;
  s.rings.assign(256, QueuePosition{true, 1, 1});
  virtio::expect_round_trip(s, SavedState::kMaxBytes, encode_state, decode_state);
}

}  // namespace
}  // namespace moss::blk
