// The moss-blk binary as a user, a VMM or the broker runs it: exit statuses and messages,
// --print-capabilities, signals, the socket path's life cycle, --fd, and frontends (or the
// worker itself) going away with requests in flight. Each test execs $MOSS_BUILD_DIR/moss-blk.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "devices/blk/cli.h"
#include "devices/blk/test_guest.h"
#include "devices/worker/test_binary.h"
#include "tests/support/disk_lock_wait.h"
#include "tests/support/subprocess.h"

namespace moss::blk {
namespace {

using namespace testing;
using std::chrono::seconds;

std::string moss_blk() { return moss::test::build_dir() + "/moss-blk"; }

using moss::test::path_exists;

// Someone listens on `path` (a stale socket file alone does not count).
bool listening(const std::string& path) { return moss::test::connect_unix(path).valid(); }

void expect_one_sentence(const std::string& err) { runtime::testing::expect_one_sentence("moss-blk", err); }

TEST(BlkBinary, PrintCapabilitiesIsTheVhostUserJson) {
  runtime::testing::expect_capabilities_and_help(moss_blk(), "moss-blk", capabilities_json());
}

TEST(BlkBinary, BadCommandLineExitsTwo) {
  runtime::testing::expect_usage_errors(
      moss_blk(), "moss-blk",
      {{}, {"--disk", "/x"}, {"--socket-path", "/tmp/x", "--disk", "/x", "--num-queues", "0"}, {"--bogus"}});
}

TEST(BlkBinary, UnreadableDiskExitsOneWithoutCreatingTheSocket) {
  TempDir dir;
  std::string sock = dir.path() + "/blk.sock";
  auto r = moss::test::run({moss_blk(), "--socket-path", sock, "--disk", dir.path() + "/missing.img"}, seconds(10));
  EXPECT_EQ(r.exit_code, 1);
  expect_one_sentence(r.err);
  EXPECT_NE(r.err.find(dir.path() + "/missing.img"), std::string::npos) << r.err;
  EXPECT_FALSE(path_exists(sock));
  auto fd = moss::test::run({moss_blk(), "--fd", "77", "--disk", dir.file("d.img", 4096)}, seconds(10));
  EXPECT_EQ(fd.exit_code, 1);
  EXPECT_NE(fd.err.find("--fd 77 is not an open socket"), std::string::npos) << fd.err;
}

// A moss-blk process on a socket path, with a frontend (from GuestDriverTest) that connects.
class BlkBinaryTest : public GuestDriverTest {
 protected:
  void SetUp() override {
    GuestDriverTest::SetUp();
    sock_ = dir_.path() + "/blk.sock";
  }

  // Starts moss-blk on sock_ and waits until it listens. (The probe connection it sees
  // close at once is a frontend leaving before saying anything.)
  std::unique_ptr<moss::test::Process> start_worker() {
    auto p = std::make_unique<moss::test::Process>(
        std::vector<std::string>{moss_blk(), "--socket-path", sock_, "--disk", disk_path_});
    for (int i = 0; i < 400 && !listening(sock_); i++) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_TRUE(listening(sock_)) << "moss-blk does not listen on " << sock_;
    return p;
  }
  void connect_frontend(const Conn& c = {}) {
    auto f = vhost_user::Frontend::connect(sock_);
    ASSERT_TRUE(f.ok()) << f.error().message;
    frontend_.emplace(std::move(*f));
    negotiate(c);
  }
  // Ends a worker with `sig` and checks it exits 0 and removes its socket.
  void expect_clean_exit(moss::test::Process& p, int sig) {
    ASSERT_EQ(::kill(p.pid(), sig), 0);
    auto r = p.wait(seconds(5));
    EXPECT_FALSE(r.timed_out);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_FALSE(path_exists(sock_));
  }
  // Queue 0 of 256 entries with `n` reads of 64 KiB (sector i * 128), kicked.
  std::vector<Req> reads_in_flight(int n) {
    std::vector<Req> reqs;
    for (int i = 0; i < n; i++) reqs.push_back(read(0, i * 128, 64 * 1024));
    kick(0);
    return reqs;
  }
  void expect_all_read(const std::vector<Req>& reqs) {
    auto got = wait_used(0, reqs.size());
    ASSERT_EQ(got.size(), reqs.size());
    for (size_t i = 0; i < reqs.size(); i++) {
      EXPECT_EQ(got[reqs[i].head], 64u * 1024 + 1) << i;
      EXPECT_EQ(status(reqs[i]), kOk) << i;
      EXPECT_TRUE(is_pattern(host(reqs[i].data_gpa), i * 128 * 512, 64 * 1024)) << i;
    }
  }
  uint16_t used_idx(uint32_t q) {
    uint16_t v;
    std::memcpy(&v, host(dq(q).config().used_gpa + 2), 2);
    return v;
  }

