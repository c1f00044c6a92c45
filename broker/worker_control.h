// The broker's side of ipc/worker.capnp: requests to a device worker over its control
// socket, and the pure decoder of everything a worker sends back (fuzzed in
// fuzz/fuzz_broker_peers.cc). A worker is untrusted: every reply is checked for framing,
// version and kind before a field is used, and a worker that answers garbage or nothing in
// time is an Error.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"

namespace moss::worker {

enum class Request { kDescribe, kQuiesce, kSaveState, kRestoreState, kResume, kStats, kShutdown };

struct Description {
  std::string kind, disk;
  bool read_only = false;
  uint64_t capacity_bytes = 0;
  uint32_t num_queues = 0;
};

struct Stats {
  uint64_t read_requests = 0, write_requests = 0, flush_requests = 0, other_requests = 0;
  uint64_t bytes_read = 0, bytes_written = 0, errors = 0;
  uint32_t in_flight = 0;
  bool quiesced = false;
};

// One reply, as decoded. Exactly one of the optional parts is meaningful, per `kind`.
struct Reply {
  enum class Kind { kDescription, kQuiesced, kState, kRestored, kResumed, kStats, kShuttingDown, kError };
  Kind kind = Kind::kError;
  Description description;
  Stats stats;
  std::vector<uint8_t> state;
  std::string error;
};

// Pure: the bytes of one packet a worker sent.
Result<Reply> decode_reply(std::span<const uint8_t> packet);
// The reply kind that answers `r` (anything else, except kError, is a protocol violation).
Reply::Kind expected_reply(Request r);

// Pure: the packet that asks for `r` (with `state` for kRestoreState), as call() sends it; for
// a caller that sends from its own event loop and reads the reply with decode_reply().
std::vector<uint8_t> encode_request(Request r, std::span<const uint8_t> state = {});

// Sends `r` (with `state` for kRestoreState) on `fd` and waits up to `timeout_ms` for the
// answer. A kError reply becomes an Error carrying the worker's sentence.
Result<Reply> call(int fd, Request r, std::span<const uint8_t> state = {}, int timeout_ms = 10000);

}  // namespace moss::worker
