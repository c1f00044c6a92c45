#include "broker/control.h"

#include "base/event.h"
#include "broker/control_server.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <optional>
#include <fstream>
#include <thread>

namespace moss::control {
namespace {

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("moss-control-" + std::to_string(getpid()));
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir() const { return dir_.string(); }
  std::filesystem::path dir_;
};

TEST(ControlName, AcceptsPathSafeNamesOnly) {
  for (const std::string& ok : {std::string("a"), std::string("web-1"), std::string("db.primary"), std::string("x_y"),
                                std::string("A9"), std::string(64, 'n')}) {
    EXPECT_TRUE(check_name(ok).ok()) << ok;
  }
  for (const char* bad : {"", "../etc", "a/b", ".hidden", "-rf", "_x", "sp ace", "tab\t", "ünï"}) {
    EXPECT_FALSE(check_name(bad).ok()) << bad;
  }
  EXPECT_FALSE(check_name(std::string(65, 'n')).ok());
  EXPECT_NE(check_name("a/b").error().message.find("is not a valid VM name"), std::string::npos);
}

TEST_F(ControlTest, ClaimCreatesAPrivateDirectoryAndRefusesADuplicate) {
  auto a = Endpoint::claim(dir(), "vm1");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(std::filesystem::status(dir_).permissions() & std::filesystem::perms::all, std::filesystem::perms::owner_all);
  EXPECT_TRUE(std::filesystem::exists(dir_ / "vm1.sock"));
  auto b = Endpoint::claim(dir(), "vm1");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().message, "a VM named vm1 is already running (see moss ls)");
  EXPECT_EQ(running_names(dir()), std::vector<std::string>{"vm1"});
  auto c = Endpoint::claim(dir(), "vm2");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(running_names(dir()), (std::vector<std::string>{"vm1", "vm2"}));
}

TEST_F(ControlTest, EndingARunRemovesItsFiles) {
  {
    auto a = Endpoint::claim(dir(), "gone");
    ASSERT_TRUE(a.ok());
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "gone.sock"));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "gone.lock"));
  EXPECT_TRUE(running_names(dir()).empty());
}

TEST_F(ControlTest, StaleFilesOfACrashedRunAreDetectedAndReplaced) {
  // A run that was SIGKILLed: its lock died with it, its files stayed.
  pid_t pid = fork();
  if (pid == 0) {
    auto a = Endpoint::claim(dir(), "crashed");
    _exit(a.ok() ? 0 : 1);  // _exit: no destructor, files stay behind.
  }
  int status;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_EQ(WEXITSTATUS(status), 0);
  ASSERT_TRUE(std::filesystem::exists(dir_ / "crashed.sock"));
  EXPECT_TRUE(running_names(dir()).empty());
  EXPECT_FALSE(query_stats(dir(), "crashed").ok());
  auto b = Endpoint::claim(dir(), "crashed");
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_TRUE(b->removed_stale());
}

// The broker's control server (broker/control_server.h) on its own loop, in a thread, as the
// broker runs it; the clients are the real ones of moss stats/pause/resume/stop.
struct ServerThread {
  EventLoop loop = EventLoop::create().value();
  UniqueFd wake_ours, wake_loops;  // A byte here ends the loop (libevent is not told from another thread).
  Event wake;
  std::optional<ControlServer> server;
  std::thread thread;
  ServerThread(Endpoint e, ControlServer::Hooks hooks) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    wake_ours.reset(sv[0]);
    wake_loops.reset(sv[1]);
    wake = Event::on_fd(loop.get(), wake_loops.get(), EV_READ, [this](int, short) { loop.break_loop(); });
    wake.add();
    server.emplace(loop.get(), std::move(e), std::move(hooks));
    thread = std::thread([this] { loop.dispatch(); });
  }
  ~ServerThread() {
    EXPECT_EQ(write(wake_ours.get(), "x", 1), 1);
    thread.join();
    server.reset();  // Frees the name.
  }
};

