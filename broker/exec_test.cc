// moss exec's client side against a fake broker (ControlServer with an agent hook) and the real
// agent session code in a child process: the connection comes back over the control socket,
// the worker's OK is read, the program runs; while the guest does not listen it asks again;
// a silent agent is a time-out with one sentence.
#include "broker/exec.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <optional>
#include <thread>

#include "base/child.h"
#include "base/event.h"
#include "broker/control.h"
#include "broker/control_server.h"
#include "guest/agent/client.h"
#include "guest/agent/server.h"

namespace moss {
namespace {

using std::chrono::milliseconds;

class ExecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("moss-exec-test-" + std::to_string(getpid()));
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    if (loop_thread_.joinable()) {
      EXPECT_EQ(write(wake_ours_.get(), "x", 1), 1);
      loop_thread_.join();
    }
    control_.reset();
    wake_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::string dir() const { return dir_.string(); }

  // A broker for the VM `name` whose agent hook is `agent`, served from a thread.
  void start_broker(const std::string& name, std::function<Result<UniqueFd>()> agent) {
    auto e = control::Endpoint::claim(dir(), name);
    ASSERT_TRUE(e.ok()) << e.error().message;
    auto l = EventLoop::create();
    ASSERT_TRUE(l.ok());
    loop_.emplace(std::move(*l));
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    wake_theirs_.reset(p[0]);
    wake_ours_.reset(p[1]);
    wake_ = Event::on_fd(loop_->get(), wake_theirs_.get(), EV_READ, [this](int, short) { loop_->break_loop(); });
    wake_.add();
    control_.emplace(loop_->get(), std::move(*e),
                     ControlServer::Hooks{[](auto) {}, [] {}, [](bool, auto) {}, std::move(agent), {}});
    loop_thread_ = std::thread([this] { loop_->dispatch(); });
  }

  std::filesystem::path dir_;
  std::optional<EventLoop> loop_;
  Event wake_;
  UniqueFd wake_theirs_, wake_ours_;
  std::optional<ControlServer> control_;
  std::thread loop_thread_;
};

// A socket whose peer hung up at once: what the vsock worker does at CONNECT while nothing
// listens on the port in the guest.
Result<UniqueFd> not_listening() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return make_error("socketpair");
  close(sv[1]);
  return UniqueFd(sv[0]);
}

TEST_F(ExecTest, AsksAgainWhileTheGuestDoesNotListenThenRunsTheProgram) {
  // The agent (the guest side's session code) in a child, forked before any thread: it serves
  // one end of a socketpair; this process writes the worker's OK into the same end first.
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(sv[1], 3);
    syscall(SYS_close_range, 4U, ~0U, 0U);
    _exit(agent::serve_connection(UniqueFd(3)) < 0 ? 0 : 1);
  }
  ChildProcess child(pid);
  UniqueFd host(sv[0]), worker(sv[1]);
  int calls = 0;
  start_broker("ex", [&]() -> Result<UniqueFd> {
    if (++calls <= 2) return not_listening();
    EXPECT_EQ(write(worker.get(), "OK 1024\n", 8), 8);
    worker.reset();
    return std::move(host);
  });
  auto sock = connect_vm_agent(dir(), "ex", milliseconds(5000));
  ASSERT_TRUE(sock.ok()) << sock.error().message;
  EXPECT_EQ(calls, 3);
  int out[2];
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  UniqueFd out_r(out[0]), out_w(out[1]);
  agent::ExecRequest req;
  req.argv = {"sh", "-c", "echo hi; exit 3"};
  auto r = agent::run_exec(std::move(*sock), req, {-1, out_w.get(), 2});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->shell_status(), 3);
  out_w.reset();
  char buf[16] = {};
  EXPECT_EQ(read(out_r.get(), buf, sizeof buf), 3);
  EXPECT_EQ(std::string(buf), "hi\n");
}

TEST_F(ExecTest, AnAgentThatNeverListensOrNeverAnswersIsATimeOut) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd silent_peer(sv[1]);
  UniqueFd silent(sv[0]);
  bool answer_silently = false;
  start_broker("slow", [&]() -> Result<UniqueFd> {
    if (answer_silently) return std::move(silent);
    return not_listening();
  });
  auto never = connect_vm_agent(dir(), "slow", milliseconds(300));
  ASSERT_FALSE(never.ok());
  EXPECT_EQ(never.error().message,
            "the guest agent of the VM named slow was not listening within 300 ms (is the guest up, with moss-init?)");
  answer_silently = true;
  auto mute = connect_vm_agent(dir(), "slow", milliseconds(300));
  ASSERT_FALSE(mute.ok());
  EXPECT_EQ(mute.error().message, "the guest agent of the VM named slow did not answer within 300 ms");
  auto none = connect_vm_agent(dir(), "absent", milliseconds(300));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().message, "no VM named absent is running");
}

// ---- The moss binary's `exec` verb against the fake broker: the agent's session code runs the
// programs on this host, so the whole client side (stdio, status, signals) runs for real.

