// The broker's control channel of the blk worker (ipc/worker.capnp): the pure request decoder
// and reply encoder, then a Worker on a thread serving a vhost-user socketpair, with the test
// as frontend, guest driver and broker (a SOCK_SEQPACKET socketpair, as the broker makes).
#include "devices/blk/control.h"

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
#include "devices/blk/test_guest.h"
#include "devices/blk/worker.h"
#include "ipc/channel.h"
#include "ipc/worker.capnp.h"

namespace moss::blk {
namespace {

using namespace testing;
using Kind = ControlRequest::Kind;

// ---- The broker's side, as bytes ----

std::vector<uint8_t> request_bytes(Kind kind, std::span<const uint8_t> state = {},
                                   uint32_t version = ipc::WORKER_PROTOCOL_VERSION) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<ipc::BrokerToWorker>();
  m.setVersion(version);
  switch (kind) {
    case Kind::kDescribe: m.setDescribe(); break;
    case Kind::kQuiesce: m.setQuiesce(); break;
    case Kind::kSaveState: m.setSaveState(); break;
    case Kind::kRestoreState: m.setRestoreState(kj::arrayPtr(state.data(), state.size())); break;
    case Kind::kResume: m.setResume(); break;
    case Kind::kStats: m.setStats(); break;
    case Kind::kShutdown: m.setShutdown(); break;
  }
  auto flat = capnp::messageToFlatArray(mb);
  return std::vector<uint8_t>(flat.asBytes().begin(), flat.asBytes().end());
}

// A decoded WorkerToBroker (the broker's own decoder lives above devices/; this is the test's).
struct Answer {
  ipc::WorkerToBroker::Which which = ipc::WorkerToBroker::ERROR;
  uint32_t version = 0;
  std::string error;
  std::vector<uint8_t> state;
  WorkerDescription description;
  std::string kind;
  WorkerStats stats;
};

Answer decode_answer(std::span<const uint8_t> bytes) {
  Answer a;
  auto p = ipc::decode_packet(bytes);
  EXPECT_TRUE(p.ok()) << p.error().message;
  if (!p.ok()) return a;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    auto m = (*p)->root<ipc::WorkerToBroker>();
    a.version = m.getVersion();
    a.which = m.which();
    switch (a.which) {
      case ipc::WorkerToBroker::ERROR: a.error = m.getError().cStr(); break;
      case ipc::WorkerToBroker::STATE: a.state.assign(m.getState().begin(), m.getState().end()); break;
      case ipc::WorkerToBroker::DESCRIPTION: {
        auto d = m.getDescription();
        a.kind = d.getKind().cStr();
        a.description = {d.getDisk().cStr(), d.getReadOnly(), d.getCapacityBytes(), d.getNumQueues()};
        break;
      }
      case ipc::WorkerToBroker::STATS: {
        auto s = m.getStats();
        a.stats.counters = {s.getReadRequests(), s.getWriteRequests(), s.getFlushRequests(), s.getOtherRequests(),
                            s.getBytesRead(),    s.getBytesWritten(),  s.getErrors()};
        a.stats.in_flight = s.getInFlight();
        a.stats.quiesced = s.getQuiesced();
        break;
      }
      default: break;
    }
  })) {
    ADD_FAILURE() << "the reply does not decode: " << e->getDescription().cStr();
  }
  return a;
}

// ---- Pure: decoding requests, encoding replies ----

TEST(BlkControl, DecodesEveryRequestKind) {
  for (Kind k : {Kind::kDescribe, Kind::kQuiesce, Kind::kSaveState, Kind::kResume, Kind::kStats, Kind::kShutdown}) {
    auto r = decode_control_request(request_bytes(k));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->kind, k);
    EXPECT_TRUE(r->state.empty());
  }
  std::vector<uint8_t> blob = {1, 2, 3, 4, 5};
  auto r = decode_control_request(request_bytes(Kind::kRestoreState, blob));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->kind, Kind::kRestoreState);
  EXPECT_EQ(r->state, blob);
}

