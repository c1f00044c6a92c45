// The agent's guest side (Session/Server, run in a forked process as moss-init runs it) and the
// host's ExecClient, talking over a socketpair or a Unix listening socket: programs run through
// them behave as if run locally. Also the vsock CONNECT handshake and malformed peers.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "guest/agent/client.h"
#include "guest/agent/protocol.h"
#include "guest/agent/server.h"
#include "base/child.h"

namespace moss::agent {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

class Env : public ::testing::Environment {
 public:
  void SetUp() override { signal(SIGPIPE, SIG_IGN); }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new Env);

// The guest side in a process of its own, serving one end of a socketpair; the other end is
// the test's. Its exit status is the SHUTDOWN status it received (or 200 for none).
class AgentProcess {
 public:
  AgentProcess() {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    pid_t pid = fork();
    if (pid == 0) {
      // Like the real agent, hold nothing of the test's: a copy of a test pipe's write end
      // would keep its reader from ever seeing EOF.
      dup2(sv[1], 3);
      syscall(SYS_close_range, 4U, ~0U, 0U);
      int st = serve_connection(UniqueFd(3));
      _exit(st < 0 ? 200 : st);
    }
    child_ = ChildProcess(pid);
    close(sv[1]);
    host_.reset(sv[0]);
  }
  ~AgentProcess() {
    // The client (and so the test's end of the socket) is gone by now: the agent sees EOF,
    // kills what it started and exits. Force it only if it does not.
    host_.reset();
    if (child_) (void)wait(seconds(3));  // If not, child_ kills it.
  }
  UniqueFd take_socket() { return std::move(host_); }
  // The agent process's exit code, waiting up to `timeout`; -1 if it did not end.
  int wait(seconds timeout = seconds(10)) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      auto r = child_.try_wait();
      if (!r.ok()) return -1;
      if (std::optional<int> st = *r) return WIFEXITED(*st) ? WEXITSTATUS(*st) : 128 + WTERMSIG(*st);
      std::this_thread::sleep_for(milliseconds(5));
    }
    return -1;
  }

 private:
  ChildProcess child_;
  UniqueFd host_;
};

// A pipe whose read end a thread drains into a string.
class Collector {
 public:
  Collector() {
    int p[2];
    EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
    write_.reset(p[1]);
    read_.reset(p[0]);
    thread_ = std::thread([this] {
      char buf[65536];
      for (;;) {
        ssize_t r = read(read_.get(), buf, sizeof(buf));
        if (r <= 0) break;
        std::lock_guard<std::mutex> l(mu_);
        data_.append(buf, static_cast<size_t>(r));
      }
    });
  }
  ~Collector() { finish(); }
  int fd() const { return write_.get(); }
  // Closes the write end and waits for the reader: call after the session.
  std::string finish() {
    write_.reset();
    if (thread_.joinable()) thread_.join();
    return data();
  }
  std::string data() {
    std::lock_guard<std::mutex> l(mu_);
    return data_;
  }

 private:
  UniqueFd write_, read_;
  std::mutex mu_;
  std::string data_;
  std::thread thread_;
};

// A pipe a thread writes `data` into, closing it after (EOF) unless `keep_open`.
class Feeder {
 public:
  explicit Feeder(std::string data, bool keep_open = false) : data_(std::move(data)) {
    int p[2];
    EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
    read_.reset(p[0]);
    write_.reset(p[1]);
    thread_ = std::thread([this, keep_open] {
      size_t off = 0;
      while (off < data_.size()) {
        ssize_t w = write(write_.get(), data_.data() + off, data_.size() - off);
        if (w <= 0) break;  // EPIPE: the reader went (SIGPIPE is ignored).
        off += static_cast<size_t>(w);
      }
      written_ = off;
      if (!keep_open) write_.reset();
    });
  }
  ~Feeder() {
    read_.reset();  // Unblocks a writer stuck on a full pipe.
    if (thread_.joinable()) thread_.join();
  }
  int fd() const { return read_.get(); }

 private:
  std::string data_;
  UniqueFd read_, write_;
  std::thread thread_;
  std::atomic<size_t> written_{0};
};

