// The device side of the split virtqueue against a DriverQueue in two-region guest memory.
#include "devices/virtio/queue.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <string_view>

#include "devices/virtio/driver.h"
#include "devices/virtio/test_memory.h"

namespace moss::virtio {
namespace {

using testing::kHighGpa;
using testing::kHoleGpa;
using testing::TwoRegions;
using Buf = DriverQueue::Buffer;

constexpr uint16_t kSize = 8;
constexpr uint64_t kRing = 0x0;  // footprint(8) is under 0x200.
constexpr uint64_t kTable = 0x800;  // Indirect tables.
constexpr uint64_t kData = 0x1000;  // Low-region buffers.

class QueueTest : public ::testing::Test {
 protected:
  DriverQueue driver(bool event_idx = false, bool indirect = false, uint16_t start = 0) {
    auto d = DriverQueue::create(m_.mem, kRing, kSize, event_idx, indirect, start);
    EXPECT_TRUE(d.ok()) << d.error().message;
    return std::move(d).value();
  }
  Queue device(const QueueConfig& config, uint16_t start = 0) {
    auto q = Queue::create(m_.mem, config);
    EXPECT_TRUE(q.ok()) << q.error().message;
    q->set_last_avail_idx(start);
    return std::move(q).value();
  }
  DescriptorChain pop_one(Queue& q) {
    auto c = q.pop();
    EXPECT_TRUE(c.ok()) << c.error().message;
    EXPECT_TRUE(c->has_value());
    return std::move(**c);
  }
  // Publishes `head` raw, pops it, and expects an Error mentioning `needle`, with no byte of
  // guest memory changed (the walk is read-only, the failed pop writes nothing).
  void expect_pop_error(DriverQueue& d, uint16_t head, std::string_view needle) {
    d.publish_raw(head);
    Queue q = device(d.config());
    auto low = m_.low, high = m_.high;
    auto r = q.pop();
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
    EXPECT_EQ(low, m_.low);
    EXPECT_EQ(high, m_.high);
  }
  TwoRegions m_;
};

// ---- Configuration ----

TEST_F(QueueTest, ConfigOfAFreshDriverRingIsValid) {
  DriverQueue d = driver();
  EXPECT_TRUE(validate_queue_config(m_.mem, d.config()).ok());
}

TEST_F(QueueTest, ConfigWithBadSizeAlignmentOrPlacementIsRefused) {
  QueueConfig good = driver().config();
  auto refused = [&](QueueConfig c, std::string_view needle) {
    auto r = validate_queue_config(m_.mem, c);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
  };
  QueueConfig c = good;
  c.size = 0;
  refused(c, "power of two");
  c.size = 6;
  refused(c, "power of two");
  c.size = 65535;
  refused(c, "power of two");
  c = good;
  c.desc_gpa = 0x8;
  refused(c, "16-byte aligned");
  c = good;
  c.avail_gpa += 1;
  refused(c, "2-byte aligned");
  c = good;
  c.used_gpa += 2;
  refused(c, "4-byte aligned");
  c = good;
  c.used_gpa = kHoleGpa - 8;  // Runs into the hole.
  refused(c, "outside guest memory");
  c = good;
  c.desc_gpa = kHoleGpa;
  refused(c, "outside guest memory");
  c = good;
  c.size = 32768;  // 512 KiB descriptor table: larger than a region.
  refused(c, "outside guest memory");
}

// ---- Round trips ----

TEST_F(QueueTest, EmptyQueuePopsNothing) {
  DriverQueue d = driver();
  Queue q = device(d.config());
  auto c = q.pop();
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->has_value());
}

TEST_F(QueueTest, ChainAcrossBothRegionsRoundTrips) {
  DriverQueue d = driver();
  std::memcpy(&m_.low[kData], "hello ", 6);
  std::memcpy(&m_.high[0x100], "world", 5);
  Buf rd[] = {{kData, 6}, {kHighGpa + 0x100, 5}};
  Buf wr[] = {{kData + 0x100, 4}, {kHighGpa + 0x200, 8}};
  auto head = d.add_chain(rd, wr);
  ASSERT_TRUE(head.ok());

  Queue q = device(d.config());
  DescriptorChain c = pop_one(q);
  EXPECT_EQ(c.head, *head);
  EXPECT_EQ(c.readable.size(), 2u);
  EXPECT_EQ(c.writable.size(), 2u);
  EXPECT_EQ(c.readable_bytes, 11u);
  EXPECT_EQ(c.writable_bytes, 12u);
  EXPECT_EQ(c.descriptors, 4u);

  ChainReader r(c);
  char text[11];
  ASSERT_TRUE(r.read(std::span(reinterpret_cast<uint8_t*>(text), sizeof text)).ok());
  EXPECT_EQ(std::string_view(text, 11), "hello world");
  EXPECT_EQ(r.remaining(), 0u);

  ChainWriter w(c);
  ASSERT_TRUE(w.write(std::span(reinterpret_cast<const uint8_t*>("0123456789"), 10)).ok());
  EXPECT_EQ(w.written(), 10u);
  EXPECT_EQ(std::memcmp(&m_.low[kData + 0x100], "0123", 4), 0);
  EXPECT_EQ(std::memcmp(&m_.high[0x200], "456789", 6), 0);

  ASSERT_TRUE(q.push_used(c.head, static_cast<uint32_t>(w.written())).ok());
  auto used = d.pop_used();
  ASSERT_TRUE(used.ok());
  ASSERT_TRUE(used->has_value());
  EXPECT_EQ((*used)->first, *head);
  EXPECT_EQ((*used)->second, 10u);
  EXPECT_EQ(d.free_descriptors(), kSize);
}

TEST_F(QueueTest, IndirectChainAfterDirectDescriptorsIsWalked) {
  DriverQueue d = driver(false, true);
  // A direct readable descriptor followed by an INDIRECT one (2.7.5.3.2 allows it).
  ASSERT_TRUE(d.write_descriptor(0, {kData, 4, kDescFNext, 1}).ok());
  ASSERT_TRUE(d.write_descriptor(1, {kTable, 32, kDescFIndirect | kDescFWrite, 0}).ok());
  ASSERT_TRUE(d.write_descriptor_at(kTable, {kData + 4, 4, kDescFNext, 1}).ok());
  ASSERT_TRUE(d.write_descriptor_at(kTable + 16, {kHighGpa, 64, kDescFWrite, 0}).ok());
  d.publish_raw(0);
  Queue q = device(d.config());
  DescriptorChain c = pop_one(q);
  EXPECT_EQ(c.readable_bytes, 8u);
  EXPECT_EQ(c.writable_bytes, 64u);
  EXPECT_EQ(c.descriptors, 3u);
}

TEST_F(QueueTest, DriverIndirectChainRoundTrips) {
  DriverQueue d = driver(false, true);
  Buf rd[] = {{kData, 16}};
  Buf wr[] = {{kData + 16, 1}, {kHighGpa, 100}};
  auto head = d.add_indirect_chain(rd, wr, kTable);
  ASSERT_TRUE(head.ok()) << head.error().message;
  Queue q = device(d.config());
  DescriptorChain c = pop_one(q);
  EXPECT_EQ(c.readable_bytes, 16u);
  EXPECT_EQ(c.writable_bytes, 101u);
  ASSERT_TRUE(q.push_used(c.head, 101).ok());
  auto used = d.pop_used();
  ASSERT_TRUE(used.ok() && used->has_value());
  EXPECT_EQ((*used)->second, 101u);
}

TEST_F(QueueTest, AChainOfExactlyTheQueueSizeIsAccepted) {
  DriverQueue d = driver();
  Buf rd[kSize];
  for (auto& b : rd) b = {kData, 1};
  ASSERT_TRUE(d.add_chain(rd, {}).ok());
  Queue q = device(d.config());
  EXPECT_EQ(pop_one(q).descriptors, kSize);
}

TEST_F(QueueTest, AFullRingOfQueueSizeEntriesIsAccepted) {
  DriverQueue d = driver();
  ASSERT_TRUE(d.write_descriptor(0, {kData, 1, 0, 0}).ok());
  for (int i = 0; i < kSize; ++i) d.publish_raw(0);  // avail->idx is `size` ahead.
  Queue q = device(d.config());
  for (int i = 0; i < kSize; ++i) EXPECT_EQ(pop_one(q).head, 0);
}

TEST_F(QueueTest, ZeroLengthDescriptorsCountButGiveNoSpan) {
  DriverQueue d = driver();
  // The zero-length one points into the hole: its address is never used.
  ASSERT_TRUE(d.write_descriptor(0, {kData, 4, kDescFNext, 1}).ok());
  ASSERT_TRUE(d.write_descriptor(1, {kHoleGpa, 0, kDescFNext, 2}).ok());
  ASSERT_TRUE(d.write_descriptor(2, {kData + 8, 4, kDescFWrite, 0}).ok());
  d.publish_raw(0);
  Queue q = device(d.config());
  DescriptorChain c = pop_one(q);
  EXPECT_EQ(c.descriptors, 3u);
  EXPECT_EQ(c.readable.size(), 1u);
  EXPECT_EQ(c.writable.size(), 1u);
}

TEST(QueueAdjacentRegions, BufferSpanningAdjacentRegionsYieldsOneSpanEach) {
  std::vector<uint8_t> a(0x1000), b(0x1000);
  GuestMemory mem({{0x0, a.size(), a.data()}, {0x1000, b.size(), b.data()}});
  auto d = DriverQueue::create(mem, 0x0, 4, false, false);
  ASSERT_TRUE(d.ok());
  Buf wr[] = {{0xff0, 0x20}};
  ASSERT_TRUE(d->add_chain({}, wr).ok());
  auto q = Queue::create(mem, d->config());
  ASSERT_TRUE(q.ok());
  auto c = q->pop();
  ASSERT_TRUE(c.ok() && c->has_value()) << (c.ok() ? "" : c.error().message);
  ASSERT_EQ((*c)->writable.size(), 2u);
  EXPECT_EQ((*c)->writable[0].data(), a.data() + 0xff0);
  EXPECT_EQ((*c)->writable[0].size(), 0x10u);
  EXPECT_EQ((*c)->writable[1].data(), b.data());
  EXPECT_EQ((*c)->writable[1].size(), 0x10u);
}

// ---- Malformed chains: each is an Error and touches nothing ----

TEST_F(QueueTest, DescriptorOutsideMemoryIsRefused) {
  DriverQueue d = driver();
  ASSERT_TRUE(d.write_descriptor(0, {0x40000, 16, 0, 0}).ok());
  expect_pop_error(d, 0, "not wholly inside guest memory");
}

TEST_F(QueueTest, DescriptorStraddlingTheHoleIsRefused) {
  DriverQueue d = driver();
  ASSERT_TRUE(d.write_descriptor(0, {kHoleGpa - 8, 16, kDescFWrite, 0}).ok());
  expect_pop_error(d, 0, "not wholly inside guest memory");
}

TEST_F(QueueTest, DescriptorWrappingTheAddressSpaceIsRefused) {
  DriverQueue d = driver();
  ASSERT_TRUE(d.write_descriptor(0, {~0ull - 0xf, 0x100, 0, 0}).ok());
  expect_pop_error(d, 0, "wraps around");
}

TEST_F(QueueTest, NextLoopIsRefused) {
  DriverQueue d = driver();
  ASSERT_TRUE(d.write_descriptor(0, {kData, 1, kDescFNext, 1}).ok());
  ASSERT_TRUE(d.write_descriptor(1, {kData, 1, kDescFNext, 0}).ok());
  expect_pop_error(d, 0, "loop");
}

TEST_F(QueueTest, ChainLongerThanTheQueueIsRefused) {
  DriverQueue d = driver();
  // Every descriptor once, then back to the start: the 9th step exceeds the queue size.
  for (uint16_t i = 0; i < kSize; ++i) {
    ASSERT_TRUE(d.write_descriptor(i, {kData, 1, kDescFNext, static_cast<uint16_t>((i + 1) % kSize)}).ok());
  }
  expect_pop_error(d, 3, "more than 8 descriptors");
}

TEST_F(QueueTest, NextOutsideTheTableIsRefused) {
  DriverQueue d = driver();
  ASSERT_TRUE(d.write_descriptor(0, {kData, 1, kDescFNext, kSize}).ok());
  expect_pop_error(d, 0, "outside the 8-entry table");
}

TEST_F(QueueTest, ReadableAfterWritableIsRefused) {
  DriverQueue d = driver();
  ASSERT_TRUE(d.write_descriptor(0, {kData, 4, kDescFNext | kDescFWrite, 1}).ok());
  ASSERT_TRUE(d.write_descriptor(1, {kData + 4, 4, 0, 0}).ok());
  expect_pop_error(d, 0, "follows a device-writable");
}

TEST_F(QueueTest, ReadableAfterWritableAcrossAnIndirectTableIsRefused) {
  DriverQueue d = driver(false, true);
  ASSERT_TRUE(d.write_descriptor(0, {kData, 4, kDescFNext | kDescFWrite, 1}).ok());
  ASSERT_TRUE(d.write_descriptor(1, {kTable, 16, kDescFIndirect, 0}).ok());
  ASSERT_TRUE(d.write_descriptor_at(kTable, {kData + 4, 4, 0, 0}).ok());
  expect_pop_error(d, 0, "follows a device-writable");
}

TEST_F(QueueTest, HeadOutsideTheTableIsRefused) {
  DriverQueue d = driver();
  expect_pop_error(d, kSize, "head 8");
  Queue q = device(d.config());
  auto r = q.pop_head();  // The check does not rely on the walker.
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("offered head 8"), std::string::npos) << r.error().message;
  EXPECT_EQ(q.last_avail_idx(), 0);  // Not consumed.
}

