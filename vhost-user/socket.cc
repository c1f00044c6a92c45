#include "vhost-user/socket.h"

#include <sys/socket.h>

#include <cstring>

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

// Fills `buf` from the stream, collecting any fds that arrive with it. Returns false on EOF
// before the first byte when `eof_ok` is set.
Result<bool> read_fully(int sock, std::span<uint8_t> buf, std::vector<UniqueFd>& fds, bool eof_ok) {
  size_t done = 0;
  while (done < buf.size()) {
    alignas(cmsghdr) unsigned char control[kCmsgSpace];
    iovec iov{buf.data() + done, buf.size() - done};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    MOSS_TRY(ssize_t n, MOSS_SYS(::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)));
    MOSS_CHECK(collect_fds(msg, fds));
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
    MOSS_TRY(ssize_t n, MOSS_SYS(::sendmsg(sock, &msg, MSG_NOSIGNAL)));
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
  MOSS_TRY(bool got, read_fully(sock, raw.bytes, raw.fds, true));
  if (!got) return std::optional<RawMessage>();
  MOSS_TRY(Header h, decode_header(raw.bytes));
  raw.bytes.resize(kHeaderSize + h.size);
  MOSS_TRY(bool rest, read_fully(sock, std::span<uint8_t>(raw.bytes).subspan(kHeaderSize), raw.fds, false));
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
