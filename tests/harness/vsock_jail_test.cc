// moss-vsock jailed: spawn_child() with the vsock module's sandbox (devices/vsock/module.h) and `--fd N --guest-cid N
// --uds-path P`, so it runs in its namespaces with the vsock role's seccomp filter and only
// P's directory in its root; and as `moss run` starts it (vmvsock::Plan: --uds-fd and
// --connect-fd, no directory at all). The harness's vsock driver is the guest
// (over the socketpair the broker would give the vcpu process), Unix sockets are the host
// programs. MOSS_SECCOMP_TRAP=1: in a Debug build (the sanitizer build) a system call missing
// from vsock.policy ends the worker with status 159 and names the call in its log; a Release
// build ignores the variable and the worker is killed with SIGSYS. Either way every path below
// must stay within the policy, through to a clean exit. Host-only, no KVM.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/unix_socket.h"
#include "broker/jail.h"
#include "broker/launcher.h"
#include "broker/vm_devices.h"
#include "broker/vm_vsock.h"
#include "devices/vsock/module.h"
#include "tests/harness/guest.h"
#include "tests/harness/stream_bytes.h"
#include "tests/harness/vsock_driver.h"
#include "tests/harness/vsock_process.h"

namespace moss::harness {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kCid = 9;

// The environment of the worker: the trap, and no leak check at exit under the sanitizers
// (it needs ptrace and /proc, which the sandbox forbids).
struct TrapEnv {
  TrapEnv() {
    setenv("MOSS_SECCOMP_TRAP", "1", 1);
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
  }
  ~TrapEnv() {
    unsetenv("MOSS_SECCOMP_TRAP");
    unsetenv("ASAN_OPTIONS");
  }
};

class JailedVsock : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = VsockProcess::unavailable()) {
#ifdef MOSS_EXPECT_VSOCK_WORKER
      FAIL() << "moss-vsock is part of this build but " << *why;
#endif
      GTEST_SKIP() << "moss-vsock is not available: " << *why;
    }
    auto d = TempDir::create();
    ASSERT_TRUE(d.ok()) << d.error().message;
    dir_.emplace(std::move(*d));
    auto l = TempDir::create();
    ASSERT_TRUE(l.ok()) << l.error().message;
    logs_.emplace(std::move(*l));
    uds_ = dir_->path() + "/vsock.sock";
  }

  void TearDown() override {
    driver_.reset();
    guest_.reset();
    stop_broker();
    if (pid_ > 0 && !status_) {
      ::kill(pid_, SIGKILL);
      wait_exit();
    }
  }

  // Starts the worker jailed, with `uds_arg` as its --uds-path (default: the absolute path),
  // and connects the guest.
  void start(const std::string& uds_arg = "") {
    TrapEnv env;
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd ours(sv[0]), theirs(sv[1]);
    log_path_ = logs_->path() + "/vsock.log";
    UniqueFd log(::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    ASSERT_TRUE(log.valid());
    ChildSpec spec;
    spec.path = VsockProcess::binary_path();
    spec.argv = {"moss-vsock", "--fd", std::to_string(spec.pass_fd(theirs.get())), "--guest-cid", std::to_string(kCid),
                 "--uds-path", uds_arg.empty() ? uds_ : uds_arg};
    spec.stderr_fd = log.get();
    spec.sandbox = jail::worker(sandbox::Role("vsock"), device::vsock::limits(), true);
    auto pid = spawn_child(spec);
    ASSERT_TRUE(pid.ok()) << pid.error().message << "\nits log:\n" << worker_log();
    pid_ = *pid;
    theirs.reset();
    auto g = Guest::adopt(std::move(ours), VsockDriver::guest_options());
    ASSERT_TRUE(g.ok()) << g.error().message << "\nits log:\n" << worker_log();
    guest_ = std::move(*g);
    VsockDriverOptions o;
    o.guest_cid = kCid;
    auto d = VsockDriver::create(*guest_, o);
    ASSERT_TRUE(d.ok()) << d.error().message << "\nits log:\n" << worker_log();
    driver_ = std::move(*d);
  }

  // Starts the worker as `moss run` does (the vsock module's plan from vmvsock::Plan's worker
  // host: its listener and connect channel as fds, no path), with a thread in the broker's
  // place answering its connect requests, and connects the guest.
  void start_like_the_broker(vmvsock::Plan& plan) {
    TrapEnv env;
    log_path_ = logs_->path() + "/vsock.log";
    UniqueFd log(::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    ASSERT_TRUE(log.valid());
    auto dev = device::vsock::plan(plan.worker_host(), device::Vm{1, 64 << 20, true});
    ASSERT_TRUE(dev.ok()) << dev.error().message;
    UniqueFd ours = std::move(dev->vhost_user);
    ChildSpec spec = vmdevices::child_spec(*dev->worker, parent_dir(VsockProcess::binary_path()), true);
    spec.stderr_fd = log.get();
    auto pid = spawn_child(spec);
    ASSERT_TRUE(pid.ok()) << pid.error().message << "\nits log:\n" << worker_log();
    pid_ = *pid;
    dev->worker->started();
    broker_ = std::thread([this, &plan] {
      while (!stop_broker_ && plan.connect_channel() >= 0) {
        pollfd p{plan.connect_channel(), POLLIN, 0};
        ::poll(&p, 1, 20);
        plan.serve_connect_requests();
      }
    });
    auto g = Guest::adopt(std::move(ours), VsockDriver::guest_options());
    ASSERT_TRUE(g.ok()) << g.error().message << "\nits log:\n" << worker_log();
    guest_ = std::move(*g);
    VsockDriverOptions o;
    o.guest_cid = plan.cid();
    auto d = VsockDriver::create(*guest_, o);
    ASSERT_TRUE(d.ok()) << d.error().message << "\nits log:\n" << worker_log();
    driver_ = std::move(*d);
  }

  void stop_broker() {
    stop_broker_ = true;
    if (broker_.joinable()) broker_.join();
  }

  std::string worker_log() const {
    std::ifstream f(log_path_);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }

  // Waits (at most 5 s) for the worker to exit; its wait status.
  int wait_exit() {
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!status_) {
      int st = 0;
      pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        status_ = st;
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &st, 0);
        status_ = st;
        ADD_FAILURE() << "moss-vsock did not exit within 5 s";
        break;
      }
      std::this_thread::sleep_for(5ms);
    }
    return *status_;
  }

  // The guest leaves (the vcpu process closes its end), and the worker must exit 0: a call
  // outside its policy anywhere up to its exit would be status 159 (the trap) or SIGSYS.
  void expect_clean_exit_when_the_guest_leaves() {
    driver_.reset();
    guest_.reset();
    int st = wait_exit();
    EXPECT_EQ(describe_wait_status(st), "exited with status 0") << "its log:\n" << worker_log();
  }

  bool alive() {
    if (status_) return false;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) status_ = st;
    return !status_;
  }

  // The guest connects to port 5000: the worker reaches the listener "<uds>_5000" beside its
  // socket from its jail, and bytes go both ways. The connection is left open: the guest's
  // end in `*key`, the host's in `*host`.
  void expect_guest_initiated_connection(ConnKey* key, UniqueFd* host) {
    VsockDriver& g = *driver_;
    auto listener = host_listen(uds_, 5000);
    ASSERT_TRUE(listener.ok()) << listener.error().message;
    auto gkey = g.connect(5000, 1025);
    ASSERT_TRUE(gkey.ok()) << gkey.error().message << "\nits log:\n" << worker_log();
    auto accepted = host_accept(listener->get());
    ASSERT_TRUE(accepted.ok()) << accepted.error().message;
    ASSERT_TRUE(g.write(*gkey, bytes("hello host")).ok());
    EXPECT_EQ(text(read_exactly(accepted->get(), 10)), "hello host");
    ASSERT_TRUE(write_all(accepted->get(), bytes("hello guest")));
    auto got = g.read_exactly(*gkey, 11);
    ASSERT_TRUE(got.ok()) << got.error().message;
    EXPECT_EQ(text(*got), "hello guest");
    *key = *gkey;
    *host = std::move(*accepted);
  }

  std::optional<TempDir> dir_, logs_;
  std::string uds_, log_path_;
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::unique_ptr<Guest> guest_;
  std::unique_ptr<VsockDriver> driver_;
  std::thread broker_;
  std::atomic<bool> stop_broker_{false};
};