TEST_F(QueueTest, AvailIndexJumpingPastTheQueueSizeIsRefused) {
  DriverQueue d = driver();
  d.set_avail_idx_raw(kSize + 1);
  Queue q = device(d.config());
  auto r = q.pop();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("more than the queue size"), std::string::npos) << r.error().message;
  EXPECT_EQ(q.last_avail_idx(), 0);  // Nothing consumed.
}

TEST_F(QueueTest, AvailIndexGoingBackwardsIsRefused) {
  DriverQueue d = driver();
  d.set_avail_idx_raw(0xffff);  // One behind 0: looks like 65535 new entries.
  Queue q = device(d.config());
  EXPECT_FALSE(q.pop().ok());
}

TEST_F(QueueTest, IndirectWithoutTheFeatureIsRefused) {
  DriverQueue d = driver(false, false);
  ASSERT_TRUE(d.write_descriptor(0, {kTable, 16, kDescFIndirect, 0}).ok());
  ASSERT_TRUE(d.write_descriptor_at(kTable, {kData, 4, 0, 0}).ok());
  expect_pop_error(d, 0, "not negotiated");
}

TEST_F(QueueTest, NestedIndirectIsRefused) {
  DriverQueue d = driver(false, true);
  ASSERT_TRUE(d.write_descriptor(0, {kTable, 16, kDescFIndirect, 0}).ok());
  ASSERT_TRUE(d.write_descriptor_at(kTable, {kTable + 0x100, 16, kDescFIndirect, 0}).ok());
  ASSERT_TRUE(d.write_descriptor_at(kTable + 0x100, {kData, 4, 0, 0}).ok());
  expect_pop_error(d, 0, "nested");
}

