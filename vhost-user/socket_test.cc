#include "vhost-user/socket.h"

#include <dirent.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>

namespace moss::vhost_user {
namespace {

struct Pair {
  UniqueFd a, b;
};

Pair socket_pair() {
  int sv[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  return Pair{UniqueFd(sv[0]), UniqueFd(sv[1])};
}

UniqueFd eventfd_or_die() {
  int fd = ::eventfd(0, EFD_CLOEXEC);
  EXPECT_GE(fd, 0);
  return UniqueFd(fd);
}

int open_fd_count() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n - 1;  // The directory's own fd.
}

// True if `a` and `b` are the same eventfd: a value written to one is read from the other.
bool same_eventfd(int a, int b) {
  uint64_t one = 1, got = 0;
  if (::write(a, &one, 8) != 8) return false;
  return ::read(b, &got, 8) == 8 && got == 1;
}

TEST(VhostUserSocket, SendsAMessageWithItsFds) {
  auto p = socket_pair();
  UniqueFd e0 = eventfd_or_die(), e1 = eventfd_or_die(), e2 = eventfd_or_die();
  MemoryRegion r{0, 4096, 0x1000, 0};
  Message m = make_request(Request::kSetMemTable, MemoryTable{{r, r, r}}, true);
  int fds[] = {e0.get(), e1.get(), e2.get()};
  ASSERT_TRUE(send_message(p.a.get(), m, fds).ok());

  auto rx = receive_message(p.b.get(), Direction::kRequest);
  ASSERT_TRUE(rx.ok()) << rx.error().message;
  ASSERT_TRUE(rx->has_value());
  EXPECT_EQ((*rx)->message, m);
  ASSERT_EQ((*rx)->fds.size(), 3u);
  for (int i = 0; i < 3; i++) EXPECT_TRUE(same_eventfd(fds[i], (*rx)->fds[i].get())) << i;
}

TEST(VhostUserSocket, ReturnsNothingWhenThePeerClosesBetweenMessages) {
  auto p = socket_pair();
  ASSERT_TRUE(send_message(p.a.get(), make_request(Request::kGetFeatures)).ok());
  p.a.reset();
  auto first = receive_message(p.b.get(), Direction::kRequest);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(first->has_value());
  auto second = receive_message(p.b.get(), Direction::kRequest);
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->has_value());
}

TEST(VhostUserSocket, ACloseInsideAMessageIsAnError) {
  auto p = socket_pair();
  auto bytes = encode(make_request(Request::kSetFeatures, uint64_t{1}));
  bytes.resize(bytes.size() - 3);
  ASSERT_TRUE(send_bytes(p.a.get(), bytes).ok());
  p.a.reset();
  auto r = receive_message(p.b.get(), Direction::kRequest);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("in the middle of a message"), std::string::npos);
}

TEST(VhostUserSocket, ReassemblesAMessageSentInPieces) {
  auto p = socket_pair();
  UniqueFd e = eventfd_or_die();
  auto bytes = encode(make_request(Request::kSetVringKick, uint64_t{2}));
  int fd = e.get();
  ASSERT_TRUE(send_bytes(p.a.get(), std::span<const uint8_t>(bytes).subspan(0, 5), std::span<const int>(&fd, 1)).ok());
  ASSERT_TRUE(send_bytes(p.a.get(), std::span<const uint8_t>(bytes).subspan(5, 10)).ok());
  ASSERT_TRUE(send_bytes(p.a.get(), std::span<const uint8_t>(bytes).subspan(15)).ok());
  auto rx = receive_message(p.b.get(), Direction::kRequest);
  ASSERT_TRUE(rx.ok()) << rx.error().message;
  EXPECT_EQ(*(*rx)->message.as<uint64_t>(), 2u);
  ASSERT_EQ((*rx)->fds.size(), 1u);
  EXPECT_TRUE(same_eventfd(fd, (*rx)->fds[0].get()));
}

TEST(VhostUserSocket, ClosesTheFdsOfAMalformedMessage) {
  auto p = socket_pair();
  UniqueFd e0 = eventfd_or_die(), e1 = eventfd_or_die();
  int fds[] = {e0.get(), e1.get()};
  // SET_FEATURES takes no fds.
  ASSERT_TRUE(send_message(p.a.get(), make_request(Request::kSetFeatures, uint64_t{1}), fds).ok());
  int before = open_fd_count();
  auto r = receive_message(p.b.get(), Direction::kRequest);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(open_fd_count(), before);
}

TEST(VhostUserSocket, RefusesMoreThanEightFdsAndLeaksNone) {
  auto p = socket_pair();
  std::vector<UniqueFd> owned;
  std::vector<int> fds;
  for (int i = 0; i < 10; i++) {
    owned.push_back(eventfd_or_die());
    fds.push_back(owned.back().get());
  }
  // Bypass send_bytes (which asserts the limit) to act as a misbehaving peer.
  auto bytes = encode(make_request(Request::kGetFeatures));
  alignas(cmsghdr) unsigned char control[CMSG_SPACE(sizeof(int) * 10)] = {};
  iovec iov{bytes.data(), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * 10);
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * 10);
  ASSERT_EQ(::sendmsg(p.a.get(), &msg, 0), static_cast<ssize_t>(bytes.size()));

  int before = open_fd_count();
  auto r = receive_raw(p.b.get());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("more than 8"), std::string::npos);
  EXPECT_EQ(open_fd_count(), before);
}

TEST(VhostUserSocket, RefusesAnOversizeHeaderBeforeReadingThePayload) {
  auto p = socket_pair();
  uint32_t h[3] = {1, kVersion, 1u << 20};
  ASSERT_EQ(::write(p.a.get(), h, sizeof h), static_cast<ssize_t>(sizeof h));
  auto r = receive_raw(p.b.get());  // Would block forever if it tried to read 1 MiB.
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("4096-byte limit"), std::string::npos);
}

TEST(VhostUserSocket, SendingToAClosedPeerIsAnErrorNotASignal) {
  auto p = socket_pair();
  p.b.reset();
  auto r = send_message(p.a.get(), make_request(Request::kGetFeatures));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().err, EPIPE);
}

}  // namespace
}  // namespace moss::vhost_user
