// Quiescing and state of the blk worker over vhost-user itself (GET_VRING_BASE stops a ring
// and drains it; SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE move the state), with I/O in flight,
// across processes: nothing is lost and nothing completes twice. And the broker's control
// interface (ipc/worker.capnp: describe, stats, shutdown). moss-blk runs as its own process
// with a SOCK_SEQPACKET control socket, as the broker starts it; the test drives it with the
// broker's own client (worker::call) and plays the frontend and guest through the driver
// harness (a memfd as guest RAM, our virtqueue code as driver).
//
// The guest moves to a fresh moss-blk process: the harness reconnects its frontend to the new
// worker with the same memory, rings and inflight buffer, as a VMM would after restoring.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <vector>

#include "broker/worker_control.h"
#include "devices/blk/state.h"
#include "tests/harness/backend_process.h"
#include "tests/harness/blk_driver.h"
#include "tests/harness/guest.h"
#include "tests/harness/malformed.h"
#include "tests/harness/stream_bytes.h"

namespace moss::harness {
namespace {

using namespace std::chrono_literals;
using worker::Request;

constexpr uint64_t kSector = 512;
constexpr uint64_t kImageBytes = 8ull << 20;
constexpr uint32_t kBytes = 64 << 10;            // Per request.
constexpr uint64_t kSectorsPer = kBytes / kSector;
constexpr uint64_t kReadArea = 8192;             // Reads come from the second half (4 MiB on), never written.

// One moss-blk process with a control socket, on an image of its own (shared by a second
// worker when a test moves state across processes).
class WorkerControl : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = BackendProcess::unavailable(BackendKind::kMossBlk)) {
#ifdef MOSS_EXPECT_BLK_WORKER
      FAIL() << "moss-blk is part of this build but " << *why;
#endif
      GTEST_SKIP() << "moss-blk is not available: " << *why;
    }
    auto dir = TempDir::create();
    ASSERT_TRUE(dir.ok()) << dir.error().message;
    dir_.emplace(std::move(*dir));
    image_ = dir_->path() + "/disk.img";
    int fd = ::open(image_.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    original_ = pattern(0xd15c, kImageBytes);
    ASSERT_EQ(::pwrite(fd, original_.data(), original_.size(), 0), static_cast<ssize_t>(original_.size()));
    ::close(fd);
  }

  std::unique_ptr<BackendProcess> start_worker() {
    BackendOptions o;
    o.disk = image_;
    o.control = true;
    auto b = BackendProcess::start(o);
    EXPECT_TRUE(b.ok()) << b.error().message;
    return b.ok() ? std::move(*b) : nullptr;
  }

  // A reply of the expected kind; anything else (an error reply, no reply) fails the test.
  static worker::Reply call_ok(BackendProcess& b, Request r) {
    auto reply = worker::call(b.control_fd(), r, 5000);
    EXPECT_TRUE(reply.ok()) << reply.error().message << "\nmoss-blk log:\n" << b.log();
    return reply.ok() ? std::move(*reply) : worker::Reply{};
  }
  // Returns once the worker's loop has handled everything that was ready before the call
  // (kicks included): two control round trips. The first reply can come from the turn that
  // also sees an earlier kick; the second request is read on a later turn.
  static void barrier(BackendProcess& b) {
    for (int i = 0; i < 2; i++) call_ok(b, Request::kStats);
  }

  // DEVICE_STATE over the guest's vhost-user connection, every ring stopped.
  static Result<std::vector<uint8_t>> save_state(Guest& g) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return make_error("pipe2 failed", errno);
    UniqueFd rd(p[0]), wr(p[1]);
    MOSS_TRY_VOID(g.frontend().set_device_state_fd(vhost_user::kTransferSave, wr.get()));
    wr.reset();
    std::vector<uint8_t> blob;
    uint8_t buf[4096];
    for (ssize_t n; (n = ::read(rd.get(), buf, sizeof buf)) > 0;) blob.insert(blob.end(), buf, buf + n);
    MOSS_TRY_VOID(g.frontend().check_device_state());
    return blob;
  }
  static Result<void> load_state(Guest& g, const std::vector<uint8_t>& bytes) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return make_error("pipe2 failed", errno);
    UniqueFd rd(p[0]), wr(p[1]);
    MOSS_TRY_VOID(g.frontend().set_device_state_fd(vhost_user::kTransferLoad, rd.get()));
    rd.reset();
    if (!bytes.empty() && ::write(wr.get(), bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
      return make_error("cannot write the state");
    }
    wr.reset();
    return g.frontend().check_device_state();
  }

  static int wait_exit(BackendProcess& b, std::chrono::milliseconds limit) {
    return b.wait_exit(limit).value_or(-1);
  }

  static bool exited_zero(int status) { return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0; }

  std::optional<TempDir> dir_;
  std::string image_;
  std::vector<uint8_t> original_;
};

