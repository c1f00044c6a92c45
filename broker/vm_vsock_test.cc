#include "broker/vm_vsock.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "devices/vsock/host_connector.h"

namespace moss::vmvsock {
namespace {

namespace fs = std::filesystem;

struct Dirs {
  fs::path root = fs::temp_directory_path() / ("moss-vm-vsock-" + std::to_string(getpid()));
  std::string runtime = (root / "rt").string();
  Dirs() { fs::create_directories(root); }
  ~Dirs() { fs::remove_all(root); }
};

// What the jailed worker does for a guest connection to host port `port`: ask on its end of the
// connect channel (worker_host().connect, the worker's --connect-fd), while the broker's loop
// (here: this thread) serves.
struct Dialled {
  Result<UniqueFd> worker_side = make_error("not asked");
  std::optional<UniqueFd> agent;  // What serve_connect_requests() gave the broker, if anything.
};
Dialled dial(Plan& plan, int worker_end, uint32_t port) {
  Dialled out;
  std::atomic<bool> done{false};
  std::thread worker([&] {
    vsock::StarterConnector c(worker_end, 5000);
    out.worker_side = c.connect(port);
    done = true;
  });
  while (!done) {
    pollfd p{plan.connect_channel(), POLLIN, 0};
    poll(&p, 1, 20);
    if (auto a = plan.serve_connect_requests()) out.agent = std::move(a);
  }
  worker.join();
  return out;
}

// A host program listening on `path`.
UniqueFd listen_at(const std::string& path) {
  auto l = listen_unix(path, 4, /*nonblocking=*/true);
  EXPECT_TRUE(l.ok()) << l.error().message;
  return l.ok() ? std::move(*l) : UniqueFd();
}

// Bytes written on `a` arrive on `b`.
void expect_connected(int a, int b) {
  ASSERT_EQ(write(a, "ping", 4), 4);
  pollfd p{b, POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 5000), 1);
  char buf[4];
  ASSERT_EQ(read(b, buf, 4), 4);
  EXPECT_EQ(std::string(buf, 4), "ping");
}

TEST(VmVsock, ParentDir) {
  EXPECT_EQ(parent_dir("/a/b/c"), "/a/b");
  EXPECT_EQ(parent_dir("/c"), "/");
  EXPECT_EQ(parent_dir("c"), ".");
}

TEST(VmVsock, DefaultSocketIsInAPrivateDirectoryNamedByTheCidAndGoesAway) {
  Dirs d;
  std::string dir;
  {
    auto p = Plan::prepare(d.runtime, "", 1124);
    ASSERT_TRUE(p.ok()) << p.error().message;
    uint32_t cid = (*p)->cid();
    EXPECT_GE(cid, 3u);
    dir = d.runtime + "/cid-" + std::to_string(cid);
    EXPECT_EQ((*p)->socket_path(), dir + "/vsock");
    struct stat st;
    ASSERT_EQ(stat(dir.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    ASSERT_EQ(lstat((dir + "/vsock").c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode)) << "the broker binds the socket host programs connect to";
    // No dial socket on disk: the agent's connection is a socketpair.
    EXPECT_FALSE(fs::exists(dir + "/vsock_1124"));
    // A second VM meanwhile gets another CID and another directory.
    auto q = Plan::prepare(d.runtime, "", 0);
    ASSERT_TRUE(q.ok()) << q.error().message;
    EXPECT_NE((*q)->cid(), cid);
  }
  EXPECT_FALSE(fs::exists(dir));
}

TEST(VmVsock, GivenSocketPathsAreMadeAbsoluteAndChecked) {
  Dirs d;
  std::string cwd = fs::current_path().string();
  fs::current_path(d.root);
  auto p = Plan::prepare(d.runtime, "vm.sock", 0);
  fs::current_path(cwd);
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ((*p)->socket_path(), d.root.string() + "/vm.sock");
  EXPECT_TRUE(fs::is_socket(d.root / "vm.sock"));
  p->reset();
  EXPECT_FALSE(fs::exists(d.root / "vm.sock")) << "the socket outlived its VM";

  std::string missing = (d.root / "missing" / "vm.sock").string();
  auto m = Plan::prepare(d.runtime, missing, 0);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().message, "the directory of the vsock socket " + missing + " does not exist");

  std::string long_path = d.root.string() + "/" + std::string(120, 'x');
  auto l = Plan::prepare(d.runtime, long_path, 0);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.error().message.find("is longer than 96 bytes"), std::string::npos) << l.error().message;

  // A live socket of someone else's is refused and left alone.
  std::string taken = (d.root / "taken.sock").string();
  UniqueFd other = listen_at(taken);
  auto t = Plan::prepare(d.runtime, taken, 0);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().message, "another process is already listening on " + taken);
  EXPECT_TRUE(fs::is_socket(taken));
}

