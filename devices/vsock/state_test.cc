#include "devices/vsock/state.h"

#include <gtest/gtest.h>

#include "devices/virtio/state_test_support.h"

namespace moss::vsock {
namespace {

SavedState sample() {
  SavedState s;
  s.guest_cid = 1234;
  s.acked_features = (uint64_t{1} << 32) | (1 << 29);
  s.rings = {virtio::RingPosition{true, 300, 300}, virtio::RingPosition{true, 65535, 65535}, virtio::RingPosition{}};
  return s;
}

TEST(VsockState, RoundTripsEveryField) {
  virtio::expect_round_trip(sample(), SavedState::kBytes, encode_state, decode_state);
}

// A named blob and what decode_state must say (virtio::StateCase). Also the seeds of
// fuzz/corpus/fuzz_vsock_state (named as here).
std::vector<virtio::StateCase> cases() {
  virtio::StateCases c{encode_state(sample()), {}};
  c.accept("valid", c.good);
  SavedState fresh;
  fresh.guest_cid = 3;
  c.accept("valid-never-started", encode_state(fresh));
  c.refuse("empty", {}, "shorter than its header");
  c.refuse_changed("bad-magic", "magic", [](auto& b) { b[4] = 'X'; });
  c.refuse_changed("version-2", "has version 2", [](auto& b) { b[8] = 2; });
  c.refuse_changed("one-byte-long", "says it is 56 bytes but 57 arrived", [](auto& b) { b.push_back(0); });
  c.refuse_changed("one-byte-short", "says it is 56 bytes but 55 arrived", [](auto& b) { b.pop_back(); });
  c.refuse_changed("length-says-short", "is 48 bytes, not 56", [](auto& b) {
    b.resize(48);
    b[12] = 48;
  });
  c.refuse_changed("reserved-cid", "guest CID 2", [](auto& b) {
    b[16] = 2;
    b[17] = 0;
  });
  c.refuse_changed("ring-flags", "unknown flags or reserved bytes for the receive ring", [](auto& b) { b[32] = 3; });
  c.refuse_changed("ring-reserved", "unknown flags or reserved bytes for the event ring", [](auto& b) { b[32 + 16 + 7] = 1; });
  c.refuse_changed("never-started-position", "never started", [](auto& b) { b[32 + 16 + 2] = 1; });
  c.refuse_changed("buffers-held", "taken and not returned", [](auto& b) { b[32 + 8 + 2] = 0; });
  return std::move(c.list);
}

// RefusesEveryMalformedField, FuzzSeedsAreTheCasesAbove (fuzz/fuzz_vsock_state.cc; regenerate
// with MOSS_WRITE_VSOCK_STATE_SEEDS=1 vsock_state_test), MutatedBlobsAreRefusedOrCanonical.
MOSS_STATE_FORMAT_TESTS(VsockState, "fuzz_vsock_state", "MOSS_WRITE_VSOCK_STATE_SEEDS", 7)

}  // namespace
}  // namespace moss::vsock