// A request of the test: a write of a unique tag to its own sectors, or a read of a range
// nobody writes.
struct Op {
  bool write = true;
  uint64_t sector = 0;
  std::vector<uint8_t> tag;
};

TEST_F(WorkerControl, StoppingTheRingAndMovingOnLosesNothingAndDuplicatesNothing) {
  constexpr uint32_t kFirst = 40;   // In flight when the ring is stopped.
  constexpr uint32_t kSecond = 16;  // Offered and kicked while it is stopped.
  auto a = start_worker();
  ASSERT_TRUE(a);
  auto g = Guest::connect(a->socket_path(), {.memory_bytes = 32ull << 20});
  ASSERT_TRUE(g.ok()) << g.error().message << "\n" << a->log();
  Guest& guest = **g;
  ASSERT_TRUE(guest.has_inflight());
  auto dr = BlkDriver::create(guest, {.depth = kFirst + kSecond, .max_bytes = kBytes});
  ASSERT_TRUE(dr.ok()) << dr.error().message;
  BlkDriver& d = *dr;
  auto used = [&] { return used_idx(guest.memory(), guest.queue(0).config()); };

  std::vector<Op> ops(kFirst + kSecond);
  for (uint32_t i = 0; i < ops.size(); ++i) {
    // Every fifth of the first batch reads; the rest write a tag no other request writes.
    ops[i].write = i >= kFirst || i % 5 != 4;
    ops[i].sector = ops[i].write ? i * kSectorsPer : kReadArea + i * kSectorsPer;
    if (ops[i].write) ops[i].tag = pattern(0x7a90 + i, kBytes);
  }
  auto submit = [&](uint32_t i) {
    if (ops[i].write) {
      std::memcpy(d.buffer(i).data(), ops[i].tag.data(), kBytes);
    } else {
      std::memset(d.buffer(i).data(), 0xee, kBytes);
    }
    auto r = d.submit(i, {ops[i].write ? blk::Type::kOut : blk::Type::kIn, ops[i].sector, kBytes, {}});
    ASSERT_TRUE(r.ok()) << r.error().message;
  };
  std::vector<int> completions(ops.size(), 0);
  auto take = [&](const std::vector<Completion>& done) {
    for (const Completion& c : done) {
      ASSERT_LT(c.slot, ops.size());
      ++completions[c.slot];
      EXPECT_EQ(c.status, blk::kOk) << "request " << c.slot;
      if (!ops[c.slot].write) {
        auto got = d.buffer(c.slot).first(kBytes);
        EXPECT_TRUE(std::equal(got.begin(), got.end(), original_.begin() + ops[c.slot].sector * kSector))
            << "read " << c.slot << " returned the wrong bytes";
      }
    }
  };

  // ---- 40 requests in flight, then GET_VRING_BASE ----
  for (uint32_t i = 0; i < kFirst; ++i) submit(i);
  ASSERT_TRUE(d.kick().ok());
  // Stop the ring once the worker has taken all of them (each is used or in its inflight area).
  auto deadline = std::chrono::steady_clock::now() + 5s;
  uint32_t taken = 0, outstanding = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    uint32_t u = used(), listed = guest.inflight(0)->in_flight;
    taken = u + listed;
    outstanding = kFirst - u;
    if (taken >= kFirst) break;
  }
  ASSERT_GE(taken, kFirst) << "the worker did not take the requests";
  auto base = guest.stop_queue(0);
  ASSERT_TRUE(base.ok()) << base.error().message << "\n" << a->log();
  note("in_flight_at_stop", std::to_string(outstanding) + " of " + std::to_string(kFirst) +
                                " requests were still in flight when GET_VRING_BASE was sent");
  EXPECT_EQ(*base, kFirst);
  worker::Reply st = call_ok(*a, Request::kStats);
  EXPECT_EQ(st.stats.in_flight, 0u);
  // Every request is back in the used ring, each once (the driver refuses a head it does not
  // have outstanding), and the worker lists none in flight.
  EXPECT_EQ(used(), kFirst);
  EXPECT_EQ(guest.inflight(0)->in_flight, 0u);
  {
    auto done = d.reap(kFirst);
    ASSERT_TRUE(done.ok()) << done.error().message;
    take(*done);
  }
  EXPECT_EQ(d.in_flight(), 0u);
  for (uint32_t i = 0; i < kFirst; ++i) EXPECT_EQ(completions[i], 1) << "request " << i;
  EXPECT_EQ(st.stats.counter("writeRequests"), 32u);
  EXPECT_EQ(st.stats.counter("readRequests"), 8u);
  EXPECT_EQ(st.stats.bytes_in, 32ull * kBytes);
  EXPECT_EQ(st.stats.bytes_out, 8ull * kBytes);

  // ---- More offered and kicked while stopped: none is taken ----
  for (uint32_t i = kFirst; i < ops.size(); ++i) submit(i);
  ASSERT_TRUE(guest.kick(0).ok());
  barrier(*a);
  EXPECT_EQ(used(), kFirst) << "a stopped ring completed a request";
  EXPECT_EQ(guest.inflight(0)->in_flight, 0u) << "a stopped ring gave up a request";
  EXPECT_EQ(call_ok(*a, Request::kStats).stats.requests, kFirst);

  // ---- The state, then a fresh worker process ----
  auto saved = save_state(guest);
  ASSERT_TRUE(saved.ok()) << saved.error().message << "\n" << a->log();
  auto decoded = blk::decode_state(*saved);
  ASSERT_TRUE(decoded.ok()) << decoded.error().message;
  ASSERT_EQ(decoded->rings.size(), 1u);
  EXPECT_EQ(decoded->rings[0], (blk::QueuePosition{true, kFirst, kFirst}));
  EXPECT_EQ(decoded->acked_features, guest.acked_features());
  EXPECT_EQ(decoded->capacity_sectors, kImageBytes / kSector);
  EXPECT_EQ(call_ok(*a, Request::kShutdown).kind, worker::Reply::Kind::kShuttingDown);
  int status = wait_exit(*a, 5s);
  EXPECT_TRUE(exited_zero(status)) << "moss-blk " << a->describe() << "\n" << a->log();
  EXPECT_EQ(used(), kFirst) << "the first worker completed requests offered while the ring was stopped";

  auto b = start_worker();
  ASSERT_TRUE(b);
  auto rc = guest.reconnect(b->socket_path());
  ASSERT_TRUE(rc.ok()) << rc.error().message << "\n" << b->log();

  // ---- Everything completes, exactly once ----
  while (d.in_flight() > 0) {
    auto done = d.reap(1);
    ASSERT_TRUE(done.ok()) << done.error().message << " with " << d.in_flight() << " in flight\n" << b->log();
    take(*done);
  }
  EXPECT_EQ(used(), ops.size()) << "the used ring holds more or fewer elements than requests made";
  for (uint32_t i = 0; i < ops.size(); ++i) EXPECT_EQ(completions[i], 1) << "request " << i;
  auto f = d.flush();
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(*f, blk::kOk);
  for (uint32_t i = 0; i < ops.size(); ++i) {
    if (ops[i].write) {
      EXPECT_EQ(file_bytes(image_, ops[i].sector * kSector, kBytes), ops[i].tag) << "write " << i;
    }
  }
  worker::Reply bs = call_ok(*b, Request::kStats);
  EXPECT_EQ(bs.stats.counter("writeRequests"), kSecond);
  EXPECT_EQ(bs.stats.counter("flushRequests"), 1u);
  // Stopped again, the new worker's state says every request was taken and returned.
  auto again = guest.stop_queue(0);
  ASSERT_TRUE(again.ok()) << again.error().message;
  auto end = save_state(guest);
  ASSERT_TRUE(end.ok()) << end.error().message;
  auto end_state = blk::decode_state(*end);
  ASSERT_TRUE(end_state.ok()) << end_state.error().message;
  const uint16_t all = static_cast<uint16_t>(ops.size() + 1);  // And the flush.
  EXPECT_EQ(end_state->rings[0], (blk::QueuePosition{true, all, all}));
  EXPECT_EQ(call_ok(*b, Request::kShutdown).kind, worker::Reply::Kind::kShuttingDown);
  EXPECT_TRUE(exited_zero(wait_exit(*b, 5s))) << "moss-blk " << b->describe() << "\n" << b->log();
}

