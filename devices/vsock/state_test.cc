#include "devices/vsock/state.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

namespace moss::vsock {
namespace {

SavedState sample() {
  SavedState s;
  s.guest_cid = 1234;
  s.acked_features = (uint64_t{1} << 32) | (1 << 29);
  s.rings = {RingPosition{true, 300, 300}, RingPosition{true, 65535, 65535}, RingPosition{}};
  return s;
}

TEST(VsockState, RoundTripsEveryField) {
  SavedState s = sample();
  auto bytes = encode_state(s);
  EXPECT_EQ(bytes.size(), SavedState::kBytes);
  auto d = decode_state(bytes);
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(*d, s);
}

// A named blob and what decode_state must say: accept it (empty needle) or refuse it with a
// sentence containing `needle`. Also the seeds of fuzz/corpus/fuzz_vsock_state (named as here).
struct Case {
  std::string name;
  std::vector<uint8_t> bytes;
  std::string needle;
};

std::vector<Case> cases() {
  const auto good = encode_state(sample());
  std::vector<Case> out;
  auto add = [&](std::string name, std::string needle, auto change) {
    auto b = good;
    change(b);
    out.push_back({std::move(name), std::move(b), std::move(needle)});
  };
  out.push_back({"valid", good, ""});
  SavedState fresh;
  fresh.guest_cid = 3;
  out.push_back({"valid-never-started", encode_state(fresh), ""});
  out.push_back({"empty", {}, "shorter than its header"});
  add("bad-magic", "magic", [](auto& b) { b[4] = 'X'; });
  add("version-2", "has version 2", [](auto& b) { b[8] = 2; });
  add("one-byte-long", "says it is 56 bytes but 57 arrived", [](auto& b) { b.push_back(0); });
  add("one-byte-short", "says it is 56 bytes but 55 arrived", [](auto& b) { b.pop_back(); });
  add("length-says-short", "is 48 bytes, not 56", [](auto& b) {
    b.resize(48);
    b[12] = 48;
  });
  add("reserved-cid", "guest CID 2", [](auto& b) {
    b[16] = 2;
    b[17] = 0;
  });
  add("ring-flags", "unknown flags or reserved bytes for the receive ring", [](auto& b) { b[32] = 3; });
  add("ring-reserved", "unknown flags or reserved bytes for the event ring", [](auto& b) { b[32 + 16 + 7] = 1; });
  add("never-started-position", "never started", [](auto& b) { b[32 + 16 + 2] = 1; });
  add("buffers-held", "taken and not returned", [](auto& b) { b[32 + 8 + 2] = 0; });
  return out;
}

TEST(VsockState, RefusesEveryMalformedField) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    auto d = decode_state(c.bytes);
    if (c.needle.empty()) {
      ASSERT_TRUE(d.ok()) << d.error().message;
      EXPECT_EQ(encode_state(*d), c.bytes);
    } else {
      ASSERT_FALSE(d.ok()) << "accepted a blob that should say: " << c.needle;
      EXPECT_NE(d.error().message.find(c.needle), std::string::npos) << d.error().message;
    }
  }
}

// Every case above is a seed of the fuzz target (fuzz/fuzz_vsock_state.cc), byte for byte.
// Regenerate after changing the cases or the format: MOSS_WRITE_VSOCK_STATE_SEEDS=1 vsock_state_test
TEST(VsockState, FuzzSeedsAreTheCasesAbove) {
  const std::string dir = std::string(MOSS_SOURCE_DIR) + "/fuzz/corpus/fuzz_vsock_state/";
  const bool write = std::getenv("MOSS_WRITE_VSOCK_STATE_SEEDS") != nullptr;
  for (const Case& c : cases()) {
    const std::string path = dir + c.name;
    if (write) {
      std::filesystem::create_directories(dir);
      std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(c.bytes.data()),
                                                  static_cast<std::streamsize>(c.bytes.size()));
    }
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(in.good()) << path << " is missing; run with MOSS_WRITE_VSOCK_STATE_SEEDS=1 to write it";
    std::vector<uint8_t> got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(got, c.bytes) << path << " differs from the case; run with MOSS_WRITE_VSOCK_STATE_SEEDS=1";
  }
}

// Every single-bit flip and random rewrites: refused with a sentence, or canonical.
TEST(VsockState, MutatedBlobsAreRefusedOrCanonical) {
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
  std::mt19937 rng(7);
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
}  // namespace moss::vsock
