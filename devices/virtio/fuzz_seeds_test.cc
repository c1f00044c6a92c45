// The seed corpus of fuzz/fuzz_virtqueue_chain: one tiny input per well-formed and malformed
// ring shape, built with the test driver. Each seed is decoded back the way the fuzzer reads it
// and must give the expected outcome; the checked-in files must match what is built here.
//
// Regenerate after changing a seed or the format:
//   MOSS_WRITE_VIRTQUEUE_SEEDS=fuzz/corpus/fuzz_virtqueue_chain build/virtio_fuzz_seeds_test
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>

#include "devices/virtio/driver.h"
#include "devices/virtio/fuzz_input.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/test_memory.h"

namespace moss::virtio {
namespace {

using testing::kHighGpa;
using testing::kHoleGpa;
using testing::TwoRegions;
using Buf = DriverQueue::Buffer;

// Ring of 8 at 0 (222 bytes), indirect tables at 0x100, buffers from 0x180; the low image is
// 0x200 bytes, and the high region is left out (zeros) unless a seed says otherwise.
constexpr uint16_t kSize = 8;
constexpr uint64_t kTable = 0x100;
constexpr uint64_t kData = 0x180;
constexpr uint16_t kLowImage = 0x200;

struct Seed {
  const char* name;
  bool event_idx, indirect;
  uint16_t start;
  std::function<void(DriverQueue&, QueueConfig&)> build;
  const char* error;  // Expected in the first failing step's message; nullptr = all succeed.
};

void ok(Result<void> r) { ASSERT_TRUE(r.ok()) << r.error().message; }

const std::vector<Seed>& seeds() {
  static const std::vector<Seed> all = {
      {"direct-both-regions", false, false, 0,
       [](DriverQueue& d, QueueConfig&) {
         Buf rd[] = {{kData, 8}, {kData + 8, 8}};
         Buf wr[] = {{kHighGpa, 16}};
         ASSERT_TRUE(d.add_chain(rd, wr).ok());
       },
       nullptr},
      {"indirect", false, true, 0,
       [](DriverQueue& d, QueueConfig&) {
         Buf rd[] = {{kData, 4}, {kData + 4, 4}};
         Buf wr[] = {{kHighGpa, 8}};
         ASSERT_TRUE(d.add_indirect_chain(rd, wr, kTable).ok());
       },
       nullptr},
      {"event-idx-wrap", true, false, 65534,
       [](DriverQueue& d, QueueConfig&) {
         Buf wr[] = {{kData, 4}};
         for (int i = 0; i < 3; ++i) ASSERT_TRUE(d.add_chain({}, wr).ok());
         d.set_used_event(65535);
       },
       nullptr},
      {"zero-length", false, false, 0,
       [](DriverQueue& d, QueueConfig&) {
         ok(d.write_descriptor(0, {kHoleGpa, 0, kDescFNext, 1}));
         ok(d.write_descriptor(1, {kData, 4, kDescFWrite, 0}));
         d.publish_raw(0);
       },
       nullptr},
      {"outside-memory", false, false, 0,
       [](DriverQueue& d, QueueConfig&) {
         ok(d.write_descriptor(0, {0x40000, 16, 0, 0}));
         d.publish_raw(0);
       },
       "not wholly inside guest memory"},
      {"straddles-hole", false, false, 0,
       [](DriverQueue& d, QueueConfig&) {
         ok(d.write_descriptor(0, {kHoleGpa - 8, 16, kDescFWrite, 0}));
         d.publish_raw(0);
       },
       "not wholly inside guest memory"},
      {"length-wraps", false, false, 0,
       [](DriverQueue& d, QueueConfig&) {
         ok(d.write_descriptor(0, {~0ull - 0xf, 0x100, 0, 0}));
         d.publish_raw(0);
       },
       "wraps around"},
      {"next-loop", false, false, 0,
       [](DriverQueue& d, QueueConfig&) {
         ok(d.write_descriptor(0, {kData, 1, kDescFNext, 1}));
         ok(d.write_descriptor(1, {kData, 1, kDescFNext, 0}));
         d.publish_raw(0);
       },
       "loop"},
      {"longer-than-queue", false, false, 0,
       [](DriverQueue& d, QueueConfig&) {
         for (uint16_t i = 0; i < kSize; ++i) {
           ok(d.write_descriptor(i, {kData, 1, kDescFNext, static_cast<uint16_t>((i + 1) % kSize)}));
         }
         d.publish_raw(5);
       },
       "more than 8 descriptors"},
      {"next-out-of-table", false, false, 0,
       [](DriverQueue& d, QueueConfig&) {
         ok(d.write_descriptor(0, {kData, 1, kDescFNext, 200}));
         d.publish_raw(0);
       },
       "outside the 8-entry table"},
      {"readable-after-writable", false, false, 0,
       [](DriverQueue& d, QueueConfig&) {
         ok(d.write_descriptor(0, {kData, 4, kDescFNext | kDescFWrite, 1}));
         ok(d.write_descriptor(1, {kData + 4, 4, 0, 0}));
         d.publish_raw(0);
       },
       "follows a device-writable"},
      {"head-out-of-range", false, false, 0, [](DriverQueue& d, QueueConfig&) { d.publish_raw(kSize); },
       "outside the 8-entry descriptor table"},
      {"avail-idx-jump", false, false, 0, [](DriverQueue& d, QueueConfig&) { d.set_avail_idx_raw(kSize + 1); },
       "more than the queue size"},
      {"indirect-not-negotiated", false, false, 0,
       [](DriverQueue& d, QueueConfig&) {
         ok(d.write_descriptor(0, {kTable, 16, kDescFIndirect, 0}));
         ok(d.write_descriptor_at(kTable, {kData, 4, 0, 0}));
         d.publish_raw(0);
       },
       "not negotiated"},
      {"nested-indirect", false, true, 0,
       [](DriverQueue& d, QueueConfig&) {
         ok(d.write_descriptor(0, {kTable, 16, kDescFIndirect, 0}));
         ok(d.write_descriptor_at(kTable, {kTable + 0x40, 16, kDescFIndirect, 0}));
         ok(d.write_descriptor_at(kTable + 0x40, {kData, 4, 0, 0}));
         d.publish_raw(0);
       },
       "nested"},
      {"indirect-odd-length", false, true, 0,
       [](DriverQueue& d, QueueConfig&) {
         ok(d.write_descriptor(0, {kTable, 24, kDescFIndirect, 0}));
         d.publish_raw(0);
       },
       "multiple of 16"},
      {"indirect-with-next", false, true, 0,
       [](DriverQueue& d, QueueConfig&) {
         ok(d.write_descriptor(0, {kTable, 16, kDescFIndirect | kDescFNext, 1}));
         ok(d.write_descriptor(1, {kData, 4, 0, 0}));
         ok(d.write_descriptor_at(kTable, {kData, 4, 0, 0}));
         d.publish_raw(0);
       },
       "both INDIRECT and NEXT"},
      {"indirect-loop", false, true, 0,
       [](DriverQueue& d, QueueConfig&) {
         ok(d.write_descriptor(0, {kTable, 32, kDescFIndirect, 0}));
         ok(d.write_descriptor_at(kTable, {kData, 1, kDescFNext, 1}));
         ok(d.write_descriptor_at(kTable + 16, {kData, 1, kDescFNext, 0}));
         d.publish_raw(0);
       },
       "loop"},
      {"misaligned-used-ring", false, false, 0,
       [](DriverQueue&, QueueConfig& c) { c.used_gpa += 2; }, "4-byte aligned"},
  };
  return all;
}

std::vector<uint8_t> build(const Seed& s) {
  TwoRegions m;
  auto d = DriverQueue::create(m.mem, 0, kSize, s.event_idx, s.indirect, s.start);
  EXPECT_TRUE(d.ok());
  if (!d.ok()) return {};
  QueueConfig config = d->config();
  s.build(*d, config);
  // The high region matters only where a buffer is written there; zeros decode the same.
  return fuzz::encode(config, s.start, m, kLowImage, 0);
}

TEST(VirtqueueFuzzSeeds, EachSeedDecodesToItsExpectedOutcome) {
  for (const Seed& s : seeds()) {
    std::string outcome = fuzz::run(build(s));  // As the fuzzer runs it.
    if (s.error == nullptr) {
      EXPECT_EQ(outcome, "") << s.name;
    } else {
      EXPECT_NE(outcome.find(s.error), std::string::npos) << s.name << ": " << outcome;
    }
  }
}

TEST(VirtqueueFuzzSeeds, CheckedInCorpusMatches) {
  const std::string dir = std::string(MOSS_SOURCE_DIR) + "/fuzz/corpus/fuzz_virtqueue_chain/";
  const char* out = std::getenv("MOSS_WRITE_VIRTQUEUE_SEEDS");
  for (const Seed& s : seeds()) {
    std::vector<uint8_t> bytes = build(s);
    if (out != nullptr) {
      std::ofstream f(std::string(out) + "/" + s.name, std::ios::binary | std::ios::trunc);
      f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
      ASSERT_TRUE(f.good()) << "writing " << out << "/" << s.name;
      continue;
    }
    std::ifstream f(dir + s.name, std::ios::binary);
    std::vector<uint8_t> have((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    EXPECT_EQ(have, bytes) << dir << s.name << " is missing or stale: regenerate it (see the top of "
                           << "this file)";
  }
}

}  // namespace
}  // namespace moss::virtio
