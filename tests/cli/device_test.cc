// `moss device blk|vsock` (broker/standalone.h): the standalone workers are jailed as moss run
// jails them (security review finding 9), serve a frontend, end on SIGTERM with the worker's
// status, and leave no socket behind; --no-sandbox runs them unjailed and says so. Host-only.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/support/subprocess.h"
#include "vhost-user/frontend.h"

namespace moss::test {
namespace {

using std::chrono::seconds;
namespace fs = std::filesystem;

std::string moss() { return build_dir() + "/moss"; }

std::string status_field(pid_t pid, const std::string& field) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      auto v = line.substr(field.size() + 1);
      return v.substr(v.find_first_not_of(" \t"));
    }
  }
  return "";
}

std::string ns(pid_t pid, const char* which) {
  std::error_code ec;
  return fs::read_symlink("/proc/" + std::to_string(pid) + "/ns/" + which, ec).string();
}

bool wait_for_socket(const std::string& path) {
  for (int i = 0; i < 500; i++) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// The worker moss started (its only child), once there.
pid_t worker_of(pid_t moss_pid) {
  for (int i = 0; i < 500; i++) {
    auto kids = children_of(moss_pid);
    if (!kids.empty()) return kids[0];
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

// A frontend gets through the start of a handshake: the worker serves.
void expect_serves(const std::string& socket_path) {
  auto fe = vhost_user::Frontend::connect(socket_path);
  ASSERT_TRUE(fe.ok()) << fe.error().message;
  timeval tv{5, 0};
  ::setsockopt(fe->fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  auto f = fe->get_features();
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_TRUE(*f & (1ull << 32)) << "VIRTIO_F_VERSION_1";
  EXPECT_TRUE(fe->set_owner().ok());
}

class StandaloneDevice : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("moss-device-test-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    disk_ = (dir_ / "disk.img").string();
    std::ofstream(disk_).put('\0');
    fs::resize_file(disk_, 1 << 20);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Checks that `worker` is jailed as moss run jails a worker: seccomp filter, no_new_privs,
  // no capabilities, its own pid, net, user and mount namespaces, an empty root but for
  // `kept` (a host directory it keeps, or none).
  void expect_jailed(pid_t worker, const std::string& kept = "") {
    // The socket is made before the worker enters its sandbox: wait until it has.
    for (int i = 0; i < 500 && status_field(worker, "Seccomp") != "2"; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(status_field(worker, "Seccomp"), "2");
    EXPECT_EQ(status_field(worker, "NoNewPrivs"), "1");
    EXPECT_EQ(status_field(worker, "CapEff"), "0000000000000000");
    for (const char* which : {"pid", "net", "user", "mnt", "ipc", "uts"}) {
      EXPECT_NE(ns(worker, which), ns(getpid(), which)) << which << " namespace";
    }
    std::vector<std::string> seen;
    std::error_code ec;
    for (const auto& e : fs::recursive_directory_iterator("/proc/" + std::to_string(worker) + "/root", ec)) {
      std::string rel = e.path().string().substr(("/proc/" + std::to_string(worker) + "/root").size());
      if (kept.empty() || (kept.rfind(rel, 0) != 0 && rel.rfind(kept, 0) != 0)) seen.push_back(rel);
    }
    EXPECT_TRUE(seen.empty()) << "the worker's root holds " << seen.size() << " entries, e.g. " << seen[0];
  }

  fs::path dir_;
  std::string disk_;
};

TEST_F(StandaloneDevice, BlkIsJailedServesAFrontendAndEndsOnSigtermWithItsStatus) {
  std::string sock = (dir_ / "blk.sock").string();
  Process p({moss(), "device", "blk", "--socket-path", sock, "--disk", disk_});
  ASSERT_TRUE(wait_for_socket(sock)) << "no socket";
  pid_t worker = worker_of(p.pid());
  ASSERT_GT(worker, 0);
  expect_jailed(worker);
  expect_serves(sock);
  ASSERT_EQ(::kill(p.pid(), SIGTERM), 0);
  auto o = p.wait(seconds(10));
  EXPECT_EQ(o.exit_code, 0) << o.err;
  EXPECT_FALSE(process_exists(worker));
  EXPECT_FALSE(fs::exists(sock)) << "the jailed worker's socket was left behind";
}

TEST_F(StandaloneDevice, VsockIsJailedKeepingOnlyItsUdsDirectory) {
  fs::create_directories(dir_ / "uds");
  std::ofstream(dir_ / "outside.txt") << "not for the worker";
  std::string sock = (dir_ / "vsock.sock").string(), uds = (dir_ / "uds" / "vm.sock").string();
  Process p({moss(), "device", "vsock", "--socket-path", sock, "--guest-cid", "9", "--uds-path", uds});
  ASSERT_TRUE(wait_for_socket(sock)) << "no socket";
  pid_t worker = worker_of(p.pid());
  ASSERT_GT(worker, 0);
  expect_jailed(worker, (dir_ / "uds").string());
  EXPECT_FALSE(fs::exists("/proc/" + std::to_string(worker) + "/root" + (dir_ / "outside.txt").string()));
  expect_serves(sock);
  ASSERT_EQ(::kill(p.pid(), SIGINT), 0);
  auto o = p.wait(seconds(10));
  EXPECT_EQ(o.exit_code, 0) << o.err;
  EXPECT_FALSE(fs::exists(sock));
  EXPECT_FALSE(fs::exists(uds));
}

TEST_F(StandaloneDevice, AnFdPassedWithDashDashFdIsTheWorkersAndItExitsWhenTheFrontendCloses) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);  // Not CLOEXEC: moss inherits sv[1].
  UniqueFd ours(sv[0]), theirs(sv[1]);
  ::fcntl(ours.get(), F_SETFD, FD_CLOEXEC);
  Process p({moss(), "device", "blk", "--fd", std::to_string(theirs.get()), "--disk", disk_});
  theirs.reset();
  pid_t worker = worker_of(p.pid());
  ASSERT_GT(worker, 0);
  {
    vhost_user::Frontend fe(std::move(ours));
    timeval tv{5, 0};
    ::setsockopt(fe.fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ASSERT_TRUE(fe.get_features().ok());
    expect_jailed(worker);
  }
  auto o = p.wait(seconds(10));
  EXPECT_EQ(o.exit_code, 0) << o.err;
}

TEST_F(StandaloneDevice, TheJailsProbesAreBlockedAndAForbiddenCallKillsTheWorker) {
  std::string sock = (dir_ / "blk.sock").string();
  Process p({moss(), "device", "blk", "--socket-path", sock, "--disk", disk_}, {{"MOSS_TEST_PROBE", "blk"}});
  ASSERT_TRUE(wait_for_socket(sock));
  ::kill(p.pid(), SIGTERM);
  auto o = p.wait(seconds(10));
  int probes = 0;
  std::istringstream lines(o.err);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("moss-sandbox-probe: blk ", 0) != 0) continue;
    probes++;
    EXPECT_NE(line.find(" blocked ("), std::string::npos) << line;
  }
  EXPECT_GE(probes, 8) << o.err;

  Process q({moss(), "device", "blk", "--socket-path", sock, "--disk", disk_}, {{"MOSS_TEST_FORBIDDEN_SYSCALL", "blk"}});
  auto k = q.wait(seconds(10));
  EXPECT_EQ(k.exit_code, 128 + SIGSYS) << k.err;
  EXPECT_NE(k.err.find("moss: the blk worker (pid "), std::string::npos) << k.err;
  EXPECT_NE(k.err.find("killed by signal 31 (SIGSYS)"), std::string::npos) << k.err;
  EXPECT_FALSE(fs::exists(sock));
}

TEST_F(StandaloneDevice, NoSandboxRunsTheWorkerUnjailedAndSaysSo) {
  std::string sock = (dir_ / "blk.sock").string();
  Process p({moss(), "device", "blk", "--no-sandbox", "--socket-path", sock, "--disk", disk_});
  ASSERT_TRUE(wait_for_socket(sock));
  // The worker is moss itself, exec'd: no filter, and the warning.
  EXPECT_EQ(status_field(p.pid(), "Seccomp"), "0");
  EXPECT_EQ(ns(p.pid(), "pid"), ns(getpid(), "pid"));
  expect_serves(sock);
  ::kill(p.pid(), SIGTERM);
  auto o = p.wait(seconds(10));
  EXPECT_EQ(o.exit_code, 0) << o.err;
  EXPECT_NE(o.err.find("WARNING: --no-sandbox"), std::string::npos) << o.err;
}

TEST_F(StandaloneDevice, ADiskItCannotOpenIsTheWorkersOneSentence) {
  auto o = run({moss(), "device", "blk", "--socket-path", (dir_ / "b.sock").string(), "--disk", (dir_ / "none.img").string()},
               seconds(10));
  EXPECT_EQ(o.exit_code, 1) << o.err;
  EXPECT_EQ(o.err, "moss-blk: cannot open the disk " + (dir_ / "none.img").string() +
                       " for reading and writing: No such file or directory\n");
  EXPECT_FALSE(fs::exists(dir_ / "b.sock"));
}

}  // namespace
}  // namespace moss::test
