#include "devices/vsock/worker.h"

#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

#include "base/log.h"
#include "base/syscall.h"
#include "devices/vsock/hybrid.h"

namespace moss::vsock {

uint64_t monotonic_ms() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

struct Worker::KickWatch {
  Worker* worker = nullptr;
  uint32_t queue = 0;
  event* ev = nullptr;
  ~KickWatch() {
    if (ev != nullptr) event_free(ev);
  }
};

struct Worker::Connection {
  UniqueFd sock;
  event* sock_event = nullptr;
  std::unique_ptr<VsockDevice> device;
  std::unique_ptr<vhost_user::Backend> backend;
  std::map<std::pair<int, uint32_t>, std::unique_ptr<KickWatch>> kicks;
  ~Connection() {
    if (sock_event != nullptr) event_free(sock_event);
  }
};

struct Worker::PendingHost {
  UniqueFd fd;
  event* ev = nullptr;
  std::string line;
  uint64_t deadline_ms = 0;
  ~PendingHost() {
    if (ev != nullptr) event_free(ev);
  }
};

Worker::Worker(DeviceOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<Worker>> Worker::create(DeviceOptions options) {
  std::unique_ptr<Worker> w(new Worker(std::move(options)));
  MOSS_CHECK(w->init());
  return w;
}

Result<void> Worker::init() {
  base_ = event_base_new();
  if (base_ == nullptr) return make_error("cannot create the libevent loop");
  timer_ = event_new(base_, -1, EV_PERSIST, on_timer, this);
  timeval second{1, 0};
  if (timer_ == nullptr || event_add(timer_, &second) != 0) return make_error("cannot start the worker's timer");
  return {};
}

Worker::~Worker() {
  if (conn_) close_connection();
  pending_.clear();
  MOSS_ASSERT(host_events_.empty());  // The device unwatched its sockets as it went.
  for (event* ev : {sigterm_, sigint_, accept_event_, host_accept_event_, timer_}) {
    if (ev != nullptr) event_free(ev);
  }
  if (base_ != nullptr) event_base_free(base_);
}

Result<void> Worker::stop_on_signals() {
  sigterm_ = evsignal_new(base_, SIGTERM, on_signal, this);
  sigint_ = evsignal_new(base_, SIGINT, on_signal, this);
  if (sigterm_ == nullptr || sigint_ == nullptr || event_add(sigterm_, nullptr) != 0 ||
      event_add(sigint_, nullptr) != 0) {
    return make_error("cannot handle SIGTERM and SIGINT");
  }
  return {};
}

Result<void> Worker::open_connection(UniqueFd sock) {
  MOSS_ASSERT(!conn_);
  auto c = std::make_unique<Connection>();
  c->sock = std::move(sock);
  HostEnv env{[this](int fd, bool read, bool write) { watch_host(fd, read, write); }, monotonic_ms};
  c->device = std::make_unique<VsockDevice>(options_, std::move(env));
  c->backend = std::make_unique<vhost_user::Backend>(
      *c->device, [this](int fd, uint32_t q, bool add) { watch_kick(fd, q, add); });
  c->device->attach(*c->backend);
  c->sock_event = event_new(base_, c->sock.get(), EV_READ | EV_PERSIST, on_socket, this);
  if (c->sock_event == nullptr || event_add(c->sock_event, nullptr) != 0) {
    return make_error("cannot watch the vhost-user socket");
  }
  conn_ = std::move(c);
  LOG_INFO("a frontend connected");
  return {};
}

void Worker::close_connection() {
  MOSS_ASSERT(conn_);
  event_free(conn_->sock_event);
  conn_->sock_event = nullptr;
  // The Backend stops every running ring (the kick watches go through watch_kick) and unmaps
  // guest memory; then the device closes the host sockets of every connection it carried.
  conn_->backend.reset();
  MOSS_ASSERT(conn_->kicks.empty());
  conn_.reset();
  if (one_connection_) {
    if (running_) event_base_loopbreak(base_);
  } else if (accept_event_ != nullptr) {
    event_add(accept_event_, nullptr);
  }
}

void Worker::watch_kick(int fd, uint32_t queue, bool add) {
  MOSS_ASSERT(conn_);
  auto key = std::make_pair(fd, queue);
  if (!add) {
    conn_->kicks.erase(key);
    return;
  }
  // The frontend holds the same eventfd and could drain it between our wake-up and our read:
  // a non-blocking read keeps that from stalling the worker.
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0 && !(flags & O_NONBLOCK)) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  auto w = std::make_unique<KickWatch>();
  w->worker = this;
  w->queue = queue;
  w->ev = event_new(base_, fd, EV_READ | EV_PERSIST, on_kick, w.get());
  // Out of memory in libevent: the ring would never run. Nothing sensible to go on with.
  MOSS_ASSERT(w->ev != nullptr && event_add(w->ev, nullptr) == 0);
  conn_->kicks[key] = std::move(w);
}

void Worker::watch_host(int fd, bool read, bool write) {
  if (auto it = host_events_.find(fd); it != host_events_.end()) {
    event_free(it->second);
    host_events_.erase(it);
  }
  if (!read && !write) return;
  short what = static_cast<short>(EV_PERSIST | (read ? EV_READ : 0) | (write ? EV_WRITE : 0));
  event* ev = event_new(base_, fd, what, on_host, this);
  MOSS_ASSERT(ev != nullptr && event_add(ev, nullptr) == 0);
  host_events_[fd] = ev;
}

void Worker::on_socket(int fd, short, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  auto more = w->conn_->backend->serve_one(fd);
  if (!more.ok()) {
    LOG_WARN("dropping the frontend: %s", more.error().message.c_str());
    w->connection_error_ = std::move(more).take_error();
    w->close_connection();
  } else if (!*more) {
    LOG_INFO("the frontend disconnected");
    w->close_connection();
  }
}

void Worker::on_kick(int fd, short, void* arg) {
  auto* kw = static_cast<KickWatch*>(arg);
  Worker* w = kw->worker;
  auto r = vhost_user::Backend::consume_kick(fd, kw->queue);
  if (!r.ok()) {
    LOG_WARN("dropping the frontend: %s", r.error().message.c_str());
    w->connection_error_ = std::move(r).take_error();
    w->close_connection();
    return;
  }
  w->conn_->device->on_kick(kw->queue);
}

void Worker::on_host(int fd, short what, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  // Only a device watches host sockets, and it unwatches them all before it goes.
  MOSS_ASSERT(w->conn_);
  w->conn_->device->on_host_event(fd, (what & EV_READ) != 0, (what & EV_WRITE) != 0);
}

void Worker::on_timer(int, short, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  if (w->conn_) w->conn_->device->on_timer();
  const uint64_t now = monotonic_ms();
  std::vector<int> late;
  for (auto& [fd, p] : w->pending_) {
    if (p->deadline_ms <= now) late.push_back(fd);
  }
  for (int fd : late) {
    LOG_DEBUG("a host program sent no CONNECT line within %llu ms", static_cast<unsigned long long>(kConnectLineTimeoutMs));
    w->drop_pending(fd);
  }
}

void Worker::on_accept(int fd, short, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  int s = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (s < 0) {
    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) LOG_WARN("accept failed: %s", std::strerror(errno));
    return;
  }
  // One frontend at a time: others wait in the listen backlog.
  event_del(w->accept_event_);
  auto r = w->open_connection(UniqueFd(s));
  if (!r.ok()) {
    LOG_WARN("cannot serve the frontend: %s", r.error().message.c_str());
    event_add(w->accept_event_, nullptr);
  }
}

