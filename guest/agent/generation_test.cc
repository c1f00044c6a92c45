// GENERATION on the guest side: the file programs read, the entropy ioctl's failure, a Session
// taking GENERATION before EXEC (and refusing it on a version-1 connection), and the Server
// making its listener again when it breaks (as after a vsock transport reset).
#include "guest/agent/generation.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "base/child.h"
#include "guest/agent/client.h"
#include "guest/agent/server.h"

namespace moss::agent {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/moss-generation-XXXXXX";
    EXPECT_NE(mkdtemp(tmpl), nullptr);
    path_ = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(AgentGeneration, PublishWritesTheNumberAtomicallyWithMode0644) {
  TempDir t;
  std::string dir = t.path() + "/run-moss";  // Made if missing.
  ASSERT_TRUE(publish_generation(dir.c_str(), 1).ok());
  EXPECT_EQ(slurp(dir + "/generation"), "1\n");
  struct stat st;
  ASSERT_EQ(stat((dir + "/generation").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  struct stat d;
  ASSERT_EQ(stat(dir.c_str(), &d), 0);
  EXPECT_EQ(d.st_mode & 07777, 0755u & ~static_cast<unsigned>(umask(022) & 0777));
  umask(022);
  // A reader holding the old file keeps the old number; the name gets the new one.
  std::ifstream old(dir + "/generation");
  ASSERT_TRUE(publish_generation(dir.c_str(), 18446744073709551615ull).ok());
  EXPECT_EQ(slurp(dir + "/generation"), "18446744073709551615\n");
  std::string old_line;
  std::getline(old, old_line);
  EXPECT_EQ(old_line, "1");
  EXPECT_FALSE(std::filesystem::exists(dir + "/.generation.tmp"));
}

TEST(AgentGeneration, PublishFailsWithASentenceAndLeavesNothing) {
  TempDir t;
  std::string file = t.path() + "/not-a-dir";
  std::ofstream(file) << "x";
  auto r = publish_generation(file.c_str(), 2);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find(file), std::string::npos) << r.error().message;
  EXPECT_EQ(slurp(file), "x");
}

TEST(AgentGeneration, MixEntropyReportsAFdThatIsNotTheRandomDevice) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  auto mixed = mix_entropy(w.get(), std::string(kMinEntropyBytes, 'x'));
  ASSERT_FALSE(mixed.ok());
  EXPECT_NE(mixed.error().message.find("entropy"), std::string::npos) << mixed.error().message;
  EXPECT_FALSE(mix_entropy(w.get(), std::string(kMaxEntropyBytes + 1, 'x')).ok());
}

// ------------------------------------------------------ a Session's side --

// The forked agent's handler records what it got in this directory (a fork keeps it).
std::string g_record_dir;

Result<void> record_generation(const Frame& g) {
  if (g.generation == 13) return Error("thirteen is refused here");
  std::ofstream(g_record_dir + "/entropy", std::ios::binary) << g.data;
  std::ofstream(g_record_dir + "/realtime") << g.realtime_ns;
  return publish_generation(g_record_dir.c_str(), g.generation);
}

// serve_connection() with record_generation in a child process, on one end of a socketpair.
class GenerationAgent {
 public:
  explicit GenerationAgent(const std::string& dir) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    g_record_dir = dir;
    pid_t pid = fork();
    if (pid == 0) {
      dup2(sv[1], 3);
      syscall(SYS_close_range, 4U, ~0U, 0U);
      int st = serve_connection(UniqueFd(3), record_generation);
      _exit(st < 0 ? 200 : st);
    }
    child_ = ChildProcess(pid);
    close(sv[1]);
    host_.reset(sv[0]);
  }
  int fd() const { return host_.get(); }
  UniqueFd take() { return std::move(host_); }
  ~GenerationAgent() {
    host_.reset();
    auto deadline = Clock::now() + seconds(5);
    while (child_ && Clock::now() < deadline) {
      auto r = child_.try_wait();
      if (!r.ok() || *r) break;
      std::this_thread::sleep_for(milliseconds(5));
    }
  }

 private:
  ChildProcess child_;
  UniqueFd host_;
};

void send_all(int fd, const std::string& s) {
  for (size_t off = 0; off < s.size();) {
    ssize_t w = write(fd, s.data() + off, s.size() - off);
    ASSERT_GT(w, 0);
    off += static_cast<size_t>(w);
  }
}

// Reads frames until `count` arrived or the agent closed the connection.
std::vector<Frame> read_frames(int fd, size_t count) {
  Decoder d(Direction::kToHost);
  std::vector<Frame> out;
  char buf[4096];
  while (out.size() < count) {
    Frame f;
    DecodeStatus s = d.next(&f);
    if (s == DecodeStatus::kFrame) {
      out.push_back(f);
      continue;
    }
    EXPECT_NE(s, DecodeStatus::kError);
    if (s == DecodeStatus::kError) break;
    ssize_t r = read(fd, buf, sizeof buf);
    if (r <= 0) break;
    d.feed(buf, static_cast<size_t>(r));
  }
  return out;
}

