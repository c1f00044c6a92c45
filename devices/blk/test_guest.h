// Test helpers for the blk device and binary tests: a guest (memory in a memfd, driver-side
// virtqueues, request builders, a patterned disk image) and a frontend negotiating with the
// worker under test. The fixtures connect frontend_ their own way (a thread, a process).
#pragma once

#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/guest_memory.h"
#include "devices/blk/device.h"
#include "devices/blk/test_support.h"
#include "devices/virtio/driver.h"
#include "vhost-user/frontend.h"

namespace moss::blk::testing {

using vhost_user::bit;
using virtio::DriverQueue;
namespace pf = vhost_user::protocol_feature;

constexpr uint64_t kDiskBytes = 8 << 20;
constexpr uint64_t kGuestBytes = 8 << 20;
constexpr uint64_t kUserBase = 0x7f5500000000;  // Where the "frontend" says guest RAM lives.
constexpr uint64_t kRingArea = 0x10000;         // Queue q's ring at q * kRingArea.
constexpr uint64_t kHeapStart = 0x100000;       // Request buffers from here up.
constexpr int kWaitMs = 2000;
constexpr uint16_t kInflightQueueSize = 256;  // What GET_INFLIGHT_FD asks for.

constexpr uint32_t kReqIn = 0, kReqOut = 1, kReqFlush = 4, kReqGetId = 8, kReqDiscard = 11, kReqWriteZeroes = 13;

inline uint64_t fbit(int n) { return uint64_t{1} << n; }

inline UniqueFd make_eventfd() { return UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)); }

inline bool wait_readable(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 1;
}

inline uint8_t pattern_byte(uint64_t disk_offset) { return static_cast<uint8_t>((disk_offset * 131) >> 9 ^ disk_offset); }

struct Segment {
  uint64_t sector;
  uint32_t sectors;
  uint32_t flags;
};

// One guest request as the test built it.
struct Req {
  uint16_t head = 0;
  uint64_t status_gpa = 0;
  uint64_t data_gpa = 0;
  uint32_t data_len = 0;
};

// How a test connects: the worker's options and what the "driver" negotiates.
struct Conn {
  bool read_only = false;
  uint32_t num_queues = 1;
  std::string serial = "";
  uint64_t drop_features = 0;  // Device features the "driver" does not accept.
  bool inflight = false;       // GET_INFLIGHT_FD before the rings start.
};