TEST_F(WorkerControl, RefusedStatesChangeNothingAndTheWorkerServesOn) {
  auto w = start_worker();
  ASSERT_TRUE(w);
  worker::Reply desc = call_ok(*w, Request::kDescribe);
  EXPECT_EQ(desc.description.kind, "blk");
  EXPECT_EQ(desc.description.num_queues, 1u);
  EXPECT_EQ(desc.description.detail("disk"), image_);
  EXPECT_EQ(desc.description.detail("capacityBytes"), std::to_string(kImageBytes));
  EXPECT_EQ(desc.description.detail("readOnly"), "false");

  auto g = Guest::connect(w->socket_path());
  ASSERT_TRUE(g.ok()) << g.error().message;
  auto d = BlkDriver::create(**g, {});
  ASSERT_TRUE(d.ok());
  std::vector<uint8_t> buf(4096);
  ASSERT_EQ(*d->read(0, buf), blk::kOk);

  // While a ring runs, the state cannot move.
  EXPECT_FALSE(save_state(**g).ok()) << "a state was saved with a ring running";
  auto base = (*g)->stop_queue(0);
  ASSERT_TRUE(base.ok()) << base.error().message;
  auto saved = save_state(**g);
  ASSERT_TRUE(saved.ok()) << saved.error().message << "\n" << w->log();
  auto s = blk::decode_state(*saved);
  ASSERT_TRUE(s.ok()) << s.error().message;
  blk::SavedState bigger = *s;
  bigger.capacity_sectors += 8;
  std::vector<std::vector<uint8_t>> bad = {
      std::vector<uint8_t>(saved->size(), 0x5a),
      std::vector<uint8_t>(saved->begin(), saved->begin() + saved->size() / 2),
      blk::encode_state(bigger),
      {},
  };
  for (size_t i = 0; i < bad.size(); i++) EXPECT_FALSE(load_state(**g, bad[i]).ok()) << "bad state " << i << " was taken";
  auto after = save_state(**g);
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_EQ(*after, *saved) << "a refused state changed the device";

  // The rings start again (a new connection, resubmitting from the inflight buffer) and serve.
  ASSERT_TRUE((*g)->reconnect(w->socket_path()).ok()) << w->log();
  auto data = pattern(5, 4096);
  ASSERT_EQ(*d->write(16, data), blk::kOk);
  ASSERT_EQ(*d->flush(), blk::kOk);
  EXPECT_EQ(file_bytes(image_, 16 * kSector, 4096), data);
  EXPECT_TRUE(w->alive());
  worker::Reply st = call_ok(*w, Request::kStats);
  EXPECT_EQ(st.stats.counter("readRequests"), 1u);
  EXPECT_EQ(st.stats.counter("writeRequests"), 1u);
  EXPECT_EQ(st.stats.counter("flushRequests"), 1u);
  EXPECT_EQ(st.stats.errors, 0u);
}

TEST_F(WorkerControl, ABrokerThatClosesTheControlSocketEndsTheWorkerWithStatusZero) {
  auto w = start_worker();
  ASSERT_TRUE(w);
  auto g = Guest::connect(w->socket_path());
  ASSERT_TRUE(g.ok()) << g.error().message;
  auto d = BlkDriver::create(**g, {});
  ASSERT_TRUE(d.ok());
  auto data = pattern(6, 4096);
  ASSERT_EQ(*d->write(8, data), blk::kOk);
  w->close_control();
  EXPECT_TRUE(exited_zero(wait_exit(*w, 5s))) << "moss-blk " << w->describe() << "\n" << w->log();
  EXPECT_EQ(file_bytes(image_, 8 * kSector, 4096), data);
}

}  // namespace
}  // namespace moss::harness
