// The rings of one vhost-user device, kept once for every device: what on_queue_started,
// on_queue_stopped and on_memory_changing have to do with the virtqueues themselves, so a
// device's own code is only what it does with the chains.
//
// Per ring: the Queue over the Backend's guest memory (built at the ring's base when it
// starts, rebuilt before next use after the memory table changed), whether it is broken
// (a guest error stops it and signals its error eventfd until the driver resets the device),
// and whether used elements were pushed since the last interrupt decision (signal_used).
//
// Everything runs on the worker's thread. The Vring a started ring refers to is the Backend's
// and stays valid until the ring stops (vhost-user/backend.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "devices/virtio/queue.h"
#include "vhost-user/backend.h"

namespace moss::virtio {

// The transport feature bits every device offers (virtio 1.2, 6); a device's own namespace
// `feature` adds its device bits to these.
namespace feature {
constexpr int kIndirectDesc = 28;
constexpr int kEventIdx = 29;
constexpr int kVersion1 = 32;
}  // namespace feature

// Writes 1 to an eventfd (a call, err or kick fd); an invalid fd is skipped, and a failure is
// only logged (a saturated counter wakes the reader anyway; a broken fd is the frontend's).
void signal_eventfd(const UniqueFd& fd);

class RingSet {
 public:
  // `device` names the device in log lines ("virtio-blk"); `names`, if given, names each
  // ring ("receive", ...), else rings are "queue N".
  RingSet(uint32_t count, std::string device, std::vector<std::string> names = {});

  // The Backend whose guest memory the rings live in. Call once, before any ring starts.
  void attach(const vhost_user::Backend& backend) { backend_ = &backend; }
  const vhost_user::Backend& backend() const { return *backend_; }

  // on_queue_started: builds ring `q` over `vring` (at its base), with the ring features of
  // `acked` (EVENT_IDX, INDIRECT_DESC). An Error leaves the ring stopped.
  Result<Queue*> start(uint32_t q, const vhost_user::Vring& vring, uint64_t acked);
  // Undoes start() when the device refuses the ring after all (the ring stays stopped).
  void discard(uint32_t q);
  // on_queue_stopped: the next available index to process; the ring is stopped.
  uint16_t stop(uint32_t q);
  // on_memory_changing: every running ring is rebuilt before it is next used.
  void memory_changing();

  uint32_t count() const { return static_cast<uint32_t>(rings_.size()); }
  bool started(uint32_t q) const { return q < rings_.size() && rings_[q].vring != nullptr; }
  bool broken(uint32_t q) const { return rings_[q].broken; }
  // Started, enabled, not broken, and (rebuilt if the memory changed: which can break it)
  // usable now.
  bool ready(uint32_t q);
  Queue& queue(uint32_t q) { return *rings_[q].queue; }
  const Queue& queue(uint32_t q) const { return *rings_[q].queue; }
  const QueueConfig& config(uint32_t q) const { return rings_[q].config; }
  const vhost_user::Vring& vring(uint32_t q) const { return *rings_[q].vring; }

  // Stops processing ring `q` until the driver resets the device, and tells the frontend.
  void break_ring(uint32_t q, const std::string& why);
  // Used elements were pushed on `q`: signal_used decides whether the driver wants an interrupt.
  void pushed(uint32_t q) { rings_[q].notify = true; }
  void signal_used();
  // Comes back to `q` once the loop has served everything else (a ring's worth per turn).
  void kick_self(uint32_t q) { signal_eventfd(rings_[q].vring->kick); }

  // Takes at most one ring's worth of available heads from ring `q` (ready), calling
  // `take(head)` for each, with the driver's kicks suppressed meanwhile and asked for again
  // once the ring is empty. `take` may break the ring, which ends the walk; so does an
  // available index that runs away. A ring with more left comes back through kick_self once
  // the loop has served everything else, so one busy ring cannot starve the others or the
  // vhost-user socket. Inlined: no call per head beyond `take`.
  template <typename Take>
  void take_available(uint32_t q, Take&& take) {
    Queue& ring = queue(q);
    uint32_t budget = config(q).size;
    for (;;) {
      ring.disable_notification();
      while (!broken(q) && budget > 0) {
        auto head = ring.pop_head();
        if (!head.ok()) {
          break_ring(q, head.error().message);
          return;
        }
        if (!*head) break;
        --budget;
        take(**head);
      }
      if (broken(q)) return;
      if (budget == 0) {
        kick_self(q);
        return;
      }
      if (!ring.enable_notification()) return;
    }
  }

 private:
  struct Ring {
    const vhost_user::Vring* vring = nullptr;  // Non-null while started.
    QueueConfig config;
    std::optional<Queue> queue;
    bool broken = false;
    bool stale = false;   // Guest memory was remapped: rebuild `queue` before touching it.
    bool notify = false;  // Used elements pushed since the last interrupt decision.
  };
  std::string name(uint32_t q) const;

  const vhost_user::Backend* backend_ = nullptr;
  std::string device_;
  std::vector<std::string> names_;
  std::vector<Ring> rings_;
};

}  // namespace moss::virtio
