// A hostile vhost-user frontend against both workers (moss-blk and moss-vsock), as processes:
// the attacks of the security review's finding 5. Each must end in one log line and a dropped
// connection (or, under REPLY_ACK, a refused request), with the worker alive and serving the
// next frontend; SIGTERM must end the worker whatever the frontend holds. Host-only, no KVM.
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/harness/backend_process.h"
#include "tests/harness/vsock_process.h"
#include "vhost-user/frontend.h"

namespace moss::harness {
namespace {

using namespace std::chrono_literals;
using namespace vhost_user::protocol_feature;
using vhost_user::bit;
using vhost_user::Frontend;

constexpr uint64_t kRamBytes = 1 << 20;
constexpr uint64_t kUserBase = 0x7f4400000000;

enum class Kind { kBlk, kVsock };

// Either worker, started fresh for one test (moss-blk on a 1 MiB image in `disk_dir`, which
// must outlive it).
std::unique_ptr<WorkerProcess> start_worker(Kind kind, std::optional<TempDir>& disk_dir) {
  auto started = [](auto p) -> std::unique_ptr<WorkerProcess> {
    EXPECT_TRUE(p.ok()) << p.error().message;
    if (!p.ok()) return nullptr;
    return std::move(*p);
  };
  if (kind == Kind::kVsock) return started(VsockProcess::start());
  auto dir = TempDir::create();
  if (!dir.ok()) return nullptr;
  disk_dir.emplace(std::move(*dir));
  std::string disk = disk_dir->path() + "/disk.img";
  std::ofstream(disk).put('\0');
  if (::truncate(disk.c_str(), 1 << 20) != 0) return nullptr;
  BackendOptions o;
  o.disk = disk;
  return started(BackendProcess::start(o));
}

UniqueFd sealed_ram(bool sealed = true) {
  UniqueFd fd(::memfd_create("moss-hostile-guest", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  EXPECT_TRUE(fd.valid());
  EXPECT_EQ(::ftruncate(fd.get(), kRamBytes), 0);
  if (sealed) {
    EXPECT_EQ(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  }
  return fd;
}

// A frontend that has done the handshake (Frontend::negotiate), to which configure_queue0 adds
// memory (sealed unless asked otherwise) and queue 0 up to its kick: ring size and addresses
// and a call eventfd. Replies are awaited for at most 10 s, so a wedged worker fails the
// test rather than hanging it.
struct Session {
  std::optional<Frontend> fe;
  UniqueFd ram, call;
  uint64_t protocol = 0;
};

// A connection to the worker, which may still be between bind() and listen().
Result<Frontend> connect_retrying(WorkerProcess& w) {
  for (int tries = 0; tries < 100; tries++) {
    auto c = Frontend::connect(w.socket_path());
    if (c.ok()) return c;
    std::this_thread::sleep_for(20ms);
  }
  return make_error("cannot connect to " + w.socket_path());
}

Result<Session> connect_to(WorkerProcess& w, bool reply_ack = true) {
  Session s;
  std::optional<Frontend> fe;
  MOSS_TRY(Frontend c, connect_retrying(w));
  fe.emplace(std::move(c));
  MOSS_TRY_VOID(fe->set_timeout(10s));
  vhost_user::Negotiation want;
  want.protocol_features = bit(kConfig) | bit(kMq) | bit(kDeviceState) | (reply_ack ? bit(kReplyAck) : 0);
  MOSS_TRY(vhost_user::Negotiated n, fe->negotiate(want));
  s.protocol = n.protocol_features;
  s.fe = std::move(fe);
  return s;
}

Result<void> share_ram(Session& s, bool sealed = true) {
  s.ram = sealed_ram(sealed);
  return s.fe->set_mem_table(vhost_user::MemoryRegion{0, kRamBytes, kUserBase, 0}, s.ram.get());
}

// Queue 0 configured up to its kick, which the caller sends (or attacks with).
Result<void> configure_queue0(Session& s) {
  MOSS_TRY_VOID(share_ram(s));
  s.call.reset(::eventfd(0, EFD_CLOEXEC));
  vhost_user::RingSetup r;
  r.size = 64;
  r.desc = kUserBase + 0x1000;
  r.avail = kUserBase + 0x2000;
  r.used = kUserBase + 0x3000;
  r.call = s.call.get();
  return s.fe->start_ring(r);
}

// The worker is alive and a new frontend gets through a whole handshake and a started ring.
void expect_serves_the_next_frontend(WorkerProcess& w) {
  ASSERT_TRUE(w.alive()) << w.log();
  auto s = connect_to(w);
  ASSERT_TRUE(s.ok()) << s.error().message << "\n" << w.log();
  ASSERT_TRUE(configure_queue0(*s).ok()) << w.log();
  UniqueFd kick(::eventfd(0, EFD_CLOEXEC));
  auto k = s->fe->set_vring_kick(0, kick.get());
  EXPECT_TRUE(k.ok()) << k.error().message << "\n" << w.log();
  EXPECT_TRUE(s->fe->get_features().ok()) << w.log();
}

// Waits until the worker closed our end of `fd` (read gives EOF or an error), or `limit`.
bool dropped_within(int fd, std::chrono::milliseconds limit) {
  timeval tv{static_cast<time_t>(limit.count() / 1000), static_cast<suseconds_t>(limit.count() % 1000 * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char c;
  ssize_t n = ::recv(fd, &c, 1, 0);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

// Waits until the peer of Unix stream socket `fd` has read everything sent on it (SIOCOUTQ,
// the bytes it has not taken yet, is 0), or `limit`.
bool peer_took_everything(int fd, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int unread = -1;
    if (::ioctl(fd, SIOCOUTQ, &unread) != 0) return false;
    if (unread == 0) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
}

class HostileFrontend : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    worker_ = start_worker(GetParam(), disk_dir_);
    ASSERT_NE(worker_, nullptr);
  }
  std::optional<TempDir> disk_dir_;
  std::unique_ptr<WorkerProcess> worker_;
};

TEST_P(HostileFrontend, KickCallAndErrFdsThatAreNotEventfdsAreRefused) {
  auto s = connect_to(*worker_);
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_TRUE(configure_queue0(*s).ok()) << worker_->log();
  // A memfd (the review's MOSS_ASSERT abort), a pipe whose writer closed (a 100% CPU spin), a
  // full blocking pipe as the call fd (a worker blocked in write).
  UniqueFd memfd = sealed_ram();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  UniqueFd closed_rd;
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  closed_rd.reset(p[0]);
  ::close(p[1]);
  ::fcntl(wr.get(), F_SETFL, O_NONBLOCK);
  char fill[4096] = {};
  while (::write(wr.get(), fill, sizeof fill) > 0) {
  }
  EXPECT_FALSE(s->fe->set_vring_kick(0, memfd.get()).ok());
  EXPECT_FALSE(s->fe->set_vring_kick(0, closed_rd.get()).ok());
  EXPECT_FALSE(s->fe->set_vring_call(0, wr.get()).ok());
  EXPECT_FALSE(s->fe->set_vring_err(0, memfd.get()).ok());
  // Under REPLY_ACK the connection goes on.
  ASSERT_TRUE(s->fe->get_features().ok()) << worker_->log();
  EXPECT_NE(worker_->log().find("a kick fd that is not an eventfd"), std::string::npos) << worker_->log();
  EXPECT_NE(worker_->log().find("a call fd that is not an eventfd"), std::string::npos) << worker_->log();
  s->fe.reset();
  expect_serves_the_next_frontend(*worker_);
}

TEST_P(HostileFrontend, WithoutReplyAckABadKickFdDropsTheConnection) {
  auto s = connect_to(*worker_, /*reply_ack=*/false);
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_TRUE(configure_queue0(*s).ok()) << worker_->log();
  UniqueFd memfd = sealed_ram();
  (void)s->fe->set_vring_kick(0, memfd.get());  // No reply to wait for.
  EXPECT_TRUE(dropped_within(s->fe->fd(), 5000ms)) << worker_->log();
  EXPECT_NE(worker_->log().find("dropping the frontend: frontend gave queue 0 a kick fd that is not an eventfd"),
            std::string::npos)
      << worker_->log();
  expect_serves_the_next_frontend(*worker_);
}

// An fd that passes for an eventfd (it shares the kernel's anonymous inode) but reads like none:
// an epoll fd, readable because an eventfd it watches is. Polled again, it would spin.
TEST_P(HostileFrontend, AKickFdThatReadsLikeNoEventfdDropsTheConnection) {
  auto s = connect_to(*worker_);
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_TRUE(configure_queue0(*s).ok()) << worker_->log();
  UniqueFd ready(::eventfd(1, EFD_CLOEXEC));
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  epoll_event ev{EPOLLIN, {}};
  ASSERT_EQ(::epoll_ctl(ep.get(), EPOLL_CTL_ADD, ready.get(), &ev), 0);
  (void)s->fe->set_vring_kick(0, ep.get());
  EXPECT_TRUE(dropped_within(s->fe->fd(), 5000ms)) << worker_->log();
  EXPECT_NE(worker_->log().find("cannot read the kick eventfd of queue 0"), std::string::npos) << worker_->log();
  expect_serves_the_next_frontend(*worker_);
}

TEST_P(HostileFrontend, GuestMemoryThatCouldBeTruncatedIsRefused) {
  auto s = connect_to(*worker_);
  ASSERT_TRUE(s.ok()) << s.error().message;
  auto r = share_ram(*s, /*sealed=*/false);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(worker_->log().find("not sealed against shrinking"), std::string::npos) << worker_->log();
  s->fe.reset();
  expect_serves_the_next_frontend(*worker_);
}

TEST_P(HostileFrontend, HalfAMessageHeldOpenIsDroppedAndTheNextFrontendServed) {
  auto c = connect_retrying(*worker_);
  ASSERT_TRUE(c.ok()) << c.error().message;
  const uint8_t part[5] = {1, 0, 0, 0, 1};  // GET_FEATURES' request code and a flag byte of 12.
  ASSERT_EQ(::send(c->fd(), part, sizeof part, MSG_NOSIGNAL), 5);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(dropped_within(c->fd(), 6000ms)) << worker_->log();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5000ms);
  EXPECT_NE(worker_->log().find("in the middle of a message"), std::string::npos) << worker_->log();
  expect_serves_the_next_frontend(*worker_);
}

TEST_P(HostileFrontend, SigtermEndsTheWorkerWhileAFrontendHoldsHalfAMessage) {
  auto c = connect_retrying(*worker_);
  ASSERT_TRUE(c.ok()) << c.error().message;
  const uint8_t part[5] = {1, 0, 0, 0, 1};
  ASSERT_EQ(::send(c->fd(), part, sizeof part, MSG_NOSIGNAL), 5);
  // The worker has taken the half message and waits for the rest.
  ASSERT_TRUE(peer_took_everything(c->fd(), 5s)) << worker_->log();
  ASSERT_EQ(::kill(worker_->pid(), SIGTERM), 0);
  auto st = worker_->wait_exit(6s);
  ASSERT_TRUE(st.has_value()) << "SIGTERM did not end the worker within 6 s\n" << worker_->log();
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << "wait status " << *st << "\n" << worker_->log();
}

INSTANTIATE_TEST_SUITE_P(Workers, HostileFrontend, ::testing::Values(Kind::kBlk, Kind::kVsock),
                         [](const auto& p) { return p.param == Kind::kBlk ? "moss_blk" : "moss_vsock"; });

// Device state (moss-blk offers DEVICE_STATE): a frontend that never reads what the worker
// saves, or trickles a state to load, loses its connection at one deadline for the whole
// transfer (5 s), and the worker serves the next frontend.
class HostileStateTransfer : public ::testing::Test {
 protected:
  void SetUp() override {
    worker_ = start_worker(Kind::kBlk, disk_dir_);
    ASSERT_NE(worker_, nullptr);
  }
  std::optional<TempDir> disk_dir_;
  std::unique_ptr<WorkerProcess> worker_;
};

TEST_F(HostileStateTransfer, SavingIntoAFullPipeDropsTheFrontendAtTheDeadline) {
  auto s = connect_to(*worker_);
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_TRUE(s->protocol & bit(kDeviceState));
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  char fill[4096] = {};
  while (::write(wr.get(), fill, sizeof fill) > 0) {
  }
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(s->fe->set_device_state_fd(vhost_user::kTransferSave, wr.get()).ok()) << worker_->log();
  EXPECT_TRUE(dropped_within(s->fe->fd(), 9000ms)) << worker_->log();
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 4500ms);
  EXPECT_LT(took, 8000ms);
  EXPECT_NE(worker_->log().find("did not take the state within 5000 ms"), std::string::npos) << worker_->log();
  expect_serves_the_next_frontend(*worker_);
}

TEST_F(HostileStateTransfer, AStateTrickledByteByByteEndsAtOneDeadlineForTheWhole) {
  auto s = connect_to(*worker_);
  ASSERT_TRUE(s.ok()) << s.error().message;
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(s->fe->set_device_state_fd(vhost_user::kTransferLoad, rd.get()).ok()) << worker_->log();
  rd.reset();
  // A byte every 900 ms, well within any per-read time-out; the whole must still end at 5 s.
  bool dropped = false;
  for (int i = 0; i < 10 && !dropped; i++) {
    (void)!::write(wr.get(), "x", 1);
    dropped = dropped_within(s->fe->fd(), 900ms);
  }
  EXPECT_TRUE(dropped) << worker_->log();
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 4500ms);
  EXPECT_LT(took, 8000ms);
  EXPECT_NE(worker_->log().find("did not deliver the state within 5000 ms"), std::string::npos) << worker_->log();
  expect_serves_the_next_frontend(*worker_);
}

}  // namespace
}  // namespace moss::harness