TEST_F(JailedVsock, CarriesHostAndGuestInitiatedConnections) {
  ASSERT_NO_FATAL_FAILURE(start());
  VsockDriver& g = *driver_;

  // Host-initiated: CONNECT <port> on the --uds-path listener it made before its jail.
  auto host = host_connect(uds_, 52);
  ASSERT_TRUE(host.ok()) << host.error().message;
  auto key = g.accept(52);
  ASSERT_TRUE(key.ok()) << key.error().message << "\nits log:\n" << worker_log();
  auto ok = read_line(host->get());
  ASSERT_TRUE(ok.ok()) << ok.error().message << "\nits log:\n" << worker_log();
  EXPECT_EQ(*ok, "OK " + std::to_string(key->host_port));
  ASSERT_TRUE(write_all(host->get(), bytes("from the host")));
  auto got = g.read_exactly(*key, 13);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(text(*got), "from the host");
  ASSERT_TRUE(g.write(*key, bytes("from the guest")).ok());
  EXPECT_EQ(text(read_exactly(host->get(), 14)), "from the guest");

  // Guest-initiated: the worker connects to "<uds>_5000" in the directory its jail kept.
  ConnKey gkey;
  UniqueFd accepted;
  ASSERT_NO_FATAL_FAILURE(expect_guest_initiated_connection(&gkey, &accepted));

  // 1 MiB each way on the host-initiated stream, within credit both ways.
  auto up = pattern(1, 1 << 20), down = pattern(2, 1 << 20);
  std::thread writer([&, fd = host->get()] { EXPECT_TRUE(write_all(fd, up)); });
  std::vector<uint8_t> from_guest;
  std::thread reader([&, fd = host->get()] { from_guest = read_exactly(fd, down.size()); });
  ASSERT_TRUE(g.write(*key, down).ok());
  got = g.read_exactly(*key, up.size());
  writer.join();
  reader.join();
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_TRUE(*got == up);
  EXPECT_TRUE(from_guest == down);
  EXPECT_EQ(g.credit_violations(), 0u);

  // Half-closes and resets both ways.
  ASSERT_TRUE(g.shutdown(gkey, vsock::kShutdownSend).ok());
  EXPECT_TRUE(reads_eof(accepted.get()));
  ASSERT_EQ(::shutdown(host->get(), SHUT_WR), 0);
  ASSERT_TRUE(g.wait_for([&, k = *key] { return g.stream(k).peer_shutdown & vsock::kShutdownSend; }, "SHUTDOWN").ok());
  ASSERT_TRUE(g.reset(*key).ok());
  EXPECT_TRUE(drains_to_eof(host->get()));
  accepted.reset();
  ASSERT_TRUE(g.wait_for([&, k = gkey] { return g.stream(k).reset; }, "RST").ok());

  // Refusals: nobody listens on the port; the guest refuses a host program; a bad line.
  auto refused = g.connect(6001, 1026);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().err, ECONNREFUSED);
  auto host2 = host_connect(uds_, 7000);
  ASSERT_TRUE(host2.ok());
  ASSERT_TRUE(g.refuse(7000).ok());
  EXPECT_FALSE(read_line(host2->get()).ok());
  {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, uds_.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_TRUE(write_all(fd.get(), bytes("HELLO\n")));
    EXPECT_TRUE(reads_eof(fd.get()));
  }

  EXPECT_TRUE(alive()) << "its log:\n" << worker_log();
  expect_clean_exit_when_the_guest_leaves();
  // Jailed, it removes nothing (vsock.policy has no unlink): the socket is its starter's to remove.
  EXPECT_TRUE(std::filesystem::exists(uds_));
}

