// The virtio-blk device end to end, in one process: the worker runtime serves one end of a
// socketpair on its own thread (the production event loop, engine and disk), the test plays the
// frontend (vhost_user::Frontend) and the guest driver (virtio::DriverQueue) over guest
// memory in a memfd. Everything is observed the way a guest or a VMM would: used rings,
// status bytes, interrupts, the error eventfd, the disk file.
#include "devices/blk/device.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <thread>

#include "devices/blk/state.h"
#include "devices/blk/test_worker.h"

namespace moss::blk {
namespace {

using namespace testing;

class BlkDeviceTest : public InProcessWorkerTest {
 protected:
  // Starts a worker on a thread, serving a fresh socketpair, and negotiates over it.
  void connect(Conn c = {}) {
    make_worker(c);
    if (!HasFatalFailure()) serve(c);
  }
};

TEST_F(BlkDeviceTest, OffersFeaturesAndConfigSpace) {
  connect({.num_queues = 3});
  using namespace feature;
  for (int f : {kSizeMax, kSegMax, kBlkSize, feature::kFlush, kTopology, kMq, feature::kDiscard, feature::kWriteZeroes, kIndirectDesc, kEventIdx,
                kVersion1}) {
    EXPECT_TRUE(features_ & fbit(f)) << "feature bit " << f;
  }
  EXPECT_FALSE(features_ & fbit(kRo));
  auto pfs = fe().get_protocol_features();
  ASSERT_TRUE(pfs.ok());
  for (int b : {pf::kConfig, pf::kInflightShmfd, pf::kDeviceState, pf::kMq}) EXPECT_TRUE(*pfs & bit(b)) << b;
  auto nq = fe().get_queue_num();
  ASSERT_TRUE(nq.ok());
  EXPECT_EQ(*nq, 3u);
  auto c = fe().get_config(0, kConfigSize);
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto u64 = [&](size_t o) { uint64_t v; std::memcpy(&v, c->data() + o, 8); return v; };
  auto u32 = [&](size_t o) { uint32_t v; std::memcpy(&v, c->data() + o, 4); return v; };
  auto u16 = [&](size_t o) { uint16_t v; std::memcpy(&v, c->data() + o, 2); return v; };
  EXPECT_EQ(u64(0), kDiskBytes / 512);  // capacity
  EXPECT_EQ(u32(8), kMaxSegmentBytes);  // size_max
  EXPECT_EQ(u32(12), kMaxSegments);     // seg_max
  EXPECT_EQ(u32(20), 512u);             // blk_size
  EXPECT_EQ(512u << (*c)[24], disk_->info().physical_block_size);  // physical_block_exp
  EXPECT_EQ(u16(26), disk_->info().physical_block_size / 512);     // min_io_size
  EXPECT_EQ(u16(34), 3u);               // num_queues
  EXPECT_EQ(u32(36), kMaxDiscardSectors);
  EXPECT_EQ(u32(40), kMaxDiscardSegments);
  EXPECT_EQ(u32(48), kMaxDiscardSectors);
  EXPECT_EQ(u32(52), kMaxDiscardSegments);
  EXPECT_EQ((*c)[56], 1);  // write_zeroes_may_unmap
  // A slice, and reads past the end (refused with an empty reply).
  auto slice = fe().get_config(34, 2);
  ASSERT_TRUE(slice.ok());
  EXPECT_EQ((*slice)[0], 3);
  EXPECT_FALSE(fe().get_config(90, 8).ok());
  // The config space is read-only.
  uint8_t wb = 1;
  EXPECT_FALSE(fe().set_config(32, std::span(&wb, 1)).ok());
}

TEST_F(BlkDeviceTest, ReadReturnsTheDisk) {
  connect();
  start_queue(0);
  // Split over a direct chain of three data buffers, one of them odd-sized and misaligned.
  uint64_t a = alloc(1003, 1) + 3, b = alloc(24, 1), c = alloc(4096);
  std::memset(host(a), 0, 1000);
  Req r;
  r = finish_chain(0, {{header(kReqIn, 7), 16}}, {{a, 1000}, {b, 24}, {c, 4096}}, r);
  kick(0);
  EXPECT_EQ(wait_one(0, r), 1000u + 24 + 4096 + 1);
  EXPECT_EQ(status(r), kOk);
  EXPECT_TRUE(is_pattern(host(a), 7 * 512, 1000));
  EXPECT_TRUE(is_pattern(host(b), 7 * 512 + 1000, 24));
  EXPECT_TRUE(is_pattern(host(c), 7 * 512 + 1024, 4096));
}

TEST_F(BlkDeviceTest, IndirectChainsWork) {
  connect();
  start_queue(0);
  uint64_t data = alloc(8192), st = alloc(1, 1), table = alloc(16 * 3, 16);
  DriverQueue::Buffer rd[] = {{header(kReqIn, 100), 16}};
  DriverQueue::Buffer wr[] = {{data, 8192}, {st, 1}};
  auto head = dq(0).add_indirect_chain(rd, wr, table);
  ASSERT_TRUE(head.ok());
  kick(0);
  auto got = wait_used(0, 1);
  EXPECT_EQ(got[*head], 8193u);
  EXPECT_EQ(*host(st), kOk);
  EXPECT_TRUE(is_pattern(host(data), 100 * 512, 8192));
}

TEST_F(BlkDeviceTest, WriteThenFlushReachesTheFile) {
  connect();
  start_queue(0);
  std::vector<uint8_t> data(12288);
  for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<uint8_t>(i * 7 + 1);
  Req w = write(0, 40, data);
  kick(0);
  EXPECT_EQ(wait_one(0, w), 1u);
  EXPECT_EQ(status(w), kOk);
  Req f = simple(0, kReqFlush);
  kick(0);
  EXPECT_EQ(wait_one(0, f), 1u);
  EXPECT_EQ(status(f), kOk);
  EXPECT_EQ(disk_bytes(40 * 512, data.size()), data);
  EXPECT_TRUE(is_pattern(disk_bytes(39 * 512, 512).data(), 39 * 512, 512));
}

TEST_F(BlkDeviceTest, WithoutFlushNegotiatedWritesAreStillCorrect) {
  // A driver without VIRTIO_BLK_F_FLUSH expects write-through (RWF_DSYNC on every write).
  connect({.drop_features = fbit(feature::kFlush)});
  start_queue(0);
  std::vector<uint8_t> data(4096, 0x42);
  Req w = write(0, 0, data);
  kick(0);
  wait_one(0, w);
  EXPECT_EQ(status(w), kOk);
  EXPECT_EQ(disk_bytes(0, 4096), data);
}

TEST_F(BlkDeviceTest, GetIdReturnsTheSerial) {
  connect({.serial = "serial-xyz"});
  start_queue(0);
  Req full = get_id(0, 20);
  Req shorter = get_id(0, 4);
  kick(0);
  auto got = wait_used(0, 2);
  EXPECT_EQ(got[full.head], 21u);
  EXPECT_EQ(got[shorter.head], 5u);
  EXPECT_EQ(status(full), kOk);
  std::string id(reinterpret_cast<char*>(host(full.data_gpa)), 20);
  EXPECT_EQ(id, std::string("serial-xyz") + std::string(10, '\0'));
  EXPECT_EQ(std::string(reinterpret_cast<char*>(host(shorter.data_gpa)), 4), "seri");
}

TEST_F(BlkDeviceTest, GetIdDefaultsToTheDiskSerial) {
  connect();
  start_queue(0);
  Req r = get_id(0, 20);
  kick(0);
  wait_one(0, r);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(host(r.data_gpa)), 20), disk_->info().serial);
}

