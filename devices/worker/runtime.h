// The event loop every moss device worker runs (libevent, through base/event.h's RAII): one
// vhost-user frontend at a time, each served by a fresh vhost_user::Backend and a fresh Device
// (device.h), plus the broker's control channel and signals.
//
// Watched fds: the vhost-user socket (one message per readable event), every started ring's
// kick eventfd (consumed here, then Device::on_kick), optionally SIGTERM/SIGINT, the control
// socket, and with a listening socket, the listener while no frontend is connected. A device
// watches its own fds on loop().
//
// A frontend that closes the socket, or sends anything the Backend refuses to go on from, is
// dropped: the Backend stops every ring, which makes the device finish what is in flight and
// return it to the guest (so no request is lost or left writing into unmapped memory); then
// the runtime accepts the next frontend, or with one connected socket (--fd) returns.
//
// Control (optional, watch_control): the broker's requests (ipc/worker.capnp) on a
// SOCK_SEQPACKET socket, one packet each, answered one reply each, in order:
//   describe  WorkerSpec::description;
//   stats     the counters of every connection so far, and what is in flight now;
//   shutdown  stop taking requests (neither the rings nor the vhost-user socket are read any
//             more), Device::drain(), WorkerSpec::flush, reply, and end serve_*() (Ok, or the
//             flush's Error).
// The broker closing the socket is a shutdown without the reply. A packet that does not
// decode gets an error reply and nothing changes.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "base/event.h"
#include "base/fd.h"
#include "base/result.h"
#include "devices/worker/control.h"
#include "devices/worker/device.h"
#include "vhost-user/backend.h"

namespace moss::runtime {

class Runtime {
 public:
  static Result<std::unique_ptr<Runtime>> create(WorkerSpec spec);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  event_base* loop() const { return loop_.get(); }

  // Makes SIGTERM and SIGINT end serve_*() (the binaries; tests run workers on threads).
  Result<void> stop_on_signals();
  // Answers the broker on `control` (a SOCK_SEQPACKET socket, made non-blocking here) while
  // serve_*() runs. Call once, before serve_*().
  Result<void> watch_control(UniqueFd control);
  // Serves one connected vhost-user socket until the frontend closes it (Ok) or is dropped
  // for an error (that Error), a signal arrives (Ok), or the broker shuts the worker down.
  Result<void> serve_connection(UniqueFd sock);
  // Accepts frontends on a listening socket, one at a time, until a signal or shutdown.
  Result<void> serve_listener(int listener);

  // The connected frontend's device, or nullptr (a worker's own watchers use it, e.g. vsock's
  // host listener; they know which Device type their WorkerSpec makes).
  Device* device() const;
  Stats stats() const;

  bool stopped_by_signal() const { return signalled_; }
  // serve_*() ended because the broker asked (shutdown) or closed the control socket.
  bool shut_down() const { return shut_down_; }

 private:
  struct Connection;

  explicit Runtime(WorkerSpec spec, EventLoop loop);
  Result<void> open_connection(UniqueFd sock);
  void close_connection();
  void drop(Error why);
  void watch_kick(int fd, uint32_t queue, bool add);
  void on_socket(int fd);
  void on_accept(int fd);
  Result<void> serve();

  void on_control(int fd);
  void handle_control(ControlRequest r);
  void reply(const ControlReply& r);
  void shutdown(bool with_reply);

  WorkerSpec spec_;
  EventLoop loop_;
  Event sigterm_, sigint_, accept_, control_event_;
  std::unique_ptr<Connection> conn_;
  bool one_connection_ = false;  // serve_connection: end the loop when it closes.
  bool running_ = false;         // Inside dispatch.
  bool signalled_ = false;
  bool shut_down_ = false;
  std::optional<Error> connection_error_;
  std::optional<Error> shutdown_error_;
  UniqueFd control_;
  std::vector<uint8_t> control_buf_;
  Stats finished_;  // Of the connections that have gone.
};

}  // namespace moss::runtime