void Worker::on_signal(int, short, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  w->signalled_ = true;
  event_base_loopbreak(w->base_);
}

// ---- Host programs ----

Result<void> Worker::accept_hosts(int listener) {
  MOSS_ASSERT(host_accept_event_ == nullptr);
  MOSS_TRY(int flags, MOSS_SYS(::fcntl(listener, F_GETFL)));
  MOSS_CHECK(MOSS_SYS(::fcntl(listener, F_SETFL, flags | O_NONBLOCK)));
  host_accept_event_ = event_new(base_, listener, EV_READ | EV_PERSIST, on_host_accept, this);
  if (host_accept_event_ == nullptr || event_add(host_accept_event_, nullptr) != 0) {
    return make_error("cannot watch the host programs' socket");
  }
  return {};
}

void Worker::on_host_accept(int fd, short, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  int s = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (s < 0) {
    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
      LOG_WARN("accepting a host program failed: %s", std::strerror(errno));
    }
    return;
  }
  UniqueFd sock(s);
  if (w->pending_.size() >= kMaxPendingHosts) {
    LOG_WARN("%zu host programs are already waiting to send CONNECT; closing a new one", kMaxPendingHosts);
    return;
  }
  auto p = std::make_unique<PendingHost>();
  p->fd = std::move(sock);
  p->deadline_ms = monotonic_ms() + kConnectLineTimeoutMs;
  p->ev = event_new(w->base_, s, EV_READ | EV_PERSIST, on_pending, w);
  MOSS_ASSERT(p->ev != nullptr && event_add(p->ev, nullptr) == 0);
  w->pending_[s] = std::move(p);
}