TEST_F(QueueTest, IndirectTableOfOddLengthIsRefused) {
  DriverQueue d = driver(false, true);
  ASSERT_TRUE(d.write_descriptor(0, {kTable, 24, kDescFIndirect, 0}).ok());
  expect_pop_error(d, 0, "multiple of 16");
}

TEST_F(QueueTest, EmptyIndirectTableIsRefused) {
  DriverQueue d = driver(false, true);
  ASSERT_TRUE(d.write_descriptor(0, {kTable, 0, kDescFIndirect, 0}).ok());
  expect_pop_error(d, 0, "multiple of 16");
}

TEST_F(QueueTest, IndirectWithNextIsRefused) {
  DriverQueue d = driver(false, true);
  ASSERT_TRUE(d.write_descriptor(0, {kTable, 16, kDescFIndirect | kDescFNext, 1}).ok());
  ASSERT_TRUE(d.write_descriptor(1, {kData, 4, 0, 0}).ok());
  ASSERT_TRUE(d.write_descriptor_at(kTable, {kData, 4, 0, 0}).ok());
  expect_pop_error(d, 0, "both INDIRECT and NEXT");
}

TEST_F(QueueTest, IndirectTableInTheHoleIsRefused) {
  DriverQueue d = driver(false, true);
  ASSERT_TRUE(d.write_descriptor(0, {kHoleGpa - 16, 32, kDescFIndirect, 0}).ok());
  expect_pop_error(d, 0, "outside guest memory");
}

