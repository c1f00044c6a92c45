// VhostUserDevice's save, restart and restore against real worker processes (no KVM): the
// test plays the guest driver on a memfd "RAM" (tests/harness), a moss-blk worker serves the
// ring. Requests in flight when a save stops the ring complete exactly once: in the same
// worker after restart(), or in a fresh worker on the same disk after restore().
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <thread>

#include "devices/virtio/driver.h"
#include "tests/harness/guest.h"
#include "tests/harness/vsock_process.h"
#include "tests/harness/worker_process.h"
#include "vcpu/vhost_user_device.h"

namespace moss {
namespace {

using harness::GuestRam;
using harness::TempDir;
using harness::WorkerOptions;
using harness::WorkerProcess;

constexpr uint16_t kQueueSize = 256;
constexpr size_t kDiskBytes = 1 << 20;
constexpr uint64_t kVersion1 = 1ull << 32;

VhostUserDeviceSpec blk_spec() {
  return {{.virtio_id = 2, .pci_class = 0x010000, .config_size = 60, .multiqueue_feature = 12, .queue_count_offset = 34},
          "disk 1 (test.img)"};
}

struct Rig {
  std::unique_ptr<GuestRam> ram;
  std::optional<virtio::DriverQueue> queue;
  virtio_pci::QueueState qs;
  std::string disk;
  std::optional<TempDir> dir;
  // Per request: header, status byte and a 4 KiB buffer; by head.
  struct Slot {
    uint64_t header = 0, data = 0, status = 0;
    uint32_t sector = 0;
    uint8_t fill = 0;
  };
  std::map<uint16_t, Slot> in_flight;
  std::vector<Slot> done;

  void SetUp() {
    auto d = TempDir::create();
    ASSERT_TRUE(d.ok()) << d.error().message;
    dir.emplace(std::move(*d));
    disk = dir->path() + "/test.img";
    int fd = open(disk.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, kDiskBytes), 0);
    close(fd);
    auto r = GuestRam::create(16 << 20);
    ASSERT_TRUE(r.ok()) << r.error().message;
    ram = std::move(*r);
    auto base = ram->alloc(virtio::DriverQueue::footprint(kQueueSize));
    ASSERT_TRUE(base.ok());
    auto q = virtio::DriverQueue::create(ram->memory(), *base, kQueueSize, false, false);
    ASSERT_TRUE(q.ok()) << q.error().message;
    queue.emplace(std::move(*q));
    qs.size = kQueueSize;
    qs.enabled = true;
    qs.vector = 0;
    qs.desc = queue->config().desc_gpa;
    qs.driver = queue->config().avail_gpa;
    qs.device = queue->config().used_gpa;
  }
  std::vector<SharedRegion> memory() const { return {{0, ram->size(), ram->host(), ram->fd(), 0}}; }

  Result<std::unique_ptr<WorkerProcess>> worker() {
    WorkerOptions o;
    o.pass_fd = true;
    return WorkerProcess::start("moss-blk", {"--disk", disk}, o);
  }

