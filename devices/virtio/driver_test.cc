// The test driver: ring layout, free-descriptor bookkeeping, checks on what the device
// returns, and a two-thread run of driver and device with real eventfd kicks and interrupts.
#include "devices/virtio/driver.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstring>
#include <string>
#include <thread>

#include "base/fd.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/test_memory.h"

namespace moss::virtio {
namespace {

using testing::kHighGpa;
using testing::kHoleGpa;
using testing::TwoRegions;
using Buf = DriverQueue::Buffer;

TEST(DriverQueue, LaysTheRingOutAlignedAndContiguous) {
  TwoRegions m;
  for (uint16_t size : {1, 2, 8, 256}) {
    auto d = DriverQueue::create(m.mem, kHighGpa, size, true, true);
    ASSERT_TRUE(d.ok()) << d.error().message;
    const QueueConfig& c = d->config();
    EXPECT_EQ(c.desc_gpa, kHighGpa);
    EXPECT_EQ(c.avail_gpa, c.desc_gpa + 16u * size);
    EXPECT_EQ(c.used_gpa % 4, 0u);
    EXPECT_GE(c.used_gpa, c.avail_gpa + 6u + 2u * size);
    EXPECT_EQ(DriverQueue::footprint(size), c.used_gpa + 6u + 8u * size - kHighGpa);
    EXPECT_TRUE(validate_queue_config(m.mem, c).ok());
    EXPECT_EQ(d->free_descriptors(), size);
  }
}

TEST(DriverQueue, RefusesBadPlacementAndSize) {
  TwoRegions m;
  EXPECT_FALSE(DriverQueue::create(m.mem, 0x8, 8, false, false).ok());            // Misaligned.
  EXPECT_FALSE(DriverQueue::create(m.mem, kHoleGpa - 0x40, 8, false, false).ok());  // Into the hole.
  EXPECT_FALSE(DriverQueue::create(m.mem, 0, 12, false, false).ok());             // Not a power of 2.
  EXPECT_FALSE(DriverQueue::create(m.mem, ~0ull - 0xf, 8, false, false).ok());    // Wraps.
}

TEST(DriverQueue, AllocatesAndFreesDescriptors) {
  TwoRegions m;
  auto d = DriverQueue::create(m.mem, 0, 4, false, true);
  ASSERT_TRUE(d.ok());
  Buf three[] = {{0x1000, 1}, {0x1001, 1}, {0x1002, 1}};
  EXPECT_FALSE(d->add_chain({}, {}).ok());  // A chain needs a buffer.
  auto h = d->add_chain(three, {});
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(*h, 0);
  EXPECT_EQ(d->free_descriptors(), 1u);
  EXPECT_FALSE(d->add_chain({}, three).ok());  // Only one descriptor left.
  auto ind = d->add_indirect_chain(three, three, 0x800);  // Needs just one.
  ASSERT_TRUE(ind.ok());
  EXPECT_EQ(d->free_descriptors(), 0u);
  EXPECT_EQ(d->avail_idx(), 2);

  auto q = Queue::create(m.mem, d->config());
  ASSERT_TRUE(q.ok());
  for (int i = 0; i < 2; ++i) {
    auto c = q->pop();
    ASSERT_TRUE(c.ok() && c->has_value());
    ASSERT_TRUE(q->push_used((*c)->head, 0).ok());
  }
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(d->pop_used().ok());
  EXPECT_EQ(d->free_descriptors(), 4u);
  auto none = d->pop_used();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST(DriverQueue, IndirectNeedsTheFeature) {
  TwoRegions m;
  auto d = DriverQueue::create(m.mem, 0, 4, false, false);
  ASSERT_TRUE(d.ok());
  Buf one[] = {{0x1000, 1}};
  EXPECT_FALSE(d->add_indirect_chain(one, {}, 0x800).ok());
}

TEST(DriverQueue, RefusesAHeadThatIsNotInFlight) {
  TwoRegions m;
  auto d = DriverQueue::create(m.mem, 0, 8, false, false);
  ASSERT_TRUE(d.ok());
  Buf one[] = {{0x1000, 1}};
  ASSERT_TRUE(d->add_chain(one, {}).ok());
  auto q = Queue::create(m.mem, d->config());
  ASSERT_TRUE(q.ok());
  auto c = q->pop();
  ASSERT_TRUE(c.ok() && c->has_value());
  ASSERT_TRUE(q->push_used(5, 0).ok());  // The device only counts; head 5 was never offered.
  EXPECT_FALSE(d->pop_used().ok());
}

TEST(DriverQueue, RefusesAUsedIndexFarAhead) {
  TwoRegions m;
  auto d = DriverQueue::create(m.mem, 0, 8, false, false);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(m.mem.write_obj<uint16_t>(d->config().used_gpa + 2, 9).ok());
  EXPECT_FALSE(d->pop_used().ok());
}

TEST(DriverQueue, EnableInterruptsReportsCompletionsThatRacedIn) {
  TwoRegions m;
  for (bool event_idx : {false, true}) {
    auto d = DriverQueue::create(m.mem, 0, 8, event_idx, false);
    ASSERT_TRUE(d.ok());
    auto q = Queue::create(m.mem, d->config());
    ASSERT_TRUE(q.ok());
    EXPECT_FALSE(d->enable_interrupts());
    Buf one[] = {{0x1000, 1}};
    ASSERT_TRUE(d->add_chain({}, one).ok());
    auto c = q->pop();
    ASSERT_TRUE(c.ok() && c->has_value());
    ASSERT_TRUE(q->push_used((*c)->head, 1).ok());
    EXPECT_TRUE(q->needs_notification());
    EXPECT_TRUE(d->enable_interrupts());
  }
}

// ---- Driver and device on two threads ----

// Waits for an eventfd to fire; false after 10 s (a lost notification).
bool wait_event(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 10000) != 1) return false;
  uint64_t v;
  return read(fd, &v, sizeof v) == sizeof v;
}
void signal_event(int fd) {
  uint64_t one = 1;
  ASSERT_EQ(write(fd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
}

class TwoThreads : public ::testing::TestWithParam<bool> {};

// The device doubles each request's number into the writable buffer; the driver checks every
// answer. Both sides sleep on eventfds, so a missing fence or a wrong suppression decision
// shows up as a hang (a 10 s timeout) rather than passing by luck of polling.
TEST_P(TwoThreads, EveryRequestIsAnsweredWithoutLostNotifications) {
  const bool event_idx = GetParam();
  constexpr uint32_t kRequests = 20000;
  constexpr uint16_t kSize = 16;
  constexpr uint64_t kData = 0x1000;  // 8 slots of 16 bytes: request at +0, answer at +8.
  TwoRegions m;
  UniqueFd kick(eventfd(0, EFD_CLOEXEC)), call(eventfd(0, EFD_CLOEXEC));
  ASSERT_TRUE(kick.valid() && call.valid());
  auto d = DriverQueue::create(m.mem, 0, kSize, event_idx, false);
  ASSERT_TRUE(d.ok());
  auto q = Queue::create(m.mem, d->config());
  ASSERT_TRUE(q.ok());

  std::atomic<bool> device_failed{false};
  std::thread device([&] {
    uint32_t done = 0;
    while (done < kRequests) {
      for (;;) {
        auto c = q->pop();
        if (!c.ok()) return device_failed.store(true);
        if (!c->has_value()) break;
        ChainReader r(**c);
        ChainWriter w(**c);
        auto n = r.read_obj<uint32_t>();
        if (!n.ok() || !w.write_obj<uint32_t>(*n * 2).ok()) return device_failed.store(true);
        if (!q->push_used((*c)->head, static_cast<uint32_t>(w.written())).ok()) {
          return device_failed.store(true);
        }
        ++done;
      }
      if (q->needs_notification()) signal_event(call.get());
      if (done == kRequests) break;
      if (!q->enable_notification() && !wait_event(kick.get())) return device_failed.store(true);
    }
  });

  // The driver runs here; a failure is returned as text so the device thread is always
  // joined (a gtest ASSERT would return with the thread still running).
  std::array<uint32_t, kSize> request_of_head{};
  uint32_t answered = 0;
  auto run_driver = [&]() -> std::string {
    uint32_t next = 0;
    while (answered < kRequests) {
      bool added = false;
      // Each request takes two descriptors, so at most 8 are in flight and, answers coming
      // back in order, slot next % 8 is free again by the time it is reused.
      while (next < kRequests && d->free_descriptors() >= 2) {
        uint64_t slot = kData + (next % 8) * 16;
        if (!m.mem.write_obj<uint32_t>(slot, next).ok()) return "write failed";
        Buf rd[] = {{slot, 4}};
        Buf wr[] = {{slot + 8, 4}};
        auto head = d->add_chain(rd, wr);
        if (!head.ok()) return head.error().message;
        request_of_head[*head] = next++;
        added = true;
      }
      if (added && d->kick_needed()) signal_event(kick.get());
      bool got = false;
      for (;;) {
        auto u = d->pop_used();
        if (!u.ok()) return u.error().message;
        if (!u->has_value()) break;
        auto [head, len] = **u;
        uint32_t req = request_of_head[head];
        auto answer = m.mem.read_obj<uint32_t>(kData + (req % 8) * 16 + 8);
        if (!answer.ok() || len != 4 || *answer != req * 2) {
          return "wrong answer to request " + std::to_string(req);
        }
        ++answered;
        got = true;
      }
      if (got || answered == kRequests) continue;
      if (!d->enable_interrupts() && !wait_event(call.get())) {
        return "the driver waited 10 s for an interrupt";
      }
    }
    return "";
  };
  std::string driver_error = run_driver();
  if (!driver_error.empty()) signal_event(kick.get());  // Wake a waiting device; it times out.
  device.join();
  EXPECT_EQ(driver_error, "");
  EXPECT_FALSE(device_failed.load()) << "the device failed or waited 10 s for a kick";
  EXPECT_EQ(answered, kRequests);
}

INSTANTIATE_TEST_SUITE_P(EventIdx, TwoThreads, ::testing::Bool());

}  // namespace
}  // namespace moss::virtio
