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
#include "ipc/channel.h"

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
  for (event* ev : {engine_event_, sigterm_, sigint_, accept_event_, control_event_}) {
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
  c->device->set_quiesced(quiesced_);
  if (restored_) {
    // Checked against the disk when it came; a fresh device has nothing else to disagree with.
    auto r = c->device->restore(*restored_);
    MOSS_ASSERT(r.ok());
    restored_.reset();
  }
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
  finished_ += conn_->device->counters();
  last_state_ = conn_->device->state();
  conn_.reset();
  if (one_connection_) {
    if (running_) event_base_loopbreak(base_);
  } else if (accept_event_ != nullptr) {
    event_add(accept_event_, nullptr);
  }
  finish_pending();
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

void Worker::on_engine(int, short, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  if (w->conn_) {
    w->conn_->device->on_io_ready();
    w->finish_pending();
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
  if (conn_) close_connection();  // Ended by a signal or the broker.
  if (connection_error_) return std::move(*connection_error_);
  if (shutdown_error_) return std::move(*shutdown_error_);
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
  if (shutdown_error_) return std::move(*shutdown_error_);
  return {};
}

// ---- The broker's control channel ----

Result<void> Worker::watch_control(UniqueFd control, std::string disk_name) {
  MOSS_ASSERT(!control_.valid());
  MOSS_TRY(int flags, MOSS_SYS(::fcntl(control.get(), F_GETFL)));
  // Our end of a socketpair, shared with no one: a broker that stops reading replies must
  // not block the loop that serves the guest.
  MOSS_CHECK(MOSS_SYS(::fcntl(control.get(), F_SETFL, flags | O_NONBLOCK)));
  control_ = std::move(control);
  disk_name_ = std::move(disk_name);
  control_buf_.resize(ipc::kMaxPacketBytes + 8);
  control_event_ = event_new(base_, control_.get(), EV_READ | EV_PERSIST, on_control, this);
  if (control_event_ == nullptr || event_add(control_event_, nullptr) != 0) {
    return make_error("cannot watch the control socket");
  }
  return {};
}

void Worker::on_control(int fd, short, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  auto got = MOSS_SYS(::recv(fd, w->control_buf_.data(), w->control_buf_.size(), MSG_TRUNC | MSG_DONTWAIT));
  if (!got.ok() && got.error().err == EAGAIN) return;  // Woken for nothing.
  if (!got.ok() || *got == 0) {
    if (!got.ok()) {
      LOG_WARN("cannot read the control socket (%s); shutting down", got.error().message.c_str());
    } else {
      LOG_INFO("the broker closed the control socket; shutting down");
    }
    w->begin_shutdown(false);
    return;
  }
  const size_t n = static_cast<size_t>(*got);
  if (n > ipc::kMaxPacketBytes) {
    return w->reply(ControlReply::failure("the control request is larger than " +
                                          std::to_string(ipc::kMaxPacketBytes) + " bytes"));
  }
  auto req = decode_control_request(std::span<const uint8_t>(w->control_buf_.data(), n));
  if (!req.ok()) {
    LOG_WARN("refused a control request: %s", req.error().message.c_str());
    return w->reply(ControlReply::failure(req.error().message));
  }
  w->handle_control(*req);
}

void Worker::reply(const ControlReply& r) {
  std::vector<uint8_t> bytes = encode_control_reply(r);
  MOSS_ASSERT(bytes.size() <= ipc::kMaxPacketBytes);  // The largest reply is a 2 KiB state.
  auto sent = MOSS_SYS(::send(control_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT));
  if (!sent.ok()) {
    // The broker is gone (we will see the close) or not reading: nothing to do but say so.
    LOG_WARN("cannot send a control reply: %s", sent.error().message.c_str());
  }
}

void Worker::handle_control(const ControlRequest& r) {
  using K = ControlRequest::Kind;
  using R = ControlReply::Kind;
  switch (r.kind) {
    case K::kDescribe: {
      ControlReply out = ControlReply::of(R::kDescription);
      out.description = {disk_name_, disk_.info().read_only, disk_.info().size_bytes, options_.num_queues};
      return reply(out);
    }
    case K::kQuiesce:
      set_quiesced(true);
      pending_ = Pending::kQuiesce;
      event_del(control_event_);  // One reply per request, in order: read on when it is sent.
      return finish_pending();
    case K::kSaveState:
      if (!quiesced_) return reply(ControlReply::failure("the device is not quiesced"));
      return reply(save_state());
    case K::kRestoreState:
      if (!quiesced_) return reply(ControlReply::failure("the device is not quiesced"));
      return reply(restore_state(r.state));
    case K::kResume:
      set_quiesced(false);
      return reply(ControlReply::of(R::kResumed));
    case K::kStats: {
      ControlReply out = ControlReply::of(R::kStats);
      out.stats = stats();
      return reply(out);
    }
    case K::kShutdown:
      return begin_shutdown(true);
  }
}

void Worker::set_quiesced(bool quiesced) {
  if (quiesced_ != quiesced) LOG_INFO(quiesced ? "quiescing" : "resuming");
  quiesced_ = quiesced;
  if (conn_) conn_->device->set_quiesced(quiesced);
}

void Worker::begin_shutdown(bool with_reply) {
  if (pending_ == Pending::kShutdown || pending_ == Pending::kShutdownSilent || shut_down_) return;
  set_quiesced(true);
  pending_ = with_reply ? Pending::kShutdown : Pending::kShutdownSilent;
  event_del(control_event_);
  finish_pending();
}

void Worker::finish_pending() {
  if (pending_ == Pending::kNone) return;
  if (conn_ && conn_->device->in_flight() > 0) return;
  const Pending p = pending_;
  pending_ = Pending::kNone;
  if (p == Pending::kQuiesce) {
    reply(ControlReply::of(ControlReply::Kind::kQuiesced));
    event_add(control_event_, nullptr);
    return;
  }
  // Every write the guest was told is done is on stable storage before we say so.
  auto synced = MOSS_SYS(::fdatasync(disk_.fd()));
  if (!synced.ok()) {
    int e = synced.error().err;
    shutdown_error_ = make_error(std::string("cannot flush the disk before shutting down: ") + std::strerror(e), e);
  }
  if (p == Pending::kShutdown) {
    reply(synced.ok() ? ControlReply::of(ControlReply::Kind::kShuttingDown) : ControlReply::failure(shutdown_error_->message));
  }
  shut_down_ = true;
  if (running_) event_base_loopbreak(base_);
}

std::string Worker::serial() const { return options_.serial.empty() ? disk_.info().serial : options_.serial; }

ControlReply Worker::save_state() const {
  SavedState s;
  if (conn_) {
    s = conn_->device->state();
  } else if (restored_) {
    s = *restored_;
  } else if (last_state_) {
    s = *last_state_;
  } else {  // No frontend ever came: a device as new.
    s.capacity_sectors = disk_.info().capacity_sectors;
    s.read_only = disk_.info().read_only;
    s.serial = serial();
    s.queues.assign(options_.num_queues, QueuePosition{});
  }
  ControlReply out = ControlReply::of(ControlReply::Kind::kState);
  out.state = encode_state(s);
  return out;
}

ControlReply Worker::restore_state(std::span<const uint8_t> blob) {
  auto s = decode_state(blob);
  if (!s.ok()) return ControlReply::failure(s.error().message);
  auto r = conn_ ? conn_->device->restore(*s) : check_state_fits(*s, disk_.info(), serial(), options_.num_queues);
  if (!r.ok()) {
    LOG_WARN("refused to restore a saved state: %s", r.error().message.c_str());
    return ControlReply::failure(r.error().message);
  }
  if (!conn_) restored_ = std::move(*s);
  return ControlReply::of(ControlReply::Kind::kRestored);
}

WorkerStats Worker::stats() const {
  WorkerStats out;
  out.counters = finished_;
  if (conn_) {
    out.counters += conn_->device->counters();
    out.in_flight = conn_->device->in_flight();
  }
  out.quiesced = quiesced_;
  return out;
}

}  // namespace moss::blk