TEST_F(BlkDeviceTest, DiscardAndWriteZeroes) {
  connect();
  start_queue(0);
  Req d = ranges(0, kReqDiscard, {{0, 16, 0}, {64, 8, 0}});
  Req z = ranges(0, kReqWriteZeroes, {{128, 8, 0}});
  Req zu = ranges(0, kReqWriteZeroes, {{256, 16, 1}});
  kick(0);
  auto got = wait_used(0, 3);
  for (const Req* r : {&d, &z, &zu}) {
    EXPECT_EQ(got[r->head], 1u);
    EXPECT_EQ(status(*r), kOk);
  }
  auto zeroes = [&](uint64_t sector, uint32_t n) { return disk_bytes(sector * 512, n * 512) == std::vector<uint8_t>(n * 512, 0); };
  EXPECT_TRUE(zeroes(128, 8));
  EXPECT_TRUE(zeroes(256, 16));
  if (can_punch_holes()) {
    EXPECT_TRUE(zeroes(0, 16));  // Discard deallocated: reads back zeroes.
  }
  EXPECT_TRUE(is_pattern(disk_bytes(136 * 512, 512).data(), 136 * 512, 512));
}

TEST_F(BlkDeviceTest, ReadOnlyDiskRefusesEveryWrite) {
  connect({.read_only = true});
  EXPECT_TRUE(features_ & fbit(feature::kRo));
  start_queue(0);
  Req w = write(0, 0, std::vector<uint8_t>(512, 1));
  Req d = ranges(0, kReqDiscard, {{0, 8, 0}});
  Req z = ranges(0, kReqWriteZeroes, {{0, 8, 1}});
  Req r = read(0, 0, 512);
  Req f = simple(0, kReqFlush);
  kick(0);
  auto got = wait_used(0, 5);
  EXPECT_EQ(status(w), kIoErr);
  EXPECT_EQ(status(d), kIoErr);
  EXPECT_EQ(status(z), kIoErr);
  EXPECT_EQ(status(r), kOk);
  EXPECT_EQ(status(f), kOk);
  EXPECT_EQ(got[w.head], 1u);
  EXPECT_TRUE(is_pattern(disk_bytes(0, 4096).data(), 0, 4096));
}

