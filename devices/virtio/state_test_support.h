// The checks every worker's saved-state test makes (blk/state_test.cc, vsock/state_test.cc),
// given its encode_state and decode_state: the named cases are accepted (and re-encode to the
// same bytes) or refused with the sentence they name (their seed files: seed_files.h); and
// every mutation of a valid blob is refused or canonical.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "devices/virtio/seed_files.h"

namespace moss::virtio {

// A named blob and what decode_state must say: accept it (empty needle) or refuse it with a
// sentence containing `needle`.
struct StateCase {
  std::string name;
  std::vector<uint8_t> bytes;
  std::string needle;
};

// The cases of a state test, built from a valid blob `good`.
struct StateCases {
  std::vector<uint8_t> good;
  std::vector<StateCase> list;

  void accept(std::string name, std::vector<uint8_t> bytes) { list.push_back({std::move(name), std::move(bytes), ""}); }
  void refuse(std::string name, std::vector<uint8_t> bytes, std::string needle) {
    list.push_back({std::move(name), std::move(bytes), std::move(needle)});
  }
  // `good` changed by `change(bytes)`, refused with `needle`.
  template <typename F>
  void refuse_changed(std::string name, std::string needle, F change) {
    auto b = good;
    change(b);
    refuse(std::move(name), std::move(b), std::move(needle));
  }
};

// `s` encodes to `size` bytes and decodes back to itself.
template <typename State, typename Encode, typename Decode>
void expect_round_trip(const State& s, size_t size, Encode encode, Decode decode) {
  auto bytes = encode(s);
  EXPECT_EQ(bytes.size(), size);
  auto d = decode(bytes);
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(*d, s);
}

template <typename Encode, typename Decode>
void expect_cases(const std::vector<StateCase>& cases, Encode encode, Decode decode) {
  for (const StateCase& c : cases) {
    SCOPED_TRACE(c.name);
    auto d = decode(c.bytes);
    if (c.needle.empty()) {
      ASSERT_TRUE(d.ok()) << d.error().message;
      EXPECT_EQ(encode(*d), c.bytes);
    } else {
      ASSERT_FALSE(d.ok()) << "accepted a blob that should say: " << c.needle;
      EXPECT_NE(d.error().message.find(c.needle), std::string::npos) << d.error().message;
    }
  }
}

// Every single-bit flip of `good` and 2000 random rewrites (seeded with `seed`): the decoder
// never reads out of bounds (the sanitizer build checks), and whatever it accepts re-encodes to
// exactly the bytes it read: the format has one spelling for each state.
template <typename Encode, typename Decode>
void expect_mutations_refused_or_canonical(const std::vector<uint8_t>& good, uint32_t seed, Encode encode,
                                           Decode decode) {
  auto check = [&](const std::vector<uint8_t>& b) {
    auto d = decode(b);
    if (d.ok()) {
      EXPECT_EQ(encode(*d), b);
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
  std::mt19937 rng(seed);
  for (int round = 0; round < 2000; round++) {
    auto b = good;
    b.resize(rng() % (good.size() + 16));
    for (int k = 0; k < 4; k++) {
      if (!b.empty()) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    }
    check(b);
  }
}

}  // namespace moss::virtio

// The tests every worker's state format has, in suite `Suite`, over the test file's cases()
// (its StateCases) and sample() (a valid state) and its namespace's encode_state and
// decode_state: each case says what it should; every case is a seed of the fuzz target
// `fuzz_target` (fuzz/corpus/<fuzz_target>), byte for byte (regenerate after changing the
// cases or the format: `write_env`=1 <the test binary>); every single-bit flip and a batch of
// random rewrites (seeded with `seed`) of sample()'s bytes are refused with a sentence or
// canonical (the sanitizer build checks the decoder never reads out of bounds).
#define MOSS_STATE_FORMAT_TESTS(Suite, fuzz_target, write_env, seed)                                      \
  TEST(Suite, RefusesEveryMalformedField) {                                                               \
    ::moss::virtio::expect_cases(cases(), encode_state, decode_state);                                     \
  }                                                                                                       \
  TEST(Suite, FuzzSeedsAreTheCasesAbove) {                                                                \
    ::moss::virtio::expect_seed_files(cases(), &::moss::virtio::StateCase::bytes, fuzz_target, write_env); \
  }                                                                                                       \
  TEST(Suite, MutatedBlobsAreRefusedOrCanonical) {                                                        \
    ::moss::virtio::expect_mutations_refused_or_canonical(encode_state(sample()), seed, encode_state,      \
                                                          decode_state);                                  \
  }
