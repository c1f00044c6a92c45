#include "broker/vm_vsock.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "base/log.h"
#include "base/syscall.h"
#include "broker/control.h"
#include "devices/vsock/hybrid.h"
#include "guest/agent/client.h"

namespace moss::vmvsock {
namespace {

constexpr char kSocketName[] = "vsock";

// The reply to one request, with `fd` attached when it is valid.
void reply(int channel, uint32_t seq, int error, int fd) {
  // The worker waits for this answer; if its socket is full or gone, it times out instead.
  (void)vsock::send_connect_reply(channel, {seq, error}, fd, MSG_DONTWAIT);
}

}  // namespace

Result<std::unique_ptr<Plan>> Plan::prepare(const std::string& runtime_dir, const std::string& socket,
                                            uint32_t dial_port) {
  MOSS_TRY(privdir::Dir runtime, control::open_runtime_dir(runtime_dir, /*create=*/true));
  MOSS_TRY(privdir::Dir leases, runtime.sub(cid::kLeaseDir, "vsock CID directory", /*create=*/true));
  MOSS_TRY(cid::Lease lease, cid::Lease::take(leases));
  std::unique_ptr<Plan> p(new Plan(std::move(lease)));
  p->runtime_ = std::move(runtime);
  p->dial_port_ = dial_port;
  if (socket.empty()) {
    p->dir_name_ = "cid-" + std::to_string(p->cid());
    // The CID is ours alone, so anything in its directory was left by a VM that crashed.
    MOSS_TRY(p->dir_, p->runtime_.sub(p->dir_name_, "vsock directory", /*create=*/true));
    p->socket_ = p->dir_.path_of(kSocketName);
  } else if (socket[0] == '/') {
    p->socket_ = socket;
  } else {
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == nullptr) return sys_error("tell", "the working directory");
    p->socket_ = std::string(cwd) + "/" + socket;
  }
  // Host programs listen on "<socket>_<port>" for the guest: leave room for the longest port.
  constexpr size_t kMax = sizeof(sockaddr_un{}.sun_path) - 1 - 11;
  if (p->socket_.size() > kMax) {
    return make_error("the vsock socket path " + p->socket_ + " is longer than " + std::to_string(kMax) + " bytes");
  }
  if (p->dir_.valid()) {
    MOSS_TRY(p->listener_, privdir::listen_at(p->dir_, kSocketName, 64, /*nonblocking=*/true));
    MOSS_TRY(auto guard, privdir::SocketGuard::after_listen(p->dir_, kSocketName));
    p->dir_socket_guard_.emplace(std::move(guard));
  } else {
    std::string dir = parent_dir(p->socket_);
    struct stat st;
    if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return make_error("the directory of the vsock socket " + p->socket_ + " does not exist");
    }
    MOSS_TRY(p->listener_, listen_unix(p->socket_, 64, /*nonblocking=*/true));
    p->socket_guard_.emplace(p->socket_);
  }
  int sv[2];
  MOSS_TRY_VOID(MOSS_SYS(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv)));
  p->channel_.reset(sv[0]);
  p->worker_channel_.reset(sv[1]);
  int flags = fcntl(sv[0], F_GETFL);
  MOSS_TRY_VOID(MOSS_SYS(fcntl(sv[0], F_SETFL, flags | O_NONBLOCK)));
  return p;
}

device::vsock::Host Plan::worker_host() {
  return device::vsock::Host{cid(), std::move(listener_), std::move(worker_channel_)};
}

Result<UniqueFd> Plan::connect_port(uint32_t port) const {
  return connect_socket(dir_.valid() ? vsock::guest_port_path(kSocketName, port) : vsock::guest_port_path(socket_, port));
}

Result<UniqueFd> Plan::connect_agent() const {
  MOSS_TRY(UniqueFd sock, connect_socket(dir_.valid() ? std::string(kSocketName) : socket_));
  // A fresh socket's buffer takes the short line whole.
  std::string line = agent::connect_line(agent::kAgentPort);
  ssize_t n = send(sock.get(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n < 0) return sys_error("send", "CONNECT to the vsock worker");
  if (static_cast<size_t>(n) != line.size()) return make_error("the vsock worker took only part of CONNECT");
  return sock;
}

Result<UniqueFd> Plan::connect_socket(const std::string& name) const {
  if (dir_.valid()) return privdir::connect_at(dir_, name, SOCK_STREAM | SOCK_NONBLOCK);
  const std::string& path = name;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return make_error(path + " is too long", ENAMETOOLONG);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  MOSS_TRY(int raw, MOSS_SYS(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)));
  UniqueFd sock(raw);
  // A Unix stream connect completes at once or fails (EAGAIN: the listener's backlog is full).
  if (connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return sys_error("connect to", path);
  }
  return sock;
}

std::optional<UniqueFd> Plan::serve_connect_requests() {
  std::optional<UniqueFd> agent;
  for (;;) {
    uint8_t buf[vsock::kConnectMessageBytes + 1];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(channel_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return agent;  // All answered.
    if (n <= 0) {
      channel_.reset();  // The worker is gone: nothing more will come.
      return agent;
    }
    // The worker sends no fds; close any it did.
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; i++) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        close(fd);
      }
    }
    auto request = vsock::decode_connect_request(std::span<const uint8_t>(buf, static_cast<size_t>(n)));
    if (!request) {
      LOG_WARN("the vsock worker sent a malformed connect request: %s", request.error().message.c_str());
      continue;
    }
    if (dial_port_ != 0 && request->port == dial_port_ && !dialed_) {
      int sv[2];
      if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        reply(channel_.get(), request->seq, errno, -1);
        continue;
      }
      dialed_ = true;
      UniqueFd ours(sv[0]), theirs(sv[1]);
      reply(channel_.get(), request->seq, 0, theirs.get());
      agent = std::move(ours);
      continue;
    }
    auto sock = connect_port(request->port);
    reply(channel_.get(), request->seq, sock ? 0 : (sock.error().err ? sock.error().err : ECONNREFUSED),
          sock ? sock->get() : -1);
  }
}

Plan::~Plan() {
  socket_guard_.reset();
  dir_socket_guard_.reset();
  if (dir_.valid()) {
    dir_ = privdir::Dir();
    runtime_.remove_dir(dir_name_);  // Only if empty: a user's own sockets stay.
  }
}

}  // namespace moss::vmvsock
