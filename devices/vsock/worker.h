// The virtio-vsock worker's event loop (libevent): one vhost-user frontend at a time, each
// served by a fresh vhost_user::Backend and VsockDevice (so a new frontend starts with no
// connections and gets TRANSPORT_RESET), plus the host side of hybrid vsock.
//
// Watched fds: the vhost-user socket (one message per readable event), every started ring's
// kick eventfd, the host listener (--uds-path) and host programs that have not sent their
// CONNECT line yet, the host sockets of connections (as the device asks), a 1 s timer
// (connect time-outs), optionally SIGTERM/SIGINT, and with a listening vhost-user socket, the
// listener while no frontend is connected.
//
// Host programs: each connection to the host listener must send "CONNECT <port>\n" within
// kConnectLineTimeoutMs, or it is closed; so is one whose line does not parse, one that comes
// while no frontend is connected, and one beyond kMaxPendingHosts waiting for their line.
//
// A frontend that closes the socket, or sends anything the Backend refuses to go on from, is
// dropped with every connection it carried (their host sockets close); then the worker
// accepts the next frontend, or with one connected socket (--fd) returns.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "base/fd.h"
#include "base/result.h"
#include "devices/vsock/device.h"
#include "vhost-user/backend.h"

struct event;
struct event_base;

namespace moss::vsock {

inline constexpr uint64_t kConnectLineTimeoutMs = 10000;
inline constexpr size_t kMaxPendingHosts = 64;

class Worker {
 public:
  static Result<std::unique_ptr<Worker>> create(DeviceOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Makes SIGTERM and SIGINT end serve_*() (the binary; tests run workers on threads).
  Result<void> stop_on_signals();
  // Takes host programs' connections from `listener` (listen_unix(uds_path)) while serve_*()
  // runs. Call once, before serve_*(); the listener must outlive the worker's loop.
  Result<void> accept_hosts(int listener);
  // Serves one connected vhost-user socket until the frontend closes it (Ok) or is dropped
  // for an error (that Error), or a signal arrives (Ok).
  Result<void> serve_connection(UniqueFd sock);
  // Accepts frontends on a listening vhost-user socket, one at a time, until a signal arrives.
  Result<void> serve_listener(int listener);

  bool stopped_by_signal() const { return signalled_; }

 private:
  struct KickWatch;
  struct Connection;
  struct PendingHost;

  explicit Worker(DeviceOptions options);
  Result<void> init();
  Result<void> open_connection(UniqueFd sock);
  void close_connection();
  void watch_kick(int fd, uint32_t queue, bool add);
  void watch_host(int fd, bool read, bool write);
  void read_connect_line(PendingHost& p);
  void drop_pending(int fd);

  static void on_socket(int fd, short what, void* arg);
  static void on_kick(int fd, short what, void* arg);
  static void on_accept(int fd, short what, void* arg);
  static void on_signal(int fd, short what, void* arg);
  static void on_host_accept(int fd, short what, void* arg);
  static void on_pending(int fd, short what, void* arg);
  static void on_host(int fd, short what, void* arg);
  static void on_timer(int fd, short what, void* arg);

  const DeviceOptions options_;
  event_base* base_ = nullptr;
  event* sigterm_ = nullptr;
  event* sigint_ = nullptr;
  event* accept_event_ = nullptr;
  event* host_accept_event_ = nullptr;
  event* timer_ = nullptr;
  std::unique_ptr<Connection> conn_;
  std::map<int, std::unique_ptr<PendingHost>> pending_;  // By fd.
  std::map<int, event*> host_events_;                    // Connections' host sockets, by fd.
  bool one_connection_ = false;  // serve_connection: end the loop when it closes.
  bool running_ = false;         // Inside event_base_dispatch.
  bool signalled_ = false;
  std::optional<Error> connection_error_;
};

uint64_t monotonic_ms();

}  // namespace moss::vsock
