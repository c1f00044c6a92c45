#include "devices/worker/runtime.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "base/log.h"
#include "base/syscall.h"
#include "ipc/channel.h"

namespace moss::runtime {

struct Runtime::Connection {
  UniqueFd sock;
  Event sock_event;
  std::unique_ptr<Device> device;
  std::unique_ptr<vhost_user::Backend> backend;
  std::map<std::pair<int, uint32_t>, Event> kicks;
};

Runtime::Runtime(WorkerSpec spec, EventLoop loop) : spec_(std::move(spec)), loop_(std::move(loop)) {}

Result<std::unique_ptr<Runtime>> Runtime::create(WorkerSpec spec) {
  MOSS_ASSERT(spec.make_device);
  MOSS_TRY(EventLoop loop, EventLoop::create());
  return std::unique_ptr<Runtime>(new Runtime(std::move(spec), std::move(loop)));
}

Runtime::~Runtime() {
  if (conn_) close_connection();
}

Result<void> Runtime::stop_on_signals() {
  auto stop = [this](int, short) {
    signalled_ = true;
    loop_.break_loop();
  };
  sigterm_ = Event::on_signal(loop(), SIGTERM, stop);
  sigint_ = Event::on_signal(loop(), SIGINT, stop);
  sigterm_.add();
  sigint_.add();
  return {};
}

Device* Runtime::device() const { return conn_ ? conn_->device.get() : nullptr; }

Result<void> Runtime::open_connection(UniqueFd sock) {
  MOSS_ASSERT(!conn_);
  auto c = std::make_unique<Connection>();
  c->sock = std::move(sock);
  c->device = spec_.make_device(loop());
  c->backend = std::make_unique<vhost_user::Backend>(
      *c->device, [this](int fd, uint32_t q, bool add) { watch_kick(fd, q, add); });
  c->device->attach(*c->backend);
  c->sock_event = Event::on_fd(loop(), c->sock.get(), EV_READ | EV_PERSIST, [this](int fd, short) { on_socket(fd); });
  c->sock_event.add();
  conn_ = std::move(c);
  LOG_INFO("a frontend connected");
  return {};
}

void Runtime::close_connection() {
  MOSS_ASSERT(conn_);
  conn_->sock_event.reset();
  // The Backend stops every running ring: the device drains what is in flight and returns it
  // to the guest, the kick watches go (through watch_kick), then guest memory is unmapped.
  conn_->backend.reset();
  MOSS_ASSERT(conn_->kicks.empty());
  finished_ += conn_->device->stats();
  conn_.reset();
  if (one_connection_) {
    if (running_) loop_.break_loop();
  } else if (accept_ && !shut_down_) {
    accept_.add();
  }
}

void Runtime::drop(Error why) {
  LOG_WARN("dropping the frontend: %s", why.message.c_str());
  connection_error_ = std::move(why);
  close_connection();
}

void Runtime::watch_kick(int fd, uint32_t queue, bool add) {
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
  Event ev = Event::on_fd(loop(), fd, EV_READ | EV_PERSIST, [this, queue](int kick_fd, short) {
    auto r = vhost_user::Backend::consume_kick(kick_fd, queue);
    if (!r.ok()) return drop(std::move(r).take_error());
    conn_->device->on_kick(queue);
  });
  ev.add();
  conn_->kicks[key] = std::move(ev);
}

void Runtime::on_socket(int fd) {
  auto more = conn_->backend->serve_one(fd);
  if (!more.ok()) return drop(std::move(more).take_error());
  if (!*more) {
    LOG_INFO("the frontend disconnected");
    close_connection();
  }
}

void Runtime::on_accept(int fd) {
  int s = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (s < 0) {
    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) LOG_WARN("%s", errno_message("accept failed", errno).c_str());
    return;
  }
  // One frontend at a time: others wait in the listen backlog.
  accept_.del();
  auto r = open_connection(UniqueFd(s));
  if (!r.ok()) {
    LOG_WARN("cannot serve the frontend: %s", r.error().message.c_str());
    accept_.add();
  }
}

Result<void> Runtime::serve() {
  if (!shut_down_) {
    running_ = true;
    loop_.dispatch();
    running_ = false;
  }
  if (conn_) close_connection();  // Ended by a signal or the broker.
  if (shutdown_error_) return std::move(*shutdown_error_);
  return {};
}

Result<void> Runtime::serve_connection(UniqueFd sock) {
  one_connection_ = true;
  connection_error_.reset();
  MOSS_TRY_VOID(open_connection(std::move(sock)));
  MOSS_TRY_VOID(serve());
  if (connection_error_) return std::move(*connection_error_);
  return {};
}

