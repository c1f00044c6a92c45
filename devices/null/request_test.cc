#include "devices/null/request.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "devices/null/fuzz_input.h"
#include "devices/virtio/seed_files.h"

namespace moss::null {
namespace {

std::vector<uint8_t> header(uint32_t type, uint64_t sector) {
  std::vector<uint8_t> h(16, 0);
  for (int i = 0; i < 4; i++) h[i] = static_cast<uint8_t>(type >> (8 * i));
  for (int i = 0; i < 8; i++) h[8 + i] = static_cast<uint8_t>(sector >> (8 * i));
  return h;
}

// A named fuzz input and what answer_request must give: the status (none: nowhere to write
// it) and the used length. Also the seeds of fuzz/corpus/fuzz_null_request (named as here).
struct Case {
  std::string name;
  std::vector<uint8_t> input;
  std::optional<uint8_t> status;
  uint32_t used_len;
};

std::vector<Case> cases() {
  auto write_req = header(1, 3);
  write_req.resize(16 + 1024, 0x42);
  return {
      {"read-4k", fuzz::encode(header(0, 8), 4096 + 1, 4), blk::kOk, 4097},
      {"write-1k", fuzz::encode(write_req, 1, 1), blk::kOk, 1},
      {"flush", fuzz::encode(header(4, 0), 1, 1), blk::kOk, 1},
      {"get-id", fuzz::encode(header(8, 0), 20 + 1, 1), blk::kOk, 21},
      {"unknown-type", fuzz::encode(header(99, 0), 1, 1), blk::kUnsupported, 1},
      {"read-past-the-end", fuzz::encode(header(0, 7), 1024 + 1, 1), blk::kIoErr, 1},
      {"no-status-byte", fuzz::encode(header(0, 0), 0, 1), std::nullopt, 0},
      {"short-header", fuzz::encode(std::vector<uint8_t>(8, 0), 1, 1), blk::kIoErr, 1},
  };
}

TEST(NullRequest, AnswersEveryCaseAndReadsGiveZeros) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    fuzz::Decoded d;
    ASSERT_TRUE(fuzz::decode(c.input, d));
    Answer a = answer_request(d.chain, d.disk);
    EXPECT_EQ(a.status, c.status);
    EXPECT_EQ(a.used_len, c.used_len);
    if (c.status) {
      EXPECT_EQ(d.chain.writable.back().back(), *c.status) << "the status byte is the chain's last";
    }
    // Everything answered before the status byte reads as zeros.
    if (!d.chain.writable.empty() && a.used_len > 1) {
      for (uint32_t i = 0; i + 1 < a.used_len; i++) ASSERT_EQ(d.chain.writable[0][i], 0) << i;
    }
  }
}

// Without read zeroes (the bench's transport row) a read leaves the guest's bytes alone and is
// still answered in full; GET_ID is zeroed either way (it is no read of the disk).
TEST(NullRequest, WithoutReadZeroesAReadLeavesTheBuffersAlone) {
  for (bool zero : {true, false}) {
    SCOPED_TRACE(zero ? "read zeroes" : "no read zeroes");
    fuzz::Decoded d;
    ASSERT_TRUE(fuzz::decode(cases()[0].input, d));  // read-4k
    auto& data = d.chain.writable[0];
    std::fill(data.begin(), data.end(), 0xa5);
    Answer a = answer_request(d.chain, d.disk, zero);
    EXPECT_EQ(a.status, blk::kOk);
    EXPECT_EQ(a.used_len, 4097u);
    EXPECT_EQ(data[0], zero ? 0 : 0xa5);
    EXPECT_EQ(data[4095], zero ? 0 : 0xa5);
  }
  fuzz::Decoded id;
  ASSERT_TRUE(fuzz::decode(cases()[3].input, id));  // get-id
  std::fill(id.chain.writable[0].begin(), id.chain.writable[0].end(), 0xa5);
  EXPECT_EQ(answer_request(id.chain, id.disk, false).used_len, 21u);
  EXPECT_EQ(id.chain.writable[0][0], 0);
}

// Every case above is a seed of the fuzz target (fuzz/fuzz_null_request.cc), byte for byte.
// Regenerate after changing the cases or the format: MOSS_WRITE_NULL_SEEDS=1 null_request_test
TEST(NullRequest, FuzzSeedsAreTheCasesAbove) {
  virtio::expect_seed_files(cases(), &Case::input, "fuzz_null_request", "MOSS_WRITE_NULL_SEEDS");
}

}  // namespace
}  // namespace moss::null