TEST_F(QueueTest, IndirectTableTooLargeIsRefused) {
  DriverQueue d = driver(false, true);
  ASSERT_TRUE(d.write_descriptor(0, {kTable, (kMaxIndirectDescriptors + 1) * 16, kDescFIndirect, 0}).ok());
  expect_pop_error(d, 0, "at most 32768");
}

TEST_F(QueueTest, IndirectLoopAndOutOfTableNextAreRefused) {
  DriverQueue d = driver(false, true);
  ASSERT_TRUE(d.write_descriptor(0, {kTable, 32, kDescFIndirect, 0}).ok());
  ASSERT_TRUE(d.write_descriptor_at(kTable, {kData, 1, kDescFNext, 1}).ok());
  ASSERT_TRUE(d.write_descriptor_at(kTable + 16, {kData, 1, kDescFNext, 0}).ok());
  expect_pop_error(d, 0, "loop");
  ASSERT_TRUE(d.write_descriptor_at(kTable + 16, {kData, 1, kDescFNext, 2}).ok());
  expect_pop_error(d, 0, "past the end of its 2-entry table");
}

// A chain whose lengths add up past 2^32 - 1. The region is reserved address space only: the
// walk maps ranges, it never touches buffer bytes.
TEST(QueueHugeChain, TotalLengthAboveTheCapIsRefusedAndTheCapItselfIsAccepted) {
  const uint64_t region = (1ull << 32) + 0x2000;
  void* base = mmap(nullptr, region, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(base, MAP_FAILED);
  ASSERT_EQ(mprotect(base, 0x1000, PROT_READ | PROT_WRITE), 0);
  GuestMemory mem({{0, region, static_cast<uint8_t*>(base)}});
  auto d = DriverQueue::create(mem, 0, 4, false, false);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(d->write_descriptor(0, {0x1000, 0xffffffffu, kDescFNext, 1}).ok());
  ASSERT_TRUE(d->write_descriptor(1, {0x1000, 1, kDescFWrite, 0}).ok());
  ASSERT_TRUE(d->write_descriptor(2, {0x1000, 0xffffffffu, 0, 0}).ok());
  d->publish_raw(0);
  d->publish_raw(2);
  auto q = Queue::create(mem, d->config());
  ASSERT_TRUE(q.ok());
  auto over = q->pop();
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.error().message.find("past 4294967295 bytes"), std::string::npos) << over.error().message;
  auto at_cap = q->pop();
  ASSERT_TRUE(at_cap.ok()) << at_cap.error().message;
  EXPECT_EQ((*at_cap)->readable_bytes, kMaxChainBytes);
  munmap(base, region);
}