void Worker::on_pending(int fd, short, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  auto it = w->pending_.find(fd);
  MOSS_ASSERT(it != w->pending_.end());
  w->read_connect_line(*it->second);
}

void Worker::drop_pending(int fd) { pending_.erase(fd); }

void Worker::read_connect_line(PendingHost& p) {
  const int fd = p.fd.get();
  // One byte at a time: what follows the newline is the stream's first bytes for the guest,
  // and must stay in the socket. The line is at most kMaxConnectLine bytes.
  for (;;) {
    char ch;
    ssize_t n = ::recv(fd, &ch, 1, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
      LOG_DEBUG("a host program left before sending its CONNECT line");
      return drop_pending(fd);
    }
    p.line.push_back(ch);
    if (ch == '\n' || p.line.size() >= kMaxConnectLine) break;
  }
  auto port = parse_connect_line(p.line);
  if (!port.ok()) {
    LOG_INFO("refused a host program: %s", port.error().message.c_str());
    return drop_pending(fd);
  }
  if (!conn_) {
    LOG_INFO("refused a host program's CONNECT %u: no guest is connected", *port);
    return drop_pending(fd);
  }
  UniqueFd sock = std::move(p.fd);
  drop_pending(fd);  // Frees the event before the device watches the fd its own way.
  auto r = conn_->device->connect_from_host(std::move(sock), *port);
  if (!r.ok()) LOG_WARN("refused a host program's CONNECT %u: %s", *port, r.error().message.c_str());
}

// ---- Serving ----

Result<void> Worker::serve_connection(UniqueFd sock) {
  one_connection_ = true;
  connection_error_.reset();
  MOSS_CHECK(open_connection(std::move(sock)));
  running_ = true;
  event_base_dispatch(base_);
  running_ = false;
  if (conn_) close_connection();  // Ended by a signal.
  if (connection_error_) return std::move(*connection_error_);
  return {};
}

Result<void> Worker::serve_listener(int listener) {
  one_connection_ = false;
  MOSS_TRY(int flags, MOSS_SYS(::fcntl(listener, F_GETFL)));
  MOSS_CHECK(MOSS_SYS(::fcntl(listener, F_SETFL, flags | O_NONBLOCK)));
  accept_event_ = event_new(base_, listener, EV_READ | EV_PERSIST, on_accept, this);
  if (accept_event_ == nullptr || event_add(accept_event_, nullptr) != 0) {
    return make_error("cannot watch the listening socket");
  }
  running_ = true;
  event_base_dispatch(base_);
  running_ = false;
  if (conn_) close_connection();
  event_free(accept_event_);
  accept_event_ = nullptr;
  return {};
}

}  // namespace moss::vsock
