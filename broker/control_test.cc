#include "broker/control.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
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

TEST_F(ControlTest, StatsAndStopRoundTrip) {
  auto e = Endpoint::claim(dir(), "rt");
  ASSERT_TRUE(e.ok());
  bool stopped = false;
  Handlers h{[] {
               VmStats s;
               s.name = "rt";
               s.state = "running";
               s.uptime_ms = 1234;
               s.cpus = 2;
               s.mem_bytes = 512ull << 20;
               s.processes = {{"broker", 10, 4000, 5}, {"vcpu", 11, 100000, 900}};
               s.disks = {"/tmp/a \"quoted\".img"};
               return s;
             },
             [&] { stopped = true; },
             [](UniqueFd conn, Verb v) { answer_deferred(conn.get(), v, {}); }};
  std::thread server([&] {
    for (int i = 0; i < 4; i++) {
      int conn;
      while ((conn = accept4(e->listen_fd(), nullptr, nullptr, SOCK_CLOEXEC)) < 0) std::this_thread::yield();
      serve_connection(UniqueFd(conn), h);
    }
  });
  EXPECT_TRUE(request_pause(dir(), "rt", true).ok());
  EXPECT_TRUE(request_pause(dir(), "rt", false).ok());
  auto s = query_stats(dir(), "rt");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->cpus, 2u);
  ASSERT_EQ(s->processes.size(), 2u);
  EXPECT_EQ(s->processes[1].role, "vcpu");
  EXPECT_EQ(s->processes[1].rss_kib, 100000u);
  std::string json = to_json(*s);
  EXPECT_NE(json.find("\"disks\": [\"/tmp/a \\\"quoted\\\".img\"]"), std::string::npos) << json;
  EXPECT_NE(json.find("\"uptime_ms\": 1234,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"rss_kib\": 100000,"), std::string::npos) << json;
  EXPECT_NE(table_row(*s).find("rt"), std::string::npos);
  // The stop request is accepted; the name stays taken until the endpoint goes, so the
  // waiting client times out here (1 s) with a message.
  auto r = request_stop(dir(), "rt", 1);
  server.join();
  EXPECT_TRUE(stopped);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("still stopping"), std::string::npos);
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