// Drives `c` until it finishes or `timeout` passes; false on the time-out.
// Waits until a process whose argv is `argv` exists (scanning /proc), or the time-out.
bool wait_for_process(const std::vector<std::string>& argv, seconds timeout) {
  std::string want;
  for (const auto& a : argv) want += a + '\0';
  for (auto end = Clock::now() + timeout; Clock::now() < end; std::this_thread::sleep_for(milliseconds(20))) {
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
      std::ifstream f(e.path() / "cmdline");
      std::string cmdline((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      if (cmdline == want) return true;
    }
  }
  return false;
}

bool drive(ExecClient& c, seconds timeout = seconds(60)) {
  auto deadline = Clock::now() + timeout;
  while (!c.finished()) {
    if (Clock::now() > deadline) return false;
    auto r = c.poll_once(50);
    if (!r) {
      ADD_FAILURE() << r.error().message;
      return false;
    }
  }
  return true;
}

// Drives `c` until `pred()` holds (or the time-out); false on the time-out.
template <typename P>
bool drive_until(ExecClient& c, P pred, seconds timeout = seconds(20)) {
  auto deadline = Clock::now() + timeout;
  while (!pred()) {
    if (Clock::now() > deadline || c.finished()) return pred();
    (void)c.poll_once(20);
  }
  return true;
}

ExecRequest cmd(std::vector<std::string> argv) {
  ExecRequest r;
  r.argv = std::move(argv);
  return r;
}

struct Ran {
  Result<ExecOutcome> outcome{Error{"not run"}};
  std::string out, err;
};

// Runs `req` through an agent with `in` (or no stdin) and collects both outputs.
Ran run(const ExecRequest& req, int in = -1) {
  AgentProcess agent;
  Collector out, err;
  ExecClient c(agent.take_socket(), req, {in, out.fd(), err.fd()});
  Ran r;
  EXPECT_TRUE(drive(c)) << "the session did not finish";
  r.outcome = c.outcome();
  r.out = out.finish();
  r.err = err.finish();
  return r;
}

// ---------------------------------------------------------------- pipes --

TEST(AgentExec, ExitStatusIsTheProgramsOwn) {
  Ran r = run(cmd({"sh", "-c", "exit 7"}));
  ASSERT_TRUE(r.outcome) << r.outcome.error().message;
  EXPECT_EQ(r.outcome->shell_status(), 7);
  EXPECT_FALSE(r.outcome->exit.signaled);
}

TEST(AgentExec, ProgramKilledBySignalGives128PlusN) {
  Ran r = run(cmd({"sh", "-c", "kill -TERM $$"}));
  ASSERT_TRUE(r.outcome) << r.outcome.error().message;
  EXPECT_TRUE(r.outcome->exit.signaled);
  EXPECT_EQ(r.outcome->exit.code, 15u);
  EXPECT_EQ(r.outcome->shell_status(), 143);
}

TEST(AgentExec, StdoutAndStderrStaySeparate) {
  Ran r = run(cmd({"sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2"}));
  ASSERT_TRUE(r.outcome) << r.outcome.error().message;
  EXPECT_EQ(r.out, "out1\nout2\n");
  EXPECT_EQ(r.err, "err1\nerr2\n");
  EXPECT_EQ(r.outcome->shell_status(), 0);
}

TEST(AgentExec, StdinReachesTheProgramAndItsEofEndsIt) {
  Feeder in("line one\nline two\nline three\n");
  Ran r = run(cmd({"wc", "-l"}), in.fd());
  ASSERT_TRUE(r.outcome) << r.outcome.error().message;
  EXPECT_EQ(r.out, "3\n");
}

TEST(AgentExec, NoStdinMeansEofAtOnce) {
  Ran r = run(cmd({"cat"}));
  ASSERT_TRUE(r.outcome) << r.outcome.error().message;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.outcome->shell_status(), 0);
}

TEST(AgentExec, SixtyFourMiBThroughCatComeBackIdentical) {
  std::string data(64u << 20, '\0');
  std::mt19937_64 rng(42);
  for (size_t i = 0; i + 8 <= data.size(); i += 8) {
    uint64_t v = rng();
    memcpy(&data[i], &v, 8);
  }
  Feeder in(data);
  auto t0 = Clock::now();
  Ran r = run(cmd({"cat"}), in.fd());
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_TRUE(r.outcome) << r.outcome.error().message;
  EXPECT_EQ(r.outcome->shell_status(), 0);
  ASSERT_EQ(r.out.size(), data.size());
  EXPECT_TRUE(r.out == data) << "the bytes differ";
  EXPECT_EQ(r.err, "");
  std::printf("64 MiB through cat in %.2f s (%.0f MiB/s)\n", secs, 64 / secs);
}

