// The moss-vsock binary as a user, a VMM or the broker runs it: exit statuses and messages,
// --print-capabilities, signals, the life cycle of both socket paths, and --fd. Each test
// execs $MOSS_BUILD_DIR/moss-vsock.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "devices/vsock/cli.h"
#include "devices/worker/control.h"
#include "devices/worker/test_binary.h"
#include "ipc/channel.h"
#include "ipc/worker.capnp.h"
#include "tests/support/subprocess.h"
#include "vhost-user/frontend.h"

namespace moss::vsock {
namespace {

using std::chrono::seconds;

std::string moss_vsock() { return moss::test::build_dir() + "/moss-vsock"; }

using moss::test::connect_unix;
using moss::test::path_exists;

bool listening(const std::string& path) { return connect_unix(path).valid(); }

void wait_listening(const std::string& path) {
  for (int i = 0; i < 400 && !listening(path); i++) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(listening(path)) << "moss-vsock does not listen on " << path;
}

void expect_one_sentence(const std::string& err) { runtime::testing::expect_one_sentence("moss-vsock", err); }

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/moss-vsock-bin-XXXXXX";
    EXPECT_NE(::mkdtemp(tmpl), nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(VsockBinary, PrintCapabilitiesIsTheVhostUserJson) {
  runtime::testing::expect_capabilities_and_help(moss_vsock(), "moss-vsock", capabilities_json());
}

TEST(VsockBinary, BadCommandLineExitsTwo) {
  runtime::testing::expect_usage_errors(moss_vsock(), "moss-vsock",
                                        {{},
                                         {"--fd", "3", "--uds-path", "/tmp/x"},
                                         {"--fd", "3", "--guest-cid", "1", "--uds-path", "/tmp/x"},
                                         {"--bogus"}});
}

TEST(VsockBinary, UnusableSocketPathsExitOne) {
  TempDir dir;
  std::string file = dir.path() + "/plain";
  std::fclose(std::fopen(file.c_str(), "w"));
  auto r = moss::test::run({moss_vsock(), "--socket-path", dir.path() + "/s", "--guest-cid", "3", "--uds-path", file}, seconds(10));
  EXPECT_EQ(r.exit_code, 1);
  expect_one_sentence(r.err);
  EXPECT_NE(r.err.find(file), std::string::npos) << r.err;
  auto fd = moss::test::run({moss_vsock(), "--fd", "77", "--guest-cid", "3", "--uds-path", dir.path() + "/u"}, seconds(10));
  EXPECT_EQ(fd.exit_code, 1);
  EXPECT_NE(fd.err.find("--fd 77 is not an open socket"), std::string::npos) << fd.err;
  EXPECT_FALSE(path_exists(dir.path() + "/u"));
}

TEST(VsockBinary, SigtermExitsZeroAndRemovesBothSockets) {
  TempDir dir;
  std::string sock = dir.path() + "/vhost.sock", uds = dir.path() + "/vsock.sock";
  // A socket left by a worker that died is replaced.
  {
    UniqueFd stale(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", uds.c_str());
    ASSERT_EQ(::bind(stale.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  moss::test::Process p({moss_vsock(), "--socket-path", sock, "--guest-cid", "3", "--uds-path", uds});
  wait_listening(sock);
  wait_listening(uds);
  // A second worker on the same paths is refused while this one lives.
  auto twin = moss::test::run({moss_vsock(), "--socket-path", dir.path() + "/other", "--guest-cid", "4", "--uds-path", uds}, seconds(10));
  EXPECT_EQ(twin.exit_code, 1);
  EXPECT_NE(twin.err.find("already listening"), std::string::npos) << twin.err;
  auto fe = vhost_user::Frontend::connect(sock);
  ASSERT_TRUE(fe.ok()) << fe.error().message;
  auto features = fe->get_features();
  ASSERT_TRUE(features.ok());
  EXPECT_TRUE(*features & (1ull << 32));
  // A host program that asks for a port: the guest has no driver running, so nothing answers
  // it yet; SIGTERM must not wait for it.
  UniqueFd host = connect_unix(uds);
  ASSERT_TRUE(host.valid());
  ASSERT_EQ(::write(host.get(), "CONNECT 5\n", 10), 10);
  ASSERT_EQ(::kill(p.pid(), SIGTERM), 0);
  auto r = p.wait(seconds(5));
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(path_exists(sock));
  EXPECT_FALSE(path_exists(uds));
}

TEST(VsockBinary, FdModeExitsZeroWhenTheFrontendCloses) {
  TempDir dir;
  std::string uds = dir.path() + "/vsock.sock";
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);  // Not CLOEXEC: the child inherits sv[1].
  UniqueFd ours(sv[0]), theirs(sv[1]);
  ::fcntl(ours.get(), F_SETFD, FD_CLOEXEC);
  moss::test::Process p({moss_vsock(), "--fd", std::to_string(theirs.get()), "--guest-cid", "99", "--uds-path", uds});
  theirs.reset();
  vhost_user::Frontend fe(std::move(ours));
  ASSERT_TRUE(fe.set_protocol_features(1ull << 9).ok());  // CONFIG
  ASSERT_TRUE(fe.set_owner().ok());
  auto cfg = fe.get_config(0, 8);
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  EXPECT_EQ((*cfg)[0], 99);
  wait_listening(uds);
  { vhost_user::Frontend gone(std::move(fe)); }
  auto r = p.wait(seconds(5));
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(path_exists(uds));
}

TEST(VsockBinary, ControlFdAnswersDescribeAndShutdownEndsItWithZero) {
  TempDir dir;
  std::string uds = dir.path() + "/vsock.sock";
  int sv[2], cv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);  // Not CLOEXEC: the child inherits the second ends.
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, cv), 0);
  UniqueFd ours(sv[0]), theirs(sv[1]), control(cv[0]), their_control(cv[1]);
  ::fcntl(ours.get(), F_SETFD, FD_CLOEXEC);
  ::fcntl(control.get(), F_SETFD, FD_CLOEXEC);
  moss::test::Process p({moss_vsock(), "--fd", std::to_string(theirs.get()), "--control-fd",
                         std::to_string(their_control.get()), "--guest-cid", "99", "--uds-path", uds});
  theirs.reset();
  their_control.reset();
  auto ask = [&](runtime::ControlRequest r) -> std::vector<uint8_t> {
    auto req = worker::encode_request(r);
    EXPECT_EQ(::send(control.get(), req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
    std::vector<uint8_t> buf(ipc::kMaxPacketBytes);
    pollfd pf{control.get(), POLLIN, 0};
    if (::poll(&pf, 1, 5000) != 1) return {};
    ssize_t n = ::recv(control.get(), buf.data(), buf.size(), 0);
    buf.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return buf;
  };
  auto described = ipc::decode_packet(ask(runtime::ControlRequest::kDescribe));
  ASSERT_TRUE(described.ok()) << described.error().message;
  auto d = (*described)->root<ipc::WorkerToBroker>();
  ASSERT_TRUE(d.isDescription());
  EXPECT_EQ(std::string(d.getDescription().getKind().cStr()), "vsock");
  EXPECT_EQ(d.getDescription().getNumQueues(), 3u);
  ASSERT_EQ(d.getDescription().getDetails().size(), 2u);
  EXPECT_EQ(std::string(d.getDescription().getDetails()[0].getValue().cStr()), "99");
  auto shut = ipc::decode_packet(ask(runtime::ControlRequest::kShutdown));
  ASSERT_TRUE(shut.ok()) << shut.error().message;
  EXPECT_TRUE((*shut)->root<ipc::WorkerToBroker>().isShuttingDown());
  auto r = p.wait(seconds(5));
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(VsockBinary, HostProgramWithNoGuestConnectedIsClosed) {
  TempDir dir;
  std::string sock = dir.path() + "/vhost.sock", uds = dir.path() + "/vsock.sock";
  moss::test::Process p({moss_vsock(), "--socket-path", sock, "--guest-cid", "3", "--uds-path", uds});
  wait_listening(uds);
  for (const char* line : {"CONNECT 5\n", "HELLO\n"}) {
    UniqueFd host = connect_unix(uds);
    ASSERT_TRUE(host.valid());
    timeval tv{3, 0};
    ::setsockopt(host.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ASSERT_EQ(::write(host.get(), line, std::strlen(line)), static_cast<ssize_t>(std::strlen(line)));
    char c;
    EXPECT_EQ(::read(host.get(), &c, 1), 0) << line;
  }
  ASSERT_EQ(::kill(p.pid(), SIGINT), 0);
  EXPECT_EQ(p.wait(seconds(5)).exit_code, 0);
}

}  // namespace
}  // namespace moss::vsock
