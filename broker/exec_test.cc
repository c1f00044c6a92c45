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

}  // namespace
}  // namespace moss