// The user's stdin has far more than the program reads and never ends: its output still
// streams and it exits normally.
TEST(AgentExec, ProgramReadingNoStdinIsNotBlockedByUnreadInput) {
  Feeder in(std::string(16u << 20, 'x'), /*keep_open=*/true);
  Ran r = run(cmd({"sh", "-c", "for i in 1 2 3; do echo $i; done; echo err >&2; exit 4"}), in.fd());
  ASSERT_TRUE(r.outcome) << r.outcome.error().message;
  EXPECT_EQ(r.outcome->shell_status(), 4);
  EXPECT_EQ(r.out, "1\n2\n3\n");
  EXPECT_EQ(r.err, "err\n");
}

TEST(AgentExec, OutputStreamsBeforeTheProgramEndsAndSignalsReachIt) {
  AgentProcess agent;
  Collector out, err;
  ExecClient c(agent.take_socket(), cmd({"sh", "-c", "echo first; sleep 1002; echo never"}), {-1, out.fd(), err.fd()});
  ASSERT_TRUE(drive_until(c, [&] { return out.data() == "first\n"; })) << out.data();
  EXPECT_FALSE(c.finished());
  EXPECT_GT(c.guest_pid(), 0u);
  // Signal once sleep runs: dash blocks signals while it forks, so a signal sent in between
  // reaches the shell but not its child, which would then hold stdout open for 1002 s.
  ASSERT_TRUE(wait_for_process({"sleep", "1002"}, seconds(20)));
  c.forward_signal(SIGINT);  // To the process group: sh and sleep, as a terminal's ^C would.
  ASSERT_TRUE(drive(c, seconds(20)));
  ASSERT_TRUE(c.outcome()) << c.outcome().error().message;
  EXPECT_EQ(c.outcome()->shell_status(), 130);
  EXPECT_EQ(out.finish(), "first\n");
}

TEST(AgentExec, EnvironmentAndWorkingDirectoryApply) {
  ExecRequest req = cmd({"sh", "-c", "echo \"$FOO|$HOME|$PATH\"; pwd"});
  req.env = {"FOO=bar baz", "HOME=/tmp/home"};
  req.cwd = "/tmp";
  Ran r = run(req);
  ASSERT_TRUE(r.outcome) << r.outcome.error().message;
  EXPECT_EQ(r.out, "bar baz|/tmp/home|/bin:/sbin:/usr/bin:/usr/sbin\n/tmp\n");
}

TEST(AgentExec, MissingProgramGives127AndASentence) {
  Ran r = run(cmd({"/nonexistent/program", "x"}));
  ASSERT_TRUE(r.outcome) << r.outcome.error().message;
  EXPECT_EQ(r.outcome->shell_status(), 127);
  EXPECT_EQ(r.outcome->message, "cannot execute /nonexistent/program: No such file or directory");
}

TEST(AgentExec, NonExecutableProgramGives126) {
  Ran r = run(cmd({"/etc/passwd"}));
  ASSERT_TRUE(r.outcome) << r.outcome.error().message;
  EXPECT_EQ(r.outcome->shell_status(), 126);
  EXPECT_EQ(r.outcome->message, "cannot execute /etc/passwd: Permission denied");
}

TEST(AgentExec, MissingWorkingDirectoryGives127) {
  ExecRequest req = cmd({"true"});
  req.cwd = "/nonexistent/dir";
  Ran r = run(req);
  ASSERT_TRUE(r.outcome) << r.outcome.error().message;
  EXPECT_EQ(r.outcome->shell_status(), 127);
  EXPECT_EQ(r.outcome->message, "cannot change to the working directory /nonexistent/dir: No such file or directory");
}

// Like `yes | true` locally: the reader of stdout goes, the writer gets SIGPIPE.
TEST(AgentExec, GoneStdoutReaderGivesTheProgramSigpipe) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  close(p[0]);
  UniqueFd w(p[1]);
  AgentProcess agent;
  Collector err;
  ExecClient c(agent.take_socket(), cmd({"yes"}), {-1, w.get(), err.fd()});
  ASSERT_TRUE(drive(c, seconds(20)));
  ASSERT_TRUE(c.outcome()) << c.outcome().error().message;
  EXPECT_EQ(c.outcome()->shell_status(), 128 + SIGPIPE);
}

