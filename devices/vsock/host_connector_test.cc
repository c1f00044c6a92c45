#include "devices/vsock/host_connector.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "devices/vsock/hybrid.h"

namespace moss::vsock {
namespace {

struct Channel {
  UniqueFd worker, starter;
  Channel() {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    worker.reset(sv[0]);
    starter.reset(sv[1]);
  }
};

ConnectRequest read_request(int fd) {
  uint8_t buf[16];
  ssize_t n = recv(fd, buf, sizeof buf, 0);
  EXPECT_EQ(n, 8);
  auto r = decode_connect_request(std::span<const uint8_t>(buf, n > 0 ? static_cast<size_t>(n) : 0));
  EXPECT_TRUE(r.ok());
  return r.ok() ? *r : ConnectRequest{};
}

void answer(int fd, ConnectReply reply, int attach = -1) { ASSERT_EQ(send_connect_reply(fd, reply, attach), 8); }

TEST(StarterConnector, GetsTheConnectedSocketTheStarterSends) {
  Channel ch;
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd far(pair[1]), near(pair[0]);
  std::thread starter([&] {
    ConnectRequest r = read_request(ch.starter.get());
    EXPECT_EQ(r.port, 5000u);
    answer(ch.starter.get(), {r.seq, 0}, near.get());
  });
  StarterConnector c(ch.worker.get());
  auto got = c.connect(5000);
  starter.join();
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_TRUE(fcntl(got->get(), F_GETFL) & O_NONBLOCK) << "the device needs non-blocking sockets";
  EXPECT_TRUE(fcntl(got->get(), F_GETFD) & FD_CLOEXEC);
  ASSERT_EQ(write(got->get(), "x", 1), 1);
  char b;
  EXPECT_EQ(read(far.get(), &b, 1), 1);
}

TEST(StarterConnector, ARefusalIsItsErrno) {
  Channel ch;
  std::thread starter([&] {
    ConnectRequest r = read_request(ch.starter.get());
    answer(ch.starter.get(), {r.seq, ECONNREFUSED});
  });
  StarterConnector c(ch.worker.get());
  auto got = c.connect(1);
  starter.join();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().err, ECONNREFUSED);
}

TEST(StarterConnector, ALateAnswerIsDroppedAndTheNextRequestGetsItsOwn) {
  Channel ch;
  StarterConnector c(ch.worker.get(), 100);
  auto first = c.connect(7);  // Nobody answers in time.
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.error().err, ETIMEDOUT);
  ConnectRequest late = read_request(ch.starter.get());
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd a(pair[0]), b(pair[1]);
  answer(ch.starter.get(), {late.seq, 0}, a.get());  // Too late: its socket must be closed, not used.
  std::thread starter([&] {
    ConnectRequest r = read_request(ch.starter.get());
    EXPECT_EQ(r.port, 8u);
    EXPECT_NE(r.seq, late.seq);
    answer(ch.starter.get(), {r.seq, ENOENT});
  });
  auto second = c.connect(8);
  starter.join();
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().err, ENOENT);
  a.reset();
  char x;
  EXPECT_EQ(read(b.get(), &x, 1), 0) << "the late answer's socket is still open in the worker";
}

TEST(StarterConnector, AGoneStarterIsAnError) {
  Channel ch;
  ch.starter.reset();
  StarterConnector c(ch.worker.get());
  EXPECT_FALSE(c.connect(1).ok());
}

}  // namespace
}  // namespace moss::vsock
