// A restored VM's guest agent (issue 13, "A new generation on every restore"): its agent
// dialled the host before the spore was taken, so the broker connects to it (the vsock
// worker's hybrid socket, CONNECT <agent port>), retrying while the agent makes its listener
// again after the restore's TRANSPORT_RESET, gives it the VM's new generation
// (renew_generation(), broker/generation.h), and then, for `moss run --from SPORE -- CMD`, a
// second connection for the command. On a thread of its own (each connect and the generation
// exchange block, briefly); the outcome comes back to the loop.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "base/event.h"
#include "base/fd.h"
#include "base/result.h"

namespace moss {

inline constexpr std::chrono::seconds kRestoredAgentTimeout{60};

class RestoredAgent {
 public:
  struct Done {
    Result<void> generation = make_error("not tried");  // The generation was taken.
    std::optional<UniqueFd> command;                    // The command's connection, if asked for.
  };
  // Starts at once. `socket`: the VM's hybrid vsock socket; `realtime_ns`: step the guest's
  // clock to it (--clock realtime); `for_command`: also connect for a command. `done` is
  // called from the loop (not if stop() came first).
  RestoredAgent(event_base* loop, std::string socket, uint64_t generation, std::optional<int64_t> realtime_ns,
                bool for_command, std::function<void(Done)> done);
  ~RestoredAgent();  // stop()
  RestoredAgent(const RestoredAgent&) = delete;
  RestoredAgent& operator=(const RestoredAgent&) = delete;
  // Gives up (the VM is ending) and waits for the thread: at most one generation exchange.
  void stop();

 private:
  void finished();
  std::atomic<bool> stopping_{false};
  UniqueFd wake_;
  Event woken_;
  Done outcome_;
  std::function<void(Done)> done_;
  std::thread thread_;
};

}  // namespace moss