// ---- Used ring and notifications ----

TEST_F(QueueTest, PushingMoreThanWasPoppedIsAnError) {
  DriverQueue d = driver();
  Buf wr[] = {{kData, 4}};
  ASSERT_TRUE(d.add_chain({}, wr).ok());
  Queue q = device(d.config());
  DescriptorChain c = pop_one(q);
  ASSERT_TRUE(q.push_used(c.head, 0).ok());
  EXPECT_FALSE(q.push_used(c.head, 0).ok());
}

TEST(NeedEvent, WindowArithmeticHoldsAcrossTheWrap) {
  EXPECT_TRUE(need_event(0, 1, 0));         // First entry written: event 0 passed.
  EXPECT_FALSE(need_event(1, 1, 0));        // Entry 1 not written yet.
  EXPECT_TRUE(need_event(5, 8, 2));         // Batched: 5 in [2, 8).
  EXPECT_FALSE(need_event(8, 8, 2));
  EXPECT_FALSE(need_event(1, 8, 2));        // Already passed before this batch.
  EXPECT_TRUE(need_event(65535, 0, 65535));  // [65535, 0) holds 65535.
  EXPECT_TRUE(need_event(0, 2, 65534));      // [65534, 2) wraps and holds 0.
  EXPECT_TRUE(need_event(65535, 2, 65534));
  EXPECT_FALSE(need_event(2, 2, 65534));
  EXPECT_FALSE(need_event(65533, 2, 65534));
  EXPECT_FALSE(need_event(7, 7, 7));          // Nothing written, nothing to notify.
}

