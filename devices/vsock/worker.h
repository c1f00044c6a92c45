// moss-vsock on the worker runtime (devices/worker/): the WorkerSpec (a fresh VsockDevice for
// every frontend, so a new frontend starts with no connections and gets TRANSPORT_RESET), and
// the host side of hybrid vsock that outlives frontends: the host programs' listener.
//
// Host programs: each connection to the host listener must send "CONNECT <port>\n" within
// kConnectLineTimeoutMs, or it is closed; so is one whose line does not parse, one that comes
// while no frontend is connected, and one beyond kMaxPendingHosts waiting for their line.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "base/event.h"
#include "base/fd.h"
#include "base/result.h"
#include "devices/vsock/device.h"
#include "devices/worker/runtime.h"

namespace moss::vsock {

inline constexpr uint64_t kConnectLineTimeoutMs = 10000;
inline constexpr size_t kMaxPendingHosts = 64;

runtime::WorkerSpec worker_spec(DeviceOptions options);

// Takes host programs' connections from `listener` (listen_unix(uds_path)) on the runtime's
// loop and hands each, once its CONNECT line came, to the connected VsockDevice. The listener
// and the runtime outlive it.
class HostListener {
 public:
  static Result<std::unique_ptr<HostListener>> create(runtime::Runtime& runtime, int listener);
  HostListener(const HostListener&) = delete;
  HostListener& operator=(const HostListener&) = delete;

 private:
  struct Pending {
    UniqueFd fd;
    Event ev;
    std::string line;
    uint64_t deadline_ms = 0;
  };
  explicit HostListener(runtime::Runtime& runtime) : runtime_(runtime) {}
  void on_accept(int listener);
  void on_timer();
  void read_connect_line(Pending& p);

  runtime::Runtime& runtime_;
  Event accept_, timer_;
  std::map<int, std::unique_ptr<Pending>> pending_;  // By fd.
};

}  // namespace moss::vsock