// The program closes its stdin while endless input is pending: the session still ends.
TEST(AgentExec, ProgramClosingItsStdinStopsTheInput) {
  Feeder in(std::string(32u << 20, 'y'), /*keep_open=*/true);
  Ran r = run(cmd({"sh", "-c", "exec 0<&-; sleep 0.2; echo ok"}), in.fd());
  ASSERT_TRUE(r.outcome) << r.outcome.error().message;
  EXPECT_EQ(r.out, "ok\n");
}

TEST(AgentExec, ShutdownRequestReachesTheServer) {
  AgentProcess agent;
  Collector out, err;
  ExecClient c(agent.take_socket(), cmd({"true"}), {-1, out.fd(), err.fd()});
  ASSERT_TRUE(drive(c));
  c.request_shutdown(42);
  auto deadline = Clock::now() + seconds(5);
  while (!c.flushed() && Clock::now() < deadline) (void)c.poll_once(20);
  EXPECT_EQ(agent.wait(), 42);
}

// ------------------------------------------------------------------ pty --

ExecRequest pty(std::vector<std::string> argv, uint16_t rows = 24, uint16_t cols = 80) {
  ExecRequest r = cmd(std::move(argv));
  r.mode = Mode::kPty;
  r.rows = rows;
  r.cols = cols;
  return r;
}

TEST(AgentExec, PtyModeGivesTheProgramATerminal) {
  Ran r = run(pty({"sh", "-c", "tty; stty size; echo err >&2"}));
  ASSERT_TRUE(r.outcome) << r.outcome.error().message;
  EXPECT_EQ(r.outcome->shell_status(), 0);
  EXPECT_EQ(r.out.rfind("/dev/pts/", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("\r\n24 80\r\nerr\r\n"), std::string::npos) << r.out;  // One stream, ONLCR.
  EXPECT_EQ(r.err, "");
}

// An interactive shell on the pty: prompt, ^C interrupts a running sleep without ending the
// session, a window size change reaches the terminal, and the shell's exit status comes back.
TEST(AgentExec, PtyShellPromptCtrlCAndWindowSize) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  UniqueFd in_r(p[0]), in_w(p[1]);
  AgentProcess agent;
  Collector out;
  ExecRequest req = pty({"sh", "-i"});
  req.env = {"PS1=moss$ "};
  ExecClient c(agent.take_socket(), req, {in_r.get(), out.fd(), -1});
  auto type = [&](const std::string& s) { ASSERT_EQ(write(in_w.get(), s.data(), s.size()), static_cast<ssize_t>(s.size())); };
  auto seen = [&](const std::string& s, size_t from = 0) {
    return drive_until(c, [&] { return out.data().find(s, from) != std::string::npos; });
  };
  ASSERT_TRUE(seen("moss$ ")) << out.data();
  type("sleep 1001\n");
  ASSERT_TRUE(seen("sleep 1001\r\n")) << out.data();  // Echoed: the shell has the line.
  // ^C must find sleep running, not the shell still starting it (slow under ASan and load).
  ASSERT_TRUE(wait_for_process({"sleep", "1001"}, seconds(20)));
  size_t mark = out.data().size();
  auto t0 = Clock::now();
  type("\x03");
  ASSERT_TRUE(seen("moss$ ", mark)) << out.data();  // A new prompt: sleep was interrupted.
  EXPECT_LT(Clock::now() - t0, seconds(10));
  EXPECT_FALSE(c.finished());

  type("stty size\n");
  ASSERT_TRUE(seen("24 80\r\n")) << out.data();
  c.resize(40, 132);
  mark = out.data().size();
  type("stty size\n");
  ASSERT_TRUE(seen("40 132\r\n", mark)) << out.data();

  type("exit 5\n");
  ASSERT_TRUE(drive(c, seconds(20)));
  ASSERT_TRUE(c.outcome()) << c.outcome().error().message;
  EXPECT_EQ(c.outcome()->shell_status(), 5);
}

// STDIN_EOF in pty mode types ^D: `cat` sees the end of its input.
TEST(AgentExec, PtyEofEndsCat) {
  Feeder in("abc\n");
  Ran r = run(pty({"cat"}), in.fd());
  ASSERT_TRUE(r.outcome) << r.outcome.error().message;
  EXPECT_EQ(r.outcome->shell_status(), 0);
  EXPECT_NE(r.out.find("abc\r\n"), std::string::npos) << r.out;
}

