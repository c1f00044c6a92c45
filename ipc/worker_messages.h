// The messages of a worker's control channel (ipc/worker.capnp) as plain values, defined once
// for both ends: the worker runtime encodes replies and decodes requests
// (devices/worker/control.h), the broker encodes requests and decodes replies with its own
// bounds, a worker being untrusted (broker/worker_control.h). Quiescing and device state are
// not here: they travel over vhost-user.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moss::worker {

enum class Request { kDescribe, kStats, kShutdown };

// The answer to `describe` (WorkerDescription).
struct Description {
  std::string kind;  // "blk", "vsock", "null", ...
  uint32_t num_queues = 0;
  std::vector<std::pair<std::string, std::string>> details;  // Device-specific (blk: disk, readOnly, ...).

  std::string detail(const std::string& key) const;  // "" if absent.
  bool operator==(const Description&) const = default;
};

// The answer to `stats` (WorkerStats): the counters every device has, and named ones of its
// own.
struct Stats {
  uint64_t requests = 0;   // Requests (chains, packets) returned to the guest.
  uint64_t errors = 0;     // Of those, answered with an error.
  uint64_t bytes_in = 0;   // Payload bytes taken from the guest.
  uint64_t bytes_out = 0;  // Payload bytes given to the guest.
  uint32_t in_flight = 0;
  std::vector<std::pair<std::string, uint64_t>> counters;  // Device-specific, by name.

  // Adds `o`'s counters (named ones by name) to these; in_flight is not a sum over time and
  // stays.
  Stats& operator+=(const Stats& o);
  uint64_t counter(const std::string& name) const;  // 0 if absent.
  bool operator==(const Stats&) const = default;
};

// One reply. Exactly one of the parts is meaningful, per `kind`.
struct Reply {
  enum class Kind { kDescription, kStats, kShuttingDown, kError };
  Kind kind = Kind::kError;
  Description description;  // kDescription
  Stats stats;              // kStats
  std::string error;        // kError: one sentence.

  static Reply of(Kind k) {
    Reply r;
    r.kind = k;
    return r;
  }
  static Reply failure(std::string why) {
    Reply r;
    r.error = std::move(why);
    return r;
  }
};

// The reply kind that answers `r` (anything else, except kError, is a protocol violation).
Reply::Kind expected_reply(Request r);

// The bytes of one request packet (a flat Cap'n Proto message); `version` 0 means the current
// protocol version (another is for tests of a worker's refusal).
std::vector<uint8_t> encode_request(Request r, uint32_t version = 0);

}  // namespace moss::worker