// The agent's session code in children, forked before any thread of the test: each serves one
// end of a socketpair, on which the fake broker first puts the worker's OK line.
struct Agents {
  std::vector<ChildProcess> children;
  std::vector<UniqueFd> hosts;
  explicit Agents(int n) {
    for (int i = 0; i < n; i++) {
      int sv[2];
      EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
      pid_t pid = fork();
      if (pid == 0) {
        dup2(sv[1], 3);
        syscall(SYS_close_range, 4U, ~0U, 0U);
        _exit(agent::serve_connection(UniqueFd(3)) < 0 ? 0 : 1);
      }
      children.emplace_back(pid);
      EXPECT_EQ(write(sv[1], "OK 1024\n", 8), 8);
      close(sv[1]);
      hosts.emplace_back(sv[0]);
    }
  }
  // The broker's hook: the next agent's connection.
  std::function<Result<UniqueFd>()> hook() {
    return [this]() -> Result<UniqueFd> {
      if (next_ >= hosts.size()) return make_error("no more agents");
      return std::move(hosts[next_++]);
    };
  }
  size_t next_ = 0;
};

std::string moss_binary() {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  EXPECT_GT(n, 0);
  std::string dir(self, n > 0 ? static_cast<size_t>(n) : 0);
  return dir.substr(0, dir.rfind('/')) + "/moss";
}

// `moss exec ARGS` with MOSS_RUNTIME_DIR=dir, stdin from `in` (or /dev/null), its stdout and
// stderr collected.
struct MossExec {
  ChildProcess child;
  UniqueFd out, err;
  MossExec(const std::string& dir, const std::vector<std::string>& args, const std::string& in = "") {
    int o[2], e[2], i[2];
    EXPECT_EQ(pipe2(o, O_CLOEXEC), 0);
    EXPECT_EQ(pipe2(e, O_CLOEXEC), 0);
    EXPECT_EQ(pipe2(i, O_CLOEXEC), 0);
    std::string bin = moss_binary();
    std::vector<std::string> argv = {bin, "exec"};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_t pid = fork();
    if (pid == 0) {
      dup2(i[0], 0);
      dup2(o[1], 1);
      dup2(e[1], 2);
      setenv("MOSS_RUNTIME_DIR", dir.c_str(), 1);
      std::vector<char*> a;
      for (auto& s : argv) a.push_back(s.data());
      a.push_back(nullptr);
      execv(a[0], a.data());
      _exit(126);
    }
    child = ChildProcess(pid);
    close(o[1]);
    close(e[1]);
    close(i[0]);
    out.reset(o[0]);
    err.reset(e[0]);
    if (!in.empty()) {
      EXPECT_EQ(write(i[1], in.data(), in.size()), static_cast<ssize_t>(in.size()));
    }
    close(i[1]);
  }
  static std::string drain(int fd) {
    std::string s;
    char buf[4096];
    for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) s.append(buf, static_cast<size_t>(n));
    return s;
  }
  // Exit code (128 + N for signal N), reading its output to the end first.
  int finish(std::string* o, std::string* e) {
    *o = drain(out.get());
    *e = drain(err.get());
    auto st = child.wait();
    EXPECT_TRUE(st.ok());
    return !st.ok() ? -1 : WIFEXITED(*st) ? WEXITSTATUS(*st) : 128 + WTERMSIG(*st);
  }
};

TEST_F(ExecTest, MossExecRunsProgramsWithItsStdioTwiceAtOnce) {
  Agents agents(3);
  start_broker("fake", agents.hook());
  MossExec a(dir(), {"fake", "--", "sh", "-c", "echo hi; echo err >&2; exit 3"});
  MossExec b(dir(), {"fake", "--", "sh", "-c", "echo hi; echo err >&2; exit 3"});
  std::string out, err;
  EXPECT_EQ(a.finish(&out, &err), 3);
  EXPECT_EQ(out, "hi\n");
  EXPECT_EQ(err, "err\n");
  EXPECT_EQ(b.finish(&out, &err), 3);
  EXPECT_EQ(out, "hi\n");
  EXPECT_EQ(err, "err\n");
  MossExec c(dir(), {"fake", "--env", "GREETING=hello there", "--workdir", "/", "--", "sh", "-c",
                     "echo \"$GREETING in $(pwd)\"; wc -c"},
             "12345");
  EXPECT_EQ(c.finish(&out, &err), 0) << err;
  EXPECT_EQ(out, "hello there in /\n5\n");
  // The broker has no more agents: its sentence, moss's failure status.
  MossExec d(dir(), {"fake", "--", "true"});
  EXPECT_EQ(d.finish(&out, &err), 125);
  EXPECT_EQ(err, "moss: the VM named fake cannot reach its guest agent: no more agents\n");
}

TEST_F(ExecTest, MossExecPassesSignalsToTheProgram) {
  Agents agents(1);
  start_broker("sig", agents.hook());
  MossExec a(dir(), {"sig", "--", "sh", "-c", "trap 'echo got TERM; exit 9' TERM; echo ready; while :; do sleep 0.05; done"});
  // Wait for "ready", then SIGTERM to moss exec reaches the program.
  std::string got;
  char buf[64];
  while (got.find("ready\n") == std::string::npos) {
    ssize_t n = read(a.out.get(), buf, sizeof buf);
    ASSERT_GT(n, 0) << got;
    got.append(buf, static_cast<size_t>(n));
  }
  ASSERT_EQ(kill(a.child.pid(), SIGTERM), 0);
  std::string out, err;
  EXPECT_EQ(a.finish(&out, &err), 9) << err;
  EXPECT_EQ(out, "got TERM\n");
}

}  // namespace
}  // namespace moss
