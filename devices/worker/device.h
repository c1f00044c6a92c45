// What a device worker implements to run on the shared runtime (runtime.h): one interface, a
// vhost-user DeviceInterface plus what the runtime needs of it.
//
// The runtime makes a fresh Device for every frontend that connects (WorkerSpec::make_device),
// attaches it to that connection's Backend, calls on_kick() when a started ring's kick eventfd
// fired, and drops the device when the frontend leaves (after the Backend stopped every ring,
// which drains it: DeviceInterface::on_queue_stopped). Quiescing and state travel over
// vhost-user: GET_VRING_BASE (on_queue_stopped) and DEVICE_STATE (save_state, load_state).
//
// A device that has fds of its own to watch (blk: its io_uring's completions; vsock: host
// sockets and a timer) makes base/event.h Events on the event_base it was made with; they must
// be gone with the device.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ipc/worker_messages.h"
#include "vhost-user/backend.h"

struct event_base;

namespace moss::runtime {

// The broker's `stats` and `describe` (ipc/worker.capnp), one shape for both ends.
using worker::Description;
using worker::Stats;

class Device : public vhost_user::DeviceInterface {
 public:
  // The Backend this device serves (for guest memory and the inflight buffer). Called once,
  // before the Backend handles a message.
  virtual void attach(const vhost_user::Backend& backend) = 0;
  // Ring `queue`'s kick eventfd fired (the runtime consumed it).
  virtual void on_kick(uint32_t queue) = 0;
  // Requests taken from the rings and not yet returned to the guest.
  virtual uint32_t in_flight() const { return 0; }
  // Finish everything in flight now (blocking) and return it to the guest: the runtime's
  // shutdown, once it no longer reads the rings.
  virtual void drain() {}
  // This connection's counters (in_flight included).
  virtual Stats stats() const = 0;
};

// One kind of worker, as the runtime needs to know it.
struct WorkerSpec {
  Description description;
  // A fresh device for a frontend that connected; `loop` is the runtime's, for the device's
  // own Events.
  std::function<std::unique_ptr<Device>(event_base* loop)> make_device;
  // Shutdown, once nothing is in flight: make what the guest was told is done durable (blk:
  // fdatasync). Optional.
  std::function<Result<void>()> flush;
};

}  // namespace moss::runtime