TEST_F(BlkDeviceTest, GuestMistakesGetAStatus) {
  connect({.drop_features = fbit(feature::kWriteZeroes)});
  start_queue(0);
  Req unknown = simple(0, 99);
  Req past_end = read(0, kDiskBytes / 512 - 1, 1024);
  Req partial = read(0, 0, 700);  // Not a whole number of sectors.
  Req zeroes = ranges(0, kReqWriteZeroes, {{0, 8, 0}});  // Not negotiated.
  Req bad_flags = ranges(0, kReqDiscard, {{0, 8, 1}});   // UNMAP is for write-zeroes only.
  Req short_header = finish_chain(0, {{alloc(8, 8), 8}}, {}, Req{});
  Req flush_with_data = finish_chain(0, {{header(kReqFlush, 0), 16}, {alloc(512), 512}}, {}, Req{});
  kick(0);
  auto got = wait_used(0, 7);
  EXPECT_EQ(status(unknown), kUnsupported);
  EXPECT_EQ(status(past_end), kIoErr);
  EXPECT_EQ(status(partial), kIoErr);
  EXPECT_EQ(status(zeroes), kUnsupported);
  EXPECT_EQ(status(bad_flags), kUnsupported);
  EXPECT_EQ(status(short_header), kIoErr);
  EXPECT_EQ(status(flush_with_data), kIoErr);
  for (auto& [head, len] : got) EXPECT_EQ(len, 1u) << head;
  EXPECT_EQ(*host(past_end.data_gpa), 0xcc);  // Nothing read into a refused request.
  // The queue goes on.
  Req ok = read(0, 1, 512);
  kick(0);
  wait_one(0, ok);
  EXPECT_EQ(status(ok), kOk);
}

