// moss-blk on the worker runtime, driven the two ways a VMM drives it: the broker's control
// channel (ipc/worker.capnp: describe, stats, shutdown) and vhost-user's own quiescing and
// state transfer (GET_VRING_BASE stops and drains a ring; SET_DEVICE_STATE_FD and
// CHECK_DEVICE_STATE move the state). The runtime serves a vhost-user socketpair on a thread;
// the test is the frontend, the guest driver and the broker (a SOCK_SEQPACKET socketpair).
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "devices/blk/state.h"
#include "devices/blk/test_worker.h"
#include "ipc/channel.h"
#include "ipc/worker.capnp.h"

namespace moss::blk {
namespace {

using namespace testing;
using runtime::ControlRequest;

std::vector<uint8_t> request_bytes(ControlRequest kind, uint32_t version = ipc::WORKER_PROTOCOL_VERSION) {
  return worker::encode_request(kind, version);
}

// A decoded WorkerToBroker (the broker's own decoder lives above devices/; this is the test's).
struct Answer {
  ipc::WorkerToBroker::Which which = ipc::WorkerToBroker::ERROR;
  std::string error;
  runtime::Description description;
  runtime::Stats stats;
};

Answer decode_answer(std::span<const uint8_t> bytes) {
  Answer a;
  auto p = ipc::decode_packet(bytes);
  EXPECT_TRUE(p.ok()) << p.error().message;
  if (!p.ok()) return a;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    auto m = (*p)->root<ipc::WorkerToBroker>();
    a.which = m.which();
    switch (a.which) {
      case ipc::WorkerToBroker::ERROR: a.error = m.getError().cStr(); break;
      case ipc::WorkerToBroker::DESCRIPTION: {
        auto d = m.getDescription();
        a.description.kind = d.getKind().cStr();
        a.description.num_queues = d.getNumQueues();
        for (auto kv : d.getDetails()) a.description.details.emplace_back(kv.getKey().cStr(), kv.getValue().cStr());
        break;
      }
      case ipc::WorkerToBroker::STATS: {
        auto s = m.getStats();
        a.stats = {s.getRequests(), s.getErrors(), s.getBytesIn(), s.getBytesOut(), s.getInFlight(), {}};
        for (auto c : s.getCounters()) a.stats.counters.emplace_back(c.getName().cStr(), c.getValue());
        break;
      }
      default: break;
    }
  })) {
    ADD_FAILURE() << "the reply does not decode: " << e->getDescription().cStr();
  }
  return a;
}

class BlkWorkerTest : public InProcessWorkerTest {
 protected:
  void TearDown() override {
    stop();
    InProcessWorkerTest::TearDown();
  }

