// Seeds for the fuzz targets from the acceptance test's malformed chains (malformed.h), so the
// checked-in corpus holds each of them (issue 3, acceptance 5):
//   fuzz/corpus/fuzz_virtqueue_chain/harness-NAME   every case, as a ring image
//   fuzz/corpus/fuzz_blk_request/harness-NAME       the cases a blk parser must catch, as the
//                                                   chain fuzz_blk_request builds
// Each seed is decoded the way its fuzzer reads it and must be refused there; the checked-in
// files must match what is built here. Regenerate after changing a case or a format:
//   MOSS_WRITE_HARNESS_SEEDS=1 build/harness_fuzz_seeds_test
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "devices/blk/fuzz_input.h"
#include "devices/blk/request.h"
#include "devices/virtio/driver.h"
#include "devices/virtio/fuzz_input.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/test_memory.h"
#include "tests/harness/malformed.h"

namespace moss::harness {
namespace {

using virtio::testing::TwoRegions;

// Ring of 8 at 0, indirect tables at 0x100, header 0x180, status 0x190, data 0x200-0x400:
// all in the low region, whose first 0x400 bytes are the image.
constexpr uint16_t kSize = 8;
constexpr uint16_t kLowImage = 0x400;
// fuzz_blk_request's disk byte: capacity = 8 * value sectors; bit 0 read-only, bit 1 WRITE_ZEROES.
constexpr uint8_t kDiskByte = 2;
constexpr uint64_t kCapacity = 8 * kDiskByte;

ChainLayout seed_layout() {
  ChainLayout l;
  l.table_gpa = 0x100;
  l.header_gpa = 0x180;
  l.status_gpa = 0x190;
  l.data_gpa = 0x200;
  l.data_bytes = 512;
  l.outside_gpa = 0x40000;  // Past the high region (which ends at 0x30000).
  l.region_end = virtio::testing::kLowGpa + virtio::testing::kRegionSize;
  l.capacity_sectors = kCapacity;
  return l;
}

struct Built {
  std::vector<uint8_t> ring_seed;
  std::vector<uint8_t> blk_seed;  // Only for cases the blk parser must catch.
};

Built build(const MalformedCase& mc) {
  TwoRegions m;
  auto d = virtio::DriverQueue::create(m.mem, 0, kSize, false, true);
  MOSS_ASSERT(d.ok());
  ChainLayout l = seed_layout();
  MOSS_ASSERT(fill_sentinels(m.mem, l).ok());
  auto r = mc.build(*d, m.mem, l);
  EXPECT_TRUE(r.ok()) << mc.name << ": " << r.error().message;
  Built out;
  out.ring_seed = virtio::fuzz::encode(d->config(), 0, m, kLowImage, 0);
  auto chain = virtio::walk_chain(m.mem, d->config(), 0);
  if (mc.caught_by == CaughtBy::kRequest && chain.ok()) out.blk_seed = blk::fuzz::encode_request(*chain, kDiskByte);
  return out;
}

// The blk seed decoded exactly as fuzz/fuzz_blk_request.cc does, then parsed.
blk::Parsed run_blk(const std::vector<uint8_t>& data, std::vector<uint8_t>& bytes) {
  auto in = blk::fuzz::decode_request(data, bytes);
  MOSS_ASSERT(in.has_value());
  return blk::parse_request(in->chain, in->disk);
}

TEST(HarnessFuzzSeeds, EveryMalformedCaseIsRefusedWhereItsFuzzerLooks) {
  for (const MalformedCase& mc : malformed_cases()) {
    Built b = build(mc);
    std::string ring = virtio::fuzz::run(b.ring_seed);  // As fuzz_virtqueue_chain runs it.
    if (mc.caught_by == CaughtBy::kRing) {
      EXPECT_NE(ring, "") << mc.name << " should be refused by the virtqueue layer";
    } else {
      EXPECT_EQ(ring, "") << mc.name << " is a well-formed chain";
      ASSERT_FALSE(b.blk_seed.empty()) << mc.name;
      std::vector<uint8_t> bytes;
      blk::Parsed p = run_blk(b.blk_seed, bytes);
      EXPECT_FALSE(p.request.has_value()) << mc.name << " should be refused by the blk parser";
      ASSERT_TRUE(p.error.has_value()) << mc.name;
      EXPECT_EQ(p.error->status, blk::kIoErr) << mc.name << ": " << p.error->message;
    }
  }
}

void check_or_write(const std::string& dir, const std::string& name, const std::vector<uint8_t>& bytes, bool write) {
  std::string path = std::string(MOSS_SOURCE_DIR) + "/fuzz/corpus/" + dir + "/" + name;
  if (write) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(f.good()) << "writing " << path;
    return;
  }
  std::ifstream f(path, std::ios::binary);
  std::vector<uint8_t> have((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(have, bytes) << path << " is missing or stale: regenerate it (see the top of this file)";
}

TEST(HarnessFuzzSeeds, CheckedInCorpusHasEveryCase) {
  bool write = std::getenv("MOSS_WRITE_HARNESS_SEEDS") != nullptr;
  for (const MalformedCase& mc : malformed_cases()) {
    Built b = build(mc);
    check_or_write("fuzz_virtqueue_chain", std::string("harness-") + mc.name, b.ring_seed, write);
    if (mc.caught_by == CaughtBy::kRequest) {
      check_or_write("fuzz_blk_request", std::string("harness-") + mc.name, b.blk_seed, write);
    }
  }
}

}  // namespace
}  // namespace moss::harness