TEST(BlkControl, RefusesMalformedOtherVersionAndUnknownRequests) {
  auto refused = [](std::vector<uint8_t> bytes, const std::string& needle) {
    auto r = decode_control_request(bytes);
    ASSERT_FALSE(r.ok()) << needle;
    EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
  };
  refused({}, "bad length");
  refused(std::vector<uint8_t>(24, 0xff), "segments");
  auto good = request_bytes(Kind::kStats);
  refused(std::vector<uint8_t>(good.begin(), good.end() - 8), "segment sizes");
  refused(request_bytes(Kind::kStats, {}, 2), "protocol version 2; this moss-blk speaks version 1");
  // The union's discriminant sits after `version` in the root's data section: segment table
  // (8 bytes), root pointer (8), version (4), then the u16 tag. A tag from a newer schema:
  auto unknown = good;
  ASSERT_EQ(unknown[20], 5);  // STATS (the sixth member), so the offset is right.
  unknown[20] = 42;
  refused(unknown, "of a kind this moss-blk does not know");
  // A restoreState whose Data pointer points outside the message.
  auto restore = request_bytes(Kind::kRestoreState, std::vector<uint8_t>(16, 7));
  restore[restore.size() - 16 - 8 + 3] ^= 0x40;  // The Data pointer's offset (in its low bits) runs away.
  auto r = decode_control_request(restore);
  if (r.ok()) {
    EXPECT_EQ(r->state, std::vector<uint8_t>(16, 7)) << "a changed pointer must be refused or harmless";
  }
}