std::string hello(uint16_t v) {
  Frame h;
  h.type = MsgType::kHello;
  h.version_min = 1;
  h.version_max = v;
  std::string s;
  EXPECT_TRUE(encode(Direction::kToAgent, h, &s).ok());
  return s;
}

std::string generation(uint64_t n, int64_t ns, const std::string& entropy) {
  Frame g;
  g.type = MsgType::kGeneration;
  g.generation = n;
  g.realtime_ns = ns;
  g.data = entropy;
  std::string s;
  EXPECT_TRUE(encode(Direction::kToAgent, g, &s).ok());
  return s;
}

TEST(AgentGeneration, SessionAppliesGenerationsThenRunsAProgram) {
  TempDir t;
  GenerationAgent agent(t.path());
  std::string entropy(64, '\0');
  for (size_t i = 0; i < entropy.size(); i++) entropy[i] = static_cast<char>(i * 7);
  send_all(agent.fd(), hello(kProtocolVersion) + generation(5, 0, entropy) + generation(6, 1234567890123, entropy));
  auto frames = read_frames(agent.fd(), 3);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].type, MsgType::kHello);
  EXPECT_EQ(frames[0].version_min, 2);
  EXPECT_EQ(frames[1].type, MsgType::kGenerationAck);
  EXPECT_EQ(frames[1].generation, 5u);
  EXPECT_EQ(frames[2].type, MsgType::kGenerationAck);
  EXPECT_EQ(frames[2].generation, 6u);
  EXPECT_EQ(slurp(t.path() + "/generation"), "6\n");
  EXPECT_EQ(slurp(t.path() + "/entropy"), entropy);
  EXPECT_EQ(slurp(t.path() + "/realtime"), "1234567890123");
  // The same connection then runs a program, as after HELLO.
  Frame e;
  e.type = MsgType::kExec;
  e.exec.argv = {"sh", "-c", "exit 4"};
  std::string s;
  ASSERT_TRUE(encode(Direction::kToAgent, e, &s).ok());
  Frame eof;
  eof.type = MsgType::kStdinEof;
  ASSERT_TRUE(encode(Direction::kToAgent, eof, &s).ok());
  send_all(agent.fd(), s);
  auto rest = read_frames(agent.fd(), 2);  // STARTED, EXIT
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].type, MsgType::kStarted);
  EXPECT_EQ(rest[1].type, MsgType::kExit);
  EXPECT_EQ(rest[1].exit.code, 4u);
}

TEST(AgentGeneration, RefusedGenerationIsAnErrorAndEndsTheConnection) {
  TempDir t;
  GenerationAgent agent(t.path());
  send_all(agent.fd(), hello(kProtocolVersion) + generation(13, 0, std::string(32, 'x')));
  auto frames = read_frames(agent.fd(), 3);
  ASSERT_EQ(frames.size(), 2u);  // HELLO, ERROR, then the end.
  EXPECT_EQ(frames[1].type, MsgType::kError);
  EXPECT_EQ(frames[1].error, ErrorCode::kResource);
  EXPECT_EQ(frames[1].data, "cannot renew the generation: thirteen is refused here");
  EXPECT_FALSE(std::filesystem::exists(t.path() + "/generation"));
}

TEST(AgentGeneration, VersionOneConnectionCannotSendAGeneration) {
  TempDir t;
  GenerationAgent agent(t.path());
  send_all(agent.fd(), hello(1) + generation(3, 0, std::string(32, 'x')));
  auto frames = read_frames(agent.fd(), 3);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].version_min, 1);
  EXPECT_EQ(frames[1].type, MsgType::kError);
  EXPECT_EQ(frames[1].data, "the agent received a bad message: GENERATION needs protocol version 2");
  EXPECT_FALSE(std::filesystem::exists(t.path() + "/generation"));
}

TEST(AgentGeneration, AfterExecAGenerationIsAProtocolError) {
  TempDir t;
  GenerationAgent agent(t.path());
  Frame e;
  e.type = MsgType::kExec;
  e.exec.argv = {"sleep", "100"};
  std::string s = hello(kProtocolVersion);
  ASSERT_TRUE(encode(Direction::kToAgent, e, &s).ok());
  send_all(agent.fd(), s + generation(3, 0, std::string(32, 'x')));
  auto frames = read_frames(agent.fd(), 4);
  ASSERT_GE(frames.size(), 2u);
  EXPECT_EQ(frames.back().type, MsgType::kError);
  EXPECT_EQ(frames.back().data, "the agent received a bad message: a message not allowed while a program runs");
}

// ---------------------------------------------------- the Server's listener --

std::string g_listen_path;
int g_relisten_calls = 0;
int g_relisten_failures = 0;  // The first this many calls fail.

