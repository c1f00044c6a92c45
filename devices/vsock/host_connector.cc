#include "devices/vsock/host_connector.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <cerrno>
#include <cstring>

#include "devices/vsock/hybrid.h"

namespace moss::vsock {
namespace {

int64_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

Result<UniqueFd> StarterConnector::connect(uint32_t port) {
  const uint32_t seq = ++seq_;
  auto request = encode_connect_request({seq, port});
  iovec out{request.data(), request.size()};
  msghdr out_msg{};
  out_msg.msg_iov = &out;
  out_msg.msg_iovlen = 1;
  ssize_t sent;
  do {
    sent = ::sendmsg(fd_, &out_msg, MSG_NOSIGNAL);  // sendmsg: what vhost-user.policy allows.
  } while (sent < 0 && errno == EINTR);
  if (sent != static_cast<ssize_t>(request.size())) {
    return sys_error("ask the starter to connect");
  }
  const int64_t deadline = now_ms() + timeout_ms_;
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) return make_error("the starter did not answer a connect request in time", ETIMEDOUT);
    pollfd p{fd_, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("wait for the starter");
    if (n == 0) continue;
    uint8_t buf[kConnectMessageBytes + 1];
    iovec iov{buf, sizeof buf};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t got = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got < 0) return sys_error("read the starter's answer");
    if (got == 0) return make_error("the starter closed its connect channel", EPIPE);
    // Own whatever fd came along first, so that every way out below closes it.
    UniqueFd attached;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int))) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
        attached.reset(fd);
      }
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) continue;  // Not one of the starter's answers.
    auto reply = decode_connect_reply(std::span<const uint8_t>(buf, static_cast<size_t>(got)));
    if (!reply.ok() || reply->seq != seq) continue;  // Malformed, or late for a request that timed out.
    if (reply->error != 0) {
      return errno_error_code(reply->error, "the starter could not connect");
    }
    struct stat st;
    if (!attached.valid() || ::fstat(attached.get(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
      return make_error("the starter's answer carried no socket", EPROTO);
    }
    int flags = ::fcntl(attached.get(), F_GETFL);
    if (flags < 0 || ::fcntl(attached.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
      return sys_error("make the host socket non-blocking");
    }
    return attached;
  }
}

}  // namespace moss::vsock
