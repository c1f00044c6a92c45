// RAII for libevent: an owned event_base and owned events, so no code frees an `event*` by hand.
//
//   EventLoop loop = EventLoop::create().value();
//   Event ev = Event::on_fd(loop.get(), fd, EV_READ | EV_PERSIST, [&](int fd, short what) { ... });
//   ev.add();            // or ev.add(std::chrono::milliseconds(500)) for a timeout
//   loop.dispatch();
//
// An Event owns its callback. A callback may destroy any Event, its own included, but after
// destroying its own it must return without touching its captures (they are gone with it).
// Out of memory in libevent is not something a VMM can go on from: creation asserts.
#pragma once

#include <event2/event.h>

#include <chrono>
#include <functional>
#include <memory>
#include <utility>

#include "base/result.h"

namespace moss {

class EventLoop {
 public:
  static Result<EventLoop> create() {
    event_base* b = event_base_new();
    if (b == nullptr) return make_error("cannot create the event loop");
    return EventLoop(b);
  }
  // As create(), but with poll(2) (or select) instead of epoll: for a loop that may watch a
  // regular file or /dev/null, which epoll refuses and poll reports always ready.
  static Result<EventLoop> create_without_epoll() {
    event_config* cfg = event_config_new();
    if (cfg == nullptr) return make_error("cannot create the event loop");
    event_config_avoid_method(cfg, "epoll");
    event_base* b = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (b == nullptr) return make_error("cannot create the event loop");
    return EventLoop(b);
  }
  EventLoop() = default;
  EventLoop(EventLoop&& o) noexcept : base_(std::exchange(o.base_, nullptr)) {}
  EventLoop& operator=(EventLoop&& o) noexcept {
    if (this != &o) {
      reset();
      base_ = std::exchange(o.base_, nullptr);
    }
    return *this;
  }
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;
  ~EventLoop() { reset(); }

  event_base* get() const { return base_; }
  // Runs until break_loop() or no event is left. Returns event_base_dispatch's value.
  int dispatch() { return event_base_dispatch(base_); }
  // Runs what is ready now without blocking (tests and barriers).
  int run_ready() { return event_base_loop(base_, EVLOOP_NONBLOCK); }
  void break_loop() { event_base_loopbreak(base_); }

 private:
  explicit EventLoop(event_base* b) : base_(b) {}
  // Every Event made on this loop must be gone first (asserted by libevent's debug mode only).
  void reset() {
    if (base_ != nullptr) event_base_free(base_);
    base_ = nullptr;
  }
  event_base* base_ = nullptr;
};

class Event {
 public:
  using Callback = std::function<void(int fd, short what)>;

  Event() = default;
  // fd events (EV_READ/EV_WRITE, usually with EV_PERSIST); not yet added.
  static Event on_fd(event_base* base, int fd, short what, Callback cb) { return Event(base, fd, what, std::move(cb)); }
  // A signal (EV_SIGNAL | EV_PERSIST); not yet added.
  static Event on_signal(event_base* base, int sig, Callback cb) {
    return Event(base, sig, EV_SIGNAL | EV_PERSIST, std::move(cb));
  }
  // A timer, one-shot unless `persist`; not yet added (add(timeout) arms it).
  static Event timer(event_base* base, Callback cb, bool persist = false) {
    return Event(base, -1, persist ? EV_PERSIST : 0, std::move(cb));
  }

  Event(Event&& o) noexcept : ev_(std::exchange(o.ev_, nullptr)), cb_(std::move(o.cb_)) {}
  Event& operator=(Event&& o) noexcept {
    if (this != &o) {
      reset();
      ev_ = std::exchange(o.ev_, nullptr);
      cb_ = std::move(o.cb_);
    }
    return *this;
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() { reset(); }

  explicit operator bool() const { return ev_ != nullptr; }
  event* get() const { return ev_; }

  // Watches (again). With a timeout the callback also runs with EV_TIMEOUT once it passes.
  void add() {
    MOSS_ASSERT(ev_ != nullptr);
    MOSS_ASSERT(event_add(ev_, nullptr) == 0);
  }
  void add(std::chrono::milliseconds timeout) {
    MOSS_ASSERT(ev_ != nullptr);
    timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    MOSS_ASSERT(event_add(ev_, &tv) == 0);
  }
  // Stops watching; the event can be added again.
  void del() {
    if (ev_ != nullptr) event_del(ev_);
  }
  bool pending() const { return ev_ != nullptr && event_pending(ev_, EV_READ | EV_WRITE | EV_SIGNAL | EV_TIMEOUT, nullptr); }
  void reset() {
    if (ev_ != nullptr) event_free(ev_);
    ev_ = nullptr;
    cb_.reset();
  }

 private:
  Event(event_base* base, int fd, short what, Callback cb) : cb_(std::make_unique<Callback>(std::move(cb))) {
    ev_ = event_new(base, fd, what, &Event::trampoline, cb_.get());
    MOSS_ASSERT(ev_ != nullptr);
  }
  static void trampoline(evutil_socket_t fd, short what, void* arg) {
    (*static_cast<Callback*>(arg))(static_cast<int>(fd), what);
  }

  event* ev_ = nullptr;
  std::unique_ptr<Callback> cb_;  // Stable address for libevent's arg, across moves.
};

}  // namespace moss
