#include "vhost-user/socket.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

#include "base/syscall.h"

namespace moss::vhost_user {
namespace {

// Space for exactly kMaxFds descriptors; a sender that attaches more sees MSG_CTRUNC here.
constexpr size_t kCmsgSpace = CMSG_SPACE(sizeof(int) * kMaxFds);

// Takes ownership of every SCM_RIGHTS fd in `msg`, so none leaks whatever happens next.
Result<void> collect_fds(msghdr& msg, std::vector<UniqueFd>& fds) {
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(c);
    for (size_t i = 0; i < n; i++) {
      int fd;
      std::memcpy(&fd, data + i * sizeof(int), sizeof fd);
      fds.emplace_back(fd);
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    return make_error("vhost-user peer attached more than 8 file descriptors to one message");
  }
  if (fds.size() > kMaxFds) {
    return make_error("vhost-user peer attached more than 8 file descriptors to one message");
  }
  return {};
}

using Clock = std::chrono::steady_clock;

// Waits until `sock` is ready for `events`, or fails once `deadline` has passed.
Result<void> wait_until(int sock, short events, Clock::time_point deadline, const char* what) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  pollfd p{sock, events, 0};
  MOSS_TRY(int ready, MOSS_SYS(::poll(&p, 1, static_cast<int>(std::max<int64_t>(left, 0)))));
  if (ready == 0) {
    return make_error(std::string("vhost-user peer ") + what + " for " + std::to_string(kMessageDeadlineMs) +
                      " ms in the middle of a message", ETIMEDOUT);
  }
  return {};
}

// Fills `buf` from the stream, collecting any fds that arrive with it. Returns false on EOF
// before the first byte when `eof_ok` is set. The first read may block (the caller saw the
// socket readable, or waits for a reply); after it, the rest has until `deadline`, set from
// the first byte of the message.
Result<bool> read_fully(int sock, std::span<uint8_t> buf, std::vector<UniqueFd>& fds, bool eof_ok,
                        std::optional<Clock::time_point>& deadline) {
  size_t done = 0;
  while (done < buf.size()) {
    alignas(cmsghdr) unsigned char control[kCmsgSpace];
    iovec iov{buf.data() + done, buf.size() - done};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | (deadline ? MSG_DONTWAIT : 0));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && deadline) {
      MOSS_TRY_VOID(wait_until(sock, POLLIN, *deadline, "sent nothing more"));
      continue;
    }
    if (n < 0) {
      int e = errno;
      return sys_error_code(e, "receive from", "the vhost-user socket");
    }
    MOSS_TRY_VOID(collect_fds(msg, fds));
    if (!deadline && n > 0) deadline = Clock::now() + std::chrono::milliseconds(kMessageDeadlineMs);
    if (n == 0) {
      if (done == 0 && eof_ok) return false;
      return make_error("vhost-user peer closed the connection in the middle of a message");
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

Result<void> send_bytes(int sock, std::span<const uint8_t> bytes, std::span<const int> fds) {
  MOSS_ASSERT(fds.size() <= kMaxFds);
  const auto deadline = Clock::now() + std::chrono::milliseconds(kMessageDeadlineMs);
  size_t done = 0;
  while (done < bytes.size()) {
    alignas(cmsghdr) unsigned char control[kCmsgSpace] = {};
    iovec iov{const_cast<uint8_t*>(bytes.data() + done), bytes.size() - done};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    // The fds ride with the first byte only; a partial send continues without them.
    if (done == 0 && !fds.empty()) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      MOSS_TRY_VOID(wait_until(sock, POLLOUT, deadline, "took nothing"));
      continue;
    }
    if (n < 0) {
      int e = errno;
      return sys_error_code(e, "send on", "the vhost-user socket");
    }
    done += static_cast<size_t>(n);
  }
  return {};
}

Result<void> send_message(int sock, const Message& m, std::span<const int> fds) {
  return send_bytes(sock, encode(m), fds);
}

Result<std::optional<RawMessage>> receive_raw(int sock) {
  RawMessage raw;
  raw.bytes.resize(kHeaderSize);
  std::optional<Clock::time_point> deadline;  // Set by the message's first byte.
  MOSS_TRY(bool got, read_fully(sock, raw.bytes, raw.fds, true, deadline));
  if (!got) return std::optional<RawMessage>();
  MOSS_TRY(Header h, decode_header(raw.bytes));
  raw.bytes.resize(kHeaderSize + h.size);
  MOSS_TRY(bool rest, read_fully(sock, std::span<uint8_t>(raw.bytes).subspan(kHeaderSize), raw.fds, false, deadline));
  (void)rest;
  return std::optional<RawMessage>(std::move(raw));
}

Result<std::optional<Received>> receive_message(int sock, Direction dir) {
  MOSS_TRY(auto raw, receive_raw(sock));
  if (!raw) return std::optional<Received>();
  MOSS_TRY(Message m, decode(raw->bytes, raw->fds.size(), dir));
  return std::optional<Received>(Received{std::move(m), std::move(raw->fds)});
}

}  // namespace moss::vhost_user
