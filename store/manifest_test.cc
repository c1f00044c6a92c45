#include "store/manifest.h"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>

#include "store/test_support.h"

namespace moss::store {
namespace {

// A manifest of 1 MiB of RAM in 64 KiB chunks: chunk 0 zero, the rest stored; `edit` changes
// it before encoding.
std::vector<uint8_t> manifest_bytes(const std::function<void(spore::Manifest::Builder)>& edit = {}) {
  capnp::MallocMessageBuilder message;
  auto m = message.initRoot<spore::Manifest>();
  testing::fill_manifest(m, 1 << 20);
  m.setFormatVersion(spore::SPORE_FORMAT_VERSION);
  auto mem = m.initMemory();
  mem.setChunkBytes(65536);
  auto ranges = mem.initRanges(1);
  ranges[0].setGuestAddr(0);
  ranges[0].setBytes(1 << 20);
  auto chunks = ranges[0].initChunks(16);
  chunks[0].setZero(true);
  for (unsigned i = 1; i < 16; ++i) {
    chunks[i].setHi(i);
    chunks[i].setLo(i * 1000);
  }
  if (edit) edit(m);
  return encode_message(message);
}

// Two ranges [0, 512K) and [512K, 1M) instead of one, each chunked from its start.
void split_in_two(spore::Manifest::Builder m, uint64_t second_at) {
  auto ranges = m.getMemory().initRanges(2);
  ranges[0].setGuestAddr(0);
  ranges[0].setBytes(512 << 10);
  ranges[0].initChunks(8);
  for (auto c : ranges[0].getChunks()) c.setZero(true);
  ranges[1].setGuestAddr(second_at);
  ranges[1].setBytes(512 << 10);
  ranges[1].initChunks(8);
  for (auto c : ranges[1].getChunks()) c.setZero(true);
}

struct Malformed {
  const char* name;
  std::vector<uint8_t> bytes;
  const char* reason;
};

std::vector<Malformed> malformed_cases() {
  std::vector<Malformed> cases;
  auto good = manifest_bytes();
  cases.push_back({"empty", {}, "is not a whole Cap'n Proto message"});
  cases.push_back({"truncated_half", {good.begin(), good.begin() + (good.size() / 2 & ~size_t{7})}, "is truncated"});
  cases.push_back({"truncated_one_word", {good.begin(), good.end() - 8}, "is truncated"});
  cases.push_back({"odd_length", {good.begin(), good.end() - 3}, "is not a whole Cap'n Proto message"});
  auto trailing = good;
  trailing.resize(good.size() + 8);
  cases.push_back({"trailing_bytes", trailing, "bytes after its end"});
  std::vector<uint8_t> many_segments(16, 0);
  many_segments[0] = 0xff;
  many_segments[1] = 0xff;
  cases.push_back({"too_many_segments", many_segments, "too many segments"});
  auto bad_pointer = good;
  if (bad_pointer.size() >= 16) std::memset(bad_pointer.data() + 8, 0xff, 8);  // The root pointer points nowhere.
  cases.push_back({"bad_root_pointer", bad_pointer, "is malformed"});
  cases.push_back({"unknown_version", manifest_bytes([](auto m) { m.setFormatVersion(99); }),
                   "has format version 99, which this moss does not know"});
  cases.push_back({"version_zero", manifest_bytes([](auto m) { m.setFormatVersion(0); }), "has format version 0"});
  cases.push_back({"chunk_size_not_power_of_two", manifest_bytes([](auto m) { m.getMemory().setChunkBytes(65535); }),
                   "is not a power of two"});
  cases.push_back({"chunk_count_short", manifest_bytes([](auto m) {
                     m.getMemory().getRanges()[0].initChunks(15);
                   }), "has 15 chunks where its 1048576 bytes need 16"});
  cases.push_back({"chunk_count_long", manifest_bytes([](auto m) {
                     auto c = m.getMemory().getRanges()[0].initChunks(17);
                     for (auto x : c) x.setZero(true);
                   }), "has 17 chunks where its 1048576 bytes need 16"});
  cases.push_back({"overlapping_ranges", manifest_bytes([](auto m) { split_in_two(m, 256 << 10); }),
                   "overlaps the one before it"});
  cases.push_back({"range_outside_ram", manifest_bytes([](auto m) { split_in_two(m, 1 << 20); }),
                   "is outside the machine's RAM"});
  cases.push_back({"unaligned_range", manifest_bytes([](auto m) { m.getMemory().getRanges()[0].setGuestAddr(100); }),
                   "is empty, unaligned or wraps"});
  cases.push_back({"zero_chunk_with_hash", manifest_bytes([](auto m) {
                     m.getMemory().getRanges()[0].getChunks()[0].setHi(5);
                   }), "has a zero chunk with a hash"});
  cases.push_back({"map_misses_ram", manifest_bytes([](auto m) {
                     auto r = m.getMemory().getRanges()[0];
                     r.setBytes(512 << 10);
                     auto c = r.initChunks(8);
                     for (auto x : c) x.setZero(true);
                   }), "covers 524288 bytes of the machine's 1048576 bytes of RAM, and it has no parent"});
  cases.push_back({"ram_ranges_overlap", manifest_bytes([](auto m) {
                     auto r = m.getMachine().initRamRanges(2);
                     r[0].setBytes(1 << 20);
                     r[1].setGuestAddr(4096);
                     r[1].setBytes(4096);
                   }), "RAM ranges overlap"});
  return cases;
}

TEST(DecodeManifest, AcceptsAWellFormedManifestAndCopiesItsMap) {
  auto bytes = manifest_bytes();
  auto m = decode_manifest(bytes);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ((*m)->chunk_bytes(), 65536u);
  ASSERT_EQ((*m)->ranges().size(), 1u);
  EXPECT_TRUE((*m)->ranges()[0].chunks[0].zero);
  EXPECT_EQ((*m)->ranges()[0].chunks[3].id, (ChunkId{3, 3000}));
  EXPECT_EQ((*m)->stored_chunks().size(), 15u);
  EXPECT_EQ((*m)->root().getIdentity().getVsockCid(), 42u);
  EXPECT_EQ((*m)->root().getVcpus().size(), 2u);
  EXPECT_FALSE((*m)->has_parent());
}

TEST(DecodeManifest, APartialMapIsAcceptedWhenTheSporeHasAParent) {
  auto bytes = manifest_bytes([](auto m) {
    auto r = m.getMemory().getRanges()[0];
    r.setGuestAddr(512 << 10);
    r.setBytes(64 << 10);
    r.initChunks(1)[0].setZero(true);
    m.getParent().setHi(1);
  });
  auto m = decode_manifest(bytes);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_TRUE((*m)->has_parent());
}

TEST(DecodeManifest, RefusesEachMalformedCaseWithItsReason) {
  for (const auto& c : malformed_cases()) {
    auto m = decode_manifest(c.bytes);
    ASSERT_FALSE(m.ok()) << c.name;
    EXPECT_NE(m.error().message.find(c.reason), std::string::npos) << c.name << ": " << m.error().message;
    EXPECT_EQ(m.error().message.find('\n'), std::string::npos) << c.name;
  }
}

TEST(DecodeManifest, EveryCutOfAGoodManifestIsRefused) {
  auto good = manifest_bytes();
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(decode_manifest({good.data(), n}).ok()) << n;
  }
}

// Every malformed case is a seed of fuzz/corpus/fuzz_spore_manifest/; MOSS_WRITE_CORPUS=DIR
// writes them (the checked-in seeds were written so).
TEST(DecodeManifest, EveryMalformedCaseIsASeed) {
  const std::string seeds = std::string(MOSS_SOURCE_DIR) + "/fuzz/corpus/fuzz_spore_manifest";
  const char* dir = std::getenv("MOSS_WRITE_CORPUS");
  auto write = [&](const std::string& name, const std::vector<uint8_t>& b) {
    std::ofstream(std::string(dir) + "/" + name, std::ios::binary).write((const char*)b.data(), b.size());
  };
  if (dir) write("good", manifest_bytes());
  for (const auto& c : malformed_cases()) {
    if (dir) write(c.name, c.bytes);
    std::ifstream seed(seeds + "/" + c.name, std::ios::binary);
    std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(seed), {}};
    EXPECT_TRUE(seed.is_open()) << "no seed " << seeds << "/" << c.name;
    EXPECT_EQ(bytes, c.bytes) << c.name << ": the seed differs from the case; rewrite with MOSS_WRITE_CORPUS";
  }
}

}  // namespace
}  // namespace moss::store
