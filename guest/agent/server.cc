// The agent's connections (see server.h).
#include "guest/agent/server.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

namespace moss::agent {
namespace {

int g_sigchld_write_fd = -1;  // The handler's only way to the pipe.

void on_sigchld(int) {
  int saved = errno;
  char b = 0;
  (void)!write(g_sigchld_write_fd, &b, 1);  // Full pipe: a wake-up is pending anyway.
  errno = saved;
}

bool set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0;
}

int64_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

Server::Server(UniqueFd listen_fd, GenerationHandler on_generation, Relisten relisten)
    : listen_(std::move(listen_fd)), on_generation_(on_generation), relisten_(relisten) {
  if (listen_.valid() && !set_nonblock(listen_.get())) listener_failed();
}

void Server::add_connection(UniqueFd conn) {
  if (sessions_.size() >= kMaxSessions) return;  // `conn` closes: the host sees EOF.
  sessions_.push_back(std::make_unique<Session>(std::move(conn), on_generation_));
}

void Server::listener_failed() {
  listen_.reset();
  if (relisten_ == nullptr || relisten_at_ms_ >= 0) return;
  relisten_at_ms_ = now_ms() + relisten_delay_ms_;
}

void Server::try_relisten() {
  if (relisten_at_ms_ < 0 || now_ms() < relisten_at_ms_) return;
  relisten_at_ms_ = -1;
  auto fd = relisten_();
  if (fd.ok() && set_nonblock(fd->get())) {
    listen_ = std::move(fd).value();
    relisten_delay_ms_ = kFirstRelistenDelayMs;
    ++relistens_;
    return;
  }
  relisten_delay_ms_ = relisten_delay_ms_ * 2 > kMaxRelistenDelayMs ? kMaxRelistenDelayMs : relisten_delay_ms_ * 2;
  relisten_at_ms_ = now_ms() + relisten_delay_ms_;
}

int Server::timeout_ms() const {
  if (relisten_at_ms_ < 0) return -1;
  int64_t left = relisten_at_ms_ - now_ms();
  return left < 0 ? 0 : static_cast<int>(left);
}

void Server::fill(std::vector<pollfd>* fds) {
  if (listen_.valid()) fds->push_back({listen_.get(), POLLIN, 0});
  counts_.resize(sessions_.size());
  for (size_t i = 0; i < sessions_.size(); ++i) counts_[i] = sessions_[i]->fill(fds);
}

void Server::handle(const pollfd* fds, size_t n) {
  size_t at = 0;
  bool accept_now = false, listener_broken = false;
  if (listen_.valid() && at < n && fds[at].fd == listen_.get()) {
    listener_broken = (fds[at].revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
    accept_now = !listener_broken && fds[at].revents != 0;
    ++at;
  }
  for (size_t i = 0; i < sessions_.size() && i < counts_.size(); ++i) {
    size_t k = counts_[i] <= n - at ? counts_[i] : n - at;
    sessions_[i]->handle(fds + at, k);
    at += k;
  }
  counts_.clear();
  for (auto& s : sessions_) {
    int st;
    if (shutdown_status_ < 0 && s->shutdown_requested(&st)) shutdown_status_ = st;
  }
  std::erase_if(sessions_, [](const std::unique_ptr<Session>& s) { return s->done(); });
  if (listener_broken) listener_failed();
  if (accept_now) accept_all();
  try_relisten();
}

void Server::accept_all() {
  for (;;) {
    int c = accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == ECONNRESET || errno == EPROTO) continue;
      // EAGAIN, or a failure the next connection may not have (EMFILE, ENOMEM).
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM)
        return;
      listener_failed();  // EINVAL (no longer listening), EBADF, ...: make a new one.
      return;
    }
    add_connection(UniqueFd(c));
  }
}

bool Server::child_exited(pid_t pid, int status) {
  for (auto& s : sessions_) {
    if (s->pid() == pid) {
      s->child_exited(status);
      int st;
      if (shutdown_status_ < 0 && s->shutdown_requested(&st)) shutdown_status_ = st;
      return true;  // A session done now goes in handle(): fill()'s entries still count it.
    }
  }
  return false;
}

Result<void> ChildSignals::install() {
  int p[2];
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return sys_error("create", "the SIGCHLD pipe");
  read_.reset(p[0]);
  write_.reset(p[1]);
  g_sigchld_write_fd = write_.get();
  struct sigaction sa = {};
  sa.sa_handler = on_sigchld;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  if (sigaction(SIGCHLD, &sa, nullptr) != 0) return sys_error("install", "the SIGCHLD handler");
  return {};
}

void ChildSignals::drain() {
  char buf[64];
  while (read(read_.get(), buf, sizeof(buf)) > 0) {
  }
}

void reap_children(Server* server, pid_t also, int* also_status, bool* also_reaped) {
  for (;;) {
    int st = 0;
    pid_t p = waitpid(-1, &st, WNOHANG);
    if (p < 0 && errno == EINTR) continue;
    if (p <= 0) return;  // None left that ended (0), or no children at all (ECHILD).
    if (p == also && also_status != nullptr) {
      *also_status = st;
      if (also_reaped != nullptr) *also_reaped = true;
      continue;
    }
    server->child_exited(p, st);  // Not a session's: an orphan, now reaped.
  }
}

namespace {

// A vsock stream socket and the address cid:port.
Result<UniqueFd> vsock_socket(uint32_t cid, uint32_t port, sockaddr_vm* addr) {
  UniqueFd s(socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return sys_error("create", "a vsock socket (is the vsock module loaded?)");
  *addr = {};
  addr->svm_family = AF_VSOCK;
  addr->svm_cid = cid;
  addr->svm_port = port;
  return s;
}

}  // namespace

Result<UniqueFd> listen_vsock(uint32_t port) {
  sockaddr_vm addr;
  MOSS_TRY(UniqueFd s, vsock_socket(VMADDR_CID_ANY, port, &addr));
  if (bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return sys_error("bind", "vsock port " + std::to_string(port));
  }
  if (listen(s.get(), 16) != 0) return sys_error("listen on", "vsock port " + std::to_string(port));
  return s;
}

Result<UniqueFd> dial_vsock(uint32_t cid, uint32_t port) {
  sockaddr_vm addr;
  MOSS_TRY(UniqueFd s, vsock_socket(cid, port, &addr));
  if (connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return sys_error("connect to", "vsock " + std::to_string(cid) + ":" + std::to_string(port));
  }
  return s;
}

int run_server(Server* server, bool until_idle) {
  signal(SIGPIPE, SIG_IGN);
  ChildSignals sig;
  if (!sig.install().ok()) return -1;
  std::vector<pollfd> fds;
  int status = -1;
  while (!(until_idle && server->session_count() == 0)) {
    fds.clear();
    fds.push_back({sig.fd(), POLLIN, 0});
    server->fill(&fds);
    int r = poll(fds.data(), fds.size(), server->timeout_ms());
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents) {
      sig.drain();
      reap_children(server);
    }
    server->handle(fds.data() + 1, fds.size() - 1);
    if (server->shutdown_requested(&status)) break;
  }
  return status;
}

int serve_connection(UniqueFd conn, GenerationHandler on_generation) {
  Server server{UniqueFd(), on_generation};
  server.add_connection(std::move(conn));
  return run_server(&server, true);
}

}  // namespace moss::agent
