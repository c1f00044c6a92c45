#include "devices/blk/worker.h"

#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "base/log.h"
#include "base/syscall.h"

namespace moss::blk {

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
  std::unique_ptr<BlkDevice> device;
  std::unique_ptr<vhost_user::Backend> backend;
  std::map<std::pair<int, uint32_t>, std::unique_ptr<KickWatch>> kicks;
  ~Connection() {
    if (sock_event != nullptr) event_free(sock_event);
  }
};

Worker::Worker(const Disk& disk, DeviceOptions options) : disk_(disk), options_(std::move(options)) {}

Result<std::unique_ptr<Worker>> Worker::create(const Disk& disk, DeviceOptions options) {
  std::unique_ptr<Worker> w(new Worker(disk, std::move(options)));
  MOSS_CHECK(w->init());
  return w;
}

Result<void> Worker::init() {
  MOSS_TRY(engine_, Engine::create(disk_));
  base_ = event_base_new();
  if (base_ == nullptr) return make_error("cannot create the libevent loop");
  engine_event_ = event_new(base_, engine_->completion_fd(), EV_READ | EV_PERSIST, on_engine, this);
  if (engine_event_ == nullptr || event_add(engine_event_, nullptr) != 0) {
    return make_error("cannot watch the I/O engine's completions");
  }
  return {};
}

Worker::~Worker() {
  if (conn_) close_connection();
  for (event* ev : {engine_event_, sigterm_, sigint_, accept_event_}) {
    if (ev != nullptr) event_free(ev);
  }
  engine_.reset();  // Waits for anything still in flight (nothing: connections drain).
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
  c->device = std::make_unique<BlkDevice>(disk_, *engine_, options_);
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
  // The Backend stops every running ring: the device drains its I/O and returns it to the
  // guest, the kick watches go (through watch_kick), then guest memory is unmapped.
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
  // The frontend holds the same eventfd and could drain it between our wake-up and our
  // read: a non-blocking read keeps that from stalling the worker. (The flag is shared with
  // the frontend's copy; for an eventfd it only matters to writers at a saturated counter.)
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
  uint64_t count;
  if (::read(fd, &count, sizeof count) < 0 && errno != EAGAIN) {
    LOG_DEBUG("cannot read the kick eventfd of queue %u: %s", kw->queue, std::strerror(errno));
  }
  kw->worker->conn_->device->on_kick(kw->queue);
}

void Worker::on_engine(int, short, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  if (w->conn_) {
    w->conn_->device->on_io_ready();
    return;
  }
  // No device: connections drain before they go, so only a stale wake-up can be left.
  w->engine_->poll([](Engine::Tag, int) { MOSS_ASSERT(!"I/O finished with no device to take it"); });
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

// ---- The socket path ----

Result<UniqueFd> listen_unix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return make_error("the socket path '" + path + "' must be 1 to " + std::to_string(sizeof addr.sun_path - 1) +
                      " bytes long");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return make_error(path + " exists and is not a socket; remove it or choose another path");
    MOSS_TRY(int probe_fd, MOSS_SYS(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)));
    UniqueFd probe(probe_fd);
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      return make_error("another process is already listening on " + path);
    }
    if (errno != ECONNREFUSED) {
      return make_error("cannot tell whether " + path + " is in use: " + std::strerror(errno), errno);
    }
    // Nobody listens: a socket left by a worker that died. Replace it.
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return make_error("cannot remove the stale socket " + path + ": " + std::strerror(errno), errno);
    }
  }
  MOSS_TRY(int raw, MOSS_SYS(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)));
  UniqueFd fd(raw);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return make_error("cannot create the socket " + path + ": " + std::strerror(errno), errno);
  }
  if (::listen(fd.get(), 8) != 0) return make_error("cannot listen on " + path + ": " + std::strerror(errno), errno);
  return fd;
}

SocketPathGuard::SocketPathGuard(std::string path) : path_(std::move(path)) {
  struct stat st;
  if (::lstat(path_.c_str(), &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
}

SocketPathGuard::~SocketPathGuard() {
  struct stat st;
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_ && S_ISSOCK(st.st_mode)) {
    ::unlink(path_.c_str());
  }
}

}  // namespace moss::blk
