// The broker's side of ipc/worker.capnp: requests to a device worker over its control socket
// (describe, stats, shutdown; quiescing and state go over vhost-user), and the pure decoder of
// everything a worker sends back (fuzzed in fuzz/fuzz_broker_peers.cc). A worker is
// untrusted: every reply is checked for framing, version and kind before a field is used, its
// text and lists are bounded, and a worker that answers garbage or nothing in time is an Error.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"

namespace moss::worker {

enum class Request { kDescribe, kStats, kShutdown };

// At most this many details or counters, and this many bytes of any text, are kept from a reply.
inline constexpr size_t kMaxListEntries = 64;
inline constexpr size_t kMaxTextBytes = 512;

struct Description {
  std::string kind;  // "blk", "vsock", "null", ...
  uint32_t num_queues = 0;
  std::vector<std::pair<std::string, std::string>> details;  // Device-specific (blk: disk, readOnly, ...).
  std::string detail(const std::string& key) const;          // "" if absent.
};

struct Stats {
  uint64_t requests = 0, errors = 0, bytes_in = 0, bytes_out = 0;
  uint32_t in_flight = 0;
  std::vector<std::pair<std::string, uint64_t>> counters;  // Device-specific, by name.
  uint64_t counter(const std::string& name) const;         // 0 if absent.
};

// One reply, as decoded. Exactly one of the optional parts is meaningful, per `kind`.
struct Reply {
  enum class Kind { kDescription, kStats, kShuttingDown, kError };
  Kind kind = Kind::kError;
  Description description;
  Stats stats;
  std::string error;
};

// Pure: the bytes of one packet a worker sent.
Result<Reply> decode_reply(std::span<const uint8_t> packet);
// The reply kind that answers `r` (anything else, except kError, is a protocol violation).
Reply::Kind expected_reply(Request r);

// Pure: the packet that asks for `r`, as call() sends it; for a caller that sends from its own
// event loop and reads the reply with decode_reply().
std::vector<uint8_t> encode_request(Request r);

// Sends `r` on `fd` and waits up to `timeout_ms` for the answer. A kError reply becomes an
// Error carrying the worker's sentence.
Result<Reply> call(int fd, Request r, int timeout_ms = 10000);

}  // namespace moss::worker