TEST_F(BlkDeviceTest, ChainWithoutStatusByteBreaksOnlyItsQueue) {
  connect({.num_queues = 2});
  start_queue(0);
  start_queue(1);
  // Device-readable only: nowhere to put a status.
  auto head = dq(0).add_chain(std::vector<DriverQueue::Buffer>{{header(kReqIn, 0), 16}}, {});
  ASSERT_TRUE(head.ok());
  kick(0);
  ASSERT_TRUE(wait_readable(drivers_[0]->err.get(), kWaitMs)) << "the error eventfd was not signalled";
  // Queue 0 takes nothing more; queue 1 is unaffected.
  Req later = read(0, 0, 512);
  kick(0);
  Req other = read(1, 0, 512);
  kick(1);
  wait_one(1, other);
  EXPECT_EQ(status(other), kOk);
  barrier();
  auto u = dq(0).pop_used();
  ASSERT_TRUE(u.ok());
  EXPECT_FALSE(*u);
  EXPECT_EQ(status(later), 0xee);
}

TEST_F(BlkDeviceTest, DescriptorOutsideGuestMemoryBreaksTheQueue) {
  connect();
  start_queue(0);
  ASSERT_TRUE(dq(0).write_descriptor(5, {kGuestBytes - 8, 64, virtio::kDescFWrite, 0}).ok());
  dq(0).publish_raw(5);
  kick(0);
  EXPECT_TRUE(wait_readable(drivers_[0]->err.get(), kWaitMs));
}

TEST_F(BlkDeviceTest, HeadOfferedTwiceWhileInFlightBreaksTheQueue) {
  connect();
  start_queue(0);
  Req r = read(0, 0, 64 * 1024);
  dq(0).publish_raw(r.head);  // The same chain again while the first is being read.
  kick(0);
  EXPECT_TRUE(wait_readable(drivers_[0]->err.get(), kWaitMs));
  // The first use still completes properly.
  auto got = wait_used(0, 1);
  EXPECT_EQ(got[r.head], 64u * 1024 + 1);
  EXPECT_EQ(status(r), kOk);
}

TEST_F(BlkDeviceTest, RunawayAvailableIndexBreaksTheQueue) {
  connect();
  start_queue(0, 64);
  dq(0).set_avail_idx_raw(65);
  kick(0);
  EXPECT_TRUE(wait_readable(drivers_[0]->err.get(), kWaitMs));
}

TEST_F(BlkDeviceTest, ManyInFlightCompleteOutOfOrder) {
  connect();
  start_queue(0, 512);
  // A large read first, then a mix; GET_ID is answered without disk I/O, so it is used
  // before the read that was offered ahead of it.
  Req big = read(0, 1024, 2 << 20);
  std::vector<Req> reqs;
  std::vector<std::vector<uint8_t>> written;
  for (int i = 0; i < 120; i++) {
    uint64_t sector = 8192 + i * 16;
    if (i % 3 == 0) {
      written.emplace_back(4096 + (i % 4) * 512, static_cast<uint8_t>(i));
      reqs.push_back(write(0, sector, written.back()));
    } else {
      reqs.push_back(read(0, i * 8, 512 * (1 + i % 8)));
    }
  }
  Req id = get_id(0, 20);
  kick(0);
  std::vector<uint16_t> order;
  auto got = wait_used(0, reqs.size() + 2, &order);
  ASSERT_EQ(got.size(), reqs.size() + 2);
  auto pos = [&](uint16_t h) { return std::find(order.begin(), order.end(), h) - order.begin(); };
  EXPECT_LT(pos(id.head), pos(big.head));
  EXPECT_EQ(status(big), kOk);
  EXPECT_TRUE(is_pattern(host(big.data_gpa), 1024 * 512, 2 << 20));
  size_t wi = 0;
  for (size_t i = 0; i < reqs.size(); i++) {
    const Req& r = reqs[i];
    EXPECT_EQ(status(r), kOk) << i;
    if (i % 3 == 0) {
      EXPECT_EQ(got[r.head], 1u);
      EXPECT_EQ(disk_bytes((8192 + i * 16) * 512, written[wi].size()), written[wi]) << i;
      ++wi;
    } else {
      EXPECT_EQ(got[r.head], r.data_len + 1);
      EXPECT_TRUE(is_pattern(host(r.data_gpa), i * 8 * 512, r.data_len)) << i;
    }
  }
}