  // Whether the disk's locks are all gone by `timeout` (tests/support/disk_lock_wait.h).
  bool wait_until_disk_unlocked(seconds timeout) {
    return moss::test::wait_until_disk_unlocked(disk_path_, timeout);
  }

  std::string sock_;
};

TEST_F(BlkBinaryTest, SigtermEndsItWithStatusZeroAndRemovesTheSocket) {
  auto p = start_worker();
  connect_frontend();
  start_queue(0);
  Req r = read(0, 0, 4096);
  kick(0);
  wait_used(0, 1);
  EXPECT_EQ(status(r), kOk);
  // With a frontend connected and a ring running.
  expect_clean_exit(*p, SIGTERM);
}

TEST_F(BlkBinaryTest, SigintEndsAnIdleWorker) {
  auto p = start_worker();
  expect_clean_exit(*p, SIGINT);
}

TEST_F(BlkBinaryTest, LiveSocketIsRefusedAndAStaleOneReplaced) {
  auto first = start_worker();
  // Another disk: this one is the first worker's (a second writer is refused for that, below).
  auto second = moss::test::run({moss_blk(), "--socket-path", sock_, "--disk", dir_.file("other.img", 1 << 20)},
                                seconds(10));
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("another process is already listening on " + sock_), std::string::npos) << second.err;
  // Killed outright, the first leaves its socket behind; the next worker replaces it.
  ASSERT_EQ(::kill(first->pid(), SIGKILL), 0);
  first->wait(seconds(5));
  ASSERT_TRUE(path_exists(sock_));
  auto third = start_worker();
  connect_frontend();
  EXPECT_TRUE(fe().get_queue_num().ok());
  expect_clean_exit(*third, SIGTERM);
  // A path that is not a socket is never removed.
  TempDir other;
  std::string file = other.file("not-a-socket", 10);
  auto r = moss::test::run({moss_blk(), "--socket-path", file, "--disk", disk_path_}, seconds(10));
  EXPECT_EQ(r.exit_code, 1);
  expect_one_sentence(r.err);
  EXPECT_TRUE(path_exists(file));
}

// One disk, one writer (base/disk_lock.h): a second worker on a disk a running one serves is
// refused with one sentence naming the disk, before it makes its socket; read-only too, while
// the first writes. Once the first has gone, the disk is free.
TEST_F(BlkBinaryTest, ASecondWorkerOnTheSameDiskIsRefused) {
  auto first = start_worker();
  std::string sock2 = dir_.path() + "/second.sock";
  for (bool read_only : {false, true}) {
    std::vector<std::string> argv{moss_blk(), "--socket-path", sock2, "--disk", disk_path_};
    if (read_only) argv.push_back("--readonly");
    auto second = moss::test::run(argv, seconds(10));
    EXPECT_EQ(second.exit_code, 1) << second.err;
    expect_one_sentence(second.err);
    EXPECT_NE(second.err.find("the disk " + disk_path_ + " is in use by another process"), std::string::npos) << second.err;
    EXPECT_FALSE(path_exists(sock2));
  }
  expect_clean_exit(*first, SIGTERM);
  moss::test::Process third({moss_blk(), "--socket-path", sock2, "--disk", disk_path_});
  for (int i = 0; i < 400 && !listening(sock2); i++) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_TRUE(listening(sock2)) << "the disk stayed locked after its worker had gone";
  ::kill(third.pid(), SIGTERM);
  EXPECT_EQ(third.wait(seconds(5)).exit_code, 0);
}

// moss and QEMU exclude each other on one disk (QEMU 7.2's locks, base/disk_lock.h), both
// ways, with the real qemu-storage-daemon.
TEST_F(BlkBinaryTest, MossBlkAndQemuStorageDaemonExcludeEachOther) {
  const std::string qsd = "/usr/bin/qemu-storage-daemon";
  if (::access(qsd.c_str(), X_OK) != 0) GTEST_SKIP() << "SKIP: no " << qsd;
  auto qsd_argv = [&](const std::string& sock, bool writable) {
    return std::vector<std::string>{qsd, "--blockdev",
                                    "driver=file,node-name=f,filename=" + disk_path_ + (writable ? "" : ",read-only=on"),
                                    "--export",
                                    "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=" + sock +
                                        (writable ? ",writable=on" : "")};
  };
  // QEMU first, writing: moss-blk is refused, read-only too.
  std::string qsock = dir_.path() + "/qsd.sock";
  {
    moss::test::Process q(qsd_argv(qsock, true));
    for (int i = 0; i < 1000 && !listening(qsock); i++) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_TRUE(listening(qsock)) << "qemu-storage-daemon did not start";
    for (bool read_only : {false, true}) {
      std::vector<std::string> argv{moss_blk(), "--socket-path", sock_, "--disk", disk_path_};
      if (read_only) argv.push_back("--readonly");
      auto r = moss::test::run(argv, seconds(10));
      EXPECT_EQ(r.exit_code, 1) << r.err;
      EXPECT_NE(r.err.find("is in use by another process"), std::string::npos) << r.err;
    }
    ::kill(q.pid(), SIGTERM);
    q.wait(seconds(5));
  }
  // moss-blk first, writing: QEMU is refused (it says why: a lock), even read-only.
  auto p = start_worker();
  for (bool writable : {true, false}) {
    ::unlink(qsock.c_str());
    auto r = moss::test::run(qsd_argv(qsock, writable), seconds(20));
    EXPECT_NE(r.exit_code, 0) << "qemu-storage-daemon started on a disk moss-blk writes";
    EXPECT_NE(r.err.find("lock"), std::string::npos) << r.err;
  }
  expect_clean_exit(*p, SIGTERM);
}

TEST_F(BlkBinaryTest, FdModeServesOneFrontendAndExitsWhenItCloses) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd ours(sv[0]), theirs(sv[1]);
  ASSERT_EQ(::fcntl(theirs.get(), F_SETFD, 0), 0);  // Inherited across exec.
  moss::test::Process p({moss_blk(), "--fd", std::to_string(theirs.get()), "--disk", disk_path_, "--serial", "fd-mode"});
  theirs.reset();
  frontend_.emplace(std::move(ours));
  negotiate({});
  start_queue(0);
  Req id = get_id(0, 20);
  kick(0);
  wait_used(0, 1);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(host(id.data_gpa)), 7), "fd-mode");
  frontend_.reset();
  auto r = p.wait(seconds(5));
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(BlkBinaryTest, NextFrontendContinuesAfterOneLeavesMidFlight) {
  auto p = start_worker();
  connect_frontend({.inflight = true});
  start_queue(0, 256);
  auto reqs = reads_in_flight(64);
  frontend_.reset();  // Gone, with the ring running and reads in flight.
  // The next frontend brings back the same memory and inflight buffer and, as QEMU does,
  // resumes the ring at the used index.
  connect_frontend();
  ASSERT_TRUE(fe().set_inflight_fd(inflight_info_, inflight_fd_.get()).ok());
  restart_queue(0, 256, used_idx(0));
  expect_all_read(reqs);
  expect_clean_exit(*p, SIGTERM);
}

TEST_F(BlkBinaryTest, ReplacementWorkerResubmitsWhatAKilledOneHadInFlight) {
  auto p = start_worker();
  connect_frontend({.inflight = true});
  start_queue(0, 256);
  auto reqs = reads_in_flight(64);
  // Whatever it had taken and not finished is marked in the inflight buffer.
  ASSERT_EQ(::kill(p->pid(), SIGKILL), 0);
  p->wait(seconds(5));
  frontend_.reset();
  // The kernel may still finish the dead worker's I/O after it is reaped; until it has, the
  // disk's open file, and its lock, live on, and a replacement is refused (its writes could
  // cross the dead one's). Whoever restarts a worker waits for that, as we do here.
  ASSERT_TRUE(wait_until_disk_unlocked(seconds(10))) << "the killed worker's disk lock never went";
  auto again = start_worker();
  connect_frontend();
  ASSERT_TRUE(fe().set_inflight_fd(inflight_info_, inflight_fd_.get()).ok());
  restart_queue(0, 256, used_idx(0));
  expect_all_read(reqs);
  expect_clean_exit(*again, SIGTERM);
}

}  // namespace
}  // namespace moss::blk
