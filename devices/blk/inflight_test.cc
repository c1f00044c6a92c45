#include "devices/blk/inflight.h"

#include <gtest/gtest.h>

#include <cstring>

namespace moss::blk {
namespace {

constexpr uint16_t kCapacity = 16;

// One queue's region, aligned like the real (page-aligned) mapping.
struct Region {
  alignas(64) uint8_t bytes[16 + 16 * kCapacity] = {};
  std::span<uint8_t> span() { return {bytes, sizeof bytes}; }
  template <typename T>
  T get(size_t off) const {
    T v;
    std::memcpy(&v, bytes + off, sizeof v);
    return v;
  }
  template <typename T>
  void set(size_t off, T v) {
    std::memcpy(bytes + off, &v, sizeof v);
  }
  uint16_t version() const { return get<uint16_t>(8); }
  uint16_t desc_num() const { return get<uint16_t>(10); }
  uint16_t last_batch_head() const { return get<uint16_t>(12); }
  uint16_t used_idx() const { return get<uint16_t>(14); }
  uint8_t inflight(uint16_t h) const { return bytes[16 + 16 * h]; }
  uint16_t next(uint16_t h) const { return get<uint16_t>(16 + 16 * h + 6); }
  uint64_t counter(uint16_t h) const { return get<uint64_t>(16 + 16 * h + 8); }
};

TEST(BlkInflight, FreshRegionIsInitialisedFromAnyBytes) {
  Region r;
  std::memset(r.bytes, 0x5a, sizeof r.bytes);
  r.set<uint16_t>(8, 0);  // Version 0: never used, whatever else it holds.
  auto t = InflightTracker::attach(r.span(), kCapacity, 8, 40);
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_TRUE(t->fresh());
  EXPECT_TRUE(t->resubmit().empty());
  EXPECT_EQ(r.version(), 1);
  EXPECT_EQ(r.desc_num(), kCapacity);
  EXPECT_EQ(r.used_idx(), 40);
  for (uint16_t h = 0; h < kCapacity; h++) EXPECT_EQ(r.inflight(h), 0);
}

TEST(BlkInflight, WritesFollowTheSpecLayout) {
  Region r;
  auto t = InflightTracker::attach(r.span(), kCapacity, 8, 0);
  ASSERT_TRUE(t.ok());
  t->mark(3);
  t->mark(5);
  EXPECT_EQ(r.inflight(3), 1);
  EXPECT_EQ(r.inflight(5), 1);
  EXPECT_LT(r.counter(3), r.counter(5));
  t->before_push(5);
  EXPECT_EQ(r.last_batch_head(), 5);
  EXPECT_EQ(r.next(5), 0);  // The previous last_batch_head.
  EXPECT_EQ(r.inflight(5), 1);  // Still in flight until the used index is published.
  t->after_push(5, 1);
  EXPECT_EQ(r.inflight(5), 0);
  EXPECT_EQ(r.used_idx(), 1);
  t->before_push(3);
  EXPECT_EQ(r.next(3), 5);
  t->after_push(3, 2);
  EXPECT_EQ(r.inflight(3), 0);
  EXPECT_EQ(r.used_idx(), 2);
}

TEST(BlkInflight, ReattachResubmitsOldestFirstAndKeepsCounting) {
  Region r;
  {
    auto t = InflightTracker::attach(r.span(), kCapacity, 8, 100);
    ASSERT_TRUE(t.ok());
    t->mark(7);
    t->mark(2);
    t->mark(6);
    t->mark(1);
    t->before_push(2);
    t->after_push(2, 101);
  }  // The backend dies with 7, 6 and 1 in flight.
  auto t = InflightTracker::attach(r.span(), kCapacity, 8, 101);
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_FALSE(t->fresh());
  EXPECT_EQ(t->resubmit(), (std::vector<uint16_t>{7, 6, 1}));
  EXPECT_EQ(t->next_avail(101), 104);
  uint64_t last = r.counter(1);
  t->mark(4);
  EXPECT_GT(r.counter(4), last);
}

TEST(BlkInflight, DeathBetweenPublishingAndClearingIsRepaired) {
  Region r;
  {
    auto t = InflightTracker::attach(r.span(), kCapacity, 8, 9);
    ASSERT_TRUE(t.ok());
    t->mark(4);
    t->mark(0);
    t->before_push(4);
    // ... the used element for head 4 is published (used->idx 9 -> 10), then death.
  }
  auto t = InflightTracker::attach(r.span(), kCapacity, 8, 10);
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(r.inflight(4), 0);
  EXPECT_EQ(r.used_idx(), 10);
  EXPECT_EQ(t->resubmit(), (std::vector<uint16_t>{0}));
  EXPECT_EQ(t->next_avail(10), 11);
}

TEST(BlkInflight, RefusesRegionsThatCannotBeReal) {
  auto refused = [](Region& r, uint16_t ring, uint16_t used, const std::string& needle) {
    auto t = InflightTracker::attach(r.span(), kCapacity, ring, used);
    ASSERT_FALSE(t.ok()) << needle;
    EXPECT_NE(t.error().message.find(needle), std::string::npos) << t.error().message;
  };
  auto initialised = [] {
    Region r;
    EXPECT_TRUE(InflightTracker::attach(r.span(), kCapacity, 8, 0).ok());
    return r;
  };
  Region r = initialised();
  refused(r, 32, 0, "fewer than the ring's 32");
  Region small;
  EXPECT_FALSE(InflightTracker::attach(small.span().first(100), kCapacity, 8, 0).ok());
  r = initialised();
  r.set<uint16_t>(8, 2);
  refused(r, 8, 0, "version 2");
  r = initialised();
  r.set<uint16_t>(10, 8);
  refused(r, 8, 0, "describes 8 descriptors");
  r = initialised();
  r.bytes[16 + 16 * 3] = 2;
  refused(r, 8, 0, "invalid in-flight value");
  r = initialised();
  r.bytes[16 + 16 * 12] = 1;  // Inside the buffer but outside an 8-entry ring.
  refused(r, 8, 0, "outside the ring");
  r = initialised();
  refused(r, 8, 9, "further apart than one batch");
  r = initialised();
  r.set<uint16_t>(12, 8);  // last_batch_head outside the ring, with a batch to repair.
  refused(r, 8, 1, "outside the ring");
}

}  // namespace
}  // namespace moss::blk