TEST_F(BlkDeviceTest, EveryQueueOfSeveralWorks) {
  connect({.num_queues = 4});
  for (uint32_t q : {0u, 3u}) start_queue(q);
  Req a = read(0, 10, 512), b = read(3, 20, 512);
  kick(0);
  kick(3);
  wait_one(0, a);
  wait_one(3, b);
  EXPECT_TRUE(is_pattern(host(a.data_gpa), 10 * 512, 512));
  EXPECT_TRUE(is_pattern(host(b.data_gpa), 20 * 512, 512));
}

TEST_F(BlkDeviceTest, StoppingAQueueDrainsItAndReportsWhereItStands) {
  connect();
  start_queue(0, 128);
  for (int i = 0; i < 40; i++) read(0, i * 64, 32 * 1024);
  kick(0);
  auto base = fe().get_vring_base(0);
  ASSERT_TRUE(base.ok());
  // Whatever the worker had taken when the stop arrived is finished and in the used ring.
  uint16_t used;
  std::memcpy(&used, host(dq(0).config().used_gpa + 2), 2);
  EXPECT_EQ(used, *base);
  // Restarted where it stopped, it finishes the rest.
  restart_queue(0, 128, *base);
  auto got = wait_used(0, 40);
  EXPECT_EQ(got.size(), 40u);
}

TEST_F(BlkDeviceTest, MemoryTableChangeWhileRunning) {
  connect();
  start_queue(0);
  Req a = read(0, 0, 4096);
  kick(0);
  wait_one(0, a);
  // The same memory under a new mapping (what QEMU does on memory hotplug): the device
  // drains, then rebuilds its view of the ring before the next request.
  vhost_user::MemoryRegion r{0, kGuestBytes, kUserBase, 0};
  int gfd = guest_fd_.get();
  ASSERT_TRUE(fe().set_mem_table(std::span(&r, 1), std::span(&gfd, 1)).ok());
  Req b = read(0, 8, 4096);
  kick(0);
  wait_one(0, b);
  EXPECT_EQ(status(b), kOk);
  EXPECT_TRUE(is_pattern(host(b.data_gpa), 8 * 512, 4096));
}

TEST_F(BlkDeviceTest, StateSaveAndLoadRoundTrip) {
  connect({.serial = "state-test"});
  ASSERT_NO_FATAL_FAILURE(read_then_stop(5));

  auto saved_blob = save_state();
  ASSERT_TRUE(saved_blob.ok()) << saved_blob.error().message;
  const std::vector<uint8_t> blob = *saved_blob;
  auto saved = decode_state(blob);
  ASSERT_TRUE(saved.ok()) << saved.error().message;
  EXPECT_EQ(saved->acked_features, features_ & ~fbit(vhost_user::kFeatureProtocolFeatures));
  EXPECT_EQ(saved->capacity_sectors, kDiskBytes / 512);
  EXPECT_EQ(saved->serial, "state-test");
  ASSERT_EQ(saved->rings.size(), 1u);
  EXPECT_EQ(saved->rings[0], (QueuePosition{true, 5, 5}));
  disconnect();

  // A new worker on the same disk and guest memory takes the state and goes on.
  connect({.serial = "state-test"});
  ASSERT_TRUE(load_state(blob).ok());
  // The ring must resume where the state says: base 4 would lose track of a request.
  EXPECT_FALSE(configure_queue(0, 128, false, 4).ok());
  disconnect();

  connect({.serial = "state-test"});
  ASSERT_TRUE(load_state(blob).ok());
  restart_queue(0, 128, 5);
  Req r = read(0, 64, 512);
  kick(0);
  wait_one(0, r);
  EXPECT_EQ(status(r), kOk);
  disconnect();

  // The state of another disk (here: another serial) is refused.
  connect({.serial = "other"});
  EXPECT_FALSE(load_state(blob).ok());
  auto garbage = blob;
  garbage[0] ^= 1;
  EXPECT_FALSE(load_state(garbage).ok());
}

