// renew_generation() against the real agent session code (guest/agent/, in a child process
// over a socketpair) and against peers that refuse, say nothing, or hang up.
#include "broker/generation.h"

#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/child.h"
#include "guest/agent/client.h"
#include "guest/agent/generation.h"
#include "guest/agent/protocol.h"
#include "guest/agent/server.h"

namespace moss {
namespace {

using std::chrono::milliseconds;

std::string g_dir;  // Where the child's handler records what it got (kept across fork()).

Result<void> record(const agent::Frame& g) {
  std::ofstream(g_dir + "/entropy-" + std::to_string(g.generation), std::ios::binary) << g.data;
  std::ofstream(g_dir + "/realtime") << g.realtime_ns;
  return agent::publish_generation(g_dir.c_str(), g.generation);
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class GenerationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/moss-gen-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    g_dir = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(g_dir); }

  // The agent's session code serving one connection in a child; returns the host's end.
  UniqueFd start_agent() {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    pid_t pid = fork();
    if (pid == 0) {
      dup2(sv[1], 3);
      syscall(SYS_close_range, 4U, ~0U, 0U);
      _exit(agent::serve_connection(UniqueFd(3), record) < 0 ? 0 : 1);
    }
    child_ = ChildProcess(pid);
    close(sv[1]);
    return UniqueFd(sv[0]);
  }

  ChildProcess child_;
};

TEST_F(GenerationTest, AgentTakesTheGenerationEntropyAndClock) {
  {
    UniqueFd s = start_agent();
    ASSERT_TRUE(renew_generation(s.get(), 7, std::nullopt).ok());
    EXPECT_EQ(slurp(g_dir + "/generation"), "7\n");
    EXPECT_EQ(slurp(g_dir + "/realtime"), "0");
  }
  UniqueFd s = start_agent();
  int64_t now = realtime_now_ns();
  ASSERT_TRUE(renew_generation(s.get(), 8, now).ok());
  EXPECT_EQ(slurp(g_dir + "/generation"), "8\n");
  EXPECT_EQ(slurp(g_dir + "/realtime"), std::to_string(now));
  // Fresh host entropy each time.
  std::string e7 = slurp(g_dir + "/entropy-7"), e8 = slurp(g_dir + "/entropy-8");
  EXPECT_EQ(e7.size(), agent::kGenerationEntropyBytes);
  EXPECT_EQ(e8.size(), agent::kGenerationEntropyBytes);
  EXPECT_NE(e7, e8);
}

// A fake agent: sends `reply` on its end, then (if `hang_up`) closes it.
void fake_agent(int fd, const std::string& reply, bool hang_up) {
  if (!reply.empty()) {
    ASSERT_EQ(write(fd, reply.data(), reply.size()), static_cast<ssize_t>(reply.size()));
  }
  if (hang_up) shutdown(fd, SHUT_WR);  // It still reads: the request goes out, the answer is all there is.
}

std::string encoded(const agent::Frame& f) {
  std::string s;
  EXPECT_TRUE(agent::encode(agent::Direction::kToHost, f, &s).ok());
  return s;
}

agent::Frame hello_v(uint16_t v) {
  agent::Frame h;
  h.type = agent::MsgType::kHello;
  h.version_min = h.version_max = v;
  return h;
}

std::string renew_error(const std::string& reply, bool hang_up, milliseconds timeout = milliseconds(2000)) {
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd host(sv[0]), peer(sv[1]);
  fake_agent(peer.get(), reply, hang_up);
  auto r = renew_generation(host.get(), 3, std::nullopt, timeout);
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : r.error().message;
}

TEST_F(GenerationTest, EveryFailureIsOneSentence) {
  agent::Frame old;
  old.type = agent::MsgType::kError;
  old.error = agent::ErrorCode::kVersion;
  old.data = "the agent speaks protocol version 1 only";
  EXPECT_EQ(renew_error(encoded(old), true),
            "the guest agent refused the new generation: the agent speaks protocol version 1 only");
  EXPECT_EQ(renew_error(encoded(hello_v(1)), true), "the guest agent answered something else than HELLO version 2");
  agent::Frame wrong_ack;
  wrong_ack.type = agent::MsgType::kGenerationAck;
  wrong_ack.generation = 4;
  EXPECT_EQ(renew_error(encoded(hello_v(2)) + encoded(wrong_ack), true),
            "the guest agent answered the new generation with GENERATION_ACK");
  EXPECT_EQ(renew_error(encoded(hello_v(2)), true),
            "the guest agent closed the connection before acknowledging the new generation");
  EXPECT_EQ(renew_error("garbage!", true), "the guest agent sent a bad message: unknown message type");
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(renew_error(encoded(hello_v(2)), false, milliseconds(200)),
            "the guest agent did not acknowledge generation 3 within 200 ms");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

}  // namespace
}  // namespace moss