TEST(BlkControl, EncodesEveryReplyKind) {
  ControlReply d = ControlReply::of(ControlReply::Kind::kDescription);
  d.description = {"/images/a.img", true, 1 << 20, 3};
  Answer a = decode_answer(encode_control_reply(d));
  EXPECT_EQ(a.version, ipc::WORKER_PROTOCOL_VERSION);
  EXPECT_EQ(a.which, ipc::WorkerToBroker::DESCRIPTION);
  EXPECT_EQ(a.kind, "blk");
  EXPECT_EQ(a.description.disk, "/images/a.img");
  EXPECT_TRUE(a.description.read_only);
  EXPECT_EQ(a.description.capacity_bytes, 1u << 20);
  EXPECT_EQ(a.description.num_queues, 3u);

  ControlReply s = ControlReply::of(ControlReply::Kind::kStats);
  s.stats = {{1, 2, 3, 4, 5, 6, 7}, 8, true};
  a = decode_answer(encode_control_reply(s));
  EXPECT_EQ(a.which, ipc::WorkerToBroker::STATS);
  EXPECT_EQ(a.stats.counters, (Counters{1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(a.stats.in_flight, 8u);
  EXPECT_TRUE(a.stats.quiesced);

  ControlReply st = ControlReply::of(ControlReply::Kind::kState);
  st.state = {9, 8, 7};
  EXPECT_EQ(decode_answer(encode_control_reply(st)).state, st.state);
  a = decode_answer(encode_control_reply(ControlReply::failure("the device is not quiesced")));
  EXPECT_EQ(a.which, ipc::WorkerToBroker::ERROR);
  EXPECT_EQ(a.error, "the device is not quiesced");
  using W = ipc::WorkerToBroker;
  EXPECT_EQ(decode_answer(encode_control_reply(ControlReply::of(ControlReply::Kind::kQuiesced))).which, W::QUIESCED);
  EXPECT_EQ(decode_answer(encode_control_reply(ControlReply::of(ControlReply::Kind::kRestored))).which, W::RESTORED);
  EXPECT_EQ(decode_answer(encode_control_reply(ControlReply::of(ControlReply::Kind::kResumed))).which, W::RESUMED);
  EXPECT_EQ(decode_answer(encode_control_reply(ControlReply::of(ControlReply::Kind::kShuttingDown))).which,
            W::SHUTTING_DOWN);
}

// ---- A worker on a thread, controlled over a socketpair ----

class WorkerControlTest : public GuestDriverTest {
 protected:
  void TearDown() override {
    stop();
    GuestDriverTest::TearDown();
  }

  // A worker serving a fresh vhost-user socketpair, with a control socketpair; negotiated.
  void start(Conn c = {}) {
    auto d = Disk::open(disk_path_, c.read_only);
    ASSERT_TRUE(d.ok()) << d.error().message;
    disk_ = std::make_unique<Disk>(std::move(*d));
    auto w = Worker::create(*disk_, DeviceOptions{c.num_queues, c.serial});
    ASSERT_TRUE(w.ok()) << w.error().message;
    worker_ = std::move(*w);
    int cv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, cv), 0);
    control_.reset(cv[0]);
    ASSERT_TRUE(worker_->watch_control(UniqueFd(cv[1]), disk_path_).ok());
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    frontend_.emplace(UniqueFd(sv[0]));
    served_ = false;
    thread_ = std::thread([this, fd = sv[1]] {
      auto r = worker_->serve_connection(UniqueFd(fd));
      serve_result_ = r.ok() ? "" : r.error().message;
      served_ = true;
    });
    negotiate(c);
  }

  void stop() {
    frontend_.reset();
    control_.reset();
    if (thread_.joinable()) thread_.join();
    worker_.reset();
    disk_.reset();
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
  Answer ask(Kind k, std::span<const uint8_t> state = {}) { return send_raw(request_bytes(k, state)); }
  void expect_ok(Kind k, ipc::WorkerToBroker::Which want, std::span<const uint8_t> state = {}) {
    Answer a = ask(k, state);
    EXPECT_EQ(a.which, want) << "error: " << a.error;
  }
  void expect_refused(Kind k, const std::string& needle, std::span<const uint8_t> state = {}) {
    Answer a = ask(k, state);
    ASSERT_EQ(a.which, ipc::WorkerToBroker::ERROR) << needle;
    EXPECT_NE(a.error.find(needle), std::string::npos) << a.error;
  }
  std::vector<uint8_t> save() {
    Answer a = ask(Kind::kSaveState);
    EXPECT_EQ(a.which, ipc::WorkerToBroker::STATE) << a.error;
    return a.state;
  }
  WorkerStats stats() {
    Answer a = ask(Kind::kStats);
    EXPECT_EQ(a.which, ipc::WorkerToBroker::STATS) << a.error;
    return a.stats;
  }
  uint16_t used_idx(uint32_t q) {
    uint16_t used;
    std::memcpy(&used, host(dq(q).config().used_gpa + 2), 2);
    return used;
  }

  std::unique_ptr<Disk> disk_;
  std::unique_ptr<Worker> worker_;
  UniqueFd control_;
  std::thread thread_;
  std::string serve_result_;
  std::atomic<bool> served_ = false;
};

TEST_F(WorkerControlTest, DescribeNamesTheDiskAndItsShape) {
  start({.read_only = true, .num_queues = 3});
  Answer a = ask(Kind::kDescribe);
  ASSERT_EQ(a.which, ipc::WorkerToBroker::DESCRIPTION) << a.error;
  EXPECT_EQ(a.kind, "blk");
  EXPECT_EQ(a.description.disk, disk_path_);
  EXPECT_TRUE(a.description.read_only);
  EXPECT_EQ(a.description.capacity_bytes, kDiskBytes);
  EXPECT_EQ(a.description.num_queues, 3u);
}

TEST_F(WorkerControlTest, QuiesceReturnsEveryRequestTakenAndTakesNoNewOnes) {
  start();
  start_queue(0, 512);
  std::vector<Req> first;
  for (int i = 0; i < 100; i++) first.push_back(read(0, i * 128, 32 * 1024));
  kick(0);
  // Quiesce as soon as the worker is busy with them.
  for (int spin = 0; spin < 200000 && used_idx(0) == 0; spin++) std::this_thread::yield();
  expect_ok(Kind::kQuiesce, ipc::WorkerToBroker::QUIESCED);
  WorkerStats s = stats();
  EXPECT_EQ(s.in_flight, 0u);
  EXPECT_TRUE(s.quiesced);
  // Everything taken from the ring is back in the used ring, each request once.
  auto state = decode_state(save());
  ASSERT_TRUE(state.ok()) << state.error().message;
  const uint16_t done = used_idx(0);
  EXPECT_EQ(state->queues[0], (QueuePosition{true, done, done}));
  EXPECT_EQ(s.counters.read_requests, done);
  auto got = wait_used(0, done);
  EXPECT_EQ(got.size(), done);

  // Offered and kicked while quiesced: not taken.
  std::vector<Req> second;
  for (int i = 0; i < 20; i++) second.push_back(read(0, 4096 + i * 8, 4096));
  kick(0);
  ::usleep(100 * 1000);
  EXPECT_EQ(used_idx(0), done);
  EXPECT_EQ(stats().in_flight, 0u);

  // Resume re-reads the ring although those kicks were dropped: everything completes once.
  expect_ok(Kind::kResume, ipc::WorkerToBroker::RESUMED);
  auto rest = wait_used(0, first.size() + second.size() - done);
  EXPECT_EQ(rest.size(), first.size() + second.size() - done);
  for (size_t i = 0; i < first.size(); i++) {
    EXPECT_EQ(status(first[i]), kOk) << i;
    EXPECT_TRUE(is_pattern(host(first[i].data_gpa), i * 128 * 512, 32 * 1024)) << i;
  }
  for (size_t i = 0; i < second.size(); i++) EXPECT_EQ(status(second[i]), kOk) << i;
  s = stats();
  EXPECT_FALSE(s.quiesced);
  EXPECT_EQ(s.counters.read_requests, first.size() + second.size());
}

TEST_F(WorkerControlTest, SaveAndRestoreAreRefusedWhileRunning) {
  start();
  start_queue(0);
  expect_refused(Kind::kSaveState, "the device is not quiesced");
  expect_ok(Kind::kQuiesce, ipc::WorkerToBroker::QUIESCED);
  auto blob = save();
  expect_ok(Kind::kResume, ipc::WorkerToBroker::RESUMED);
  expect_refused(Kind::kRestoreState, "the device is not quiesced", blob);
  // Still serving.
  Req r = read(0, 3, 512);
  kick(0);
  wait_one(0, r);
  EXPECT_EQ(status(r), kOk);
}

TEST_F(WorkerControlTest, RestoreOnRunningRingsRefusesWhatDoesNotFitAndKeepsServing) {
  start({.serial = "ctl"});
  start_queue(0);
  for (int i = 0; i < 7; i++) read(0, i, 512);
  kick(0);
  wait_used(0, 7);
  expect_ok(Kind::kQuiesce, ipc::WorkerToBroker::QUIESCED);
  auto blob = save();
  auto s = decode_state(blob);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->queues[0], (QueuePosition{true, 7, 7}));
  EXPECT_EQ(s->serial, "ctl");
  EXPECT_EQ(s->capacity_sectors, kDiskBytes / 512);
  EXPECT_EQ(s->acked_features, features_ & ~fbit(vhost_user::kFeatureProtocolFeatures));

  auto variant = [&](auto change) {
    SavedState v = *s;
    change(v);
    return encode_state(v);
  };
  std::vector<uint8_t> garbage(blob.size(), 0x5a);
  std::vector<uint8_t> truncated(blob.begin(), blob.end() - 1);
  expect_refused(Kind::kRestoreState, "MOSSBLK magic", garbage);
  expect_refused(Kind::kRestoreState, "arrived", truncated);
  expect_refused(Kind::kRestoreState, "another capacity", variant([](SavedState& v) { v.capacity_sectors += 8; }));
  expect_refused(Kind::kRestoreState, "another number of queues", variant([](SavedState& v) { v.queues.push_back({}); }));
  expect_refused(Kind::kRestoreState, "another serial", variant([](SavedState& v) { v.serial = "other"; }));
  expect_refused(Kind::kRestoreState, "features differ", variant([](SavedState& v) { v.acked_features ^= 1ull << 9; }));
  expect_refused(Kind::kRestoreState, "used index is 7 in guest memory but 9",
                 variant([](SavedState& v) { v.queues[0] = {true, 9, 9}; }));
  expect_refused(Kind::kRestoreState, "2 requests of queue 0 taken and not returned",
                 variant([](SavedState& v) { v.queues[0] = {true, 9, 7}; }));
  expect_refused(Kind::kRestoreState, "had not been started", variant([](SavedState& v) { v.queues[0] = {}; }));
  // Nothing changed: the state is still the one saved, and the worker serves on.
  EXPECT_EQ(save(), blob);
  expect_ok(Kind::kRestoreState, ipc::WorkerToBroker::RESTORED, blob);
  EXPECT_EQ(save(), blob);
  expect_ok(Kind::kResume, ipc::WorkerToBroker::RESUMED);
  Req r = read(0, 64, 512);
  kick(0);
  wait_one(0, r);
  EXPECT_EQ(status(r), kOk);
  EXPECT_TRUE(is_pattern(host(r.data_gpa), 64 * 512, 512));
}

TEST_F(WorkerControlTest, StateRestoredBeforeTheRingsStartDecidesWhereTheyMayStart) {
  start({.serial = "ctl"});
  start_queue(0);
  for (int i = 0; i < 5; i++) read(0, i, 512);
  kick(0);
  wait_used(0, 5);
  expect_ok(Kind::kQuiesce, ipc::WorkerToBroker::QUIESCED);
  auto blob = save();
  // Offered while quiesced, so the next worker must take it.
  Req pending = read(0, 77, 512);
  kick(0);
  stop();

  // A new worker, quiesced before its rings start, takes the state, then the frontend starts
  // the same ring: it must start where the state says, and take nothing until resumed.
  start({.serial = "ctl"});
  expect_ok(Kind::kQuiesce, ipc::WorkerToBroker::QUIESCED);
  expect_ok(Kind::kRestoreState, ipc::WorkerToBroker::RESTORED, blob);
  EXPECT_EQ(save(), blob);
  EXPECT_FALSE(configure_queue(0, 128, false, 4).ok()) << "a ring restarted behind the saved state was accepted";
  restart_queue(0, 128, 5);
  ::usleep(50 * 1000);
  EXPECT_EQ(used_idx(0), 5);
  expect_ok(Kind::kResume, ipc::WorkerToBroker::RESUMED);
  wait_one(0, pending);
  EXPECT_EQ(status(pending), kOk);
  EXPECT_TRUE(is_pattern(host(pending.data_gpa), 77 * 512, 512));
}

TEST_F(WorkerControlTest, StatsCountRequestsByKind) {
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
  WorkerStats s = stats();
  EXPECT_EQ(s.counters, (Counters{3, 2, 1, 3, 3 * 4096, 1536, 2}));
  EXPECT_EQ(s.in_flight, 0u);
  EXPECT_FALSE(s.quiesced);
}

TEST_F(WorkerControlTest, MalformedAndOtherVersionRequestsGetAnErrorAndTheWorkerGoesOn) {
  start();
  start_queue(0);
  Answer a = send_raw({1, 2, 3});
  EXPECT_EQ(a.which, ipc::WorkerToBroker::ERROR);
  EXPECT_NE(a.error.find("bad length"), std::string::npos) << a.error;
  a = send_raw(request_bytes(Kind::kQuiesce, {}, 7));
  EXPECT_EQ(a.which, ipc::WorkerToBroker::ERROR);
  EXPECT_NE(a.error.find("version 7"), std::string::npos) << a.error;
  EXPECT_FALSE(stats().quiesced) << "a refused request changed the state";
  Req r = read(0, 1, 512);
  kick(0);
  wait_one(0, r);
  EXPECT_EQ(status(r), kOk);
  expect_ok(Kind::kDescribe, ipc::WorkerToBroker::DESCRIPTION);
}

TEST_F(WorkerControlTest, ShutdownFinishesTheRequestsInFlightAndEndsTheWorker) {
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
  expect_ok(Kind::kShutdown, ipc::WorkerToBroker::SHUTTING_DOWN);
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

TEST_F(WorkerControlTest, ClosingTheControlSocketEndsTheWorker) {
  start();
  start_queue(0);
  control_.reset();
  for (int i = 0; i < 200 && !served_; i++) ::usleep(10 * 1000);
  EXPECT_TRUE(served_) << "the worker kept running after the broker closed the control socket";
  if (thread_.joinable()) thread_.join();
  EXPECT_EQ(serve_result_, "");
  EXPECT_TRUE(worker_->shut_down());
}

}  // namespace
}  // namespace moss::blk
