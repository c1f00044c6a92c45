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
//
// Control (optional, watch_control): the broker's requests (ipc/worker.capnp) on a
// SOCK_SEQPACKET socket, one packet each, answered one reply each, in order:
//   describe      the disk, read-only flag, capacity and queue count;
//   quiesce       no chain is taken from any ring from now on; the reply comes once every
//                 request in flight has completed and been returned to the guest (requests
//                 are not read meanwhile, so replies stay in order). Kicks that arrive while
//                 quiesced are dropped; resume re-reads every available ring instead;
//   saveState     only while quiesced: BlkDevice::state() in state.h's format;
//   restoreState  only while quiesced: decoded, checked against the disk and the connected
//                 frontend (BlkDevice::restore), and applied, or refused with the state
//                 unchanged. With no frontend connected it is kept for the next one;
//   resume        leave the quiesced state and process every running ring;
//   stats         request counters over every connection so far, requests in flight, quiesced;
//   shutdown      quiesce, wait for what is in flight, fdatasync the disk, reply, and end
//                 serve_*() (Ok, or the Error if the disk could not be synced).
// The broker closing the socket is a shutdown without the reply. A packet that does not
// decode, or a request refused in the current state, gets an error reply and nothing changes.
// Quiescing belongs to the worker, not to one connection: a frontend that connects while the
// worker is quiesced gets its rings started but not processed.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "devices/blk/control.h"
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
  // Answers the broker on `control` (a SOCK_SEQPACKET socket, made non-blocking here) while
  // serve_*() runs; `disk_name` is what describe reports. Call once, before serve_*().
  Result<void> watch_control(UniqueFd control, std::string disk_name);
  // Serves one connected vhost-user socket until the frontend closes it (Ok) or is dropped
  // for an error (that Error), or a signal arrives (Ok).
  Result<void> serve_connection(UniqueFd sock);
  // Accepts frontends on a listening socket, one at a time, until a signal arrives.
  Result<void> serve_listener(int listener);

  // The I/O engine, whose one ring serves every queue (tests and test hooks).
  Engine& engine() { return *engine_; }

  bool stopped_by_signal() const { return signalled_; }
  // serve_*() ended because the broker asked (shutdown) or closed the control socket.
  bool shut_down() const { return shut_down_; }

 private:
  struct KickWatch;
  struct Connection;
  enum class Pending { kNone, kQuiesce, kShutdown, kShutdownSilent };

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
  static void on_control(int fd, short what, void* arg);

  void handle_control(const ControlRequest& r);
  void reply(const ControlReply& r);
  void set_quiesced(bool quiesced);
  void begin_shutdown(bool with_reply);
  // Answers a pending quiesce or shutdown once nothing is in flight.
  void finish_pending();
  ControlReply save_state() const;
  ControlReply restore_state(std::span<const uint8_t> blob);
  WorkerStats stats() const;
  std::string serial() const;

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

  UniqueFd control_;
  event* control_event_ = nullptr;
  std::string disk_name_;
  std::vector<uint8_t> control_buf_;
  bool quiesced_ = false;
  Pending pending_ = Pending::kNone;
  bool shut_down_ = false;
  std::optional<Error> shutdown_error_;
  Counters finished_;                     // Of the connections that have gone.
  std::optional<SavedState> restored_;    // Restored with no frontend: for the next one.
  std::optional<SavedState> last_state_;  // What the last frontend left the device in.
};

}  // namespace moss::blk
