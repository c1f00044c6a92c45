#include "broker/worker_supervisor.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <functional>
#include <thread>

#include "base/event.h"
#include "ipc/channel.h"
#include "ipc/worker.capnp.h"

namespace moss {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// A fake worker on the other end of a control socketpair, running `script` on its end.
struct FakeWorker {
  UniqueFd broker_end, worker_end;
  std::thread thread;
  explicit FakeWorker(std::function<void(int fd)> script) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    broker_end.reset(sv[0]);
    worker_end.reset(sv[1]);
    thread = std::thread([this, script] { script(worker_end.get()); });
  }
  ~FakeWorker() {
    shutdown(worker_end.get(), SHUT_RDWR);  // Ends a script blocked in a read.
    thread.join();
  }
};

// Waits for one stats request on `fd`; false once the channel is gone.
bool read_request(int fd) {
  auto p = ipc::receive_message(fd);
  return p && *p && (*p)->root<ipc::BrokerToWorker>().isStats();
}

void answer_stats(int fd, uint64_t read_requests) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<ipc::WorkerToBroker>();
  m.setVersion(ipc::WORKER_PROTOCOL_VERSION);
  auto counters = m.initStats().initCounters(1);
  counters[0].setName("readRequests");
  counters[0].setValue(read_requests);
  (void)ipc::send_message(fd, mb);
}

constexpr pid_t kNoSuchPid = 0x3fffffff;  // reap() and stop_all() are not called here.

StartedWorker worker(const char* description, FakeWorker& fake) {
  return {kNoSuchPid, "blk", description, std::move(fake.broker_end)};
}

TEST(WorkerStats, AWorkerThatNeverAnswersIsReportedMissingAndDoesNotStallTheLoop) {
  FakeWorker quick([](int fd) {
    while (read_request(fd)) answer_stats(fd, 7);
  });
  FakeWorker silent([](int fd) {
    while (read_request(fd)) {}
  });
  EventLoop loop = EventLoop::create().value();
  std::vector<StartedWorker> ws;
  ws.push_back(worker("blk worker for a.img", quick));
  ws.push_back(worker("blk worker for b.img", silent));
  WorkerSupervisor sup(loop.get(), std::move(ws), {[] { return false; }, [] { return false; }});
  // Something else the loop must do meanwhile: it runs while the silent worker is awaited.
  bool ticked = false, ticked_before_answer = false;
  Event tick = Event::timer(loop.get(), [&](int, short) { ticked = true; });
  tick.add(milliseconds(20));
  std::vector<WorkerStatsRound> answers;
  auto t0 = Clock::now();
  for (int client = 0; client < 2; client++) {  // The second joins the first's round.
    sup.collect_stats(milliseconds(300), [&](const WorkerStatsRound& r) {
      ticked_before_answer = ticked;
      answers.push_back(r);
      if (answers.size() == 2) loop.break_loop();
    });
  }
  loop.dispatch();
  auto elapsed = Clock::now() - t0;
  EXPECT_TRUE(ticked_before_answer) << "the loop was blocked while the workers were asked";
  EXPECT_GE(elapsed, milliseconds(290));
  EXPECT_LT(elapsed, milliseconds(3000));
  ASSERT_EQ(answers.size(), 2u);
  for (const auto& r : answers) {
    ASSERT_EQ(r.disks.size(), 1u);
    EXPECT_EQ(r.disks[0].worker, "blk worker for a.img");
    EXPECT_EQ(r.disks[0].read_requests, 7u);
    ASSERT_EQ(r.missing.size(), 1u);
    EXPECT_EQ(r.missing[0], "blk worker for b.img: did not answer within 300 ms");
  }
}

TEST(WorkerStats, ALateAnswerIsNotTakenForTheNextRounds) {
  FakeWorker slow([](int fd) {
    if (!read_request(fd)) return;
    std::this_thread::sleep_for(milliseconds(300));
    answer_stats(fd, 1);  // Round 1's, after its deadline.
    if (read_request(fd)) answer_stats(fd, 2);
  });
  EventLoop loop = EventLoop::create().value();
  std::vector<StartedWorker> ws;
  ws.push_back(worker("blk worker for s.img", slow));
  WorkerSupervisor sup(loop.get(), std::move(ws), {[] { return false; }, [] { return false; }});
  std::vector<WorkerStatsRound> answers;
  std::function<void(const WorkerStatsRound&)> got = [&](const WorkerStatsRound& r) {
    answers.push_back(r);
    if (answers.size() == 1) sup.collect_stats(milliseconds(5000), got);  // Round 2, at once.
    else loop.break_loop();
  };
  sup.collect_stats(milliseconds(100), got);
  loop.dispatch();
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_TRUE(answers[0].disks.empty());
  ASSERT_EQ(answers[0].missing.size(), 1u);
  ASSERT_EQ(answers[1].disks.size(), 1u);
  EXPECT_EQ(answers[1].disks[0].read_requests, 2u) << "round 2 took round 1's late answer";
  EXPECT_TRUE(answers[1].missing.empty());
}

TEST(WorkerStats, AClosedChannelOrAGarbledReplyIsMissingAtOnceWithItsReason) {
  FakeWorker closes([](int fd) {
    if (read_request(fd)) shutdown(fd, SHUT_RDWR);
  });
  FakeWorker garbles([](int fd) {
    if (read_request(fd)) (void)send(fd, "garbage!", 8, 0);
    while (read_request(fd)) {}
  });
  EventLoop loop = EventLoop::create().value();
  std::vector<StartedWorker> ws;
  ws.push_back(worker("blk worker for c.img", closes));
  ws.push_back(worker("blk worker for g.img", garbles));
  WorkerSupervisor sup(loop.get(), std::move(ws), {[] { return false; }, [] { return false; }});
  std::optional<WorkerStatsRound> answer;
  auto t0 = Clock::now();
  sup.collect_stats(milliseconds(10000), [&](const WorkerStatsRound& r) {
    answer = r;
    loop.break_loop();
  });
  loop.dispatch();
  EXPECT_LT(Clock::now() - t0, milliseconds(5000)) << "waited for the deadline";
  ASSERT_TRUE(answer);
  EXPECT_TRUE(answer->disks.empty());
  ASSERT_EQ(answer->missing.size(), 2u);
  EXPECT_EQ(answer->missing[0], "blk worker for c.img: closed its control channel");
  EXPECT_EQ(answer->missing[1].rfind("blk worker for g.img: ", 0), 0u) << answer->missing[1];
}

}  // namespace
}  // namespace moss