TEST(VmVsock, TheWorkerGetsTheListenerAndTheConnectChannelAndNoPath) {
  Dirs d;
  auto p = Plan::prepare(d.runtime, (d.root / "vm.sock").string(), 0);
  ASSERT_TRUE(p.ok()) << p.error().message;
  auto dev = device::vsock::plan((*p)->worker_host(), device::Vm{1, 64 << 20, true});
  ASSERT_TRUE(dev.ok()) << dev.error().message;
  ASSERT_TRUE(dev->worker.has_value());
  const device::WorkerPlan& w = *dev->worker;
  EXPECT_EQ(w.program, "moss-vsock");
  EXPECT_EQ(w.argv, (std::vector<std::string>{"moss-vsock", "--fd", "3", "--guest-cid", std::to_string((*p)->cid()),
                                              "--uds-fd", "4", "--connect-fd", "5"}));
  ASSERT_EQ(w.fds.size(), 3u);
  int accepting = 0;
  socklen_t len = sizeof accepting;
  ASSERT_EQ(getsockopt(w.fds[1], SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len), 0);
  EXPECT_TRUE(accepting);
  EXPECT_EQ(w.role, sandbox::Role("vsock"));
  EXPECT_FALSE(w.control.valid());  // moss-vsock has no control channel yet.
  // The broker hands these over once.
  auto again = (*p)->worker_host();
  EXPECT_FALSE(again.listener.valid());
  EXPECT_FALSE(again.connect.valid());
}

