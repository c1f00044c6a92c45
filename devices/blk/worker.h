// The virtio-blk worker's event loop (libevent): one frontend connection at a time, each
// served by a fresh vhost_user::Backend and BlkDevice over the same Disk and Engine.
//
// Watched fds: the vhost-user socket (one message per readable event), every started ring's
// kick eventfd, the engine's completion eventfd, optionally SIGTERM/SIGINT, and with a
// listening socket, the listener while no frontend is connected.
//
// A frontend that closes the socket, or sends anything the Backend refuses to go on from, is
// dropped: the Backend stops every ring, which makes the device finish the I/O in flight and
// return it to the guest (so no request is lost or left writing into unmapped memory); then
// the worker accepts the next frontend, or with one connected socket (--fd) returns.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <memory>
#include <string>
#include <utility>

#include "base/fd.h"
#include "base/result.h"
#include "devices/blk/device.h"
#include "devices/blk/disk.h"
#include "devices/blk/engine.h"
#include "vhost-user/backend.h"

struct event;
struct event_base;

namespace moss::blk {

class Worker {
 public:
  // `disk` outlives the worker.
  static Result<std::unique_ptr<Worker>> create(const Disk& disk, DeviceOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Makes SIGTERM and SIGINT end serve_*() (the binary; tests run workers on threads).
  Result<void> stop_on_signals();
  // Serves one connected vhost-user socket until the frontend closes it (Ok) or is dropped
  // for an error (that Error), or a signal arrives (Ok).
  Result<void> serve_connection(UniqueFd sock);
  // Accepts frontends on a listening socket, one at a time, until a signal arrives.
  Result<void> serve_listener(int listener);

  bool stopped_by_signal() const { return signalled_; }

 private:
  struct KickWatch;
  struct Connection;

  Worker(const Disk& disk, DeviceOptions options);
  Result<void> init();
  Result<void> open_connection(UniqueFd sock);
  void close_connection();
  void watch_kick(int fd, uint32_t queue, bool add);

  static void on_socket(int fd, short what, void* arg);
  static void on_kick(int fd, short what, void* arg);
  static void on_engine(int fd, short what, void* arg);
  static void on_accept(int fd, short what, void* arg);
  static void on_signal(int fd, short what, void* arg);

  const Disk& disk_;
  const DeviceOptions options_;
  std::unique_ptr<Engine> engine_;
  event_base* base_ = nullptr;
  event* engine_event_ = nullptr;
  event* sigterm_ = nullptr;
  event* sigint_ = nullptr;
  event* accept_event_ = nullptr;
  std::unique_ptr<Connection> conn_;
  bool one_connection_ = false;  // serve_connection: end the loop when it closes.
  bool running_ = false;         // Inside event_base_dispatch.
  bool signalled_ = false;
  std::optional<Error> connection_error_;
};

// Binds a listening vhost-user socket at `path`. An existing socket nobody listens on (left
// by a worker that died) is replaced; a live one, or any other file, is an Error.
Result<UniqueFd> listen_unix(const std::string& path);

// Unlinks the socket at `path` on destruction if it is still the one we bound (same inode),
// so a worker never removes a socket another process put there since.
class SocketPathGuard {
 public:
  // Call right after listen_unix(path) succeeded.
  explicit SocketPathGuard(std::string path);
  ~SocketPathGuard();
  SocketPathGuard(const SocketPathGuard&) = delete;
  SocketPathGuard& operator=(const SocketPathGuard&) = delete;

 private:
  std::string path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace moss::blk