  // Offers a 4 KiB write of `fill` bytes at `sector`.
  void write(uint32_t sector, uint8_t fill) {
    Slot s;
    s.header = *ram->alloc(16, 16);
    s.status = *ram->alloc(1, 1);
    s.data = *ram->alloc(4096);
    s.sector = sector;
    s.fill = fill;
    uint8_t h[16] = {1 /* VIRTIO_BLK_T_OUT */};
    std::memcpy(h + 8, &sector, 4);
    std::memcpy(ram->bytes(s.header, 16).data(), h, 16);
    std::memset(ram->bytes(s.data, 4096).data(), fill, 4096);
    ram->bytes(s.status, 1)[0] = 0xff;
    virtio::DriverQueue::Buffer rd[] = {{s.header, 16}, {s.data, 4096}};
    virtio::DriverQueue::Buffer wr[] = {{s.status, 1}};
    auto head = queue->add_chain(rd, wr);
    ASSERT_TRUE(head.ok()) << head.error().message;
    in_flight[*head] = s;
  }
  // Pops what completed; each head must be one in flight (pop_used refuses others).
  void collect() {
    for (;;) {
      auto u = queue->pop_used();
      ASSERT_TRUE(u.ok()) << u.error().message;
      if (!*u) return;
      auto it = in_flight.find((*u)->first);
      ASSERT_NE(it, in_flight.end());
      EXPECT_EQ(ram->bytes(it->second.status, 1)[0], 0) << "request status";
      done.push_back(it->second);
      in_flight.erase(it);
    }
  }
  void wait_all() {
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!in_flight.empty() && std::chrono::steady_clock::now() < end) {
      collect();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    collect();
    EXPECT_TRUE(in_flight.empty()) << in_flight.size() << " requests never completed";
  }
  void expect_disk() {
    std::vector<uint8_t> bytes(kDiskBytes);
    int fd = open(disk.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pread(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    close(fd);
    for (const auto& s : done) {
      for (size_t i = 0; i < 4096; i++) ASSERT_EQ(bytes[s.sector * 512ull + i], s.fill) << "sector " << s.sector;
    }
  }
};

void kick(VhostUserDevice& d) {
  uint64_t one = 1;
  ASSERT_EQ(::write(d.kick_fd(0), &one, sizeof one), static_cast<ssize_t>(sizeof one));
}

TEST(VhostUserDeviceSave, RequestsInFlightCompleteOnceAfterRestartAndInAFreshWorker) {
  Rig rig;
  rig.SetUp();
  if (HasFatalFailure()) return;
  auto w1 = rig.worker();
  ASSERT_TRUE(w1.ok()) << w1.error().message;
  auto d1 = VhostUserDevice::connect((*w1)->take_connection(), blk_spec(), rig.memory());
  ASSERT_TRUE(d1.ok()) << d1.error().message;
  VhostUserDevice& dev = **d1;
  ASSERT_TRUE(dev.can_save().ok());
  // Never activated: nothing to stop, no state.
  auto idle = dev.save();
  ASSERT_TRUE(idle.ok()) << idle.error().message;
  EXPECT_FALSE(idle->activated);
  EXPECT_TRUE(idle->state.empty());
  EXPECT_FALSE(dev.stopped_for_save());

  const uint64_t features = kVersion1 & dev.info().features;
  ASSERT_TRUE(dev.activate(features, std::span(&rig.qs, 1)).ok());
  for (uint32_t i = 0; i < 16; i++) rig.write(8 * i, static_cast<uint8_t>(i + 1));
  kick(dev);
  // Stopped with requests in flight: whatever the worker took from the ring is done before
  // it answers, and the base says where it stopped.
  auto s1 = dev.save();
  ASSERT_TRUE(s1.ok()) << s1.error().message;
  ASSERT_TRUE(s1->bases[0].has_value());
  EXPECT_FALSE(s1->state.empty());
  EXPECT_TRUE(dev.stopped_for_save());
  rig.collect();
  EXPECT_EQ(rig.done.size(), *s1->bases[0]) << "completions at the save differ from the ring base";
  // The same worker goes on from there; the rest complete, once.
  ASSERT_TRUE(dev.restart().ok());
  EXPECT_FALSE(dev.stopped_for_save());
  rig.wait_all();
  EXPECT_EQ(rig.done.size(), 16u);

  // This time the worker has begun: the save comes once a first request completed, with the
  // rest taken, in flight or not yet seen.
  for (uint32_t i = 16; i < 32; i++) rig.write(8 * i, static_cast<uint8_t>(i + 1));
  kick(dev);
  for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
       rig.done.size() == 16 && std::chrono::steady_clock::now() < end;) {
    rig.collect();
  }
  ASSERT_GT(rig.done.size(), 16u);
  auto s2 = dev.save();
  ASSERT_TRUE(s2.ok()) << s2.error().message;
  rig.collect();
  const uint16_t base = *s2->bases[0];
  EXPECT_EQ(rig.done.size(), base);
  EXPECT_GT(base, 16u);
  // A second save without a restart keeps the same base and state.
  auto s3 = dev.save();
  ASSERT_TRUE(s3.ok()) << s3.error().message;
  EXPECT_EQ(s3->bases[0], s2->bases[0]);
  EXPECT_EQ(s3->state, s2->state);
  d1->reset();  // The old frontend goes: its socket closes.
  (*w1)->kill9();

  // A fresh worker on the same disk, a fresh frontend: the requests the old worker never
  // took are done now, and new ones after them.
  auto w2 = rig.worker();
  ASSERT_TRUE(w2.ok()) << w2.error().message;
  auto d2 = VhostUserDevice::connect((*w2)->take_connection(), blk_spec(), rig.memory());
  ASSERT_TRUE(d2.ok()) << d2.error().message;
  virtio_pci::SavedQueue sq{rig.qs, true, base};
  auto r = (*d2)->restore(features, std::span(&sq, 1), s2->state);
  ASSERT_TRUE(r.ok()) << r.error().message;
  for (uint32_t i = 32; i < 40; i++) rig.write(8 * i, static_cast<uint8_t>(i + 1));
  kick(**d2);
  rig.wait_all();
  EXPECT_EQ(rig.done.size(), 40u);
  rig.expect_disk();
}

TEST(VhostUserDeviceSave, AStateOfAnotherShapeIsRefusedNamingTheDevice) {
  Rig rig;
  rig.SetUp();
  if (HasFatalFailure()) return;
  auto w = rig.worker();
  ASSERT_TRUE(w.ok()) << w.error().message;
  auto d = VhostUserDevice::connect((*w)->take_connection(), blk_spec(), rig.memory());
  ASSERT_TRUE(d.ok()) << d.error().message;
  virtio_pci::SavedQueue sq{rig.qs, true, 0};
  std::vector<uint8_t> garbage(64, 0x5a);
  auto r = (*d)->restore(kVersion1, std::span(&sq, 1), garbage);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message.rfind("disk 1 (test.img): restoring its state failed: ", 0), 0u) << r.error().message;
}

TEST(VhostUserDeviceSave, ABackendWithoutDeviceStateCannotSave) {
  Rig rig;
  rig.SetUp();
  if (HasFatalFailure()) return;
  WorkerOptions o;
  o.pass_fd = true;
  auto w = WorkerProcess::start("moss-null", {"--capacity", "1048576"}, o);
  ASSERT_TRUE(w.ok()) << w.error().message;
  auto spec = blk_spec();
  spec.name = "null 1";
  auto d = VhostUserDevice::connect((*w)->take_connection(), spec, rig.memory());
  ASSERT_TRUE(d.ok()) << d.error().message;
  auto c = (*d)->can_save();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().message, "null 1: its vhost-user backend cannot save its state (no DEVICE_STATE)");
  auto s = (*d)->save();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message, c.error().message);
}