TEST_F(JailedVsock, ARelativeUdsPathIsResolvedBeforeTheJail) {
  // The jail's working directory is /, so the worker makes the path absolute first.
  std::string cwd = std::filesystem::current_path().string();
  std::filesystem::current_path(dir_->path());
  start("vsock.sock");
  std::filesystem::current_path(cwd);
  ASSERT_TRUE(driver_);
  auto listener = host_listen(uds_, 5001);
  ASSERT_TRUE(listener.ok());
  auto key = driver_->connect(5001, 1025);
  ASSERT_TRUE(key.ok()) << key.error().message << "\nits log:\n" << worker_log();
  auto accepted = host_accept(listener->get());
  ASSERT_TRUE(accepted.ok()) << accepted.error().message;
  ASSERT_TRUE(driver_->write(*key, bytes("relative")).ok());
  EXPECT_EQ(text(read_exactly(accepted->get(), 8)), "relative");
  expect_clean_exit_when_the_guest_leaves();
}

TEST_F(JailedVsock, ReachesNoSocketOutsideItsDirectory) {
  // "<uds>_6000" is a symlink to a live socket elsewhere on the host: unjailed the connect
  // would follow it; in the jail the target is not there, so the guest gets an RST. A symlink
  // to a socket inside the kept directory still works.
  auto elsewhere = TempDir::create();
  ASSERT_TRUE(elsewhere.ok());
  auto outside = host_listen(elsewhere->path() + "/service", 0);  // "<path>_0"
  ASSERT_TRUE(outside.ok()) << outside.error().message;
  std::filesystem::create_symlink(elsewhere->path() + "/service_0", uds_ + "_6000");
  auto inside = host_listen(dir_->path() + "/service", 0);
  ASSERT_TRUE(inside.ok()) << inside.error().message;
  std::filesystem::create_symlink(dir_->path() + "/service_0", uds_ + "_6001");

  ASSERT_NO_FATAL_FAILURE(start());
  auto key = driver_->connect(6000, 1025);
  ASSERT_FALSE(key.ok()) << "the worker reached a socket outside its directory";
  EXPECT_EQ(key.error().err, ECONNREFUSED);
  key = driver_->connect(6001, 1026);
  ASSERT_TRUE(key.ok()) << key.error().message << "\nits log:\n" << worker_log();
  auto accepted = host_accept(inside->get());
  ASSERT_TRUE(accepted.ok()) << accepted.error().message;
  expect_clean_exit_when_the_guest_leaves();
}