class EventIdxTest : public QueueTest {
 protected:
  // Offers and pops `n` one-buffer chains; returns their heads.
  std::vector<uint16_t> offer_and_pop(DriverQueue& d, Queue& q, int n) {
    std::vector<uint16_t> heads;
    for (int i = 0; i < n; ++i) {
      Buf wr[] = {{kData + 16u * static_cast<unsigned>(i), 16}};
      EXPECT_TRUE(d.add_chain({}, wr).ok());
      heads.push_back(pop_one(q).head);
    }
    return heads;
  }
};

TEST_F(EventIdxTest, UsedEventDecidesTheInterruptAcrossTheWrap) {
  DriverQueue d = driver(true, false, 65534);
  Queue q = device(d.config(), 65534);
  auto heads = offer_and_pop(d, q, 3);
  EXPECT_TRUE(q.needs_notification());  // No history yet: notify rather than risk a hang.
  d.set_used_event(65535);              // Interrupt once entry 65535 is used.
  ASSERT_TRUE(q.push_used(heads[0], 0).ok());  // Writes entry 65534.
  EXPECT_FALSE(q.needs_notification());
  ASSERT_TRUE(q.push_used(heads[1], 0).ok());  // Writes entry 65535; used->idx wraps to 0.
  EXPECT_EQ(q.used_idx(), 0);
  EXPECT_TRUE(q.needs_notification());
  ASSERT_TRUE(q.push_used(heads[2], 0).ok());  // Event already passed.
  EXPECT_FALSE(q.needs_notification());
  for (int i = 0; i < 3; ++i) {
    auto u = d.pop_used();
    ASSERT_TRUE(u.ok() && u->has_value());
  }
}

TEST_F(EventIdxTest, BatchedPushesNotifyOnceWhenTheEventIsInside) {
  DriverQueue d = driver(true, false);
  Queue q = device(d.config());
  auto heads = offer_and_pop(d, q, 4);
  EXPECT_TRUE(q.needs_notification());
  d.set_used_event(2);
  ASSERT_TRUE(q.push_used(heads[0], 0).ok());
  ASSERT_TRUE(q.push_used(heads[1], 0).ok());
  EXPECT_FALSE(q.needs_notification());  // Entries 0, 1.
  ASSERT_TRUE(q.push_used(heads[2], 0).ok());
  ASSERT_TRUE(q.push_used(heads[3], 0).ok());
  EXPECT_TRUE(q.needs_notification());   // Entries 2, 3: event 2 inside.
  EXPECT_FALSE(q.needs_notification());  // Nothing new.
}

TEST_F(EventIdxTest, RestoringThePositionForgetsNotificationHistory) {
  DriverQueue d = driver(true, false);
  Queue q = device(d.config());
  auto heads = offer_and_pop(d, q, 1);
  ASSERT_TRUE(q.push_used(heads[0], 0).ok());
  EXPECT_TRUE(q.needs_notification());
  EXPECT_FALSE(q.needs_notification());
  q.set_last_avail_idx(q.last_avail_idx());
  EXPECT_TRUE(q.needs_notification());
}

TEST_F(QueueTest, NoInterruptFlagDecidesWithoutEventIdx) {
  DriverQueue d = driver();
  Buf wr[] = {{kData, 4}};
  ASSERT_TRUE(d.add_chain({}, wr).ok());
  ASSERT_TRUE(d.add_chain({}, wr).ok());
  Queue q = device(d.config());
  DescriptorChain a = pop_one(q), b = pop_one(q);
  ASSERT_TRUE(q.push_used(a.head, 0).ok());
  EXPECT_TRUE(q.needs_notification());
  d.set_no_interrupt(true);
  ASSERT_TRUE(q.push_used(b.head, 0).ok());
  EXPECT_FALSE(q.needs_notification());
}