TEST(AgentExec, PtySignalGoesToTheForegroundGroup) {
  AgentProcess agent;
  Collector out;
  ExecClient c(agent.take_socket(), pty({"sh", "-c", "echo ready; sleep 1003"}), {-1, out.fd(), -1});
  ASSERT_TRUE(drive_until(c, [&] { return out.data().find("ready") != std::string::npos; }));
  ASSERT_TRUE(wait_for_process({"sleep", "1003"}, seconds(20)));  // See the test above.
  c.forward_signal(SIGTERM);
  ASSERT_TRUE(drive(c, seconds(20)));
  ASSERT_TRUE(c.outcome()) << c.outcome().error().message;
  EXPECT_EQ(c.outcome()->shell_status(), 143);
}

// --------------------------------------------------- several connections --

TEST(AgentExec, ConnectionsRunConcurrentlyAndShutdownEndsTheServer) {
  char dir[] = "/tmp/moss-agent-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/agent.sock";
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size());
  ASSERT_EQ(bind(l, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(l, 8), 0);
  pid_t server = fork();
  if (server == 0) {
    dup2(l, 3);
    syscall(SYS_close_range, 4U, ~0U, 0U);
    Server s{UniqueFd(3)};
    int st = run_server(&s, false);
    _exit(st < 0 ? 200 : st);
  }
  close(l);
  auto connect_one = [&] {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    return UniqueFd(fd);
  };
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  UniqueFd a_in_r(p[0]), a_in_w(p[1]);
  Collector a_out, b_out, err;
  ExecClient a(connect_one(), cmd({"sh", "-c", "read x; echo A$x"}), {a_in_r.get(), a_out.fd(), err.fd()});
  ASSERT_TRUE(drive_until(a, [&] { return a.guest_pid() != 0; }));
  // B runs to its end while A waits for input.
  ExecClient b(connect_one(), cmd({"echo", "B"}), {-1, b_out.fd(), err.fd()});
  ASSERT_TRUE(drive(b, seconds(20)));
  EXPECT_EQ(b_out.finish(), "B\n");
  EXPECT_FALSE(a.finished());
  ASSERT_EQ(write(a_in_w.get(), "1\n", 2), 2);
  a_in_w.reset();
  ASSERT_TRUE(drive(a, seconds(20)));
  EXPECT_EQ(a_out.finish(), "A1\n");

  UniqueFd s = connect_one();
  auto r = send_shutdown(s.get(), 9, milliseconds(5000));
  EXPECT_TRUE(r) << (r ? "" : r.error().message);
  int st = 0;
  EXPECT_EQ(waitpid(server, &st, 0), server);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 9) << st;
  unlink(path.c_str());
  rmdir(dir);
}

// ------------------------------------------------------- malformed peers --

// The agent answers a malformed message with ERROR{kProtocol} and closes the connection.
TEST(AgentExec, AgentRefusesGarbageWithAnErrorAndCloses) {
  AgentProcess agent;
  UniqueFd s = agent.take_socket();
  std::string garbage = "GET / HTTP/1.1\r\n\r\n";
  ASSERT_EQ(write(s.get(), garbage.data(), garbage.size()), static_cast<ssize_t>(garbage.size()));
  std::string got;
  char buf[4096];
  for (;;) {
    ssize_t r = read(s.get(), buf, sizeof(buf));
    if (r <= 0) break;
    got.append(buf, static_cast<size_t>(r));
  }
  Decoder d(Direction::kToHost);
  d.feed(got.data(), got.size());
  Frame f;
  ASSERT_EQ(d.next(&f), DecodeStatus::kFrame) << (d.error() ? d.error()->message : "");
  EXPECT_EQ(f.type, MsgType::kError);
  EXPECT_EQ(f.error, ErrorCode::kProtocol);
  EXPECT_EQ(f.data.find("the agent received a bad message: "), 0u) << f.data;
  EXPECT_EQ(agent.wait(), 200);
}