TEST_F(JailedVsock, StopsOnSigtermWithConnectionsOpen) {
  ASSERT_NO_FATAL_FAILURE(start());
  auto listener = host_listen(uds_, 5000);
  ASSERT_TRUE(listener.ok());
  auto key = driver_->connect(5000, 1025);
  ASSERT_TRUE(key.ok()) << key.error().message;
  auto accepted = host_accept(listener->get());
  ASSERT_TRUE(accepted.ok());
  auto host = host_connect(uds_, 52);
  ASSERT_TRUE(host.ok());
  ASSERT_TRUE(driver_->accept(52).ok());
  ASSERT_TRUE(read_line(host->get()).ok());
  auto pending = host_connect(uds_, 53);  // Still waiting for the guest.
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(::kill(pid_, SIGTERM), 0);
  EXPECT_EQ(describe_wait_status(wait_exit()), "exited with status 0") << "its log:\n" << worker_log();
  EXPECT_TRUE(drains_to_eof(accepted->get()));
  EXPECT_TRUE(drains_to_eof(host->get()));
}

// Finding 4 of the security review: `--vsock-socket /tmp/x.sock` kept all of /tmp in the
// worker's jail (tmux, ssh-agent and X11 sockets of the user were reachable). As moss run
// starts it now, the worker keeps no host directory: the broker hands it the listener and
// connects "<socket>_<port>" for it, so guest connections still reach the user's PATH_P.
TEST_F(JailedVsock, AsMossRunStartsItTheJailKeepsNoDirectoryYetGuestsReachSocketUnderscorePort) {
  const std::string dir = dir_->path();
  auto neighbour = host_listen(dir + "/agent", 0);  // Another program's socket, "<dir>/agent_0".
  ASSERT_TRUE(neighbour.ok()) << neighbour.error().message;
  { std::ofstream(dir + "/secret.txt") << "not for the guest"; }
  auto rt = TempDir::create();
  ASSERT_TRUE(rt.ok());
  auto plan = vmvsock::Plan::prepare(rt->path() + "/moss", uds_, 0);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  ASSERT_NO_FATAL_FAILURE(start_like_the_broker(**plan));
  VsockDriver& g = *driver_;

  // What the worker sees of the host: nothing. (Looking into another user namespace's root
  // takes root.)
  if (::geteuid() == 0) {
    std::string root = "/proc/" + std::to_string(pid_) + "/root";
    std::vector<std::string> seen;
    for (const auto& e : std::filesystem::directory_iterator(root)) seen.push_back(e.path().string());
    EXPECT_TRUE(seen.empty()) << "the worker's root holds " << seen.size() << " entries, e.g. " << seen[0];
    for (const std::string& p : {dir, dir + "/agent_0", dir + "/secret.txt", uds_}) {
      EXPECT_FALSE(std::filesystem::exists(root + p)) << p << " is visible in the worker's jail";
    }
  }

  // Host-initiated: CONNECT on the socket the broker bound.
  auto host = host_connect(uds_, 52);
  ASSERT_TRUE(host.ok()) << host.error().message;
  auto key = g.accept(52);
  ASSERT_TRUE(key.ok()) << key.error().message << "\nits log:\n" << worker_log();
  ASSERT_TRUE(read_line(host->get()).ok());
  ASSERT_TRUE(g.write(*key, bytes("to the host")).ok());
  EXPECT_EQ(text(read_exactly(host->get(), 11)), "to the host");

  // Guest-initiated: "<socket>_5000", a program's listener beside the socket.
  ConnKey gkey;
  UniqueFd accepted;
  ASSERT_NO_FATAL_FAILURE(expect_guest_initiated_connection(&gkey, &accepted));
  // Nobody on the port: refused, as before.
  auto refused = g.connect(6001, 1026);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().err, ECONNREFUSED);

  EXPECT_TRUE(alive()) << "its log:\n" << worker_log();
  expect_clean_exit_when_the_guest_leaves();
  stop_broker();
  plan->reset();
  EXPECT_FALSE(std::filesystem::exists(uds_)) << "the broker removes the socket it bound";
}

}  // namespace
}  // namespace moss::harness