TEST_F(BlkDeviceTest, InflightRequestsOfADeadBackendAreResubmittedInOrder) {
  connect({.inflight = true});
  // Queue 0's ring as a backend that died left it: three chains taken from the available
  // ring, none used yet, all three marked in flight, taken in the order b, c, a.
  auto drv = DriverQueue::create(mem_, 0, 128, true, true);
  ASSERT_TRUE(drv.ok());
  drivers_[0] = std::make_unique<Driver>(Driver{std::move(*drv), make_eventfd(), make_eventfd(), make_eventfd()});
  Req a = get_id(0, 20), b = get_id(0, 20), c = get_id(0, 20);
  void* map = ::mmap(nullptr, inflight_info_.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, inflight_fd_.get(), 0);
  ASSERT_NE(map, MAP_FAILED);
  auto* region = static_cast<uint8_t*>(map);
  auto set16 = [&](size_t off, uint16_t v) { std::memcpy(region + off, &v, 2); };
  auto mark = [&](uint16_t head, uint64_t counter) {
    region[16 + 16 * head] = 1;
    std::memcpy(region + 16 + 16 * head + 8, &counter, 8);
  };
  set16(8, 1);     // version
  set16(10, kInflightQueueSize);  // desc_num
  mark(a.head, 3);
  mark(b.head, 1);
  mark(c.head, 2);
  // QEMU restores the base from used->idx after a backend died: 0 here.
  restart_queue(0, 128, 0);
  // Then a new request, which must not be confused with the resubmitted ones.
  Req d = get_id(0, 20);
  kick(0);
  std::vector<uint16_t> order;
  wait_used(0, 4, &order);
  EXPECT_EQ(order, (std::vector<uint16_t>{b.head, c.head, a.head, d.head}));
  for (const Req* r : {&a, &b, &c, &d}) EXPECT_EQ(status(*r), kOk);
  for (uint16_t h = 0; h < kInflightQueueSize; h++) EXPECT_EQ(region[16 + 16 * h], 0) << h;
  uint16_t region_used;
  std::memcpy(&region_used, region + 14, 2);
  EXPECT_EQ(region_used, 4);
  ::munmap(map, inflight_info_.mmap_size);
}

TEST_F(BlkDeviceTest, FrontendLeavingMidFlightLosesNothing) {
  connect({.inflight = true});
  start_queue(0, 256);
  std::vector<Req> reqs;
  for (int i = 0; i < 64; i++) reqs.push_back(read(0, i * 128, 64 * 1024));
  kick(0);
  disconnect();  // Without stopping the ring: the worker drains what it took.
  EXPECT_EQ(serve_result_, "");
  uint16_t used;
  std::memcpy(&used, host(dq(0).config().used_gpa + 2), 2);
  // A new worker (the next frontend connection) picks the ring up where the used ring says.
  connect({.inflight = true});
  restart_queue(0, 256, used);
  auto got = wait_used(0, 64);
  ASSERT_EQ(got.size(), 64u);
  for (int i = 0; i < 64; i++) {
    EXPECT_EQ(status(reqs[i]), kOk) << i;
    EXPECT_TRUE(is_pattern(host(reqs[i].data_gpa), i * 128 * 512, 64 * 1024)) << i;
  }
}

TEST_F(BlkDeviceTest, ProtocolErrorDropsTheConnection) {
  connect();
  // A request the Backend refuses without REPLY_ACK is a protocol error: the worker drops
  // the connection and serve_connection reports why.
  std::vector<uint8_t> garbage = {0xff, 0xff, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
  ASSERT_TRUE(vhost_user::send_bytes(fe().fd(), garbage).ok());
  thread_.join();
  EXPECT_NE(serve_result_, "");
}

}  // namespace
}  // namespace moss::blk