TEST(AgentExec, AgentRefusesStdinBeyondItsCredit) {
  AgentProcess agent;
  UniqueFd s = agent.take_socket();
  std::string out;
  Frame h;
  h.type = MsgType::kHello;
  h.version_min = h.version_max = 1;
  ASSERT_TRUE(encode(Direction::kToAgent, h, &out).ok());
  Frame e;
  e.type = MsgType::kExec;
  e.exec = cmd({"sleep", "1000"});
  ASSERT_TRUE(encode(Direction::kToAgent, e, &out).ok());
  // The window, plus what the agent passes on (and credits back) before sleep's stdin pipe is
  // full, plus more: far beyond anything granted, sent without reading any credit.
  std::string chunk(kMaxDataPayload, 'z');
  for (uint32_t sent = 0; sent < 4 * kInitialWindow; sent += kMaxDataPayload)
    encode_data(MsgType::kStdin, chunk.data(), chunk.size(), &out);
  for (size_t off = 0; off < out.size();) {
    ssize_t w = write(s.get(), out.data() + off, out.size() - off);
    if (w <= 0) break;  // The agent closed the connection: EPIPE.
    off += static_cast<size_t>(w);
  }
  std::string got;
  char buf[4096];
  for (;;) {
    ssize_t r = read(s.get(), buf, sizeof(buf));
    if (r <= 0) break;
    got.append(buf, static_cast<size_t>(r));
  }
  Decoder d(Direction::kToHost);
  d.feed(got.data(), got.size());
  Frame f;
  std::string last_error;
  while (d.next(&f) == DecodeStatus::kFrame)
    if (f.type == MsgType::kError) last_error = f.data;
  EXPECT_EQ(last_error, "the agent received a bad message: stdin beyond the granted credit");
  EXPECT_EQ(agent.wait(), 200);  // And sleep was killed with the session (the agent ended).
}

// A fake agent on the other end of a socketpair sends `reply`; the client must fail with
// `error` (a sentence), never crash or hang.
void expect_client_failure(const std::string& reply, const std::string& error, bool close_after = true,
                           bool stuck_stdout = false) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd fake(sv[1]);
  // The reply may be larger than the socket buffer: write it from a thread, which the end of
  // the client (its socket closed) unblocks.
  std::thread writer([&] {
    for (size_t off = 0; off < reply.size();) {
      ssize_t w = write(fake.get(), reply.data() + off, reply.size() - off);
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
    if (close_after) shutdown(fake.get(), SHUT_WR);
  });
  {
    Collector out, err;
    // A stdout nobody reads takes one pipe's worth and then no more: no credit comes back.
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    UniqueFd stuck_r(p[0]), stuck_w(p[1]);
    ExecClient c(UniqueFd(sv[0]), cmd({"true"}), {-1, stuck_stdout ? stuck_w.get() : out.fd(), err.fd()});
    EXPECT_TRUE(drive(c, seconds(10)));
    EXPECT_FALSE(c.outcome());
    if (!c.outcome()) {
      EXPECT_EQ(c.outcome().error().message, error);
    }
  }
  writer.join();
}

std::string hello_reply() {
  std::string s;
  Frame h;
  h.type = MsgType::kHello;
  h.version_min = h.version_max = 1;
  EXPECT_TRUE(encode(Direction::kToHost, h, &s).ok());
  return s;
}

TEST(AgentClient, FailsCleanlyOnAMisbehavingAgent) {
  expect_client_failure("", "the guest agent closed the connection before the program's exit status arrived");
  expect_client_failure(std::string("\x05\0\0\0\x01\0\0\0moss\x01\0\x01\0", 13),
                        "the guest agent sent a malformed message: payload length wrong for the message type");
  Frame v;
  v.type = MsgType::kHello;
  v.version_min = v.version_max = 7;
  std::string wrong_version;
  ASSERT_TRUE(encode(Direction::kToHost, v, &wrong_version).ok());
  expect_client_failure(wrong_version, "the guest agent did not answer HELLO with a version this host speaks");
  std::string too_much = hello_reply();
  std::string chunk(kMaxDataPayload, 'o');
  for (uint32_t sent = 0; sent < 2 * kInitialWindow; sent += kMaxDataPayload)
    encode_data(MsgType::kStdout, chunk.data(), chunk.size(), &too_much);
  expect_client_failure(too_much, "the guest agent sent output beyond its credit", false, true);
  std::string twice = hello_reply() + hello_reply();
  expect_client_failure(twice, "the guest agent sent HELLO twice");
  Frame e;
  e.type = MsgType::kError;
  e.error = ErrorCode::kVersion;
  e.data = "no";
  std::string refused;
  ASSERT_TRUE(encode(Direction::kToHost, e, &refused).ok());
  expect_client_failure(refused, "the guest agent refused the session: no");
}