TEST_F(ControlTest, StatsAndStopRoundTrip) {
  auto e = Endpoint::claim(dir(), "rt");
  ASSERT_TRUE(e.ok());
  std::atomic<bool> stopped = false;
  ControlServer::Hooks h{[](auto answer) {
                           VmStats s;
                           s.name = "rt";
                           s.state = "running";
                           s.uptime_ms = 1234;
                           s.cpus = 2;
                           s.mem_bytes = 512ull << 20;
                           s.processes = {{"broker", 10, 4000, 5}, {"vcpu", 11, 100000, 900}};
                           s.disks = {"/tmp/a \"quoted\".img"};
                           s.missing_stats = {"blk worker for /tmp/a: did not answer within 500 ms"};
                           answer(s);
                         },
                         [&] { stopped = true; },
                         [](bool, auto done) { done(Result<void>()); },
                         {},
                         [](const SuspendArgs&, auto done) { done(make_error("not here")); }};
  auto r = [&] {
    ServerThread server(std::move(*e), h);
    EXPECT_TRUE(request_pause(dir(), "rt", true).ok());
    EXPECT_TRUE(request_pause(dir(), "rt", false).ok());
    auto s = query_stats(dir(), "rt");
    EXPECT_TRUE(s.ok()) << s.error().message;
    if (s.ok()) {
      EXPECT_EQ(s->cpus, 2u);
      EXPECT_EQ(s->processes.size(), 2u);
      EXPECT_EQ(s->processes.at(1).role, "vcpu");
      EXPECT_EQ(s->processes.at(1).rss_kib, 100000u);
      std::string json = to_json(*s);
      EXPECT_NE(json.find("\"disks\": [\"/tmp/a \\\"quoted\\\".img\"]"), std::string::npos) << json;
      EXPECT_NE(json.find("\"missing_stats\": [\"blk worker for /tmp/a: did not answer within 500 ms\"]"),
                std::string::npos)
          << json;
      EXPECT_NE(table_row(*s).find("rt"), std::string::npos);
    }
    // The stop request is accepted; the name stays taken until the endpoint goes, so the
    // waiting client times out here (1 s) with a message.
    return request_stop(dir(), "rt", 1);
  }();
  EXPECT_TRUE(stopped);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("still stopping"), std::string::npos);
}

// A client that connects and says nothing, and a stats answer that takes its time, hold up
// nobody: the server answers others meanwhile.
TEST_F(ControlTest, ASilentClientAndASlowAnswerDoNotHoldUpOthers) {
  auto e = Endpoint::claim(dir(), "busy");
  ASSERT_TRUE(e.ok());
  std::function<void(const VmStats&)> owed;  // The slow stats answer, given after the pause.
  std::atomic<bool> asked = false;
  ControlServer::Hooks h{[&](auto answer) {
                           owed = answer;
                           asked = true;
                         },
                         [] {},
                         [&](bool, auto done) {
                           done(Result<void>());
                           VmStats s;
                           s.name = "busy";
                           if (owed) owed(s);
                         },
                         {},
                         {}};
  ServerThread server(std::move(*e), h);
  auto silent = privdir::Dir::open(dir(), "runtime directory", false);
  ASSERT_TRUE(silent.ok());
  auto quiet = privdir::connect_at(*silent, "busy.sock", SOCK_SEQPACKET);
  ASSERT_TRUE(quiet.ok());
  Result<VmStats> stats = make_error("not answered");
  std::thread slow([&] { stats = query_stats(dir(), "busy"); });
  // The stats client is accepted and waits; a pause still goes through (and then the stats).
  for (int i = 0; i < 500 && !asked; i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(asked);
  EXPECT_TRUE(request_pause(dir(), "busy", true).ok());
  slow.join();
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  EXPECT_EQ(stats->name, "busy");
}

// moss exec: the broker's agent connection comes back with the reply (SCM_RIGHTS), or its
// sentence why not.
TEST_F(ControlTest, AgentConnectionIsPassedBackOrRefusedWithASentence) {
  auto e = Endpoint::claim(dir(), "ex");
  ASSERT_TRUE(e.ok());
  UniqueFd worker_end;  // The fake vsock worker's side of what the broker hands out.
  bool refuse = false;
  ControlServer::Hooks h{[](auto) {}, [] {}, [](bool, auto) {},
                         [&]() -> Result<UniqueFd> {
                           if (refuse) return make_error("the VM is stopping");
                           int sv[2];
                           if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return make_error("socketpair");
                           worker_end.reset(sv[1]);
                           return UniqueFd(sv[0]);
                         },
                         {}};
  ServerThread server(std::move(*e), h);
  auto a = request_agent(dir(), "ex");
  ASSERT_TRUE(a.ok()) << a.error().message;
  // The same socket: bytes go both ways between the client's fd and the worker's end.
  ASSERT_EQ(write(a->get(), "ping", 4), 4);
  char buf[8] = {};
  ASSERT_EQ(read(worker_end.get(), buf, sizeof buf), 4);
  EXPECT_EQ(std::string(buf, 4), "ping");
  ASSERT_EQ(write(worker_end.get(), "pong", 4), 4);
  ASSERT_EQ(read(a->get(), buf, sizeof buf), 4);
  EXPECT_EQ(std::string(buf, 4), "pong");
  EXPECT_NE(fcntl(a->get(), F_GETFD) & FD_CLOEXEC, 0);
  refuse = true;
  auto r = request_agent(dir(), "ex");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "the VM named ex cannot reach its guest agent: the VM is stopping");
  auto none = request_agent(dir(), "nobody");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().message, "no VM named nobody is running");
}