// Guest memory, the driver's rings and a patterned disk image; a frontend_ once connected.
class GuestDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    disk_path_ = dir_.file("disk.img", kDiskBytes);
    // A recognisable pattern on the disk, so reads can be checked byte for byte.
    std::vector<uint8_t> bytes(kDiskBytes);
    for (uint64_t i = 0; i < kDiskBytes; i++) bytes[i] = pattern_byte(i);
    int fd = ::open(disk_path_.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    ::close(fd);
    guest_fd_.reset(::memfd_create("moss-blk-test-guest", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    ASSERT_EQ(::ftruncate(guest_fd_.get(), kGuestBytes), 0);
    ASSERT_EQ(::fcntl(guest_fd_.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);  // As a VMM shares RAM.
    void* p = ::mmap(nullptr, kGuestBytes, PROT_READ | PROT_WRITE, MAP_SHARED, guest_fd_.get(), 0);
    ASSERT_NE(p, MAP_FAILED);
    guest_ = static_cast<uint8_t*>(p);
    mem_ = GuestMemory({{0, kGuestBytes, guest_}});
  }

  void TearDown() override {
    frontend_.reset();
    drivers_.clear();
    if (guest_ != nullptr) ::munmap(guest_, kGuestBytes);
  }

  // Negotiates like QEMU does over frontend_, which the fixture connected, and shares guest
  // memory; with `c.inflight`, asks for the inflight buffer too.
  void negotiate(const Conn& c) {
    setup_ = c;
    ASSERT_TRUE(fe().set_owner().ok());
    auto pfs = fe().get_protocol_features();
    ASSERT_TRUE(pfs.ok());
    ASSERT_TRUE(fe().set_protocol_features(*pfs).ok());
    auto f = fe().get_features();
    ASSERT_TRUE(f.ok());
    features_ = *f & ~c.drop_features;
    auto sf = fe().set_features(features_);
    ASSERT_TRUE(sf.ok()) << sf.error().message;
    share_memory();
    if (c.inflight) {
      auto in = fe().get_inflight_fd(static_cast<uint16_t>(c.num_queues), kInflightQueueSize);
      ASSERT_TRUE(in.ok()) << in.error().message;
      inflight_fd_ = std::move(in->fd);
      inflight_info_ = in->info;
    }
  }
  void share_memory() {
    vhost_user::MemoryRegion r{0, kGuestBytes, kUserBase, 0};
    int gfd = guest_fd_.get();
    auto m = fe().set_mem_table(std::span(&r, 1), std::span(&gfd, 1));
    ASSERT_TRUE(m.ok()) << m.error().message;
  }

  vhost_user::Frontend& fe() { return *frontend_; }

  // Returns once the worker's loop has handled everything that was ready before the call
  // (kicks included): two vhost-user round trips. The first reply can come from the turn
  // that also sees an earlier kick; the second request is only read on a later turn, after
  // that kick was handled. A barrier for negative assertions, instead of a sleep.
  void barrier() {
    for (int i = 0; i < 2; i++) ASSERT_TRUE(fe().get_features().ok());
  }

  struct Driver {
    DriverQueue dq;
    UniqueFd kick, call, err;
  };

  // Lays out queue q (unless `fresh_ring` is false: the ring already in guest memory is
  // reused) and hands it to the backend, which starts it; Error if the backend refuses.
  Result<void> configure_queue(uint32_t q, uint16_t size, bool fresh_ring, uint32_t base) {
    if (fresh_ring) {
      MOSS_TRY(DriverQueue d, DriverQueue::create(mem_, q * kRingArea, size, (features_ & fbit(feature::kEventIdx)) != 0,
                                                  (features_ & fbit(feature::kIndirectDesc)) != 0));
      drivers_[q] = std::make_unique<Driver>(Driver{std::move(d), make_eventfd(), make_eventfd(), make_eventfd()});
    }
    Driver& d = *drivers_.at(q);
    const auto& c = d.dq.config();
    MOSS_TRY_VOID(fe().set_vring_num(q, size));
    MOSS_TRY_VOID(fe().set_vring_base(q, base));
    MOSS_TRY_VOID(fe().set_vring_addr({q, 0, kUserBase + c.desc_gpa, kUserBase + c.used_gpa, kUserBase + c.avail_gpa, 0}));
    MOSS_TRY_VOID(fe().set_vring_call(q, d.call.get()));
    MOSS_TRY_VOID(fe().set_vring_err(q, d.err.get()));
    MOSS_TRY_VOID(fe().set_vring_kick(q, d.kick.get()));
    return fe().set_vring_enable(q, true);
  }
  void start_queue(uint32_t q, uint16_t size = 128) {
    auto r = configure_queue(q, size, true, 0);
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  void restart_queue(uint32_t q, uint16_t size, uint32_t base) {
    auto r = configure_queue(q, size, false, base);
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  DriverQueue& dq(uint32_t q) { return drivers_.at(q)->dq; }

  uint64_t alloc(uint64_t n, uint64_t align = 512) {
    heap_ = (heap_ + align - 1) / align * align;
    uint64_t at = heap_;
    heap_ += n;
    EXPECT_LE(heap_, kGuestBytes);
    return at;
  }
  uint8_t* host(uint64_t gpa) { return guest_ + gpa; }
  uint8_t status(const Req& r) { return *host(r.status_gpa); }

  uint64_t header(uint32_t type, uint64_t sector) {
    uint64_t h = alloc(16, 16);
    uint32_t t = type, zero = 0;
    std::memcpy(host(h), &t, 4);
    std::memcpy(host(h + 4), &zero, 4);
    std::memcpy(host(h + 8), &sector, 8);
    return h;
  }
  Req finish_chain(uint32_t q, std::vector<DriverQueue::Buffer> rd, std::vector<DriverQueue::Buffer> wr, Req r) {
    r.status_gpa = alloc(1, 1);
    *host(r.status_gpa) = 0xee;
    wr.push_back({r.status_gpa, 1});
    auto head = dq(q).add_chain(rd, wr);
    EXPECT_TRUE(head.ok()) << head.error().message;
    r.head = head.ok() ? *head : 0;
    return r;
  }
  Req read(uint32_t q, uint64_t sector, uint32_t len) {
    Req r;
    r.data_gpa = alloc(len);
    r.data_len = len;
    std::memset(host(r.data_gpa), 0xcc, len);
    return finish_chain(q, {{header(kReqIn, sector), 16}}, {{r.data_gpa, len}}, r);
  }
  Req write(uint32_t q, uint64_t sector, const std::vector<uint8_t>& data) {
    Req r;
    r.data_len = static_cast<uint32_t>(data.size());
    r.data_gpa = alloc(data.size());
    std::memcpy(host(r.data_gpa), data.data(), data.size());
    return finish_chain(q, {{header(kReqOut, sector), 16}, {r.data_gpa, r.data_len}}, {}, r);
  }
  Req simple(uint32_t q, uint32_t type, uint64_t sector = 0) { return finish_chain(q, {{header(type, sector), 16}}, {}, Req{}); }
  Req get_id(uint32_t q, uint32_t len) {
    Req r;
    r.data_gpa = alloc(len, 1);
    r.data_len = len;
    std::memset(host(r.data_gpa), 0xcc, len);
    return finish_chain(q, {{header(kReqGetId, 0), 16}}, {{r.data_gpa, len}}, r);
  }
  Req ranges(uint32_t q, uint32_t type, const std::vector<Segment>& segs) {
    uint64_t at = alloc(16 * segs.size(), 16);
    for (size_t i = 0; i < segs.size(); i++) std::memcpy(host(at + 16 * i), &segs[i], 16);
    return finish_chain(q, {{header(type, 0), 16}, {at, static_cast<uint32_t>(16 * segs.size())}}, {}, Req{});
  }

  void kick(uint32_t q) {
    if (!dq(q).kick_needed()) return;
    uint64_t one = 1;
    ASSERT_EQ(::write(drivers_.at(q)->kick.get(), &one, 8), 8);
  }

  // Collects `n` used elements (head -> len, in used-ring order in `order`), sleeping on the
  // call eventfd like a driver: a lost interrupt fails the test.
  std::map<uint16_t, uint32_t> wait_used(uint32_t q, size_t n, std::vector<uint16_t>* order = nullptr) {
    std::map<uint16_t, uint32_t> got;
    Driver& d = *drivers_.at(q);
    while (got.size() < n) {
      auto u = d.dq.pop_used();
      EXPECT_TRUE(u.ok()) << u.error().message;
      if (!u.ok()) break;
      if (*u) {
        EXPECT_TRUE(got.emplace((*u)->first, (*u)->second).second) << "head " << (*u)->first << " used twice";
        if (order != nullptr) order->push_back((*u)->first);
        continue;
      }
      if (d.dq.enable_interrupts()) continue;
      if (!wait_readable(d.call.get(), kWaitMs)) {
        ADD_FAILURE() << "no interrupt: " << got.size() << " of " << n << " requests completed";
        break;
      }
      uint64_t v;
      EXPECT_EQ(::read(d.call.get(), &v, 8), 8);
    }
    return got;
  }
  uint32_t wait_one(uint32_t q, const Req& r) {
    auto got = wait_used(q, 1);
    EXPECT_EQ(got.count(r.head), 1u);
    return got.count(r.head) ? got[r.head] : 0;
  }

  bool can_punch_holes() {
    int fd = ::open(dir_.file("probe", 65536).c_str(), O_RDWR | O_CLOEXEC);
    bool ok = ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0;
    ::close(fd);
    return ok;
  }
  std::vector<uint8_t> disk_bytes(uint64_t off, size_t n) {
    std::vector<uint8_t> v(n);
    int fd = ::open(disk_path_.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_EQ(::pread(fd, v.data(), n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
    ::close(fd);
    return v;
  }
  bool is_pattern(const uint8_t* p, uint64_t disk_off, size_t n) {
    for (size_t i = 0; i < n; i++) {
      if (p[i] != pattern_byte(disk_off + i)) return false;
    }
    return true;
  }

  TempDir dir_;
  std::string disk_path_;
  UniqueFd guest_fd_;
  uint8_t* guest_ = nullptr;
  GuestMemory mem_;
  uint64_t heap_ = kHeapStart;
  Conn setup_;
  uint64_t features_ = 0;
  std::optional<vhost_user::Frontend> frontend_;
  std::map<uint32_t, std::unique_ptr<Driver>> drivers_;
  UniqueFd inflight_fd_;
  vhost_user::Inflight inflight_info_;
};

}  // namespace moss::blk::testing