Result<UniqueFd> listen_unix_for_test() {
  if (++g_relisten_calls <= g_relisten_failures) return Error("not yet");
  unlink(g_listen_path.c_str());
  UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  memcpy(a.sun_path, g_listen_path.c_str(), g_listen_path.size() + 1);
  if (bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return sys_error("bind", g_listen_path);
  if (listen(s.get(), 4) != 0) return sys_error("listen on", g_listen_path);
  return s;
}

Result<UniqueFd> connect_unix(const std::string& path) {
  UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  memcpy(a.sun_path, path.c_str(), path.size() + 1);
  if (connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return sys_error("connect to", path);
  return s;
}

// One round of the agent's loop, as moss-init runs it (without children to reap).
void serve_once(Server* server, int max_ms) {
  std::vector<pollfd> fds;
  server->fill(&fds);
  int timeout = server->timeout_ms();
  if (timeout < 0 || timeout > max_ms) timeout = max_ms;
  int r = poll(fds.data(), fds.size(), timeout);
  ASSERT_GE(r, 0);
  server->handle(fds.data(), fds.size());
}

TEST(AgentServer, BrokenListenerIsMadeAgainWithBackoffAndServes) {
  TempDir t;
  g_listen_path = t.path() + "/agent.sock";
  g_relisten_calls = 0;
  g_relisten_failures = 0;
  auto first = listen_unix_for_test();
  g_relisten_calls = 0;
  g_relisten_failures = 2;
  ASSERT_TRUE(first.ok());
  UniqueFd alias(dup(first->get()));
  Server server(std::move(first).value(), nullptr, listen_unix_for_test);
  ASSERT_TRUE(server.listening());
  EXPECT_EQ(server.timeout_ms(), -1);
  // The listener breaks (POLLHUP from now on), as a transport reset might leave it.
  ASSERT_EQ(shutdown(alias.get(), SHUT_RDWR), 0);
  alias.reset();
  serve_once(&server, 100);
  EXPECT_FALSE(server.listening());
  int t0 = server.timeout_ms();
  EXPECT_GE(t0, 0);
  EXPECT_LE(t0, Server::kFirstRelistenDelayMs);
  // Two failed attempts, then one that works: the loop waits between them, never spins.
  int rounds = 0;
  auto start = Clock::now();
  while (!server.listening() && Clock::now() - start < seconds(5)) {
    serve_once(&server, 1000);
    ++rounds;
  }
  ASSERT_TRUE(server.listening());
  EXPECT_EQ(g_relisten_calls, 3);
  EXPECT_EQ(server.relistens(), 1u);
  EXPECT_LE(rounds, 12) << "the loop spun while waiting to listen again";
  // 20 ms, then 40, then 80 between the attempts.
  EXPECT_GE(Clock::now() - start, milliseconds(Server::kFirstRelistenDelayMs * 2 + Server::kFirstRelistenDelayMs * 4));
  EXPECT_EQ(server.timeout_ms(), -1);
  // The new listener accepts and serves a session.
  auto c = connect_unix(g_listen_path);
  ASSERT_TRUE(c.ok()) << c.error().message;
  std::string h = hello(kProtocolVersion);
  send_all(c->get(), h);
  for (int i = 0; i < 20 && server.session_count() == 0; i++) serve_once(&server, 50);
  EXPECT_EQ(server.session_count(), 1u);
  for (int i = 0; i < 5; i++) serve_once(&server, 20);
  auto frames = read_frames(c->get(), 1);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].type, MsgType::kHello);
}

TEST(AgentServer, SessionWhoseConnectionIsResetEndsAndKillsItsProgram) {
  // A vsock transport reset resets every connected socket: recv() gets ECONNRESET. A TCP
  // socket closed with unread data (SO_LINGER 0) gives the agent the same.
  UniqueFd l(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(l.get(), 1), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &len), 0);
  UniqueFd host(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(connect(host.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  UniqueFd guest(accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(guest.valid());
  Server server{UniqueFd()};
  server.add_connection(std::move(guest));
  // A program that would run for a long time, in its own process group.
  TempDir t;
  std::string pidfile = t.path() + "/pid";
  Frame e;
  e.type = MsgType::kExec;
  e.exec.argv = {"sh", "-c", "echo $$ > " + pidfile + "; exec sleep 100"};
  std::string s = hello(kProtocolVersion);
  ASSERT_TRUE(encode(Direction::kToAgent, e, &s).ok());
  send_all(host.get(), s);
  // The pid is there once its line is whole.
  for (int i = 0; i < 200 && slurp(pidfile).find('\n') == std::string::npos; i++) serve_once(&server, 10);
  pid_t pid = std::atoi(slurp(pidfile).c_str());
  ASSERT_GT(pid, 0);
  ASSERT_EQ(kill(pid, 0), 0);
  // Unread bytes at close make the kernel send RST.
  linger lg{1, 0};
  ASSERT_EQ(setsockopt(host.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  host.reset();
  for (int i = 0; i < 100 && server.session_count() > 0; i++) serve_once(&server, 10);
  EXPECT_EQ(server.session_count(), 0u);
  // Killed with its session: reap it (we are its parent) and see SIGKILL.
  int st = 0;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(st));
  EXPECT_EQ(WTERMSIG(st), SIGKILL);
}

}  // namespace
}  // namespace moss::agent
