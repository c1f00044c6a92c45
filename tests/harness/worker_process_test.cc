// WorkerProcess with a stand-in worker (a shell script found through $MOSS_FAKE_WORKER, as a
// new device's binary would be through $MOSS_<DEVICE>): the shared command line, the passed
// sockets at fds 3 and 4, the log, and how the process ends. Host-only.
#include "tests/harness/worker_process.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

namespace moss::harness {
namespace {

using namespace std::chrono_literals;

class WorkerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create();
    ASSERT_TRUE(d.ok()) << d.error().message;
    dir_.emplace(std::move(*d));
  }
  void TearDown() override { ::unsetenv("MOSS_FAKE_WORKER"); }

  // Installs `body` as the worker "moss-fake-worker".
  void fake_worker(const std::string& body) {
    std::string path = dir_->path() + "/fake-worker.sh";
    std::ofstream(path) << "#!/bin/sh\n" << body;
    ASSERT_EQ(::chmod(path.c_str(), 0755), 0);
    ASSERT_EQ(::setenv("MOSS_FAKE_WORKER", path.c_str(), 1), 0);
  }

  // Waits until the worker's log holds `needle` (what it writes when it gets there).
  static bool log_shows(WorkerProcess& w, const std::string& needle) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (w.log().find(needle) == std::string::npos) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

  std::optional<TempDir> dir_;
};

TEST_F(WorkerProcessTest, ANewWorkerGetsTheSharedCommandLineAndItsSockets) {
  fake_worker(
      "echo \"args: $*\"\n"
      "[ -S /proc/self/fd/3 ] && echo fd3-socket\n"
      "[ -S /proc/self/fd/4 ] && echo fd4-socket\n"
      "read line <&3\n"
      "echo \"got $line\"\n");
  WorkerOptions o;
  o.pass_fd = true;
  o.control = true;
  auto w = WorkerProcess::start("moss-fake-worker", {"--capacity", "4096"}, o);
  ASSERT_TRUE(w.ok()) << w.error().message;
  WorkerProcess& p = **w;
  EXPECT_EQ(p.name(), "moss-fake-worker");
  ASSERT_TRUE(log_shows(p, "fd4-socket")) << p.log();
  EXPECT_NE(p.log().find("args: --capacity 4096 --fd 3 --control-fd 4\n"), std::string::npos) << p.log();
  EXPECT_NE(p.log().find("fd3-socket\n"), std::string::npos) << p.log();
  EXPECT_GE(p.control_fd(), 0);
  UniqueFd conn = p.take_connection();
  ASSERT_TRUE(conn.valid());
  ASSERT_EQ(::send(conn.get(), "hello\n", 6, MSG_NOSIGNAL), 6);
  auto st = p.wait_exit(10s);
  ASSERT_TRUE(st.has_value()) << p.log();
  EXPECT_EQ(p.describe(), "exited with status 0") << p.log();
  EXPECT_NE(p.log().find("got hello"), std::string::npos) << p.log();
  EXPECT_FALSE(p.alive());
}

TEST_F(WorkerProcessTest, StopEndsAWorkerBySigtermAndSaysSo) {
  fake_worker("echo started\nexec sleep 60\n");
  WorkerOptions o;
  o.pass_fd = true;
  auto w = WorkerProcess::start("moss-fake-worker", {}, o);
  ASSERT_TRUE(w.ok()) << w.error().message;
  ASSERT_TRUE(log_shows(**w, "started"));
  EXPECT_TRUE((*w)->alive());
  EXPECT_EQ((*w)->describe(), "is running");
  int st = (*w)->stop();
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM) << st;
  EXPECT_EQ((*w)->describe(), "was killed by signal 15 (SIGTERM)");
}

TEST_F(WorkerProcessTest, AWorkerThatEndsBeforeItsSocketExistsIsAnErrorWithItsLog) {
  fake_worker("echo \"no disk given to $0\"\nexit 3\n");
  auto w = WorkerProcess::start("moss-fake-worker", {});
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.error().message.find("moss-fake-worker exited with status 3 before creating its socket"), std::string::npos)
      << w.error().message;
  EXPECT_NE(w.error().message.find("no disk given to"), std::string::npos) << w.error().message;
}

TEST_F(WorkerProcessTest, AMissingBinaryIsAnError) {
  ASSERT_EQ(::setenv("MOSS_FAKE_WORKER", (dir_->path() + "/nothing-here").c_str(), 1), 0);
  auto w = WorkerProcess::start("moss-fake-worker", {});
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.error().message.find("nothing-here is not there"), std::string::npos) << w.error().message;
}

}  // namespace
}  // namespace moss::harness
