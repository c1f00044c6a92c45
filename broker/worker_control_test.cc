#include "broker/worker_control.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <thread>

#include "base/fd.h"
#include "ipc/channel.h"
#include "ipc/worker.capnp.h"

namespace moss::worker {
namespace {

// A fake worker on the other end of a socketpair: reads one request, answers with `reply`.
struct FakeWorker {
  UniqueFd broker, worker;
  std::thread thread;
  FakeWorker(std::function<void(int fd, ipc::BrokerToWorker::Reader)> answer) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    broker.reset(sv[0]);
    worker.reset(sv[1]);
    thread = std::thread([this, answer] {
      auto p = ipc::receive_message(worker.get());
      if (p && *p) answer(worker.get(), (*p)->root<ipc::BrokerToWorker>());
    });
  }
  ~FakeWorker() {
    worker.reset();
    thread.join();
  }
};

void send(int fd, const std::function<void(ipc::WorkerToBroker::Builder)>& fill, uint32_t version = ipc::WORKER_PROTOCOL_VERSION) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<ipc::WorkerToBroker>();
  m.setVersion(version);
  fill(m);
  ASSERT_TRUE(ipc::send_message(fd, mb).ok());
}

TEST(WorkerControl, RestoreCarriesTheStateAndSaveReturnsIt) {
  std::vector<uint8_t> seen;
  {
    FakeWorker w([&](int fd, ipc::BrokerToWorker::Reader req) {
      ASSERT_TRUE(req.isRestoreState());
      seen.assign(req.getRestoreState().begin(), req.getRestoreState().end());
      send(fd, [](auto m) { m.setRestored(); });
    });
    std::vector<uint8_t> state{1, 2, 3, 0xff};
    auto r = call(w.broker.get(), Request::kRestoreState, state);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->kind, Reply::Kind::kRestored);
  }
  EXPECT_EQ(seen, (std::vector<uint8_t>{1, 2, 3, 0xff}));
  FakeWorker w([&](int fd, ipc::BrokerToWorker::Reader req) {
    ASSERT_TRUE(req.isSaveState());
    send(fd, [](auto m) {
      uint8_t b[] = {9, 8, 7};
      m.setState(kj::arrayPtr(b, 3));
    });
  });
  auto r = call(w.broker.get(), Request::kSaveState);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->state, (std::vector<uint8_t>{9, 8, 7}));
}

TEST(WorkerControl, StatsAndDescriptionAreDecoded) {
  FakeWorker w([&](int fd, ipc::BrokerToWorker::Reader req) {
    ASSERT_TRUE(req.isStats());
    send(fd, [](auto m) {
      auto s = m.initStats();
      s.setReadRequests(5);
      s.setBytesWritten(4096);
      s.setInFlight(3);
      s.setQuiesced(true);
    });
  });
  auto r = call(w.broker.get(), Request::kStats);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->stats.read_requests, 5u);
  EXPECT_EQ(r->stats.bytes_written, 4096u);
  EXPECT_EQ(r->stats.in_flight, 3u);
  EXPECT_TRUE(r->stats.quiesced);
}

TEST(WorkerControl, RefusalsWrongAnswersAndSilenceAreErrors) {
  {
    FakeWorker w([](int fd, auto) { send(fd, [](auto m) { m.setError("not quiesced"); }); });
    auto r = call(w.broker.get(), Request::kSaveState);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "the worker refused: not quiesced");
  }
  {
    FakeWorker w([](int fd, auto) { send(fd, [](auto m) { m.setResumed(); }); });
    auto r = call(w.broker.get(), Request::kQuiesce);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "the worker answered a different request");
  }
  {
    FakeWorker w([](int fd, auto) { send(fd, [](auto m) { m.setQuiesced(); }, 99); });
    auto r = call(w.broker.get(), Request::kQuiesce);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "the worker speaks control protocol version 99");
  }
  {
    FakeWorker w([](int fd, auto) { ASSERT_EQ(write(fd, "garbage!", 8), 8); });
    EXPECT_FALSE(call(w.broker.get(), Request::kDescribe).ok());
  }
  {
    FakeWorker w([](int, auto) {});  // Reads the request, never answers, then closes.
    auto r = call(w.broker.get(), Request::kDescribe, {}, 200);
    EXPECT_FALSE(r.ok());
  }
  {
    FakeWorker w([](int fd, auto) { std::this_thread::sleep_for(std::chrono::milliseconds(300)); (void)fd; });
    auto r = call(w.broker.get(), Request::kDescribe, {}, 50);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "the worker did not answer within 50 ms");
  }
}

TEST(WorkerControl, EveryRequestHasItsOwnReplyKind) {
  EXPECT_EQ(expected_reply(Request::kDescribe), Reply::Kind::kDescription);
  EXPECT_EQ(expected_reply(Request::kQuiesce), Reply::Kind::kQuiesced);
  EXPECT_EQ(expected_reply(Request::kSaveState), Reply::Kind::kState);
  EXPECT_EQ(expected_reply(Request::kRestoreState), Reply::Kind::kRestored);
  EXPECT_EQ(expected_reply(Request::kResume), Reply::Kind::kResumed);
  EXPECT_EQ(expected_reply(Request::kStats), Reply::Kind::kStats);
  EXPECT_EQ(expected_reply(Request::kShutdown), Reply::Kind::kShuttingDown);
}

}  // namespace
}  // namespace moss::worker