  // A worker serving a fresh vhost-user socketpair, with a control socketpair; negotiated.
  void start(Conn c = {}) {
    make_worker(c);
    if (HasFatalFailure()) return;
    int cv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, cv), 0);
    control_.reset(cv[0]);
    ASSERT_TRUE(worker_->watch_control(UniqueFd(cv[1])).ok());
    serve(c);
  }

  void stop() {
    frontend_.reset();
    control_.reset();
    finish();
  }

  Answer receive() {
    pollfd p{control_.get(), POLLIN, 0};
    if (::poll(&p, 1, kWaitMs) != 1) {
      ADD_FAILURE() << "no control reply within " << kWaitMs << " ms";
      return {};
    }
    std::vector<uint8_t> buf(ipc::kMaxPacketBytes);
    ssize_t n = ::recv(control_.get(), buf.data(), buf.size(), 0);
    EXPECT_GT(n, 0) << "the worker closed its control socket";
    if (n <= 0) return {};
    return decode_answer(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
  }
  Answer send_raw(const std::vector<uint8_t>& bytes) {
    EXPECT_EQ(::send(control_.get(), bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    return receive();
  }
  Answer ask(ControlRequest k) { return send_raw(request_bytes(k)); }
  runtime::Stats stats() {
    Answer a = ask(ControlRequest::kStats);
    EXPECT_EQ(a.which, ipc::WorkerToBroker::STATS) << a.error;
    return a.stats;
  }
  uint16_t used_idx(uint32_t q) {
    uint16_t used;
    std::memcpy(&used, host(dq(q).config().used_gpa + 2), 2);
    return used;
  }

  UniqueFd control_;
};

// ---- The broker's control channel ----

TEST_F(BlkWorkerTest, DescribeNamesTheDiskAndItsShape) {
  start({.read_only = true, .num_queues = 3});
  Answer a = ask(ControlRequest::kDescribe);
  ASSERT_EQ(a.which, ipc::WorkerToBroker::DESCRIPTION) << a.error;
  EXPECT_EQ(a.description.kind, "blk");
  EXPECT_EQ(a.description.num_queues, 3u);
  using Details = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(a.description.details,
            (Details{{"disk", disk_path_}, {"readOnly", "true"}, {"capacityBytes", std::to_string(kDiskBytes)}}));
}

TEST_F(BlkWorkerTest, StatsCountRequestsByKind) {
  start({.drop_features = fbit(feature::kWriteZeroes)});
  start_queue(0);
  for (int i = 0; i < 3; i++) read(0, i * 8, 4096);
  write(0, 100, std::vector<uint8_t>(512, 1));
  write(0, 200, std::vector<uint8_t>(1024, 2));
  simple(0, kReqFlush);
  get_id(0, 20);
  simple(0, 99);                            // Unknown type: UNSUPP.
  read(0, kDiskBytes / 512 - 1, 1024);      // Past the end: IOERR (does not parse: "other").
  kick(0);
  wait_used(0, 9);
  runtime::Stats s = stats();
  EXPECT_EQ(s.requests, 9u);
  EXPECT_EQ(s.errors, 2u);
  EXPECT_EQ(s.bytes_out, 3u * 4096);
  EXPECT_EQ(s.bytes_in, 1536u);
  EXPECT_EQ(s.in_flight, 0u);
  EXPECT_EQ(s.counter("readRequests"), 3u);
  EXPECT_EQ(s.counter("writeRequests"), 2u);
  EXPECT_EQ(s.counter("flushRequests"), 1u);
  EXPECT_EQ(s.counter("otherRequests"), 3u);
}

TEST_F(BlkWorkerTest, MalformedAndOtherVersionRequestsGetAnErrorAndTheWorkerGoesOn) {
  start();
  start_queue(0);
  Answer a = send_raw({1, 2, 3});
  EXPECT_EQ(a.which, ipc::WorkerToBroker::ERROR);
  EXPECT_NE(a.error.find("bad length"), std::string::npos) << a.error;
  a = send_raw(request_bytes(ControlRequest::kShutdown, 7));
  EXPECT_EQ(a.which, ipc::WorkerToBroker::ERROR);
  EXPECT_NE(a.error.find("version 7"), std::string::npos) << a.error;
  Req r = read(0, 1, 512);
  kick(0);
  wait_one(0, r);
  EXPECT_EQ(status(r), kOk);
  EXPECT_FALSE(served_) << "a refused shutdown ended the worker";
  EXPECT_EQ(ask(ControlRequest::kDescribe).which, ipc::WorkerToBroker::DESCRIPTION);
}

TEST_F(BlkWorkerTest, ShutdownFinishesTheRequestsInFlightAndEndsTheWorker) {
  start();
  start_queue(0, 256);
  std::vector<std::vector<uint8_t>> data;
  std::vector<Req> reqs;
  for (int i = 0; i < 64; i++) {
    data.emplace_back(32 * 1024, static_cast<uint8_t>(i + 1));
    reqs.push_back(write(0, i * 64, data.back()));
  }
  kick(0);
  for (int spin = 0; spin < 200000 && used_idx(0) == 0; spin++) std::this_thread::yield();
  EXPECT_EQ(ask(ControlRequest::kShutdown).which, ipc::WorkerToBroker::SHUTTING_DOWN);
  thread_.join();
  EXPECT_EQ(serve_result_, "");
  EXPECT_TRUE(worker_->shut_down());
  // Whatever it took is done, returned once, and on the disk.
  const uint16_t done = used_idx(0);
  auto got = wait_used(0, done);
  EXPECT_EQ(got.size(), done);
  for (int i = 0; i < 64; i++) {
    if (!got.count(reqs[i].head)) continue;
    EXPECT_EQ(got[reqs[i].head], 1u) << i;
    EXPECT_EQ(status(reqs[i]), kOk) << i;
    EXPECT_EQ(disk_bytes(i * 64 * 512, data[i].size()), data[i]) << "write " << i << " completed but is not on the disk";
  }
}

TEST_F(BlkWorkerTest, ClosingTheControlSocketEndsTheWorker) {
  start();
  start_queue(0);
  control_.reset();
  for (int i = 0; i < 200 && !served_; i++) ::usleep(10 * 1000);  // A wait for a fact, not before a negative one.
  EXPECT_TRUE(served_) << "the worker kept running after the broker closed the control socket";
  if (thread_.joinable()) thread_.join();
  EXPECT_EQ(serve_result_, "");
  EXPECT_TRUE(worker_->shut_down());
}

// ---- Quiescing and state over vhost-user ----

TEST_F(BlkWorkerTest, StoppingARingWithRequestsInFlightReturnsEachOnceAndTakesNoMore) {
  start();
  start_queue(0, 512);
  std::vector<Req> first;
  for (int i = 0; i < 100; i++) first.push_back(read(0, i * 128, 32 * 1024));
  kick(0);
  // Stop the ring as soon as the worker is busy with it.
  for (int spin = 0; spin < 200000 && used_idx(0) == 0; spin++) std::this_thread::yield();
  auto base = fe().get_vring_base(0);
  ASSERT_TRUE(base.ok()) << base.error().message;
  // Everything taken from the ring is back in the used ring, each request once.
  const uint16_t done = used_idx(0);
  EXPECT_EQ(*base, done);
  EXPECT_EQ(stats().in_flight, 0u);
  auto got = wait_used(0, done);
  EXPECT_EQ(got.size(), done);

  // Offered and kicked while the ring is stopped: not taken.
  std::vector<Req> second;
  for (int i = 0; i < 20; i++) second.push_back(read(0, 4096 + i * 8, 4096));
  kick(0);
  barrier();
  EXPECT_EQ(used_idx(0), done);
  EXPECT_EQ(stats().requests, done);

  // The state says where the ring stands; restarted there, the rest completes once.
  auto blob = save_state();
  ASSERT_TRUE(blob.ok()) << blob.error().message;
  auto state = decode_state(*blob);
  ASSERT_TRUE(state.ok()) << state.error().message;
  EXPECT_EQ(state->rings[0], (QueuePosition{true, done, done}));
  restart_queue(0, 512, *base);
  auto rest = wait_used(0, first.size() + second.size() - done);
  EXPECT_EQ(rest.size(), first.size() + second.size() - done);
  for (size_t i = 0; i < first.size(); i++) {
    EXPECT_EQ(status(first[i]), kOk) << i;
    EXPECT_TRUE(is_pattern(host(first[i].data_gpa), i * 128 * 512, 32 * 1024)) << i;
  }
  for (size_t i = 0; i < second.size(); i++) EXPECT_EQ(status(second[i]), kOk) << i;
  EXPECT_EQ(stats().counter("readRequests"), first.size() + second.size());
}

TEST_F(BlkWorkerTest, StateRestoredIntoAFreshWorkerDecidesWhereTheRingsStart) {
  start({.serial = "ctl"});
  ASSERT_NO_FATAL_FAILURE(read_then_stop(5));
  auto blob = save_state();
  ASSERT_TRUE(blob.ok()) << blob.error().message;
  // Offered while stopped, so the next worker must take it.
  Req pending = read(0, 77, 512);
  kick(0);
  stop();

  start({.serial = "ctl"});
  ASSERT_TRUE(load_state(*blob).ok());
  auto again = save_state();
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, *blob);
  EXPECT_FALSE(configure_queue(0, 128, false, 4).ok()) << "a ring restarted behind the saved state was accepted";
  restart_queue(0, 128, 5);
  wait_one(0, pending);
  EXPECT_EQ(status(pending), kOk);
  EXPECT_TRUE(is_pattern(host(pending.data_gpa), 77 * 512, 512));
}

TEST_F(BlkWorkerTest, BadStateIsRefusedAndChangesNothing) {
  start({.serial = "ctl"});
  ASSERT_NO_FATAL_FAILURE(read_then_stop(7));
  auto blob = save_state();
  ASSERT_TRUE(blob.ok()) << blob.error().message;
  auto s = decode_state(*blob);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->rings[0], (QueuePosition{true, 7, 7}));
  EXPECT_EQ(s->acked_features, features_ & ~fbit(vhost_user::kFeatureProtocolFeatures));

  auto variant = [&](auto change) {
    SavedState v = *s;
    change(v);
    return encode_state(v);
  };
  std::vector<std::vector<uint8_t>> bad = {
      std::vector<uint8_t>(blob->size(), 0x5a),
      std::vector<uint8_t>(blob->begin(), blob->end() - 1),
      variant([](SavedState& v) { v.capacity_sectors += 8; }),
      variant([](SavedState& v) { v.rings.push_back({}); }),
      variant([](SavedState& v) { v.serial = "other"; }),
      variant([](SavedState& v) { v.acked_features ^= 1ull << 9; }),
  };
  for (size_t i = 0; i < bad.size(); i++) EXPECT_FALSE(load_state(bad[i]).ok()) << "bad state " << i << " was taken";
  // Nothing changed: the state is still the one saved, and the ring restarts where it stood.
  auto again = save_state();
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, *blob);
  restart_queue(0, 128, 7);
  Req r = read(0, 64, 512);
  kick(0);
  wait_one(0, r);
  EXPECT_EQ(status(r), kOk);
  EXPECT_TRUE(is_pattern(host(r.data_gpa), 64 * 512, 512));
}

}  // namespace
}  // namespace moss::blk