// moss exec: the broker connects to the worker's listener (the hybrid socket) and asks for the
// agent's port, for the default socket (through its private directory) and a given path.
TEST(VmVsock, AnAgentConnectionReachesTheWorkersListenerWithConnectSent) {
  Dirs d;
  for (std::string given : {std::string(), (d.root / "vm.sock").string()}) {
    auto p = Plan::prepare(d.runtime, given, 0);
    ASSERT_TRUE(p.ok()) << p.error().message;
    device::vsock::Host host = (*p)->worker_host();  // What the worker would accept on.
    auto c = (*p)->connect_agent();
    ASSERT_TRUE(c.ok()) << c.error().message;
    UniqueFd w(accept4(host.listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(w.valid()) << given;
    char buf[32] = {};
    ssize_t n = read(w.get(), buf, sizeof buf);
    EXPECT_EQ(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), "CONNECT 1124\n") << given;
    ASSERT_EQ(write(w.get(), "OK 7\n", 5), 5);
    pollfd pf{c->get(), POLLIN, 0};
    ASSERT_EQ(poll(&pf, 1, 2000), 1);
    EXPECT_EQ(read(c->get(), buf, sizeof buf), 5);
  }
}

TEST(VmVsock, GuestConnectionsReachSocketUnderscorePortThroughTheBroker) {
  Dirs d;
  std::string sock = (d.root / "vm.sock").string();
  auto p = Plan::prepare(d.runtime, sock, 0);
  ASSERT_TRUE(p.ok()) << p.error().message;
  auto p_host = (*p)->worker_host();
  UniqueFd program = listen_at(sock + "_5000");
  auto got = dial(**p, p_host.connect.get(), 5000);
  ASSERT_TRUE(got.worker_side.ok()) << got.worker_side.error().message;
  EXPECT_FALSE(got.agent);
  UniqueFd accepted(accept4(program.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted.valid());
  expect_connected(got.worker_side->get(), accepted.get());
  EXPECT_TRUE(fcntl(got.worker_side->get(), F_GETFL) & O_NONBLOCK);
  // Nobody on a port: the guest is refused, with the reason.
  auto none = dial(**p, p_host.connect.get(), 5001);
  ASSERT_FALSE(none.worker_side.ok());
  EXPECT_EQ(none.worker_side.error().err, ENOENT) << none.worker_side.error().message;

  // The default socket's ports are in its private directory, reached through its fd.
  auto q = Plan::prepare(d.runtime, "", 0);
  ASSERT_TRUE(q.ok()) << q.error().message;
  auto q_host = (*q)->worker_host();
  UniqueFd in_dir = listen_at((*q)->socket_path() + "_6000");
  auto got_q = dial(**q, q_host.connect.get(), 6000);
  ASSERT_TRUE(got_q.worker_side.ok()) << got_q.worker_side.error().message;
  UniqueFd accepted_q(accept4(in_dir.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted_q.valid());
  expect_connected(accepted_q.get(), got_q.worker_side->get());
  unlink(((*q)->socket_path() + "_6000").c_str());
}

TEST(VmVsock, TheFirstDialToTheAgentPortIsTheBrokersWhoeverListensThere) {
  Dirs d;
  std::string sock = (d.root / "vm.sock").string();
  auto p = Plan::prepare(d.runtime, sock, 1124);
  ASSERT_TRUE(p.ok()) << p.error().message;
  auto p_host = (*p)->worker_host();
  // Another program listening on <socket>_1124 is not sent the guest's agent.
  UniqueFd squatter = listen_at(sock + "_1124");
  auto first = dial(**p, p_host.connect.get(), 1124);
  ASSERT_TRUE(first.worker_side.ok()) << first.worker_side.error().message;
  ASSERT_TRUE(first.agent.has_value());
  expect_connected(first.worker_side->get(), first.agent->get());
  expect_connected(first.agent->get(), first.worker_side->get());
  UniqueFd none(accept4(squatter.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  EXPECT_FALSE(none.valid());
  // Later dials to that port are like any other.
  auto second = dial(**p, p_host.connect.get(), 1124);
  ASSERT_TRUE(second.worker_side.ok()) << second.worker_side.error().message;
  EXPECT_FALSE(second.agent.has_value());
  UniqueFd accepted(accept4(squatter.get(), nullptr, nullptr, SOCK_CLOEXEC));
  EXPECT_TRUE(accepted.valid());
}

TEST(VmVsock, AMalformedRequestIsDroppedAndAClosedChannelIsNoticed) {
  Dirs d;
  auto p = Plan::prepare(d.runtime, (d.root / "vm.sock").string(), 0);
  ASSERT_TRUE(p.ok()) << p.error().message;
  auto p_host = (*p)->worker_host();
  int worker_end = p_host.connect.get();
  ASSERT_EQ(send(worker_end, "bad", 3, 0), 3);
  EXPECT_FALSE((*p)->serve_connect_requests());
  pollfd pfd{worker_end, POLLIN, 0};
  EXPECT_EQ(poll(&pfd, 1, 0), 0) << "a malformed request was answered";
  EXPECT_GE((*p)->connect_channel(), 0);
  p_host.connect.reset();  // The broker's copy of the worker's end closed: the channel is at EOF.
  EXPECT_FALSE((*p)->serve_connect_requests());
  EXPECT_LT((*p)->connect_channel(), 0);
}

}  // namespace
}  // namespace moss::vmvsock