// moss-vsock through the same path: its state goes to a fresh worker, which tells the guest
// that its connections are gone with VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue.
TEST(VhostUserDeviceSave, VsockStateMovesToAFreshWorkerWhichSendsTransportReset) {
  auto r = GuestRam::create(16 << 20);
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto ram = std::move(*r);
  std::vector<SharedRegion> memory{{0, ram->size(), ram->host(), ram->fd(), 0}};
  std::vector<virtio::DriverQueue> queues;
  std::vector<virtio_pci::QueueState> qs;
  for (int q = 0; q < 3; q++) {
    auto base = ram->alloc(virtio::DriverQueue::footprint(64));
    ASSERT_TRUE(base.ok());
    auto dq = virtio::DriverQueue::create(ram->memory(), *base, 64, false, false);
    ASSERT_TRUE(dq.ok()) << dq.error().message;
    virtio_pci::QueueState s;
    s.size = 64;
    s.enabled = true;
    s.vector = static_cast<uint16_t>(q);
    s.desc = dq->config().desc_gpa;
    s.driver = dq->config().avail_gpa;
    s.device = dq->config().used_gpa;
    qs.push_back(s);
    queues.push_back(std::move(*dq));
  }
  // The event queue (2) gets two 8-byte buffers: moss-vsock sends TRANSPORT_RESET when its
  // rings first start (its fresh table has no connection of the guest's), and again after a
  // restore.
  std::map<uint16_t, uint64_t> events;  // By head.
  for (int i = 0; i < 2; i++) {
    uint64_t e = *ram->alloc(8, 8);
    std::memset(ram->bytes(e, 8).data(), 0xff, 8);
    virtio::DriverQueue::Buffer ev[] = {{e, 8}};
    auto head = queues[2].add_chain({}, ev);
    ASSERT_TRUE(head.ok()) << head.error().message;
    events[*head] = e;
  }
  auto next_event = [&]() -> std::optional<uint32_t> {
    for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10); std::chrono::steady_clock::now() < end;) {
      auto e = queues[2].pop_used();
      EXPECT_TRUE(e.ok()) << e.error().message;
      if (!e.ok()) return std::nullopt;
      if (*e) {
        uint64_t gpa = events.at((*e)->first);
        uint32_t id;
        std::memcpy(&id, ram->bytes(gpa, 4).data(), 4);
        return id;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return std::nullopt;
  };

  VhostUserDeviceSpec spec{{.virtio_id = 19, .pci_class = 0x088000, .config_size = 8, .num_queues = 3, .min_queues = 3},
                           "vsock (cid 3)"};
  harness::VsockProcessOptions o;
  o.pass_fd = true;
  auto w1 = harness::VsockProcess::start(o);
  ASSERT_TRUE(w1.ok()) << w1.error().message;
  auto d1 = VhostUserDevice::connect((*w1)->take_connection(), spec, memory);
  ASSERT_TRUE(d1.ok()) << d1.error().message;
  const uint64_t features = (*d1)->info().features & kVersion1;
  ASSERT_TRUE((*d1)->activate(features, qs).ok());
  EXPECT_EQ(next_event(), std::optional<uint32_t>(0));  // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
  auto saved = (*d1)->save();
  ASSERT_TRUE(saved.ok()) << saved.error().message;
  ASSERT_EQ(saved->bases.size(), 3u);
  EXPECT_EQ(saved->bases[2], std::optional<uint16_t>(1));  // The event queue took one buffer.
  EXPECT_FALSE(saved->state.empty());
  d1->reset();
  (*w1)->kill9();

  auto w2 = harness::VsockProcess::start(o);
  ASSERT_TRUE(w2.ok()) << w2.error().message;
  auto d2 = VhostUserDevice::connect((*w2)->take_connection(), spec, memory);
  ASSERT_TRUE(d2.ok()) << d2.error().message;
  std::vector<virtio_pci::SavedQueue> sq;
  for (int q = 0; q < 3; q++) sq.push_back({qs[q], true, *saved->bases[q]});
  auto restored = (*d2)->restore(features, sq, saved->state);
  ASSERT_TRUE(restored.ok()) << restored.error().message;
  EXPECT_EQ(next_event(), std::optional<uint32_t>(0)) << "no TRANSPORT_RESET after the restore";
}

}  // namespace
}  // namespace moss
