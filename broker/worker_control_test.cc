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

TEST(WorkerControl, StatsAndDescriptionAreDecoded) {
  {
    FakeWorker w([&](int fd, ipc::BrokerToWorker::Reader req) {
      ASSERT_TRUE(req.isStats());
      send(fd, [](auto m) {
        auto s = m.initStats();
        s.setRequests(5);
        s.setBytesIn(4096);
        s.setInFlight(3);
        auto c = s.initCounters(2);
        c[0].setName("readRequests");
        c[0].setValue(4);
        c[1].setName("writeRequests");
        c[1].setValue(1);
      });
    });
    auto r = call(w.broker.get(), Request::kStats);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->stats.requests, 5u);
    EXPECT_EQ(r->stats.bytes_in, 4096u);
    EXPECT_EQ(r->stats.in_flight, 3u);
    EXPECT_EQ(r->stats.counter("readRequests"), 4u);
    EXPECT_EQ(r->stats.counter("writeRequests"), 1u);
    EXPECT_EQ(r->stats.counter("flushRequests"), 0u);
  }
  FakeWorker w([&](int fd, ipc::BrokerToWorker::Reader req) {
    ASSERT_TRUE(req.isDescribe());
    send(fd, [](auto m) {
      auto d = m.initDescription();
      d.setKind("vsock");
      d.setNumQueues(3);
      auto kv = d.initDetails(1);
      kv[0].setKey("guestCid");
      kv[0].setValue("42");
    });
  });
  auto r = call(w.broker.get(), Request::kDescribe);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->description.kind, "vsock");
  EXPECT_EQ(r->description.num_queues, 3u);
  EXPECT_EQ(r->description.detail("guestCid"), "42");
  EXPECT_EQ(r->description.detail("disk"), "");
}

TEST(WorkerControl, OverlongListsAreRefused) {
  FakeWorker w([&](int fd, auto) {
    send(fd, [](auto m) { m.initStats().initCounters(kMaxListEntries + 1); });
  });
  auto r = call(w.broker.get(), Request::kStats);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "the worker's stats have 65 counters");
}

TEST(WorkerControl, RefusalsWrongAnswersAndSilenceAreErrors) {
  {
    FakeWorker w([](int fd, auto) { send(fd, [](auto m) { m.setError("cannot flush the disk"); }); });
    auto r = call(w.broker.get(), Request::kShutdown);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "the worker refused: cannot flush the disk");
  }
  {
    FakeWorker w([](int fd, auto) { send(fd, [](auto m) { m.setShuttingDown(); }); });
    auto r = call(w.broker.get(), Request::kStats);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "the worker answered a different request");
  }
  {
    FakeWorker w([](int fd, auto) { send(fd, [](auto m) { m.setShuttingDown(); }, 99); });
    auto r = call(w.broker.get(), Request::kShutdown);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "the worker speaks control protocol version 99");
  }
  {
    FakeWorker w([](int fd, auto) { ASSERT_EQ(write(fd, "garbage!", 8), 8); });
    EXPECT_FALSE(call(w.broker.get(), Request::kDescribe).ok());
  }
  {
    FakeWorker w([](int, auto) {});  // Reads the request, never answers, then closes.
    auto r = call(w.broker.get(), Request::kDescribe, 200);
    EXPECT_FALSE(r.ok());
  }
  {
    FakeWorker w([](int fd, auto) { std::this_thread::sleep_for(std::chrono::milliseconds(300)); (void)fd; });
    auto r = call(w.broker.get(), Request::kDescribe, 50);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "the worker did not answer within 50 ms");
  }
}

TEST(WorkerControl, EveryRequestHasItsOwnReplyKind) {
  EXPECT_EQ(expected_reply(Request::kDescribe), Reply::Kind::kDescription);
  EXPECT_EQ(expected_reply(Request::kStats), Reply::Kind::kStats);
  EXPECT_EQ(expected_reply(Request::kShutdown), Reply::Kind::kShuttingDown);
}

}  // namespace
}  // namespace moss::worker