TEST(ControlDecode, AgentReplyRefusesWhatIsNotOne) {
  EXPECT_FALSE(decode_agent_reply(std::span<const uint8_t>()).ok());
  const uint8_t junk[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  EXPECT_FALSE(decode_agent_reply(junk).ok());
}

TEST_F(ControlTest, UnknownVmIsOneSentence) {
  auto s = query_stats(dir(), "nobody");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message, "no VM named nobody is running");
  EXPECT_FALSE(query_stats(dir(), "../x").ok());
}

TEST(ControlProcess, StatsOfThisProcessAreNonZero) {
  auto p = process_stats("me", getpid());
  EXPECT_GT(p.rss_kib, 0u);
  auto gone = process_stats("gone", 0x7ffffff0);
  EXPECT_EQ(gone.rss_kib, 0u);
}

}  // namespace
}  // namespace moss::control

namespace moss::control {
namespace {

TEST_F(ControlTest, SuspendCarriesItsPathsAndItsAnswer) {
  auto e = Endpoint::claim(dir(), "sp");
  ASSERT_TRUE(e.ok());
  SuspendArgs seen;
  ControlServer::Hooks h{[](auto) {}, [] {}, [](bool, auto done) { done(Result<void>()); }, {},
                         [&](const SuspendArgs& a, auto done) {
                           seen = a;
                           if (a.spore == "/x/refused") done(make_error("disk 1 cannot save its state"));
                           else done(std::string("the VM is in the spore ") + a.spore);
                         }};
  ServerThread server(std::move(*e), h);
  auto ok = request_suspend(dir(), "sp", {"/x/dev.spore", "/x/store", true});
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(*ok, "the VM is in the spore /x/dev.spore");
  EXPECT_EQ(seen.store, "/x/store");
  EXPECT_TRUE(seen.keep_running);
  auto no = request_suspend(dir(), "sp", {"/x/refused", "/x/store", false});
  ASSERT_FALSE(no.ok());
  EXPECT_EQ(no.error().message, "the VM named sp could not be suspended: disk 1 cannot save its state");
  EXPECT_FALSE(seen.keep_running);
  // Relative paths are refused by the decoder: the broker's working directory is not the client's.
  auto rel = request_suspend(dir(), "sp", {"dev.spore", "/x/store", false});
  ASSERT_FALSE(rel.ok());
  EXPECT_NE(rel.error().message.find("absolute paths"), std::string::npos) << rel.error().message;
  EXPECT_FALSE(request_suspend(dir(), "nobody", {"/a", "/b", false}).ok());
}

}  // namespace
}  // namespace moss::control