TEST(AgentClient, RefusesAnExecRequestTheProtocolCannotCarry) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd other(sv[1]);
  ExecClient c(UniqueFd(sv[0]), cmd({"echo", std::string(kMaxStringBytes + 1, 'a')}), {-1, 1, 2});
  ASSERT_TRUE(c.finished());
  ASSERT_FALSE(c.outcome());
  EXPECT_EQ(c.outcome().error().message, "cannot send the program to the guest: exec request: argument too long");
}

// ------------------------------------------------------------ handshake --

// A fake vsock worker on a socketpair: reads the CONNECT line, answers `answer` (or closes if
// empty, or says nothing if `silent`).
class FakeWorker {
 public:
  FakeWorker(std::string answer, bool silent = false) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    client_.reset(sv[0]);
    UniqueFd w(sv[1]);
    thread_ = std::thread([this, answer, silent, w = std::move(w)]() mutable {
      char c;
      while (read(w.get(), &c, 1) == 1 && c != '\n') line_ += c;
      if (silent) {
        std::this_thread::sleep_for(milliseconds(500));
        return;
      }
      if (!answer.empty()) (void)!write(w.get(), answer.data(), answer.size());
    });
  }
  ~FakeWorker() { thread_.join(); }
  int fd() const { return client_.get(); }
  std::string line() {
    thread_.join();
    thread_ = std::thread([] {});
    return line_;
  }

 private:
  UniqueFd client_;
  std::string line_;
  std::thread thread_;
};

TEST(AgentHandshake, ConnectOkThenTheStream) {
  FakeWorker w("OK 1073741824\nHELLO-BYTES");
  auto r = vsock_handshake(w.fd(), kAgentPort, milliseconds(2000));
  EXPECT_TRUE(r) << (r ? "" : r.error().message);
  EXPECT_EQ(w.line(), "CONNECT 1124");
  // Nothing past the newline was consumed.
  char buf[16];
  EXPECT_EQ(read(w.fd(), buf, sizeof(buf)), 11);
}

TEST(AgentHandshake, RefusalsAndSilenceAreSentences) {
  {
    FakeWorker w("");
    auto r = vsock_handshake(w.fd(), 1124, milliseconds(2000));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message,
              "the vsock worker closed the connection at CONNECT 1124: nothing listens on that port in the guest (is "
              "the guest agent up?)");
  }
  {
    FakeWorker w("NO such port\n");
    auto r = vsock_handshake(w.fd(), 1124, milliseconds(2000));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "the vsock worker answered 'NO such port' to CONNECT 1124, not OK");
  }
  {
    FakeWorker w("OK x\n");
    auto r = vsock_handshake(w.fd(), 1124, milliseconds(2000));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "the vsock worker answered 'OK x' to CONNECT 1124, not OK");
  }
  {
    FakeWorker w("", /*silent=*/true);
    auto r = vsock_handshake(w.fd(), 1124, milliseconds(100));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "the vsock worker did not answer CONNECT 1124 within 100 ms");
  }
}

// connect_agent() keeps trying while the guest is not listening yet (the worker closes the
// connection at CONNECT), then gets through.
TEST(AgentHandshake, ConnectAgentRetriesUntilTheGuestListens) {
  char dir[] = "/tmp/moss-agent-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/vsock.sock";
  UniqueFd l(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size());
  ASSERT_EQ(bind(l.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(l.get(), 8), 0);
  std::thread worker([&] {
    for (int i = 0;; ++i) {
      UniqueFd c(accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
      std::string line;
      char ch;
      while (read(c.get(), &ch, 1) == 1 && ch != '\n') line += ch;
      if (i < 3) continue;  // Not listening yet: close.
      std::string ok = "OK 77\n";
      (void)!write(c.get(), ok.data(), ok.size());
      break;
    }
  });
  auto r = connect_agent(path, milliseconds(5000));
  worker.join();
  EXPECT_TRUE(r) << (r ? "" : r.error().message);
  auto missing = connect_agent(std::string(dir) + "/missing.sock", milliseconds(100));
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("cannot connect to the vsock socket"), std::string::npos)
      << missing.error().message;
  unlink(path.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace moss::agent