TEST_F(EventIdxTest, AvailEventSuppressesKicksUntilTheDeviceAsks) {
  DriverQueue d = driver(true, false, 65535);
  Queue q = device(d.config(), 65535);
  EXPECT_FALSE(q.enable_notification());  // Asks for a kick at entry 65535; nothing pending.
  Buf wr[] = {{kData, 4}};
  ASSERT_TRUE(d.add_chain({}, wr).ok());  // Entry 65535; avail->idx wraps to 0.
  EXPECT_TRUE(d.kick_needed());
  ASSERT_TRUE(d.add_chain({}, wr).ok());  // The device has not asked again.
  EXPECT_FALSE(d.kick_needed());
  EXPECT_TRUE(q.enable_notification());   // Buffers are pending: pop before sleeping.
  pop_one(q);
  pop_one(q);
  EXPECT_FALSE(q.enable_notification());
  ASSERT_TRUE(d.add_chain({}, wr).ok());
  EXPECT_TRUE(d.kick_needed());
}

TEST_F(QueueTest, NoNotifyFlagSuppressesKicksWithoutEventIdx) {
  DriverQueue d = driver();
  Queue q = device(d.config());
  Buf wr[] = {{kData, 4}};
  q.disable_notification();
  ASSERT_TRUE(d.add_chain({}, wr).ok());
  EXPECT_FALSE(d.kick_needed());
  EXPECT_TRUE(q.enable_notification());
  ASSERT_TRUE(d.add_chain({}, wr).ok());
  EXPECT_TRUE(d.kick_needed());
}

TEST_F(QueueTest, ANewQueueResumesFromTheSavedAvailIndex) {
  DriverQueue d = driver();
  Buf wr[] = {{kData, 4}};
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(d.add_chain({}, wr).ok());
  uint16_t saved = 0;
  {
    Queue q = device(d.config());
    for (int i = 0; i < 2; ++i) ASSERT_TRUE(q.push_used(pop_one(q).head, 1).ok());
    saved = q.last_avail_idx();  // GET_VRING_BASE
  }
  Queue q2 = device(d.config(), saved);  // SET_VRING_BASE; used->idx comes from memory.
  EXPECT_EQ(q2.used_idx(), 2);
  ASSERT_TRUE(q2.push_used(pop_one(q2).head, 1).ok());
  auto none = q2.pop();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  for (int i = 0; i < 3; ++i) {
    auto u = d.pop_used();
    ASSERT_TRUE(u.ok() && u->has_value());
  }
  EXPECT_EQ(d.free_descriptors(), kSize);
}

// ---- ChainReader / ChainWriter ----

TEST_F(QueueTest, ReaderAndWriterCrossSegmentsAndFailWithoutSideEffects) {
  DriverQueue d = driver();
  const uint8_t bytes[] = {1, 2, 3, 4, 5, 6, 7, 8};
  std::memcpy(&m_.low[kData], bytes, 3);
  std::memcpy(&m_.high[0], bytes + 3, 5);
  Buf rd[] = {{kData, 3}, {kHighGpa, 5}};
  Buf wr[] = {{kData + 0x40, 2}, {kHighGpa + 0x40, 2}};
  ASSERT_TRUE(d.add_chain(rd, wr).ok());
  Queue q = device(d.config());
  DescriptorChain c = pop_one(q);

  ChainReader r(c);
  auto v = r.read_obj<uint32_t>();  // Crosses from the low region into the high one.
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 0x04030201u);
  uint8_t big[5];
  EXPECT_FALSE(r.read(big).ok());  // 4 left: refused, nothing consumed.
  EXPECT_EQ(r.remaining(), 4u);
  ASSERT_TRUE(r.skip(1).ok());
  auto spans = r.take(3);
  ASSERT_TRUE(spans.ok());
  ASSERT_EQ(spans->size(), 1u);
  EXPECT_EQ((*spans)[0][0], 6);
  EXPECT_EQ(r.consumed(), 8u);
  EXPECT_FALSE(r.skip(1).ok());

  ChainWriter w(c);
  EXPECT_FALSE(w.write_obj(uint64_t{~0ull}).ok());  // 8 bytes into 4: nothing written.
  EXPECT_EQ(m_.low[kData + 0x40], 0);
  EXPECT_EQ(w.written(), 0u);
  ASSERT_TRUE(w.write_obj(uint16_t{0x0201}).ok());
  auto out = w.take(2);
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->size(), 1u);
  EXPECT_EQ((*out)[0].data(), &m_.high[0x40]);
  EXPECT_EQ(w.written(), 4u);
  EXPECT_EQ(w.remaining(), 0u);
}

}  // namespace
}  // namespace moss::virtio