Result<void> Runtime::serve_listener(int listener) {
  one_connection_ = false;
  MOSS_TRY(int flags, MOSS_SYS(::fcntl(listener, F_GETFL)));
  MOSS_TRY_VOID(MOSS_SYS(::fcntl(listener, F_SETFL, flags | O_NONBLOCK)));
  accept_ = Event::on_fd(loop(), listener, EV_READ | EV_PERSIST, [this](int fd, short) { on_accept(fd); });
  accept_.add();
  auto r = serve();  // A dropped frontend does not end a listening worker.
  accept_.reset();
  return r;
}

Stats Runtime::stats() const {
  Stats out = finished_;
  out.in_flight = 0;
  if (conn_) {
    Stats now = conn_->device->stats();
    out += now;
    out.in_flight = conn_->device->in_flight();
  }
  return out;
}

// ---- The broker's control channel ----

Result<void> Runtime::watch_control(UniqueFd control) {
  MOSS_ASSERT(!control_.valid());
  MOSS_TRY(int flags, MOSS_SYS(::fcntl(control.get(), F_GETFL)));
  // Our end of a socketpair, shared with no one: a broker that stops reading replies must
  // not block the loop that serves the guest.
  MOSS_TRY_VOID(MOSS_SYS(::fcntl(control.get(), F_SETFL, flags | O_NONBLOCK)));
  control_ = std::move(control);
  control_buf_.resize(ipc::kMaxPacketBytes + 8);
  control_event_ = Event::on_fd(loop(), control_.get(), EV_READ | EV_PERSIST, [this](int fd, short) { on_control(fd); });
  control_event_.add();
  return {};
}

void Runtime::on_control(int fd) {
  auto got = MOSS_SYS(::recv(fd, control_buf_.data(), control_buf_.size(), MSG_TRUNC | MSG_DONTWAIT));
  if (!got.ok() && got.error().err == EAGAIN) return;  // Woken for nothing.
  if (!got.ok() || *got == 0) {
    if (!got.ok()) {
      LOG_WARN("cannot read the control socket (%s); shutting down", got.error().message.c_str());
    } else {
      LOG_INFO("the broker closed the control socket; shutting down");
    }
    return shutdown(false);
  }
  const size_t n = static_cast<size_t>(*got);
  if (n > ipc::kMaxPacketBytes) {
    return reply(ControlReply::failure("the control request is larger than " + std::to_string(ipc::kMaxPacketBytes) +
                                       " bytes"));
  }
  auto req = decode_control_request(std::span<const uint8_t>(control_buf_.data(), n));
  if (!req.ok()) {
    LOG_WARN("refused a control request: %s", req.error().message.c_str());
    return reply(ControlReply::failure(req.error().message));
  }
  handle_control(*req);
}

void Runtime::reply(const ControlReply& r) {
  std::vector<uint8_t> bytes = encode_control_reply(r);
  if (bytes.size() > ipc::kMaxPacketBytes) {
    bytes = encode_control_reply(ControlReply::failure("the reply would be larger than a control packet"));
  }
  auto sent = MOSS_SYS(::send(control_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT));
  if (!sent.ok()) {
    // The broker is gone (we will see the close) or not reading: nothing to do but say so.
    LOG_WARN("cannot send a control reply: %s", sent.error().message.c_str());
  }
}

void Runtime::handle_control(ControlRequest r) {
  switch (r) {
    case ControlRequest::kDescribe: {
      ControlReply out = ControlReply::of(ControlReply::Kind::kDescription);
      out.description = spec_.description;
      return reply(out);
    }
    case ControlRequest::kStats: {
      ControlReply out = ControlReply::of(ControlReply::Kind::kStats);
      out.stats = stats();
      return reply(out);
    }
    case ControlRequest::kShutdown:
      return shutdown(true);
  }
}

void Runtime::shutdown(bool with_reply) {
  if (shut_down_) return;
  LOG_INFO("shutting down");
  control_event_.del();
  // No request is taken from now on: neither the rings nor the vhost-user socket (which could
  // enable one) are read. What is in flight finishes and goes back to the guest.
  if (conn_) {
    conn_->sock_event.del();
    for (auto& [key, ev] : conn_->kicks) ev.del();
    conn_->device->drain();
    MOSS_ASSERT(conn_->device->in_flight() == 0);
  }
  // Every write the guest was told is done is on stable storage before we say so.
  if (spec_.flush) {
    auto flushed = spec_.flush();
    if (!flushed.ok()) shutdown_error_ = std::move(flushed).take_error();
  }
  if (with_reply) {
    reply(shutdown_error_ ? ControlReply::failure(shutdown_error_->message)
                          : ControlReply::of(ControlReply::Kind::kShuttingDown));
  }
  shut_down_ = true;
  if (running_) loop_.break_loop();
}

}  // namespace moss::runtime
